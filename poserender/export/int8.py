"""The INT8 export: calibrate, quantize, gate, write (docs/precision.md; export/quantize.py's doc).

For the stage the family's :class:`~poserender.families.Int8Plan` names, with its trunk and the
op types it keeps FP32: the frames are split into calibration, method-selection and held-out gate
frames; each route (target) calibrates on the same real feeds (export/calibration.py): the QDQ
graphs with each method (the best on the selection frames is kept), the NNCF route for OpenVINO
(export/nncf_route.py) with NNCF's own; every graph must pass the quality gate on the same gate
frames, else nothing is written.
"""
from __future__ import annotations

import datetime
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

from .. import families
from ..errors import UserError
from ..fileio import temp_dir_beside
from ..manifest import MANIFEST, read_manifest, sha256_file, write_json_atomic
from .calibration import CalibrationData, _batches, split_frames, stage_feeds
from .quality import QualityGate, frame_quality
from . import nncf_route, quantize
from .quantize import (CALIBRATION_CHOICES, METHODS, PERCENTILE, TARGET_OUTPUTS, TARGET_RECORDS, TARGETS,
                       TRT_EXTRA_OPTIONS, TRT_FP32_OPS, _frames, _session, calibration_cache_supported, int8_file,
                       quantization_plan)

#: what each route's gate frames are measured on
MEASURED_ON = {"trt": "ONNX Runtime CPU (S8S8 Q/DQ), standing in for TensorRT",
               "ov": "OpenVINO CPU (f32 for the float ops)"}

def add_int8(model_dir: Path, data: CalibrationData, method: str = "auto", frames: int = 32, gate_frames: int = 16,
             selection_frames: int = 8, gate: QualityGate = QualityGate(), batch: int = 4, per_channel: bool = False,
             target: str = "ort", log: Callable[[str], None] = lambda s: None) -> Dict[str, Any]:
    """Quantize the stage the model's family names for INT8 (pose2img: the frame stage's U-Net;
    PSC: CT-Net, fed by the FP32 source and parsing stages). Returns the manifest's ``int8`` entry
    (target ``trt``: the ``int8_trt`` entry; ``both``: the ``int8`` one, see
    :func:`add_int8_targets`); raises UserError (nothing written) below the gate."""
    entries = add_int8_targets(model_dir, data, method, frames, gate_frames, selection_frames, gate, batch,
                               per_channel, target, log)
    return next(iter(entries.values()))


def _target_label(target: str) -> str:
    return {"ort": "INT8", "trt": "INT8 (TensorRT Q/DQ)", "ov": "INT8 (NNCF, OpenVINO)"}[target]


def add_int8_targets(model_dir: Path, data: CalibrationData, method: str = "auto", frames: int = 32,
                     gate_frames: int = 16, selection_frames: int = 8, gate: QualityGate = QualityGate(),
                     batch: int = 4, per_channel: bool = False, target: str = "ort",
                     log: Callable[[str], None] = lambda s: None) -> Dict[str, Dict[str, Any]]:
    """:func:`add_int8` for ``target`` ``ort``, ``trt``, ``both`` or ``ov``: {target: manifest
    entry} (``ort`` -> ``int8``, ``trt`` -> ``int8_trt``, ``ov`` -> ``int8_nncf``). ``both``
    calibrates each method once and quantizes both graphs from the same ranges; ``ov`` writes the
    ``ort`` graph and the NNCF route's OpenVINO IR from the same calibration feeds. Each QDQ graph
    picks its method on the selection frames; every graph must pass the gate on the same gate
    frames, else none is written. ``per_channel`` applies to ``ort`` (``trt`` weights are always
    per channel)."""
    import onnx
    import onnxruntime
    from onnxruntime.quantization.preprocess import quant_pre_process

    from .qdq_check import check_qdq

    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    family = families.of(manifest)
    stages = {s["name"]: s for s in manifest["stages"]}
    written = manifest.to_dict()          # what is written back, with the new entries
    plan = family.int8
    if plan is None or plan.stage not in stages:
        able = ", ".join(f"{f.name} {f.int8.stage} stage" for f in families.FAMILIES.values() if f.int8)
        raise UserError(f"INT8 export supports {able}; this is a {family.name} model", model_dir)
    if method not in CALIBRATION_CHOICES:
        raise UserError(f"--calibration-method {method!r}; expected one of {', '.join(CALIBRATION_CHOICES)}")
    if target not in TARGETS:
        raise UserError(f"--int8-target {target!r}; expected one of {', '.join(TARGETS)}")
    outputs = list(TARGET_OUTPUTS[target])
    if "ov" in outputs:
        nncf_route.check_available()
    stage_name = plan.stage
    stage = stages[stage_name]
    batch = max(1, min(batch, int(stage["batch"]["max"])))
    split = split_frames(len(data), frames, gate_frames, selection_frames if method == "auto" else 0)
    started = time.perf_counter()
    make_feed = stage_feeds(model_dir, manifest, data, stage_name, log)
    feeds = {name: [make_feed(b) for b in _batches(idx, batch)]
             for name, idx in (("calibration", split.calibration), ("selection", split.selection),
                               ("gate", split.gate))}
    fp32 = _session(model_dir / stage["file"])
    reference = {name: _frames(fp32, f) for name, f in feeds.items() if f}
    del fp32
    work = temp_dir_beside(model_dir / ".int8")
    try:
        pre = work / "fp32.pre.onnx"
        quant_pre_process(str(model_dir / stage["file"]), str(pre), skip_symbolic_shape=True)
        pre_model = onnx.load(str(pre), load_external_data=False)
        # the NNCF route quantizes the FP32 graph itself (OpenVINO reads it), so its plan names its nodes
        plans = {t: quantization_plan(pre_model if t != "ov" else onnx.load(str(model_dir / stage["file"]),
                                                                             load_external_data=False),
                                      plan.trunk, head_in_trunk=not plan.heads_outside_trunk,
                                      fp32_ops={**plan.fp32_ops, **(TRT_FP32_OPS if t == "trt" else {})})
                 for t in outputs}
        del pre_model
        candidates = list(METHODS) if method == "auto" else [method]
        qdq = [t for t in outputs if t != "ov"]
        share = len(qdq) > 1 and calibration_cache_supported()
        tried: Dict[str, List[Dict[str, Any]]] = {t: [] for t in outputs}
        checks: Dict[Tuple[str, str], Dict[str, Any]] = {}
        if "ov" in outputs:         # the second route: NNCF's calibration on the same frames
            t0 = time.perf_counter()
            log(f"{_target_label('ov')}: calibrating the {stage_name} stage on {len(split.calibration)} frames ...")
            scope = nncf_route.ignored_scope(plans["ov"], plan.fp32_ops)
            nncf_route.quantize(model_dir / stage["file"], work / "nncf.ov.xml", scope, feeds["calibration"])
            tried["ov"].append({"method": "nncf", "preset": nncf_route.PRESET,
                                "calibrate_s": round(time.perf_counter() - t0, 1)})
        for name in candidates:
            cache = work / f"{name}.ranges.json" if share else None
            for t in qdq:
                t0 = time.perf_counter()
                graph = work / f"{name}.{t}.onnx"
                reused = cache is not None and cache.is_file()
                log(f"{_target_label(t)}: " + (f"quantizing the {stage_name} stage from the {name} ranges already "
                                                "calibrated ..." if reused else
                                                f"calibrating the {stage_name} stage with {name} on "
                                                f"{len(split.calibration)} frames ..."))
                # the calibrator records every tensor whatever the plan: cached ranges serve both plans
                quantize.quantize_graph(pre, graph, plans[t], feeds["calibration"], name, per_channel, target=t,
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
            chosen = "nncf" if t == "ov" else max(tried[t], key=psnr_of)["method"] if method == "auto" else method
            graph = work / f"{chosen}.{t}.{'xml' if t == 'ov' else 'onnx'}"
            made = nncf_route.ov_frames(graph, feeds["gate"]) if t == "ov" else _frames(_session(graph), feeds["gate"])
            quality = frame_quality(reference["gate"], made)
            verdict = gate.verdict(quality, f"{_target_label(t)} {stage_name} stage ({chosen} calibration) vs FP32")
            log(verdict)
            results[t] = (chosen, quality)
            verdicts.append((verdict, gate.passes(quality)))
        if not all(ok for _, ok in verdicts):
            raise UserError(f"{'; '.join(v for v, _ in verdicts)}; INT8 graphs not written (the FP32 export is "
                            "complete and kept; lower --gate-psnr, try another --calibration-method or more --frames)",
                            model_dir)
        route = None
        if "ov" in outputs:         # which graph ov-cpu --precision int8 runs: measured on OpenVINO
            route = nncf_route.compare_routes({"qdq": work / f"{results['ort'][0]}.ort.onnx",
                                               "nncf": work / "nncf.ov.xml"}, feeds["gate"], reference["gate"], gate,
                                              log)
        entries: Dict[str, Dict[str, Any]] = {}
        for t in outputs:
            chosen, quality = results[t]
            key, _, described = TARGET_RECORDS[t]
            path = model_dir / int8_file(stage["file"], t)
            files: Dict[str, Any] = {"file": path.name}
            if t == "ov":           # the IR and its weights, each recorded (checked on load like every graph)
                weights_path = path.with_suffix(".bin")
                os.replace(work / "nncf.ov.bin", weights_path)
                files.update(weights_file=weights_path.name, weights_sha256=sha256_file(weights_path))
            os.replace(work / f"{chosen}.{t}.{'xml' if t == 'ov' else 'onnx'}", path)
            weights = "per channel" if per_channel or t in ("trt", "ov") else "per tensor"
            entry = {
                "format": "QDQ" if t != "ov" else "OpenVINO IR with FakeQuantize", **described,
                "weights": f"int8 (symmetric, {weights})", "reduce_range": False,
                "quantizer": f"onnxruntime.quantization.quantize_static {onnxruntime.__version__}" if t != "ov"
                else nncf_route.versions(),
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "stages": [{"name": stage_name, **files, "sha256": sha256_file(path),
                            "fp32_file": stage["file"], **plans[t].manifest_entry(),
                            **({"ignored_scope": scope} if t == "ov" else {})}],
                "fp32_stages": [s for s in stages if s != stage_name],
                "fp32_stages_why": plan.fp32_stages_why,
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
            if t in MEASURED_ON:
                entry["quality"]["measured_on"] = MEASURED_ON[t]
            if t == "ov":
                entry["calibration"]["same_frames_as"] = TARGET_RECORDS["ort"][0]
                entry["ov_route"] = route
            if t == "trt":
                entry["quantize_options"] = {"activation_type": "QInt8", "weight_type": "QInt8", "per_channel": True,
                                             **TRT_EXTRA_OPTIONS}
                entry["qdq_check"] = checks[(chosen, t)]
            entries[t] = written[key] = entry
        write_json_atomic(model_dir / MANIFEST, written)
        return entries
    finally:
        shutil.rmtree(work, ignore_errors=True)
