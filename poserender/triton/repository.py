"""``poserender triton DIR -o REPO``: an exported model folder -> a Triton model repository.

Layout (``NAME`` defaults to the family, ``pose2img`` or ``psc``)::

    REPO/
      NAME/config.pbtxt  NAME/1/           the ensemble: identity + keypoints in, uint8 frames out
      NAME_source/config.pbtxt  NAME_source/1/model.onnx    (model.plan; or model.py, see below)
      NAME_frame/...   (psc: also NAME_parsing, NAME_interp)
      poserender_triton.json               what was generated from what (read by triton-client)

Tensor contracts come from the StageSpecs in manifest.json, unchanged: the same names, dtypes
and shapes as the ONNX graphs. How a stage is batched by Triton follows from its spec:

* a stage whose every tensor has the batch axis first (pose2img and psc ``source``) is a
  batching model: ``max_batch_size`` > 0, dims without the batch axis, ``dynamic_batching``;
* a stage that takes ONE identity's tensors (leading dim 1) with a batch of frames (``frame``,
  psc ``parsing``, ``interp``) is a non-batching model (``max_batch_size: 0``, full dims, -1 on
  the frame axis): Triton's dynamic batcher concatenates every input of the requests it merges,
  which would put several identities into tensors the graph reads as one. (The pose2img frame
  graph reads only the first identity's ``source_parts`` even when given more.) Such a stage is
  batched by the client instead: one request = one identity and up to ``max`` frames.

The ensemble runs the chain (pose2img: source -> frame; psc: source -> parsing -> frame) once
per request, so a request carries the identity inputs and a batch of frames; the source stage
runs once per request (``--cache-source`` lets Triton's response cache skip it for an identity
it has seen, when the server runs with ``--cache-config``). ``instance_group`` comes from
``--devices``: one group per GPU index (``KIND_GPU``, ``gpus: [i]``, ``count`` = how often the
index is listed) or ``KIND_CPU``; without ``--devices``, GPU 0 where nvidia-smi lists a GPU and
the CPU otherwise.

``--backend`` picks the Triton backend of the stage models: ``onnxruntime`` (``model.onnx``),
``tensorrt`` (the plans of ``poserender build``), ``auto`` (plans where current, else ONNX) or
``python``: poserender's own engine inside Triton's Python backend (:mod:`.python_backend`),
which is what the tests and benchmarks run against a real server here.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import shutil
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .. import __version__
from ..engines import compat
from .. import families
from ..engines.placement import PER_IDENTITY, stage_runs
from ..errors import UserError
from ..fileio import temp_dir_beside
from ..manifest import MANIFEST, read_manifest, sha256_file
from ..specs import StageSpec, TensorSpec
from . import python_backend
from .contract import (BACKENDS, CLIENT_PARAMETER, ENSEMBLE_PLATFORM, FORMAT_VERSION, METADATA,
                       ONNX_PLATFORM, PLAN_PLATFORM, PYTHON_BACKEND, PYTHON_ENGINES, TRITON_DTYPES, batchable,
                       model_names)
from .pbtxt import Enum, to_pbtxt
from .validate import model_config_module, validate_repository

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# --- options ----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TritonOptions:
    """What ``poserender triton`` was asked for (defaults as on the command line)."""

    devices: Tuple[str, ...] = ("0",)
    max_batch: int = 8
    preferred_batch: int = 4
    queue_delay_us: int = 500
    backend: str = "auto"
    name: Optional[str] = None
    precision: Optional[str] = None
    cache_source: bool = False
    python_engine: str = "ort-cpu"         # --backend python: the poserender engine each stage runs
    threads: int = 0                       # --backend python: ONNX Runtime threads per instance (0: all)

    def check(self) -> None:
        if self.backend not in BACKENDS:
            raise UserError(f"--backend {self.backend!r}; expected one of {', '.join(BACKENDS)}")
        if self.python_engine not in PYTHON_ENGINES:
            raise UserError(f"--python-engine {self.python_engine!r}; expected one of {', '.join(PYTHON_ENGINES)}")
        if self.backend == PYTHON_BACKEND and self.on_gpu:
            raise UserError(f"--backend python runs poserender's CPU engine ({', '.join(PYTHON_ENGINES)}) in "
                            f"Triton; use --devices cpu (got {','.join(self.devices)})")
        if self.threads < 0:
            raise UserError(f"--threads {self.threads}; expected 0 (all cores) or more")
        if self.max_batch < 1:
            raise UserError(f"--max-batch {self.max_batch}; expected at least 1")
        if not 1 <= self.preferred_batch <= self.max_batch:
            raise UserError(f"--preferred-batch {self.preferred_batch}; expected 1 to --max-batch ({self.max_batch})")
        if self.queue_delay_us < 0:
            raise UserError(f"--queue-delay-us {self.queue_delay_us}; expected 0 or more microseconds")
        if self.name is not None and not _MODEL_NAME.match(self.name):
            raise UserError(f"--name {self.name!r}; a Triton model name is a folder name: letters, digits, "
                            "'_', '-', '.' (not starting with '_', '-' or '.')")

    @property
    def on_gpu(self) -> bool:
        return self.devices[0] != "cpu"

    def gpu_indices(self) -> List[int]:
        return list(dict.fromkeys(int(d) for d in self.devices)) if self.on_gpu else []


def default_devices(backend: str) -> Tuple[str, ...]:
    """``--devices`` left out: the CPU for the Python backend and on a machine where nvidia-smi
    lists no GPU, else GPU 0."""
    if backend == PYTHON_BACKEND:
        return ("cpu",)
    from ..engines.machine import nvidia_smi

    return ("0",) if nvidia_smi()["gpus"] else ("cpu",)


# --- per-stage configs ------------------------------------------------------------------------

def triton_dims(tensor: TensorSpec, batching: bool) -> List[int]:
    """Config dims of a tensor: without the batch axis for a batching model; "batch" -> -1."""
    shape = tensor.shape[1:] if batching else tensor.shape
    return [-1 if d == "batch" else int(d) for d in shape]


def _io(tensor: TensorSpec, dims: Sequence[int]) -> Dict[str, Any]:
    if tensor.dtype not in TRITON_DTYPES:
        raise UserError(f"tensor {tensor.name!r} has dtype {tensor.dtype}; Triton configs are written for "
                        f"{', '.join(TRITON_DTYPES)}")
    return {"name": tensor.name, "data_type": Enum(TRITON_DTYPES[tensor.dtype]), "dims": list(dims)}


def instance_groups(devices: Sequence[str]) -> List[Dict[str, Any]]:
    """One group per distinct device (in the order given), ``count`` = how often it is listed."""
    counts: "OrderedDict[str, int]" = OrderedDict()
    for d in devices:
        counts[d] = counts.get(d, 0) + 1
    if list(counts) == ["cpu"]:
        return [{"count": counts["cpu"], "kind": Enum("KIND_CPU")}]
    return [{"count": n, "kind": Enum("KIND_GPU"), "gpus": [int(d)]} for d, n in counts.items()]


@dataclasses.dataclass
class EngineChoice:
    """The serialized engine(s) a stage model is served from (``platform`` is the Python backend's
    name, ``python``, for a Python-backend model, whose files :mod:`.python_backend` writes)."""

    platform: str
    files: Dict[str, Path]                      # name in the version folder -> source file
    default_model_filename: str
    cc_model_filenames: Dict[str, str] = dataclasses.field(default_factory=dict)
    records: List[Dict[str, Any]] = dataclasses.field(default_factory=list)   # plan records used

    def describe(self) -> str:
        if self.platform == ONNX_PLATFORM:
            return "ONNX Runtime (model.onnx)"
        if self.platform == PYTHON_BACKEND:
            return f"Python backend (model.py running poserender's engine on {', '.join(self.files)})"
        precision = self.records[0].get("precision", "?") if self.records else "?"
        return f"TensorRT ({precision}, " + ", ".join(sorted(self.files)) + ")"


def stage_config(model_name: str, spec: StageSpec, engine: EngineChoice, options: TritonOptions,
                 cache: bool = False) -> Dict[str, Any]:
    batching = batchable(spec)
    max_batch = min(options.max_batch, spec.max_batch) if batching else 0
    kind = {"backend": PYTHON_BACKEND} if engine.platform == PYTHON_BACKEND else {"platform": engine.platform}
    config: Dict[str, Any] = {"name": model_name, **kind, "max_batch_size": max_batch,
                              "default_model_filename": engine.default_model_filename}
    if engine.cc_model_filenames:
        config["cc_model_filenames"] = [{"key": cc, "value": f} for cc, f in engine.cc_model_filenames.items()]
    config["input"] = [_io(t, triton_dims(t, batching)) for t in spec.inputs]
    config["output"] = [_io(t, triton_dims(t, batching)) for t in spec.outputs]
    if batching:
        config["dynamic_batching"] = {"preferred_batch_size": [min(options.preferred_batch, max_batch)],
                                      "max_queue_delay_microseconds": int(options.queue_delay_us)}
    config["instance_group"] = instance_groups(options.devices)
    if cache:
        config["response_cache"] = {"enable": True}
    if engine.platform == PYTHON_BACKEND:
        parameters = python_backend.stage_parameters(options.python_engine, options.threads)
        config["parameters"] = [{"key": k, "value": {"string_value": v}} for k, v in parameters.items()]
    return config


def ensemble_config(name: str, chain: Sequence[Tuple[str, StageSpec, Mapping[str, Any]]],
                    client_metadata: Mapping[str, Any]) -> Dict[str, Any]:
    """The ensemble over ``chain`` = [(model name, spec, manifest stage entry)], one identity and
    a batch of frames per request (``max_batch_size: 0``). Tensors keep their stage names, so each
    step's input_map/output_map is name -> same name; the identity stage's inputs get a leading
    1 (one identity per request), the frame inputs -1."""
    inputs: "OrderedDict[str, Tuple[TensorSpec, List[int]]]" = OrderedDict()
    produced: Dict[str, TensorSpec] = {}
    consumed = set()
    for _, spec, entry in chain:
        per_identity = stage_runs(entry) == PER_IDENTITY
        for t in spec.inputs:
            consumed.add(t.name)
            if t.name in produced:
                continue
            dims = [1 if (d == "batch" and per_identity and i == 0) else (-1 if d == "batch" else int(d))
                    for i, d in enumerate(t.shape)]
            if t.name in inputs:
                dims = _merge_dims(t.name, inputs[t.name][1], dims)
                if inputs[t.name][0].dtype != t.dtype:
                    raise UserError(f"ensemble input {t.name!r} is {inputs[t.name][0].dtype} in one stage and "
                                    f"{t.dtype} in another")
            inputs[t.name] = (t, dims)
        for t in spec.outputs:
            produced[t.name] = t
    last = chain[-1][1]
    steps = []
    for model_name, spec, _ in chain:
        outs = [t.name for t in spec.outputs if t.name in consumed or spec is last]
        steps.append({"model_name": model_name, "model_version": -1,
                      "input_map": [{"key": t.name, "value": t.name} for t in spec.inputs],
                      "output_map": [{"key": n, "value": n} for n in outs]})
    return {"name": name, "platform": ENSEMBLE_PLATFORM, "max_batch_size": 0,
            "input": [_io(t, dims) for t, dims in inputs.values()],
            "output": [_io(t, triton_dims(t, False)) for t in last.outputs],
            "ensemble_scheduling": {"step": steps},
            "parameters": [{"key": CLIENT_PARAMETER,
                            "value": {"string_value": json.dumps(client_metadata, separators=(",", ":"))}}]}


def _merge_dims(name: str, a: Sequence[int], b: Sequence[int]) -> List[int]:
    if len(a) != len(b) or any(x != -1 and y != -1 and x != y for x, y in zip(a, b)):
        raise UserError(f"ensemble input {name!r} has shape {list(a)} in one stage and {list(b)} in another")
    return [y if x == -1 else x for x, y in zip(a, b)]


# --- engines: .onnx or .plan per stage ----------------------------------------------------------

def choose_engine(model_dir: Path, manifest: Mapping[str, Any], entry: Mapping[str, Any],
                  options: TritonOptions) -> EngineChoice:
    """``model.onnx``, the stage's TensorRT plans for the listed GPUs (``--backend tensorrt``, or
    ``auto`` when every listed GPU has a plan that still matches the ONNX graph and profile), or
    the Python backend's files (``--backend python``)."""
    if options.backend == PYTHON_BACKEND:
        return EngineChoice(PYTHON_BACKEND, {entry["file"]: model_dir / entry["file"]}, "model.py")
    onnx_choice = EngineChoice(ONNX_PLATFORM, {"model.onnx": model_dir / entry["file"]}, "model.onnx")
    if options.backend == "onnxruntime":
        return onnx_choice
    if not options.on_gpu:
        if options.backend == "tensorrt":
            raise UserError("--backend tensorrt needs GPU --devices (TensorRT plans run on GPUs); got --devices cpu")
        return onnx_choice
    stage = entry["name"]
    precision = options.precision or (manifest.get("build") or {}).get("precision")
    records, problems = [], []
    for device in options.gpu_indices():
        record = compat.find_record(manifest, stage, device, precision)
        if record is None:
            problems.append(f"no {precision + ' ' if precision else ''}plan for stage {stage!r} on GPU {device}")
            continue
        stale = compat.model_mismatches(record, entry, model_dir / record.get("file", ""), precision)
        if stale:
            problems.append(f"plan {record.get('file')} is stale ({'; '.join(map(str, stale))})")
            continue
        records.append(record)
    if problems:
        if options.backend == "auto":
            return onnx_choice
        build = dict(manifest.get("build") or {})
        build.update({"devices": options.gpu_indices(), "precision": precision or build.get("precision", "fp32")})
        raise UserError(f"--backend tensorrt: {'; '.join(problems)}; build them with: "
                        f"{compat.rebuild_command(model_dir, build)}", model_dir)
    by_cc: "OrderedDict[str, Dict[str, Any]]" = OrderedDict()
    for record in records:
        cc = str(record.get("compute_capability"))
        seen = by_cc.get(cc)
        if seen is not None and (seen.get("gpu_name") != record.get("gpu_name")):
            raise UserError(f"stage {stage!r}: GPUs {seen.get('gpu_name')!r} and {record.get('gpu_name')!r} share "
                            f"compute capability {cc}, and Triton picks a plan by compute capability only; serve "
                            "them from separate repositories (one --devices list each)", model_dir)
        by_cc.setdefault(cc, record)
    versions = {str(r.get("tensorrt")) for r in records}
    if len(versions) > 1:
        raise UserError(f"stage {stage!r}: plans were built with TensorRT {', '.join(sorted(versions))}; one Triton "
                        "container has one TensorRT version: rebuild them with the same one", model_dir)
    if len(by_cc) == 1:
        record = next(iter(by_cc.values()))
        return EngineChoice(PLAN_PLATFORM, {"model.plan": model_dir / record["file"]}, "model.plan",
                            records=list(by_cc.values()))
    names = {cc: f"model.sm{cc.replace('.', '')}.plan" for cc in by_cc}
    return EngineChoice(PLAN_PLATFORM, {names[cc]: model_dir / r["file"] for cc, r in by_cc.items()},
                        next(iter(names.values())), cc_model_filenames=names, records=list(by_cc.values()))


# --- the repository -----------------------------------------------------------------------------

def _link_or_copy(src: Path, dest: Path) -> None:
    """A hard link where the repository is on the export's filesystem (a 500 MB graph is not
    copied; the export's files are never written in place, so the link stays the exported bytes),
    else a copy."""
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def generate_repository(model_dir: Union[str, Path], out_dir: Union[str, Path], options: TritonOptions,
                        log: Callable[[str], None] = lambda s: None) -> Dict[str, Any]:
    """Write the repository for an exported ``model_dir`` into ``out_dir`` (built in a temporary
    sibling, validated, then renamed into place; an earlier repository there is replaced).
    Returns the metadata written to ``poserender_triton.json``."""
    options.check()
    model_config_module()       # the check at the end needs Triton's schema: say so before any work
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    manifest = read_manifest(model_dir)
    # the ensemble runs the family's identity stages, then its per-frame stages; others (PSC's interp)
    # are served as models of their own
    family_spec = families.of(manifest)
    family = family_spec.name
    entries = {s["name"]: s for s in manifest["stages"]}
    chain = family_spec.stage_names
    missing = [s for s in chain if s not in entries]
    if missing:
        raise UserError(f"manifest has no stage {', '.join(map(repr, missing))}; a {family} export has stages "
                        f"{', '.join(chain)}", model_dir / MANIFEST)
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / METADATA).is_file())):
        raise UserError("exists and is not a repository written by `poserender triton`; choose a new or empty "
                        "-o folder", out_dir)
    if out_dir.resolve() == model_dir.resolve():
        raise UserError("-o must not be the exported model folder itself", out_dir)
    name = options.name or family
    names = model_names(name, list(entries))
    specs = {s: StageSpec.from_dict(e) for s, e in entries.items()}
    engines = {s: choose_engine(model_dir, manifest, entries[s], options) for s in entries}
    frame_stages = chain[1:]
    client_metadata = {"format_version": FORMAT_VERSION, "family": family, "canvas": manifest.get("canvas"),
                       "config": manifest.get("config"), "ensemble": name, "chain": list(chain),
                       "models": {s: names[s] for s in chain},
                       "frame_max_batch": min(specs[s].max_batch for s in frame_stages)}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = temp_dir_beside(out_dir)
    try:
        for stage, spec in specs.items():
            engine = engines[stage]
            folder = work / names[stage]
            (folder / "1").mkdir(parents=True)
            if engine.platform == PYTHON_BACKEND:
                python_backend.write_stage_files(folder / "1", model_dir, manifest, entries[stage])
            else:
                for dest, src in engine.files.items():
                    _link_or_copy(Path(src), folder / "1" / dest)
            config = stage_config(names[stage], spec, engine, options, cache=options.cache_source and
                                  stage_runs(entries[stage]) == PER_IDENTITY)
            (folder / "config.pbtxt").write_text(to_pbtxt(config) + "\n")
            log(f"{names[stage]}: {engine.describe()}, " + (
                f"max_batch_size {config['max_batch_size']}, dynamic batching" if config["max_batch_size"]
                else "max_batch_size 0 (one identity per request; the client batches frames)"))
        ensemble = ensemble_config(name, [(names[s], specs[s], entries[s]) for s in chain], client_metadata)
        (work / name / "1").mkdir(parents=True)
        (work / name / "config.pbtxt").write_text(to_pbtxt(ensemble) + "\n")
        log(f"{name}: ensemble {' -> '.join(names[s] for s in chain)}")
        metadata = {
            **client_metadata, "poserender": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "export": {"path": str(model_dir.resolve()), "manifest_sha256": sha256_file(model_dir / MANIFEST)},
            "options": {**dataclasses.asdict(options), "devices": list(options.devices)},
            "stages": [{**entries[s], "model": names[s], "platform": engines[s].platform,
                        "files": {k: (sha256_file(v) if engines[s].platform == PLAN_PLATFORM else entries[s]["sha256"])
                                  for k, v in engines[s].files.items()},
                        "plans": [{k: r.get(k) for k in ("file", "device", "precision", "tensorrt", "cuda", "gpu_name",
                                                        "compute_capability", "onnx_sha256")}
                                  for r in engines[s].records]} for s in entries],
        }
        with open(work / METADATA, "w") as f:
            json.dump(metadata, f, indent=2)
            f.write("\n")
        report = validate_repository(work, onnx_dir=model_dir, strict=False)
        if not report.ok:
            raise UserError(f"the generated repository fails its check, so nothing was written: "
                            f"{'; '.join(report.problems[:4])}", out_dir)
        log(f"checked: {report.summary()}")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(work, out_dir)
        return metadata
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
