"""OpenVINO engine for x86 CPUs (``ov-cpu``): FP32, BF16 and INT8, one stage per engine.

The backend's entry in engines/registry.py uses :func:`probe`, :func:`refuse`,
:func:`stage_files` and :func:`engine` (the factory of one stage's engine). Nothing imports
openvino until :meth:`OvEngine.activate` (or the registry's probe, through engines.machine), so
the package imports and renders without the ``openvino`` extra.

Precisions (OpenVINO's ``INFERENCE_PRECISION_HINT`` says what a graph's float parts run in; the
graph file says what is quantized). Reduced precision applies to the stage the export recorded a
trunk for (the family's Int8Plan: pose2img's ``frame`` U-Net, PSC's CT-Net); the other stages
run once per identity, on key poses, or end in an argmax (PSC's AA-Net: BF16 flipped 58 % of the
labels of the random-weight test nets), and run FP32:

========== ================================== =============================================
precision  graph of the reduced stage         float parts
========== ================================== =============================================
fp32       the FP32 ONNX                      f32 (set explicitly: on a CPU with AMX or
                                              AVX512_BF16 OpenVINO's default is bf16)
bf16       the FP32 ONNX                      bf16 in the trunk, f32 elsewhere (needs
                                              AVX512_BF16 or AMX, else refused)
int8       the INT8 graph its export measured f32
           faster on OpenVINO (:func:`int8_key`)
int8-bf16  the NNCF INT8 IR (``int8_nncf``)    INT8 trunk, bf16 for its float ops, f32 elsewhere
========== ================================== =============================================

BF16 only in the trunk: the frame graph's geometry (heat-map windows, limb least-squares fits,
warp coordinates in canvas pixels, fusion) is not BF16-safe (trained demo model: the whole graph
in BF16 gave 20.9 dB against FP32, the U-Net alone 60.2 dB; docs/openvino.md). A trunk of one
node-name prefix is cut out (engines/ov_split.py) and compiled in bf16 between two f32 parts; a
trunk of several regions between warps (PSC's CT-Net) runs the whole stage in BF16.

Threads and streams: ``threads`` becomes ``INFERENCE_NUM_THREADS`` (the cap ort_engine gets, so
``--devices cpu,cpu --replicate`` gives each worker its share). ``hint="latency"`` (default)
compiles for one request using every thread on one batch; ``hint="throughput"`` compiles with
OpenVINO's THROUGHPUT hint and splits each batch over that many requests run at once.

Compiled models are cached in ``cache_root()/openvino`` (OpenVINO's ``CACHE_DIR``), so the
second start of a model skips compilation; :attr:`OvEngine.compile_seconds` and
:attr:`OvEngine.cache_hit` say what happened.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, FrozenSet, Mapping, Optional, Tuple

import numpy as np

from ..cache import cache_root
from ..errors import UserError
from ..manifest import INT8_KEY, INT8_NNCF_KEY, int8_stage_files
from ..specs import StageSpec
from .base import Engine

BACKEND = "ov-cpu"
PRECISIONS = ("fp32", "bf16", "int8", "int8-bf16")
HINTS = ("latency", "throughput")
#: CPU flags (as /proc/cpuinfo spells them) that give OpenVINO BF16 arithmetic
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
#: CPU flags that make INT8 faster than FP32 (VNNI dot products, AMX tiles)
INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")
INSTALL_HINT = "pip install 'poserender[openvino]'"
CACHE_SUBDIR = "openvino"


# -- what this CPU can do (the registry's probe and precision check, over engines.machine.Facts) ------------

def bf16_support(flags: FrozenSet[str]) -> Tuple[bool, str]:
    """(usable, why): BF16 arithmetic needs AVX512_BF16 or AMX-BF16; without them OpenVINO would
    emulate it, slower than FP32."""
    found = [f for f in BF16_FLAGS if f in flags]
    if found:
        return True, f"BF16 arithmetic ({', '.join(found)})"
    return False, "this CPU has neither AVX512_BF16 nor AMX-BF16, so BF16 would be emulated (slower than FP32)"


def int8_support(flags: FrozenSet[str]) -> str:
    found = [f for f in INT8_FLAGS if f in flags]
    return f"INT8 dot products ({', '.join(found)})" if found else "no VNNI/AMX: INT8 runs, with little speed-up"


def probe(facts) -> Tuple[bool, str]:
    """(usable, reason) of ``ov-cpu`` from the machine facts: OpenVINO importable with its CPU
    plugin; the reason names the version and which precisions the CPU does natively."""
    info = facts.package("openvino")
    if info["version"] is None:
        return False, f"openvino {info['error']} ({INSTALL_HINT})"
    version = info["version"].split("-")[0]
    if info.get("error"):
        return False, f"OpenVINO {version}: {info['error']}"
    devices = info.get("devices") or []
    if "CPU" not in devices:
        return False, f"OpenVINO {version} has no CPU plugin (devices: {', '.join(devices) or 'none'})"
    bf16, why = bf16_support(facts.cpu_flags)
    return True, f"OpenVINO {version} on CPU; bf16 {'yes: ' + why if bf16 else 'no'}; int8: {int8_support(facts.cpu_flags)}"


def refuse(precision: str, facts) -> Optional[str]:
    """Why this machine cannot run ``precision`` on ov-cpu (None: it can): BF16 without the ISA."""
    if "bf16" not in precision:
        return None
    usable, why = bf16_support(facts.cpu_flags)
    if usable:
        return None
    return (f"--precision {precision} on {BACKEND} needs BF16 arithmetic: {why}; "
            f"use --precision {'int8' if precision.startswith('int8') else 'fp32'}")


# -- which graph each stage runs ----------------------------------------------------------------------------

def int8_key(manifest: Mapping[str, Any]) -> Optional[str]:
    """Which INT8 graphs ``ov-cpu --precision int8`` runs: the NNCF IR when the model has one and
    its export measured it faster on OpenVINO (``int8_nncf.ov_route.chosen``) or there is no QDQ
    graph; else the QDQ graph (``int8``); None when the model has neither."""
    nncf = manifest.get(INT8_NNCF_KEY) or {}
    has_qdq = bool((manifest.get(INT8_KEY) or {}).get("stages"))
    if nncf.get("stages") and (not has_qdq or (nncf.get("ov_route") or {}).get("chosen") == "nncf"):
        return INT8_NNCF_KEY
    return INT8_KEY if has_qdq else None


def reduced_stages(manifest: Mapping[str, Any], precision: Optional[str]) -> Dict[str, Tuple[str, ...]]:
    """{stage: trunk node-name prefixes} of the stages ``precision`` reduces: at int8 the INT8
    entry's stages; at bf16 the stages the export recorded a ``trunk`` for (else, for a model
    exported before that was recorded, its INT8 entry's)."""
    if precision in (None, "fp32"):
        return {}
    if precision.startswith("int8"):
        key = INT8_NNCF_KEY if precision == "int8-bf16" else int8_key(manifest)
        return {s["name"]: tuple(s.get("trunk") or ()) for s in (manifest.get(key) or {}).get("stages", [])}
    recorded = {s["name"]: tuple(s["trunk"]) for s in manifest["stages"] if s.get("trunk")}
    return recorded or {s["name"]: tuple(s.get("trunk") or ())
                        for s in (manifest.get(INT8_KEY) or {}).get("stages", [])}


def stage_files(model_dir: Path, manifest: Mapping[str, Any], precision: Optional[str]) -> Dict[str, str]:
    """{stage: graph file} that ``precision`` runs; one line when the model has none for it."""
    if precision in (None, "fp32", "bf16"):
        if precision == "bf16" and not reduced_stages(manifest, precision):
            raise UserError("records no trunk for reduced precision (an export older than ov-cpu, without INT8); "
                            "re-export it (poserender export) for --precision bf16 on ov-cpu", model_dir)
        return {s["name"]: s["file"] for s in manifest["stages"]}
    if precision == "int8-bf16" and not (manifest.get(INT8_NNCF_KEY) or {}).get("stages"):
        raise UserError("has no NNCF INT8 graph, which --precision int8-bf16 runs; export with --precision int8 "
                        "--int8-target ov, or use --precision int8", model_dir)
    key = INT8_NNCF_KEY if precision == "int8-bf16" else int8_key(manifest)
    files = int8_stage_files(manifest, key) if key else None
    if files is None:
        raise UserError("has no INT8 graphs; export with --precision int8 [--int8-target ov] --calibrate KEYPOINTS and "
                        "the identity (--source IMAGE and its keypoints or parsing; see `poserender export --help`)",
                        model_dir)
    for name, file in files.items():
        if not (Path(model_dir) / file).is_file():
            raise UserError(f"INT8 graph {file!r} of stage {name!r} is missing; re-export with --precision int8",
                            model_dir)
    return files


def engine(request) -> "OvEngine":
    """The registry's factory: one stage's engine (an engines.registry.EngineRequest; the file is
    the one :func:`stage_files` chose)."""
    precision = request.precision or "fp32"
    trunk = reduced_stages(request.manifest, precision).get(request.spec.name)
    if trunk is None:
        return OvEngine(request.spec, request.file, "fp32", request.threads)
    cut = trunk[0] if "bf16" in precision and len(trunk) == 1 else None
    return OvEngine(request.spec, request.file, precision, request.threads, bf16_trunk=cut)


def default_cache_dir() -> Path:
    return cache_root() / CACHE_SUBDIR


def _openvino():
    try:
        import openvino
    except ImportError:
        raise UserError(f"backend {BACKEND} needs OpenVINO, which is not installed: {INSTALL_HINT}") from None
    return openvino


class OvEngine(Engine):
    backend = BACKEND

    def __init__(self, spec: StageSpec, graph_path: Path, precision: str = "fp32", threads: Optional[int] = None,
                 hint: str = "latency", cache_dir: Optional[Path] = None, bf16_trunk: Optional[str] = None):
        super().__init__(spec)
        if hint not in HINTS:
            raise UserError(f"backend {BACKEND}: hint {hint!r}; expected one of {', '.join(HINTS)}")
        if precision not in PRECISIONS:
            raise UserError(f"backend {BACKEND}: --precision {precision}; expected one of {', '.join(PRECISIONS)}")
        self.graph_path = Path(graph_path)
        self.precision, self.threads, self.hint = precision, threads, hint
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.bf16_trunk = bf16_trunk if "bf16" in precision else None
        self.compiled = None
        self.compile_seconds: Optional[float] = None
        self.cache_hit: Optional[bool] = None
        self._requests: list = []
        self._parts: list = []
        self._part_requests: list = []

    def compile_config(self, bf16: Optional[bool] = None) -> Dict[str, str]:
        """The CPU plugin options this engine compiles with (strings, as OpenVINO takes them)."""
        bf16 = "bf16" in self.precision if bf16 is None else bf16
        config = {"PERFORMANCE_HINT": self.hint.upper(), "INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32"}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = str(int(self.threads))
        return config

    def _activate_impl(self) -> None:
        ov = _openvino()
        if not self.graph_path.is_file():
            raise UserError("graph file is missing", self.graph_path)
        core = ov.Core()
        before: Dict[str, int] = {}
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            core.set_property({"CACHE_DIR": str(self.cache_dir)})
            before = _cache_blobs(self.cache_dir)
        except OSError:         # an unwritable cache only makes the next start slower
            pass
        started = time.perf_counter()
        try:
            if self.bf16_trunk:
                from .ov_split import split_at_trunk

                parts = split_at_trunk(core.read_model(str(self.graph_path)), self.bf16_trunk)
                if len(parts) == 1:
                    raise UserError(f"has no trunk {self.bf16_trunk!r} to run in BF16 (the manifest's trunk does not "
                                    "name nodes of this graph); re-export the model", self.graph_path)
                self._parts = [(core.compile_model(model, "CPU", self.compile_config(bf16)), links)
                               for model, bf16, links in parts]
                self.compiled = self._parts[-1][0]
            else:
                self._parts = []
                self.compiled = core.compile_model(str(self.graph_path), "CPU", self.compile_config())
        except RuntimeError as exc:
            detail = (str(exc).strip().splitlines() or [""])[0]
            raise UserError(f"OpenVINO could not compile it for the CPU: {detail}", self.graph_path) from None
        self.compile_seconds = time.perf_counter() - started
        self.cache_hit = bool(before) and _cache_blobs(self.cache_dir) == before
        self._part_requests = [compiled.create_infer_request() for compiled, _ in self._parts]
        count = 1
        if self.hint == "throughput" and not self._parts:
            count = max(1, int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self._requests = [self.compiled.create_infer_request() for _ in range(count)]
        # by the StageSpec's names: an output port may carry several tensor names
        self._outputs = list(self.spec.output_names) or [o.get_any_name() for o in self.compiled.outputs]

    def _infer_impl(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        if self._parts:                     # a stage cut at its trunk runs whole batches through its parts
            return self._run_parts(feed)
        batch = next(iter(feed.values())).shape[0] if feed else 1
        parts = min(len(self._requests), batch)
        if parts <= 1:
            self._requests[0].infer(feed)
            # copies: the request's output buffers are reused by its next call
            return {name: np.array(self._requests[0].get_tensor(name).data) for name in self._outputs}
        # throughput: split the batch over the requests (tensors with the batch axis only)
        batched = {t.name for t in self.spec.inputs if t.shape and t.shape[0] == "batch"}
        bounds = np.linspace(0, batch, parts + 1).astype(int)
        for request, lo, hi in zip(self._requests, bounds[:-1], bounds[1:]):
            request.start_async({k: np.ascontiguousarray(v[lo:hi]) if k in batched else v for k, v in feed.items()})
        pieces = []
        for request in self._requests[:parts]:
            request.wait()
            pieces.append({name: np.array(request.get_tensor(name).data) for name in self._outputs})
        return {name: np.concatenate([p[name] for p in pieces]) for name in self._outputs}

    def _run_parts(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """before (f32) -> trunk (bf16) -> after (f32); ``links`` names each part's inputs in the
        stage's feed or in an earlier part's outputs."""
        values: Dict[str, np.ndarray] = dict(feed)
        for request, (compiled, links) in zip(self._part_requests, self._parts):
            request.infer({name: values[source] for name, source in links.items()})
            for port in compiled.outputs:
                data = request.get_tensor(port).data
                values.update((name, data) for name in port.get_names())
        return {name: np.array(values[name]) for name in self._outputs}

    def _deactivate_impl(self) -> None:
        self._requests, self._parts, self._part_requests, self.compiled = [], [], [], None


def _cache_blobs(folder: Path) -> Dict[str, int]:
    """{blob: mtime}: OpenVINO names a blob by a hash of the graph and the compile options and
    rewrites it when the graph changed, so a compile that wrote no blob and touched none was
    served from the cache."""
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.blob")} if folder.is_dir() else {}
