"""Calibrated INT8 (QDQ) graphs beside the FP32 ones, behind a measured quality gate.

``add_int8(model_dir, data)`` takes an exported pose2img folder and real inputs (one identity
and a keypoint sequence), and writes ``frame.int8.onnx`` plus an ``int8`` entry in
manifest.json:

1. The FP32 source stage runs once on the identity; its outputs and the keypoint frames are the
   frame stage's inputs (calibration never sees random tensors).
2. ``onnxruntime.quantization.quantize_static`` (QDQ, uint8 activations, int8 weights) quantizes
   the stage's convolutional trunk (stage C's U-Net); everything else stays FP32 and is named
   in the manifest: the trunk's output head (its last conv), whatever follows it (tanh/sigmoid,
   fusion, to-uint8), the target heat maps, limb fits and warps.
3. The frames are split into disjoint sets: calibration, method selection (``auto`` only) and
   held-out gate frames. ``auto`` calibrates with MinMax, entropy and percentile and keeps the
   one with the best PSNR on the selection frames.
4. On the gate frames the INT8 graph's uint8 frames are compared with the FP32 graph's (PSNR,
   SSIM, max abs error; :mod:`poserender.export.quality`). Below the gate nothing is written
   (UserError with the numbers); above it the graph is moved into place and the manifest
   updated (atomically).

PSC models (``"family": "psc"``): the same for CT-Net's frame stage, fed by the FP32 source
stage on (I0, S0) and the FP32 parsing stage on the target poses; its InstanceNormalization
nodes stay FP32 (manifest group ``instance_norm``), as do its output, flow and occlusion heads
and the warps (:data:`FP32_OPS`, :data:`HEADS_OUTSIDE_TRUNK`).

The source stage stays FP32: it runs once per identity, so INT8 there would cost quality for no
per-frame speed.

Targets (``target``, CLI ``--int8-target``): ``ort`` (default) writes the graph above, for ONNX
Runtime CPU (asymmetric uint8 activations). ``trt`` writes ``frame.int8.trt.onnx`` and the
manifest entry ``int8_trt`` (the same record, plus ``target`` and the Q/DQ check): TensorRT's
explicit quantization is symmetric INT8 only, so activations are int8 with zero point 0 (per
tensor), weights int8 symmetric per output channel, biases stay float (TensorRT has no INT32
DequantizeLinear) and Relu/Clip stay in the graph (symmetric ranges do not absorb them). Its
gate is measured on ONNX Runtime CPU, which runs the same S8S8 Q/DQ graph, as TensorRT's stand-in;
:mod:`poserender.export.qdq_check` checks TensorRT's Q/DQ rules and any finding refuses the
export. ``both`` calibrates once (the collected ranges are cached and reused) and writes both.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import io
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import UserError
from ..fileio import temp_dir_beside
from ..manifest import INT8_KEY, INT8_TRT_KEY, MANIFEST, read_manifest, sha256_file, write_json_atomic
from .quality import QualityGate, frame_quality

METHODS = ("minmax", "entropy", "percentile")
CALIBRATION_CHOICES = METHODS + ("auto",)
#: (family, stage) -> ONNX node-name prefixes of the convolutional trunk INT8 may take
TRUNKS: Dict[Tuple[str, str], Tuple[str, ...]] = {
    ("pose2img", "frame"): ("/unet_stageC/",),
    # PSC's CT-Net: encoders, bottleneck, style codes and decoders; its heads (/output, /flow_out,
    # /occ_mask), the flow warps (GridSample) and the label masks are outside the trunk
    ("psc", "frame"): ("/encoder", "/decoder", "/bottle_neck", "/style_conv"),
}
#: stages whose trunk prefixes hold no output head of their own (the heads are outside the trunk)
HEADS_OUTSIDE_TRUNK = {("psc", "frame")}
#: op types kept FP32 even inside the trunk (PSC: InstanceNorm, as in the FP16 builds), manifest group names
FP32_OPS: Dict[Tuple[str, str], Dict[str, str]] = {
    ("psc", "frame"): {"InstanceNormalization": "instance_norm"},
}
#: the calibrator's histogram/percentile settings (onnxruntime's defaults, written down)
PERCENTILE = 99.999
#: --int8-target values: the graph(s) written
TARGETS = ("ort", "trt", "both")
#: manifest key of the TensorRT-ready (symmetric INT8) graphs; ``int8`` (INT8_KEY) stays the ORT CPU one
#: target -> (manifest key, file infix, what the record says)
TARGET_RECORDS = {
    "ort": (INT8_KEY, "int8", {"activations": "uint8 (asymmetric, per tensor)"}),
    "trt": (INT8_TRT_KEY, "int8.trt", {
        "target": "TensorRT explicit quantization (symmetric INT8 Q/DQ); measured on ONNX Runtime CPU",
        "activations": "int8 (symmetric, zero point 0, per tensor)",
        "bias": "float (not quantized: TensorRT has no INT32 DequantizeLinear)"}),
}
#: op types kept FP32 in the TensorRT graph on top of FP32_OPS, manifest group names: TensorRT takes
#: pre-quantized (DequantizeLinear) weights for its linear layers only; a BatchNormalization the
#: pre-processing could not fold into a conv would otherwise get int8 scale/variance constants
TRT_FP32_OPS: Dict[str, str] = {"BatchNormalization": "batch_norm"}
#: quantize_static's extra options for the TensorRT graph (onnxruntime.quantization.quantize_static doc):
#: symmetric int8 activations and weights, float biases, Relu/Clip kept as nodes
TRT_EXTRA_OPTIONS = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                     "QDQKeepRemovableActivations": True}


def int8_file(stage_file: str, target: str = "ort") -> str:
    """``frame.onnx`` -> ``frame.int8.onnx`` (target ``trt``: ``frame.int8.trt.onnx``)."""
    infix = TARGET_RECORDS[target][1]
    stem, dot, ext = stage_file.rpartition(".")
    return f"{stem}.{infix}.{ext}" if dot else f"{stage_file}.{infix}"


@dataclasses.dataclass
class CalibrationData:
    """One identity and a keypoint sequence, in the frame stage's units: ``source_feed`` is the
    source stage's inputs (image (1, 3, H, W) BGR [-1, 1], keypoints (1, 122, 2) canvas px,
    validity (1, 122)); targets are (T, 122, 2) canvas px and (T, 122) validity. ``described``
    names the files they came from (recorded in the manifest)."""

    source_feed: Dict[str, np.ndarray]
    target_keypoints: np.ndarray
    target_valid: np.ndarray
    described: Dict[str, Any]


@dataclasses.dataclass
class FrameSplit:
    calibration: List[int]
    selection: List[int]
    gate: List[int]


def _spread(n: int, k: int) -> np.ndarray:
    """``k`` distinct positions in ``range(n)`` spread evenly from the first to the last."""
    if k == 1:
        return np.array([n // 2])
    return np.floor(np.arange(k) * (n - 1) / (k - 1) + 0.5).astype(int)


def split_frames(total: int, calibration: int, gate: int, selection: int = 0) -> FrameSplit:
    """Disjoint frame indices: calibration frames spread over the head of the sequence, gate and
    selection frames spread over its tail (the last quarter, or more when they need it), so the
    gate sees poses that are not neighbours of a calibration pose."""
    need = calibration + gate + selection
    if min(calibration, gate) < 1 or selection < 0:
        raise UserError(f"calibration frames {calibration}, gate frames {gate}: expected at least 1 each")
    if total < need:
        raise UserError(f"the keypoint sequence has {total} usable frames; calibration ({calibration}) + "
                        f"held-out gate ({gate})" + (f" + method selection ({selection})" if selection else "")
                        + f" need {need} (use --frames to calibrate on fewer)")
    tail = min(max(gate + selection, -(-total // 4)), total - calibration)
    cal = _spread(total - tail, calibration)
    held = np.arange(total - tail, total)[_spread(tail, gate + selection)]
    gate_mask = np.zeros(len(held), bool)
    gate_mask[_spread(len(held), gate)] = True
    return FrameSplit(cal.tolist(), held[~gate_mask].tolist(), held[gate_mask].tolist())


# -- which nodes INT8 takes ---------------------------------------------------------------------
@dataclasses.dataclass
class QuantPlan:
    """``nodes_to_exclude`` for quantize_static and, for the manifest, the excluded nodes INT8
    could otherwise take, grouped by where they are (``warp``, ``heatmaps``, ``output_head``...)."""

    trunk_prefixes: Tuple[str, ...]
    nodes_to_exclude: List[str]
    excluded: Dict[str, List[str]]
    trunk_nodes: int

    def manifest_entry(self) -> Dict[str, Any]:
        return {"trunk": list(self.trunk_prefixes), "trunk_nodes_quantized": self.trunk_nodes,
                "excluded_nodes": self.excluded,
                "excluded_counts": {k: len(v) for k, v in self.excluded.items()}}


def _quantizable_op_types() -> set:
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return set(QDQRegistry) | set(QLinearOpsRegistry)


def quantization_plan(model, trunk_prefixes: Sequence[str], head_in_trunk: bool = True,
                      fp32_ops: Optional[Dict[str, str]] = None) -> QuantPlan:
    """Everything outside the trunk, each trunk's last Conv (the output head) and anything after
    it stays FP32. ``model`` is an onnx.ModelProto in topological order (as exported).
    ``head_in_trunk=False``: the prefixes hold no head (it is outside them). ``fp32_ops``: op type
    -> manifest group of nodes kept FP32 inside the trunk too (e.g. InstanceNormalization)."""
    fp32_ops = fp32_ops or {}
    quantizable = _quantizable_op_types()
    nodes = list(model.graph.node)
    unnamed = [i for i, n in enumerate(nodes) if not n.name]
    if unnamed:
        raise ValueError(f"{len(unnamed)} graph nodes have no name; nodes_to_exclude needs names")
    in_trunk = [any(n.name.startswith(p) for p in trunk_prefixes) for n in nodes]
    heads = set()
    for prefix in trunk_prefixes:
        convs = [i for i, n in enumerate(nodes) if n.name.startswith(prefix) and n.op_type in ("Conv", "ConvTranspose")]
        if not convs:
            raise ValueError(f"no Conv under {prefix!r}: the graph does not look like this stage's export")
        if not head_in_trunk:
            continue
        heads.add(convs[-1])
        for i in range(convs[-1] + 1, len(nodes)):        # the trunk's tail after its head
            if nodes[i].name.startswith(prefix):
                heads.add(i)
    exclude, excluded = [], {}
    trunk_count = 0
    for i, node in enumerate(nodes):
        if in_trunk[i] and i not in heads and node.op_type not in fp32_ops:
            trunk_count += node.op_type in quantizable
            continue
        exclude.append(node.name)
        if node.op_type not in quantizable:
            continue
        group = fp32_ops[node.op_type] if in_trunk[i] and node.op_type in fp32_ops else \
            "output_head" if i in heads else (node.name.strip("/").split("/")[0] if "/" in node.name.strip("/")
                                                  else "fusion_and_output")
        excluded.setdefault(group, []).append(node.name)
    return QuantPlan(tuple(trunk_prefixes), exclude, excluded, trunk_count)


# -- calibration --------------------------------------------------------------------------------
def _frame_feed(data: CalibrationData, source_out: Dict[str, np.ndarray],
                indices: Sequence[int]) -> Dict[str, np.ndarray]:
    idx = np.asarray(indices)
    return {"target_keypoints": np.ascontiguousarray(data.target_keypoints[idx], dtype=np.float32),
            "target_valid": np.ascontiguousarray(data.target_valid[idx], dtype=np.float32),
            "source_keypoints": data.source_feed["source_keypoints"],
            "source_valid": data.source_feed["source_valid"], **source_out}


def _pose2img_feeds(model_dir: Path, stages: Dict[str, Any], data: CalibrationData,
                    log: Callable[[str], None]) -> Callable[[Sequence[int]], Dict[str, np.ndarray]]:
    """pose2img: the FP32 source stage once on the identity; frame feeds = its outputs + the poses."""
    log(f"INT8: running the FP32 source stage on {data.described.get('source_image', 'the source')}")
    source_out = dict(zip(["source_parts", "background"],
                          _session(model_dir / stages["source"]["file"]).run(["source_parts", "background"],
                                                                            data.source_feed)))
    return lambda indices: _frame_feed(data, source_out, indices)


def _psc_feeds(model_dir: Path, stages: Dict[str, Any], data: CalibrationData,
               log: Callable[[str], None]) -> Callable[[Sequence[int]], Dict[str, np.ndarray]]:
    """psc: the FP32 source stage once on (I0, S0), then per batch the FP32 parsing stage on the
    target poses; CT-Net's feeds = the target labels + the source features (not parsing_code)."""
    log(f"INT8: running the FP32 source and parsing stages on {data.described.get('source_image', 'the source')}")
    source = _session(model_dir / stages["source"]["file"])
    names = [o.name for o in source.get_outputs()]
    source_out = dict(zip(names, source.run(names, data.source_feed)))
    parsing = _session(model_dir / stages["parsing"]["file"])

    def feed(indices: Sequence[int]) -> Dict[str, np.ndarray]:
        idx = np.asarray(indices)
        labels = parsing.run(["target_labels"], {
            "target_keypoints": np.ascontiguousarray(data.target_keypoints[idx], dtype=np.float32),
            "target_valid": np.ascontiguousarray(data.target_valid[idx], dtype=np.float32),
            "parsing_code": source_out["parsing_code"]})[0]
        return {"target_labels": labels, **{k: v for k, v in source_out.items() if k != "parsing_code"}}
    return feed


#: family -> builder of the quantized stage's real feeds (model_dir, stages, data, log) -> indices -> feed
FEED_BUILDERS = {"pose2img": _pose2img_feeds, "psc": _psc_feeds}
#: family -> why the other stages stay FP32 (recorded in the manifest)
FP32_STAGES_WHY = {
    "pose2img": "the source stage runs once per identity: INT8 there costs quality, saves no frame time",
    "psc": "source runs once per identity and interp on key poses only (no frame time to save); parsing "
           "(AA-Net) ends in an argmax whose flipped labels change whole regions: not quantized",
}


def _batches(indices: Sequence[int], batch: int) -> List[List[int]]:
    return [list(indices[i:i + batch]) for i in range(0, len(indices), batch)]


class _FeedReader:
    """onnxruntime CalibrationDataReader over frame-stage feeds (one batch each); ``set_range``
    lets the calibrator take one batch at a time (CalibStridedMinMax), so memory stays at one
    batch's intermediate tensors whatever the number of frames."""

    def __init__(self, feeds: List[Dict[str, np.ndarray]]):
        self.feeds, self.start, self.end, self.cursor = feeds, 0, len(feeds), 0

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        if self.start + self.cursor >= self.end:
            return None
        self.cursor += 1
        return self.feeds[self.start + self.cursor - 1]

    def __iter__(self):
        return self

    def __next__(self):
        feed = self.get_next()
        if feed is None:
            raise StopIteration
        return feed

    def __len__(self) -> int:
        return len(self.feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.end, self.cursor = start_index, min(end_index, len(self.feeds)), 0


def calibration_cache_supported() -> bool:
    """Whether this onnxruntime's quantize_static can save and reuse calibrated ranges
    (``calibration_cache_path``): then ``--int8-target both`` calibrates once."""
    import inspect

    from onnxruntime.quantization import quantize_static

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


def quantize_graph(fp32_path: Path, out_path: Path, plan: QuantPlan, feeds: List[Dict[str, np.ndarray]],
                   method: str, per_channel: bool = False, target: str = "ort",
                   calibration_cache: Optional[Path] = None) -> None:
    """QDQ-quantize ``fp32_path`` (already pre-processed) into ``out_path`` with ``method``.
    ``target`` ``ort``: uint8 activations, int8 weights (per channel if ``per_channel``); ``trt``:
    symmetric int8 activations and per-channel weights, float biases (:data:`TRT_EXTRA_OPTIONS`).
    ``calibration_cache``: a JSON file of calibrated ranges; written by the first call, read
    (no calibration run) by a later call with the same graph and method (the calibrator records
    every tensor of the quantizable op types whatever ``plan`` excludes, so the ranges serve any plan)."""
    import logging

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in METHODS:
        raise UserError(f"calibration method {method!r}; expected one of {', '.join(CALIBRATION_CHOICES)}")
    if target not in ("ort", "trt"):
        raise ValueError(f"target {target!r}; expected ort or trt")
    calibrate = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}[method]
    extra: Dict[str, Any] = {"CalibStridedMinMax": 1}   # one feed at a time (the name is historical: every method)
    if method == "percentile":
        extra["CalibPercentile"] = PERCENTILE
    activations = QuantType.QUInt8
    if target == "trt":
        extra.update(TRT_EXTRA_OPTIONS)
        activations, per_channel = QuantType.QInt8, True
    cache = {} if calibration_cache is None else {"calibration_cache_path": str(calibration_cache)}
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)            # the quantizer's advice about pre-processing
    try:
        with contextlib.redirect_stdout(io.StringIO()):     # the calibrators print progress to stdout
            quantize_static(str(fp32_path), str(out_path), _FeedReader(feeds), quant_format=QuantFormat.QDQ,
                            activation_type=activations, weight_type=QuantType.QInt8, per_channel=per_channel,
                            reduce_range=False, nodes_to_exclude=plan.nodes_to_exclude, calibrate_method=calibrate,
                            extra_options=extra, **cache)
    finally:
        root.setLevel(level)


def _session(path: Path, threads: Optional[int] = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _frames(session, feeds: List[Dict[str, np.ndarray]]) -> np.ndarray:
    return np.concatenate([session.run(["frames"], feed)[0] for feed in feeds])


# -- the INT8 export ----------------------------------------------------------------------------
def add_int8(model_dir: Path, data: CalibrationData, method: str = "auto", frames: int = 32, gate_frames: int = 16,
             selection_frames: int = 8, gate: QualityGate = QualityGate(), batch: int = 4, per_channel: bool = False,
             target: str = "ort", log: Callable[[str], None] = lambda s: None) -> Dict[str, Any]:
    """Quantize the frame stage of the pose2img export in ``model_dir`` (see the module doc).
    Returns the manifest's ``int8`` entry (target ``trt``: the ``int8_trt`` entry; ``both``: the
    ``int8`` one, see :func:`add_int8_targets`); raises UserError (nothing written) below the gate.
    PSC models: the CT-Net frame stage, fed by the FP32 source and parsing stages."""
    entries = add_int8_targets(model_dir, data, method, frames, gate_frames, selection_frames, gate, batch,
                               per_channel, target, log)
    return next(iter(entries.values()))


def _target_label(target: str) -> str:
    return "INT8" if target == "ort" else "INT8 (TensorRT Q/DQ)"


def add_int8_targets(model_dir: Path, data: CalibrationData, method: str = "auto", frames: int = 32,
                     gate_frames: int = 16, selection_frames: int = 8, gate: QualityGate = QualityGate(),
                     batch: int = 4, per_channel: bool = False, target: str = "ort",
                     log: Callable[[str], None] = lambda s: None) -> Dict[str, Dict[str, Any]]:
    """:func:`add_int8` for ``target`` ``ort``, ``trt`` or ``both``: {target: manifest entry}
    (``ort`` -> ``int8``, ``trt`` -> ``int8_trt``). ``both`` calibrates each method once and
    quantizes both graphs from the same ranges; each graph picks its method on the selection
    frames and must pass the gate, else neither is written. ``per_channel`` applies to ``ort``
    (``trt`` weights are always per channel)."""
    import onnx
    import onnxruntime
    from onnxruntime.quantization.preprocess import quant_pre_process

    from .qdq_check import check_qdq

    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    family = manifest.get("family", "pose2img")
    stages = {s["name"]: s for s in manifest["stages"]}
    targets = [(family, name) for name in stages if (family, name) in TRUNKS]
    if not targets:
        raise UserError(f"INT8 export supports {', '.join(f'{f} {s} stage' for f, s in TRUNKS)}; "
                        f"this is a {family} model", model_dir)
    if method not in CALIBRATION_CHOICES:
        raise UserError(f"--calibration-method {method!r}; expected one of {', '.join(CALIBRATION_CHOICES)}")
    if target not in TARGETS:
        raise UserError(f"--int8-target {target!r}; expected one of {', '.join(TARGETS)}")
    outputs = ["ort", "trt"] if target == "both" else [target]
    _, stage_name = targets[0]
    stage = stages[stage_name]
    batch = max(1, min(batch, int(stage["batch"]["max"])))
    split = split_frames(len(data.target_keypoints), frames, gate_frames, selection_frames if method == "auto" else 0)
    started = time.perf_counter()
    make_feed = FEED_BUILDERS[family](model_dir, stages, data, log)
    feeds = {name: [make_feed(b) for b in _batches(idx, batch)]
             for name, idx in (("calibration", split.calibration), ("selection", split.selection),
                               ("gate", split.gate))}
    fp32 = _session(model_dir / stage["file"])
    reference = {name: _frames(fp32, f) for name, f in feeds.items() if f}
    del fp32
    work = temp_dir_beside(model_dir / f".{INT8_KEY}")
    try:
        pre = work / "fp32.pre.onnx"
        quant_pre_process(str(model_dir / stage["file"]), str(pre), skip_symbolic_shape=True)
        pre_model = onnx.load(str(pre), load_external_data=False)
        plans = {t: quantization_plan(pre_model, TRUNKS[targets[0]],
                                      head_in_trunk=targets[0] not in HEADS_OUTSIDE_TRUNK,
                                      fp32_ops={**FP32_OPS.get(targets[0], {}), **(TRT_FP32_OPS if t == "trt" else {})})
                 for t in outputs}
        del pre_model
        candidates = list(METHODS) if method == "auto" else [method]
        share = len(outputs) > 1 and calibration_cache_supported()
        tried: Dict[str, List[Dict[str, Any]]] = {t: [] for t in outputs}
        checks: Dict[Tuple[str, str], Dict[str, Any]] = {}
        for name in candidates:
            cache = work / f"{name}.ranges.json" if share else None
            for t in outputs:
                t0 = time.perf_counter()
                graph = work / f"{name}.{t}.onnx"
                reused = cache is not None and cache.is_file()
                log(f"{_target_label(t)}: " + (f"quantizing the {stage_name} stage from the {name} ranges already "
                                                "calibrated ..." if reused else
                                                f"calibrating the {stage_name} stage with {name} on "
                                                f"{len(split.calibration)} frames ..."))
                # the calibrator records every tensor whatever the plan: cached ranges serve both plans
                quantize_graph(pre, graph, plans[t], feeds["calibration"], name, per_channel, target=t,
                               calibration_cache=cache)
                record = {"method": name, "calibrate_s": round(time.perf_counter() - t0, 1)}
                if reused:
                    record["ranges"] = "reused from the int8 calibration (calibrated once)"
                if t == "trt":
                    report = check_qdq(graph, int8_file(stage["file"], "trt"))
                    if not report.ok:
                        raise UserError(f"{report.summary()}; INT8 graphs not written (the FP32 export is complete "
                                        "and kept)", model_dir)
                    checks[(name, t)] = report.to_dict()
                if method == "auto":
                    q = frame_quality(reference["selection"], _frames(_session(graph), feeds["selection"]))
                    record.update(selection_psnr_db=q["psnr_db"], selection_ssim=q["ssim"])
                    psnr = q["psnr_db"] if q["psnr_db"] is not None else "inf"
                    log(f"  {name}{'' if t == 'ort' else ' (TensorRT Q/DQ)'}: PSNR {psnr} dB, SSIM {q['ssim']} "
                        f"on {len(split.selection)} selection frames")
                tried[t].append(record)
        psnr_of = lambda r: float("inf") if r.get("selection_psnr_db") is None else r["selection_psnr_db"]  # noqa: E731
        results: Dict[str, Tuple[str, Dict[str, Any]]] = {}
        verdicts = []
        for t in outputs:
            chosen = max(tried[t], key=psnr_of)["method"] if method == "auto" else method
            quality = frame_quality(reference["gate"], _frames(_session(work / f"{chosen}.{t}.onnx"), feeds["gate"]))
            verdict = gate.verdict(quality, f"{_target_label(t)} {stage_name} stage ({chosen} calibration) vs FP32")
            log(verdict)
            results[t] = (chosen, quality)
            verdicts.append((verdict, gate.passes(quality)))
        if not all(ok for _, ok in verdicts):
            raise UserError(f"{'; '.join(v for v, _ in verdicts)}; INT8 graphs not written (the FP32 export is "
                            "complete and kept; lower --gate-psnr, try another --calibration-method or more --frames)",
                            model_dir)
        entries: Dict[str, Dict[str, Any]] = {}
        for t in outputs:
            chosen, quality = results[t]
            key, _, described = TARGET_RECORDS[t]
            path = model_dir / int8_file(stage["file"], t)
            os.replace(work / f"{chosen}.{t}.onnx", path)
            weights = "per channel" if per_channel or t == "trt" else "per tensor"
            entry = {
                "format": "QDQ", **described,
                "weights": f"int8 (symmetric, {weights})", "reduce_range": False,
                "quantizer": f"onnxruntime.quantization.quantize_static {onnxruntime.__version__}",
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "stages": [{"name": stage_name, "file": path.name, "sha256": sha256_file(path),
                            "fp32_file": stage["file"], **plans[t].manifest_entry()}],
                "fp32_stages": [s for s in stages if s != stage_name],
                "fp32_stages_why": FP32_STAGES_WHY[family],
                "calibration": {"method": chosen, "requested": method,
                                "percentile": PERCENTILE if chosen == "percentile" else None,
                                "frames": len(split.calibration), "frame_indices": split.calibration, "batch": batch,
                                "inputs": data.described, "tried": tried[t]},
                "quality": {**quality, "frame_indices": split.gate,
                            "reference": f"FP32 {stage['file']}, ONNX Runtime CPU",
                            "selection_frame_indices": split.selection or None},
                "gate": {**gate.to_dict(), "passed": True},
                "export_seconds": round(time.perf_counter() - started, 1),
            }
            if t == "trt":
                entry["quality"]["measured_on"] = "ONNX Runtime CPU (S8S8 Q/DQ), standing in for TensorRT"
                entry["quantize_options"] = {"activation_type": "QInt8", "weight_type": "QInt8", "per_channel": True,
                                             **TRT_EXTRA_OPTIONS}
                entry["qdq_check"] = checks[(chosen, t)]
            entries[t] = manifest[key] = entry
        write_json_atomic(model_dir / MANIFEST, manifest)
        return entries
    finally:
        shutil.rmtree(work, ignore_errors=True)
