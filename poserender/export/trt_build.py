"""``poserender build``: ONNX stages -> TensorRT plans, per stage and per device.

* The optimisation profile comes from the StageSpec (min/opt/max batch on the "batch" axes).
* ``--precision fp16|bf16`` sets the builder flag and pins to FP32 (OBEY_PRECISION_CONSTRAINTS)
  every layer known to be unsafe in reduced precision: normalisation, softmax, warps and
  gathers of coordinates, reductions, exp/log/pow/sqrt/division, and everything outside the
  convolutional trunk (a node's trunk is the first component of its scope name, e.g.
  ``/unet_stageC/...``; scopes without a convolution are pre/post-processing on canvas-pixel
  coordinates, whose squares overflow FP16). The pinned layers are named in the manifest.
* A reduced-precision plan that produces NaN/inf on the verification inputs fails the build
  with the layers that cause it, found by bisection (pinning halves of the trunk to FP32).
* ``--precision int8`` builds each stage's TensorRT-ready Q/DQ graph (manifest ``int8_trt``,
  ``export --precision int8 --int8-target trt|both``) by explicit quantization: a strongly typed
  network where TensorRT has one, no precision flags, no pinning (the graph's types decide);
  stages without such a graph (the per-identity source stage) build in FP32. The plan records
  the graph and its sha256, so a re-calibrated graph makes the plan stale.
* The timing cache is kept per GPU model and TensorRT version, and reused by every build.
* A progress line shows the elapsed time while TensorRT builds.

Everything that needs TensorRT is imported inside functions; the precision policy (which layers
stay FP32, the NaN/inf bisection) is in trt_precision.py; :func:`profile_shapes` and
:func:`timing_cache_file` are plain code too, all tested on a CPU.
"""
from __future__ import annotations

import datetime
import re
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, TextIO, Tuple

import numpy as np

from ..errors import UserError
from ..specs import StageSpec
from .trt_precision import _pin_layers, find_nonfinite_layers, fp32_nodes
from .verify import stage_feeds

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
OPTIMIZATION_LEVELS = range(0, 6)        # TensorRT's builder_optimization_level, default 3
INSTALL_HINT = ("TensorRT is not installed here: on a machine with an NVIDIA GPU run "
                "`pip install tensorrt pycuda` (TensorRT's wheels download from NVIDIA's index, "
                "pypi.nvidia.com), or `pip install \".[gpu]\"`; `poserender doctor` shows what is usable")


def require_tensorrt():
    """The tensorrt module, or a UserError that says how to get it."""
    try:
        import tensorrt
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return tensorrt


def profile_shapes(spec: StageSpec) -> Dict[str, Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]]:
    """(min, opt, max) shapes of every input with a batch axis (static inputs need none)."""
    return {t.name: tuple(t.concrete_shape(b) for b in (spec.min_batch, spec.opt_batch, spec.max_batch))
            for t in spec.inputs if "batch" in t.shape}


def timing_cache_file(cache_dir: Path, gpu_name: str, compute_capability: str, tensorrt_version: str) -> Path:
    """One timing cache per GPU model and TensorRT version (timings do not carry across either)."""
    slug = re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-") or "gpu"
    return Path(cache_dir) / f"{slug}-sm{compute_capability.replace('.', '')}-trt{tensorrt_version}.timing"


def plan_file(stage: str, precision: str, device: int) -> str:
    return f"{stage}.{precision}.gpu{device}.plan"


class ElapsedLine:
    """``building frame fp16 on GPU 0 ... 42 s`` rewritten once a second on a terminal; always a
    final line with the total, so a silent 10-minute build is never silent."""

    def __init__(self, label: str, stream: TextIO = sys.stderr, interval: float = 1.0):
        self.label, self.stream, self.interval = label, stream, interval
        self.live = bool(getattr(stream, "isatty", lambda: False)())
        self._stop = threading.Event()
        self.seconds = 0.0

    def __enter__(self) -> "ElapsedLine":
        self._started = time.perf_counter()
        self.stream.write(f"{self.label} ...")
        self.stream.flush()
        if self.live:
            self._thread = threading.Thread(target=self._tick, daemon=True)
            self._thread.start()
        return self

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            self.stream.write(f"\r{self.label} ... {time.perf_counter() - self._started:.0f} s ")
            self.stream.flush()

    def __exit__(self, exc_type, *exc) -> None:
        self._stop.set()
        if self.live:
            self._thread.join()
        self.seconds = time.perf_counter() - self._started
        verdict = "failed" if exc_type else "done"
        self.stream.write(f"\r{self.label} ... {verdict} in {self.seconds:.1f} s\n")
        self.stream.flush()


def build_plan(onnx_path: Path, spec: StageSpec, precision: str, pinned: Sequence[str],
               timing_cache: Optional[Path], optimization_level: int = 3) -> Tuple[bytes, List[str]]:
    """Serialized plan bytes and the layer names actually pinned to FP32 (TensorRT 10 API;
    the caller has made the target GPU current)."""
    trt = require_tensorrt()
    if precision in ("fp16", "bf16"):
        require_weak_typing(trt, precision)               # before any build work: TensorRT 11 has none
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # 0 = the default network: explicit batch is the only mode since TensorRT 10 (EXPLICIT_BATCH is
    # deprecated and ignored) and every network is strongly typed in TensorRT 11 (the flag is ignored).
    # A Q/DQ graph (int8) is built strongly typed where TensorRT has it (explicit quantization).
    network = builder.create_network(trt_int8_network_flags(trt) if precision == "int8" else 0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        # str(ParserError) names the node and operator; desc() alone does not
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"TensorRT cannot parse it: {errors}", onnx_path)
    config = builder.create_builder_config()
    config.builder_optimization_level = int(optimization_level)
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in profile_shapes(spec).items():
        profile.set_shape(name, low, opt, high)          # raises RuntimeError on min > opt > max
    config.add_optimization_profile(profile)
    pinned_layers: List[str] = []
    if precision == "int8":
        for flag in trt_int8_builder_flags(trt):          # none on a strongly typed network
            config.set_flag(flag)
    elif precision != "fp32":
        config.set_flag(trt.BuilderFlag.FP16 if precision == "fp16" else trt.BuilderFlag.BF16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        pinned_layers = _pin_layers(trt, network, set(pinned))
    cache = _attach_timing_cache(config, timing_cache) if timing_cache is not None else None
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(f"TensorRT failed to build stage {spec.name!r} (see the TensorRT messages above)", onnx_path)
    if cache is not None:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        _write_bytes(timing_cache, bytes(memoryview(cache.serialize())))     # IHostMemory: buffer protocol
    return bytes(memoryview(serialized)), pinned_layers


def _strongly_typed_flag(trt) -> Optional[int]:
    """``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` where this TensorRT (>= 10) has it, else None."""
    from ..engines.compat import version_tuple

    flag = getattr(getattr(trt, "NetworkDefinitionCreationFlag", None), "STRONGLY_TYPED", None)
    return flag if version_tuple(getattr(trt, "__version__", "0"))[0] >= 10 else None


def trt_int8_builder_flags(trt) -> List[Any]:
    """The ``trt.BuilderFlag`` values to set when building an engine from a Q/DQ graph (qdq_check).

    TensorRT 10 builds a network with Q/DQ layers by explicit quantization: the Q/DQ scales are the
    INT8 ranges, there is no calibrator (IInt8Calibrator is deprecated since 10.1, "superseded by
    explicit quantization"), and the developer guide ("Explicit Quantization") says precision-control
    build flags "are not required and should not be specified"; it recommends a strongly typed
    network (``1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)`` to ``create_network``),
    in which every tensor keeps its ONNX type: the Q/DQ-wrapped layers run INT8, every float32 layer
    (the FP32 head, warps, InstanceNorm) runs FP32 (TF32 where allowed). Setting FP16/INT8/BF16 on a
    strongly typed network is an error. TensorRT 11 removes BuilderFlag.INT8/FP16 altogether.

    So: no precision flag (an empty list) on TensorRT >= 10 with a strongly typed network. For a
    weakly typed network on TensorRT 8.x-10.x, ``INT8`` was the switch that enabled any quantized
    kernel ("to enable any quantized operations, the INT8 flag must be set", TensorRT 8 guide);
    ``FP16`` additionally lets the non-quantized layers run in half precision (not measured here:
    the FP32 policy of this export keeps them FP32, and FP16 would need the FP16 gate of
    ``poserender verify``). That is what this returns when ``trt`` lacks strongly typed networks or
    is older than 10 (``trt.__version__``): ``[trt.BuilderFlag.INT8]``.
    Sources: docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/
    quantized-types-explicit-quantization.html; .../api/c_api/deprecated.html;
    .../api/migration/tensorrt-10x-to-11x-python-api-reference.html; Python API
    NetworkDefinitionCreationFlag.STRONGLY_TYPED.
    """
    return [] if _strongly_typed_flag(trt) is not None else [trt.BuilderFlag.INT8]


def trt_int8_network_flags(trt) -> int:
    """``create_network`` flags for a Q/DQ graph: STRONGLY_TYPED where this TensorRT has it (>= 10),
    else 0 (weakly typed, with :func:`trt_int8_builder_flags`'s INT8 flag)."""
    flag = _strongly_typed_flag(trt)
    return 0 if flag is None else 1 << int(flag)


def require_weak_typing(trt, precision: str) -> None:
    """FP16/BF16 here are builder flags with per-layer FP32 pinning ("weak typing"). TensorRT
    10.12 deprecated that and TensorRT 11 removed it (BuilderFlag.FP16/BF16,
    OBEY_PRECISION_CONSTRAINTS, ILayer.precision/set_output_type; every network is strongly
    typed, precision must be in the ONNX graph as Casts). A clear error instead of an AttributeError."""
    flag = "FP16" if precision == "fp16" else "BF16"
    if not all(hasattr(trt.BuilderFlag, f) for f in (flag, "OBEY_PRECISION_CONSTRAINTS")):
        raise UserError(f"--precision {precision} needs TensorRT 10.x: TensorRT {trt.__version__} has no "
                        f"BuilderFlag.{flag} (TensorRT 11 builds strongly typed networks only, the precision "
                        "must already be in the ONNX graph); use --precision fp32 here, or TensorRT 10.x "
                        "(`pip install \"tensorrt>=10,<11\"`)")


def _attach_timing_cache(config, path: Path):
    """The timing cache from ``path`` (or a new one) attached to ``config``. A file TensorRT
    rejects (corrupt, or written by another TensorRT/GPU: ``set_timing_cache`` returns False
    with ignore_mismatch=False) is replaced by an empty cache, not an error: timings only speed
    the build up."""
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return cache
    print(f"poserender: timing cache {path} not usable by this TensorRT/GPU; starting a new one",
          file=sys.stderr)
    cache = config.create_timing_cache(b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def _write_bytes(path: Path, data: bytes) -> None:
    import os

    from ..fileio import temp_file_beside
    fd, tmp = temp_file_beside(path)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def build_record_extra(seconds: float, optimization_level: int, fp32_reasons: Mapping[str, str],
                       timing_cache: Optional[Path]) -> Dict[str, Any]:
    reasons: Dict[str, int] = {}
    for why in fp32_reasons.values():
        reasons[why] = reasons.get(why, 0) + 1
    return {"build_seconds": round(seconds, 1), "optimization_level": optimization_level,
            "fp32_reasons": reasons, "timing_cache": timing_cache.name if timing_cache else None,
            "built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def build_model(model_dir: Path, manifest: Dict[str, Any], engines: Sequence[Tuple[str, int]], precision: str,
                build_options: Dict[str, Any], timing_cache_dir: Optional[Path], optimization_level: int = 3,
                only_if_needed: bool = False, log: Callable[[str], None] = lambda s: None,
                stream: TextIO = sys.stderr) -> Dict[str, Any]:
    """Build (stage, device) plans into ``model_dir`` and return the updated manifest (not yet
    written). Reduced-precision plans are run once on the verification inputs; NaN/inf fails
    the build with the layers that cause it."""
    import onnx

    from ..engines import compat, cuda_mem
    from ..engines.trt_engine import TrtEngine
    from ..manifest import sha256_file

    trt = require_tensorrt()
    if precision in ("fp16", "bf16"):
        require_weak_typing(trt, precision)
    graphs = int8_graphs(model_dir, manifest) if precision == "int8" else {}
    manifest = dict(manifest)
    manifest["build"] = dict(build_options)
    records = list(manifest.get("engines", []))
    for stage_name, device in engines:
        index, stage = next((i, s) for i, s in enumerate(manifest["stages"]) if s["name"] == stage_name)
        if only_if_needed:
            try:
                compat.check_engine(model_dir, manifest, stage_name, device, precision)
                log(f"{stage_name} on GPU {device}: engine matches this machine, kept")
                continue
            except compat.EngineMismatch as exc:
                log(f"{stage_name} on GPU {device}: rebuilding ({exc})")
        spec = StageSpec.from_dict(stage)
        facts = compat.current_facts(device)
        graph = graphs.get(stage_name, spec.file)
        # an int8 build builds the stages without a Q/DQ graph (the source stage) in FP32
        stage_precision = "fp32" if precision == "int8" and stage_name not in graphs else precision
        # the FP32 graph's nodes matter only to FP16/BF16 (what to pin, what to bisect)
        model = onnx.load(str(model_dir / spec.file)) if stage_precision in ("fp16", "bf16") else None
        reasons = fp32_nodes(model) if model is not None else OrderedDict()
        cache = timing_cache_file(timing_cache_dir, facts.gpu_name, facts.compute_capability,
                                  facts.tensorrt) if timing_cache_dir else None
        name = plan_file(stage_name, precision, device)

        def build(pinned: Sequence[str]) -> Tuple[bytes, List[str], float]:
            with cuda_mem.DeviceContext(device), ElapsedLine(
                    f"building {stage_name} ({stage_precision}) on GPU {device} [{facts.gpu_name}]", stream) as line:
                data, layers = build_plan(model_dir / graph, spec, stage_precision, pinned, cache, optimization_level)
            return data, layers, line.seconds

        def nonfinite(data: bytes, layers: List[str]) -> bool:
            _write_bytes(model_dir / name, data)
            record = compat.engine_record(stage_name, device, name, sha256_file(model_dir / name), stage["sha256"],
                                          precision, stage["batch"], layers, facts)
            trial = {**manifest, "engines": [record]}
            feed = stage_feeds(manifest, index, _reference_outputs(model_dir, manifest, index))
            with TrtEngine(spec, model_dir, trial, device, precision) as engine:
                out = engine.infer(feed)
            return any(a.dtype.kind == "f" and not np.isfinite(a).all() for a in out.values())

        data, layers, seconds = build(list(reasons))
        if stage_precision == "int8" and nonfinite(data, layers):
            (model_dir / name).unlink(missing_ok=True)
            raise UserError(f"stage {stage_name!r} gives NaN/inf from its INT8 graph {graph}; re-export it "
                            "(another --calibration-method) or build with --precision fp32", model_dir / graph)
        if stage_precision in ("fp16", "bf16") and nonfinite(data, layers):
            trunk = [n.name for n in model.graph.node if n.name not in reasons and n.op_type not in ("Constant",)]
            culprits = find_nonfinite_layers(trunk, lambda extra: nonfinite(*build(list(reasons) + sorted(extra))[:2]))
            (model_dir / name).unlink(missing_ok=True)
            raise UserError(f"stage {stage_name!r} gives NaN/inf in {precision}" + (
                f"; layers that must stay FP32: {', '.join(culprits)}" if culprits else
                " even with every layer in FP32 (a model problem, not precision)") + "; use --precision fp32",
                model_dir / spec.file)
        _write_bytes(model_dir / name, data)
        record = compat.engine_record(
            stage_name, device, name, sha256_file(model_dir / name), stage["sha256"], precision, stage["batch"],
            layers or list(reasons), facts, build_record_extra(seconds, optimization_level, reasons, cache))
        if graph != spec.file:
            record.update(graph=graph, graph_sha256=sha256_file(model_dir / graph))
        records = [r for r in records if not (r["stage"] == stage_name and int(r["device"]) == device
                                              and r["precision"] == precision)] + [record]
        log(f"{stage_name} on GPU {device}: {name} ({precision}, {len(record['fp32_layers'])} layers kept FP32, "
            f"{seconds:.1f} s)")
    manifest["engines"] = records
    return manifest


def int8_graphs(model_dir: Path, manifest: Mapping[str, Any]) -> Dict[str, str]:
    """{stage: its TensorRT-ready Q/DQ graph} from the manifest's ``int8_trt`` entry, each checked
    against TensorRT's Q/DQ rules; a UserError saying how to export them when there are none."""
    from ..manifest import INT8_TRT_KEY
    from .qdq_check import check_qdq

    entry = manifest.get(INT8_TRT_KEY)
    if not isinstance(entry, dict) or not entry.get("stages"):
        hint = " (its INT8 graphs are for ONNX Runtime CPU: uint8 activations)" if manifest.get("int8") else ""
        raise UserError(f"has no TensorRT INT8 graphs{hint}; export with --precision int8 --int8-target trt "
                        "(or both) --calibrate KEYPOINTS ... first", model_dir)
    graphs = {s["name"]: s["file"] for s in entry["stages"]}
    for stage, file in graphs.items():
        if not (Path(model_dir) / file).is_file():
            raise UserError(f"TensorRT INT8 graph {file!r} of stage {stage!r} is missing; re-export it", model_dir)
        report = check_qdq(Path(model_dir) / file)
        if not report.ok:
            raise UserError(f"{file} breaks TensorRT's Q/DQ rules: {report.summary()}", Path(model_dir) / file)
    return graphs


def _reference_outputs(model_dir: Path, manifest: Mapping[str, Any], stage_index: int) -> Dict[str, np.ndarray]:
    """Outputs of the stages before ``stage_index`` on ONNX Runtime CPU (inputs of later stages)."""
    from .verify import run_onnx

    outputs: Dict[str, np.ndarray] = {}
    for i in range(stage_index):
        feed = stage_feeds(manifest, i, outputs)
        outputs.update(run_onnx(model_dir / manifest["stages"][i]["file"], feed))
    return outputs
