"""Compare an exported stage run by ONNX Runtime (CPU) with the torch module it came from."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping

import numpy as np

from ..specs import StageSpec
from .quality import psnr


def compare_outputs(ref: Dict[str, np.ndarray], got: Dict[str, np.ndarray]) -> Dict[str, Dict[str, float]]:
    """Per output: max abs error, PSNR (peak 255 for uint8, 2 for [-1, 1] floats), NaN/inf count,
    and for uint8 the fraction of values more than 2 levels off."""
    report = {}
    for name, r in ref.items():
        g = got[name]
        diff = np.abs(r.astype(np.float64) - g.astype(np.float64))
        entry = {"max_abs_error": float(diff.max()) if diff.size else 0.0,
                 "psnr_db": psnr(r, g, 255.0 if r.dtype == np.uint8 else 2.0),
                 "nonfinite": int((~np.isfinite(g)).sum()) if g.dtype.kind == "f" else 0}
        if r.dtype == np.uint8:
            entry["fraction_over_2_levels"] = float((diff > 2).mean())
        report[name] = entry
    return report


def run_torch(module, spec: StageSpec, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    import torch

    with torch.no_grad():
        out = module(*(torch.from_numpy(feed[n]) for n in spec.input_names))
    out = out if isinstance(out, (tuple, list)) else (out,)
    return {n: t.numpy() for n, t in zip(spec.output_names, out)}


def run_onnx(path: Path, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed)))


def passes(report: Dict[str, Dict[str, float]]) -> bool:
    """Float outputs within 1e-3, uint8 frames within 2 levels on >= 99.9 % of values, all finite."""
    for entry in report.values():
        if entry["nonfinite"]:
            return False
        if "fraction_over_2_levels" in entry:
            if entry["fraction_over_2_levels"] > 1e-3:
                return False
        elif entry["max_abs_error"] > 1e-3:
            return False
    return True


def stage_feeds(manifest: Mapping[str, Any], stage_index: int, earlier_outputs: Mapping[str, np.ndarray],
                seed: int = 0) -> Dict[str, np.ndarray]:
    """Verification inputs of one stage (for verify, build and bench): the family's realistic
    inputs (template poses, a smooth image), outputs of the stages before it, and random normals
    for anything else."""
    from .. import families

    specs = [StageSpec.from_dict(s) for s in manifest["stages"]]
    spec = specs[stage_index]
    known: Dict[str, np.ndarray] = dict(families.of(manifest).verification_inputs(manifest))
    known.update(earlier_outputs)
    random = spec.sample_inputs(batch=max(spec.min_batch, min(2, spec.max_batch)), seed=seed)
    return {t.name: np.ascontiguousarray(known.get(t.name, random[t.name])).astype(t.np_dtype, copy=False)
            for t in spec.inputs}
