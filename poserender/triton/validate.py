"""Check a Triton model repository without a server.

1. Every ``config.pbtxt`` is parsed with ``google.protobuf.text_format`` into
   ``tritonclient.grpc.model_config_pb2.ModelConfig``: Triton's own schema, so an unknown field,
   a wrong enum or a type error fails here as it would in ``tritonserver``.
2. Each stage model's inputs and outputs are compared with its ONNX graph (``onnx.load``:
   names, element types, dims; symbolic dims are -1) and with the StageSpec recorded in
   ``poserender_triton.json``, in the way Triton's ONNX Runtime backend compares them when it
   loads a model: with ``max_batch_size`` > 0 the graph's first dim must be dynamic and the
   config's dims are the graph's without it; with 0 they are the graph's dims. Here the match
   must be exact (a fixed graph dim is the same number in the config, a dynamic one -1).
3. The ensemble is checked with the rules Triton applies when it loads one: every step names a
   model of the repository, maps every input of that model and only existing outputs, each
   ensemble tensor has one producer and a consistent dtype and shape wherever it is used (a
   batching model's ``[d...]`` matches a non-batching ``[-1 or n, d...]``), every ensemble
   output is produced, the data flow reaches every step, and the ensemble's ``max_batch_size``
   is not above a batching step's.

A TensorRT plan cannot be opened without TensorRT: a ``tensorrt_plan`` model is checked against
its StageSpec and, when the export folder is given, against the ONNX graph it was built from.
A Python-backend model (``backend: "python"``) is checked against the graph in its version
folder, which its ``model.py`` runs.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ..errors import UserError
from ..specs import StageSpec
from .contract import (CLIENT_PARAMETER, ENSEMBLE_PLATFORM, METADATA, ONNX_PLATFORM, PLAN_PLATFORM, PYTHON_BACKEND,
                       TRITON_DTYPES, batchable)

#: ONNX TensorProto element types -> Triton data types
ONNX_TO_TRITON = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 4: "TYPE_UINT16", 5: "TYPE_INT16",
                  6: "TYPE_INT32", 7: "TYPE_INT64", 9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64",
                  12: "TYPE_UINT32", 13: "TYPE_UINT64", 16: "TYPE_BF16"}
SCHEMA_HINT = ("checking config.pbtxt files needs Triton's schema from tritonclient: "
               "pip install \"tritonclient[grpc]\" (or the extra: pip install \"poserender[triton]\")")

Io = Dict[str, Tuple[str, List[int]]]          # tensor name -> (Triton data type, dims with -1)


def model_config_module():
    """``tritonclient.grpc.model_config_pb2`` (imported here, never at import time)."""
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise UserError(SCHEMA_HINT) from None
    return model_config_pb2


def load_config(path: Union[str, Path]):
    """Parse ``config.pbtxt`` into Triton's ModelConfig message; a UserError names what is wrong."""
    from google.protobuf import text_format

    pb = model_config_module()
    path = Path(path)
    if not path.is_file():
        raise UserError("no config.pbtxt; every model folder of a Triton repository has one", path.parent)
    try:
        return text_format.Parse(path.read_text(), pb.ModelConfig())
    except text_format.ParseError as exc:
        raise UserError(f"not a valid Triton model config ({exc})", path) from None


def dtype_name(config_type: int) -> str:
    return model_config_module().DataType.Name(config_type)


def config_io(tensors) -> Io:
    return {t.name: (dtype_name(t.data_type), list(t.dims)) for t in tensors}


def onnx_io(path: Union[str, Path]) -> Tuple[Io, Io]:
    """(inputs, outputs) of an ONNX graph: Triton data type and dims (-1 for symbolic dims)."""
    try:
        import onnx
    except ImportError:
        raise UserError("checking a repository against its ONNX graphs needs onnx: pip install onnx (or the "
                        "extra: pip install \"poserender[triton]\")") from None

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}

    def io(values) -> Io:
        out = {}
        for v in values:
            if v.name in initializers:
                continue
            tensor = v.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
            out[v.name] = (ONNX_TO_TRITON.get(tensor.elem_type, f"ONNX elem_type {tensor.elem_type}"), dims)
        return out

    return io(graph.input), io(graph.output)


def spec_io(spec: StageSpec) -> Tuple[Io, Io]:
    def io(tensors) -> Io:
        return {t.name: (TRITON_DTYPES.get(t.dtype, t.dtype), [-1 if d == "batch" else int(d) for d in t.shape])
                for t in tensors}
    return io(spec.inputs), io(spec.outputs)


def model_kind(config) -> str:
    """A model's platform (``onnxruntime_onnx``, ``tensorrt_plan``, ``ensemble``) or, for a model
    given by backend only, the backend's name (``python``)."""
    return config.platform or config.backend


def dims_match_wildcard(a: Sequence[int], b: Sequence[int]) -> bool:
    return len(a) == len(b) and all(x == y or x == -1 or y == -1 for x, y in zip(a, b))


@dataclasses.dataclass
class ValidationReport:
    repo: Path
    models: Dict[str, str] = dataclasses.field(default_factory=dict)     # model name -> platform
    tensors_checked: int = 0
    against_onnx: List[str] = dataclasses.field(default_factory=list)    # models compared with a graph
    problems: List[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        kinds = ", ".join(f"{name} ({platform})" for name, platform in self.models.items())
        return (f"{len(self.models)} models: {kinds}; every config.pbtxt parsed with Triton's ModelConfig schema; "
                f"{self.tensors_checked} tensors checked against the StageSpecs and, for "
                f"{len(self.against_onnx)} models, the ONNX graphs; ensemble wiring checked")

    def raise_if_failed(self) -> "ValidationReport":
        if self.problems:
            more = f" (and {len(self.problems) - 1} more: {'; '.join(self.problems[1:4])})" if len(self.problems) > 1 else ""
            raise UserError(f"Triton repository check failed: {self.problems[0]}{more}", self.repo)
        return self


def _compare(where: str, role: str, want: Io, got: Io, against: str, problems: List[str],
             dynamic_matches_any: bool = False) -> int:
    """Names, dtypes and dims of ``want`` (the config, batch axis included) against ``got``.
    ``dynamic_matches_any``: a -1 in ``got`` (an ONNX dim that is symbolic or unknown, e.g. an
    output whose shape the graph does not state) accepts any config dim, as Triton does."""
    if set(want) != set(got):
        problems.append(f"{where}: {role}s {sorted(want)} but {against} has {sorted(got)}")
        return 0
    for name, (dtype, dims) in want.items():
        if got[name][0] != dtype:
            problems.append(f"{where}: {role} {name!r} is {dtype} but {got[name][0]} in {against}")
        other = list(got[name][1])
        same = len(other) == len(dims) and all(g == d or (dynamic_matches_any and g == -1)
                                                for g, d in zip(other, dims))
        if not same:
            problems.append(f"{where}: {role} {name!r} has dims {list(dims)} (batch axis included) but "
                            f"{list(got[name][1])} in {against}")
    return len(want)


def _check_stage(repo: Path, config, spec: StageSpec, onnx_path: Optional[Path], report: ValidationReport) -> None:
    where = f"{config.name}/config.pbtxt"
    problems = report.problems
    version = repo / config.name / "1"
    kind = model_kind(config)
    defaults = {ONNX_PLATFORM: "model.onnx", PLAN_PLATFORM: "model.plan", PYTHON_BACKEND: "model.py"}
    files = [config.default_model_filename or defaults.get(kind, "model.onnx")]
    files += list(config.cc_model_filenames.values())
    if kind == PYTHON_BACKEND:
        files += [spec.file, "manifest.json"]
    for f in files:
        if not (version / f).is_file():
            problems.append(f"{config.name}: version folder 1/ has no {f}")
    if kind not in defaults:
        problems.append(f"{where}: platform {config.platform!r} / backend {config.backend!r}; expected platform "
                        f"{ONNX_PLATFORM} or {PLAN_PLATFORM}, or backend {PYTHON_BACKEND}")
    batching = config.max_batch_size > 0
    if batching and not batchable(spec):
        problems.append(f"{where}: max_batch_size {config.max_batch_size} but stage {spec.name!r} takes one "
                        "identity per call (a tensor without a leading batch axis): Triton would merge identities")
    if config.max_batch_size > spec.max_batch:
        problems.append(f"{where}: max_batch_size {config.max_batch_size} is above the stage's batch range "
                        f"(max {spec.max_batch}, the TensorRT profile and the verified range)")
    if config.HasField("dynamic_batching"):
        if not batching:
            problems.append(f"{where}: dynamic_batching needs max_batch_size > 0")
        for size in config.dynamic_batching.preferred_batch_size:
            if not 1 <= size <= max(config.max_batch_size, 1):
                problems.append(f"{where}: preferred_batch_size {size} is outside 1..{config.max_batch_size}")
    if not config.instance_group:
        problems.append(f"{where}: no instance_group")
    pb = model_config_module()
    for group in config.instance_group:
        if group.count < 1:
            problems.append(f"{where}: instance_group count {group.count}; expected at least 1")
        if group.kind == pb.ModelInstanceGroup.KIND_GPU and not group.gpus:
            problems.append(f"{where}: a KIND_GPU instance_group lists no gpus")
        if group.kind == pb.ModelInstanceGroup.KIND_CPU and group.gpus:
            problems.append(f"{where}: a KIND_CPU instance_group lists gpus")

    def full(io: Io) -> Io:
        return {n: (t, ([-1] + d) if batching else d) for n, (t, d) in io.items()}

    inputs, outputs = full(config_io(config.input)), full(config_io(config.output))
    spec_in, spec_out = spec_io(spec)
    report.tensors_checked += _compare(where, "input", inputs, spec_in, f"stage spec {spec.name!r}", problems)
    _compare(where, "output", outputs, spec_out, f"stage spec {spec.name!r}", problems)
    if onnx_path is not None:
        graph_in, graph_out = onnx_io(onnx_path)
        _compare(where, "input", inputs, graph_in, f"ONNX graph {onnx_path.name}", problems, True)
        _compare(where, "output", outputs, graph_out, f"ONNX graph {onnx_path.name}", problems, True)
        if batching:
            fixed = [n for n, (_, d) in {**graph_in, **graph_out}.items() if not d or d[0] != -1]
            if fixed:
                problems.append(f"{where}: max_batch_size > 0 needs a dynamic first dim, but the graph fixes it for "
                                f"{', '.join(fixed)}")
        report.against_onnx.append(config.name)
    report.tensors_checked += len(outputs)


class _Tensor:
    """One ensemble tensor as a step or the ensemble sees it (Triton's TensorNode)."""

    def __init__(self, owner: str, batching: bool, dtype: str, dims: Sequence[int]):
        self.owner, self.dtype, self.dims = owner, dtype, list(dims)
        self.full = ([-1] if batching else []) + list(dims)


def _consistent(name: str, a: _Tensor, b: _Tensor, where: str, problems: List[str]) -> None:
    if a.dtype != b.dtype:
        problems.append(f"{where}: ensemble tensor {name!r} is {a.dtype} in {a.owner} but {b.dtype} in {b.owner}")
    elif not dims_match_wildcard(a.dims, b.dims) and not dims_match_wildcard(a.full, b.full):
        problems.append(f"{where}: ensemble tensor {name!r} has shape {a.full} in {a.owner} but {b.full} in {b.owner}")


def _check_ensemble(repo: Path, config, configs: Mapping[str, Any], report: ValidationReport) -> None:
    where = f"{config.name}/config.pbtxt"
    problems = report.problems
    if not (repo / config.name / "1").is_dir():
        problems.append(f"{config.name}: an ensemble needs an (empty) version folder 1/")
    if not config.HasField("ensemble_scheduling") or not config.ensemble_scheduling.step:
        problems.append(f"{where}: platform ensemble without ensemble_scheduling steps")
        return
    batching = config.max_batch_size > 0
    tensors: Dict[str, _Tensor] = {}
    for t in config.input:
        tensors[t.name] = _Tensor(f"ensemble {config.name}", batching, dtype_name(t.data_type), t.dims)
    outputs = {t.name: _Tensor(f"ensemble {config.name}", batching, dtype_name(t.data_type), t.dims)
               for t in config.output}
    producers: Dict[str, str] = {name: "(ensemble input)" for name in tensors}
    needs: List[Tuple[str, List[str], List[str]]] = []       # (step model, its input tensors, its outputs)
    for step in config.ensemble_scheduling.step:
        model = configs.get(step.model_name)
        if model is None:
            problems.append(f"{where}: step model {step.model_name!r} is not in the repository")
            continue
        if step.model_version not in (-1, 1):
            problems.append(f"{where}: step {step.model_name!r} asks for version {step.model_version}; only 1/ exists")
        if model.max_batch_size and model.max_batch_size < config.max_batch_size:
            problems.append(f"{where}: ensemble max_batch_size {config.max_batch_size} is above {step.model_name}'s "
                            f"{model.max_batch_size}")
        step_batching = model.max_batch_size > 0
        model_inputs = {t.name: t for t in model.input}
        model_outputs = {t.name: t for t in model.output}

        def record(value: str, tensor, step=step, step_batching=step_batching):
            """Note what this step says about ensemble tensor ``value``; it must agree with earlier steps."""
            seen = _Tensor(step.model_name, step_batching, dtype_name(tensor.data_type), tensor.dims)
            if value in tensors:
                _consistent(value, tensors[value], seen, where, problems)
            else:
                tensors[value] = seen
            return seen

        for key in step.input_map:
            if key not in model_inputs:
                problems.append(f"{where}: step {step.model_name!r} maps to input {key!r}, which the model lacks")
        for name, t in model_inputs.items():
            if name not in step.input_map and not t.optional:
                problems.append(f"{where}: input {name!r} of {step.model_name!r} is not mapped to an ensemble tensor")
        for key, value in step.input_map.items():
            if key in model_inputs:
                record(value, model_inputs[key])
        for key, value in step.output_map.items():
            if key not in model_outputs:
                problems.append(f"{where}: step {step.model_name!r} maps from output {key!r}, which the model lacks")
                continue
            if value in producers:
                problems.append(f"{where}: ensemble tensor {value!r} is written by {producers[value]} and by "
                                f"{step.model_name!r}")
            producers[value] = step.model_name
            seen = record(value, model_outputs[key])
            if value in outputs:
                _consistent(value, outputs[value], seen, where, problems)
        needs.append((step.model_name, list(step.input_map.values()), list(step.output_map.values())))
    for name in outputs:
        if name not in producers:
            problems.append(f"{where}: ensemble output {name!r} is not produced by any step")
    used = {v for _, ins, _ in needs for v in ins}
    for t in config.input:
        if t.name not in used:
            problems.append(f"{where}: ensemble input {t.name!r} is not used by any step")
    ready, pending = set(tensors_in(config)), list(needs)
    while pending:
        runnable = [n for n in pending if all(v in ready for v in n[1])]
        if not runnable:
            for model, ins, _ in pending:
                problems.append(f"{where}: step {model!r} never runs: no step produces "
                                f"{', '.join(repr(v) for v in ins if v not in ready)}")
            break
        for n in runnable:
            ready.update(n[2])
            pending.remove(n)
    if CLIENT_PARAMETER in config.parameters:
        try:
            meta = json.loads(config.parameters[CLIENT_PARAMETER].string_value)
            steps = [s.model_name for s in config.ensemble_scheduling.step]
            if [meta["models"][s] for s in meta["chain"]] != steps:
                problems.append(f"{where}: parameter {CLIENT_PARAMETER!r} names models {meta['models']} but the steps "
                                f"are {steps}")
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(f"{where}: parameter {CLIENT_PARAMETER!r} is not the client metadata ({exc})")


def tensors_in(config) -> List[str]:
    return [t.name for t in config.input]


def validate_repository(repo: Union[str, Path], onnx_dir: Optional[Union[str, Path]] = None,
                        strict: bool = True) -> ValidationReport:
    """Check every model of ``repo`` (written by ``poserender triton``). ``onnx_dir``: the export
    folder, to compare TensorRT-plan models with the ONNX graph they were built from (ONNX models
    are compared with their own ``1/model.onnx``). ``strict``: raise a UserError on problems."""
    repo = Path(repo)
    report = ValidationReport(repo)
    meta_path = repo / METADATA
    if not meta_path.is_file():
        raise UserError(f"no {METADATA}; expected a repository written by `poserender triton`", repo)
    try:
        metadata = json.loads(meta_path.read_text())
        stages = {s["model"]: s for s in metadata["stages"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"not a poserender Triton metadata file ({exc})", meta_path) from None
    configs = {}
    for folder in sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith(".")):
        config = load_config(folder / "config.pbtxt")
        if config.name != folder.name:
            report.problems.append(f"{folder.name}/config.pbtxt: name {config.name!r}; Triton expects the folder "
                                   f"name {folder.name!r}")
        configs[folder.name] = config
        report.models[folder.name] = model_kind(config)
    for name, stage in stages.items():
        if name not in configs:
            report.problems.append(f"{METADATA} lists model {name!r}, which has no folder")
    for name, config in configs.items():
        if config.platform == ENSEMBLE_PLATFORM:
            _check_ensemble(repo, config, configs, report)
            continue
        stage = stages.get(name)
        if stage is None:
            report.problems.append(f"{name}: not a stage listed in {METADATA}")
            continue
        if config.platform == ONNX_PLATFORM:
            graph = repo / name / "1" / (config.default_model_filename or "model.onnx")
        elif model_kind(config) == PYTHON_BACKEND:
            graph = repo / name / "1" / stage["file"]
        else:
            graph = Path(onnx_dir) / stage["file"] if onnx_dir is not None else None
        _check_stage(repo, config, StageSpec.from_dict(stage), graph if graph and graph.is_file() else None, report)
    if metadata.get("ensemble") not in configs:
        report.problems.append(f"{METADATA}: ensemble {metadata.get('ensemble')!r} has no folder")
    return report.raise_if_failed() if strict else report
