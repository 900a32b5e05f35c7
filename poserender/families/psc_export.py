"""The PSC export plan: the authors' pm.pth / aa.pth / ct.pth -> four stages with their
verification feeds and acceptance rules (used by export/exporter.py, which does the writing).

Every graph is verified against torch with ONNX Runtime at batch 2. PM-Net's peaks and AA-Net's
argmax may legitimately move on near-ties, so those two stages are accepted by counting only
unambiguous disagreements. The manifest names the InstanceNormalization nodes of each graph
(``fp32_layers``): they overflow in FP16 on TensorRT and ONNX Runtime, so a reduced-precision
build must keep them in FP32.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from ..errors import UserError
from .base import ExportPlan, ExportStage, Log
from .psc_io import AA_NORM_CHOICES, CLASSES, stage_specs, verification_feeds


def _peak_agreement(module, feed: Dict[str, np.ndarray], ref, got) -> Dict[str, Any]:
    """Joints whose peak moved, not counting ambiguous ones (top-2 gap < 1e-4 in torch's maps:
    sigma-100 peaks are flat, so tiny float differences may legitimately move them)."""
    import torch

    with torch.no_grad():
        maps = module.pose_maps(*(torch.from_numpy(feed[k]) for k in ("pose_a", "valid_a", "pose_b", "valid_b", "t")))
    top2 = torch.topk(maps.flatten(2), 2, dim=-1).values
    ambiguous = ((top2[..., 0] - top2[..., 1]) < 1e-4).numpy() | (np.abs(top2[..., 0].numpy() - 0.5) < 1e-4)
    moved = (np.abs(ref["keypoints"] - got["keypoints"]).max(-1) > 0) | (ref["valid"] != got["valid"])
    return {"joints": int(moved.size), "moved": int(moved.sum()), "ambiguous": int(ambiguous.sum()),
            "moved_unambiguous": int((moved & ~ambiguous).sum())}


def _label_agreement(module, feed: Dict[str, np.ndarray], ref, got) -> Dict[str, Any]:
    import torch

    with torch.no_grad():
        probs = module.probabilities(*(torch.from_numpy(feed[k]) for k in ("target_keypoints", "target_valid",
                                                                          "parsing_code")))
    top2 = torch.topk(probs, 2, dim=1).values
    margin = (top2[:, 0] - top2[:, 1]).numpy()
    changed = ref["target_labels"] != got["target_labels"]
    return {"pixels": int(changed.size), "changed": int(changed.sum()),
            "fraction_changed": float(changed.mean()), "min_margin_of_changed": float(margin[changed].min())
            if changed.any() else None}


def _instance_norm_nodes(path: Path) -> List[str]:
    import onnx

    return [n.name for n in onnx.load(str(path), load_external_data=False).graph.node
            if n.op_type == "InstanceNormalization"]


def psc_plan(checkpoint_dir: Path, aa_norm: str = "authors", size: int = 256, log: Log = lambda s: None,
             sigma: float = None) -> ExportPlan:
    """Load the three nets and describe the four stages. ``aa_norm``: "authors" (AA-Net BatchNorm
    with per-sample batch statistics, what the reference's test.py computes) or "eval" (running stats)."""
    from ..manifest import sha256_file
    from ..models.psc.checkpoint import load_psc_nets
    from ..models.psc.ops import SIGMA
    from ..models.psc.stages import psc_modules

    sigma = SIGMA if sigma is None else sigma
    if aa_norm not in AA_NORM_CHOICES:
        raise UserError(f"--aa-norm {aa_norm!r}; expected one of {', '.join(AA_NORM_CHOICES)}")
    height = width = int(size)
    if height % 16 or width % 16:
        raise UserError(f"canvas {height}x{width}: both sides must be multiples of 16 (PSC nets downsample 16x)")
    bn_stats = AA_NORM_CHOICES[aa_norm]
    pm, aa, ct, files = load_psc_nets(checkpoint_dir, bn_stats)
    log(f"PSC nets from {checkpoint_dir} (AA-Net BatchNorm: {aa_norm})")
    modules = psc_modules(pm, aa, ct, height, width, sigma)
    feeds = verification_feeds(height, width)

    def source_feed(outputs):     # batch 2 = two identities (the same one twice, flipped)
        return {k: np.concatenate([v, v[..., ::-1]]).copy() for k, v in feeds["source"].items()}

    def parsing_feed(outputs):
        return {**feeds["parsing"], "parsing_code": outputs["source"]["parsing_code"][:1]}

    def frame_feed(outputs):
        return {"target_labels": outputs["parsing"]["target_labels"],
                **{k: v[:1] for k, v in outputs["source"].items() if k != "parsing_code"}}

    def accept_source(feed, ref, got, report):    # CT-Net features reach |x| ~ 30: relative 1e-4
        ok = all(e["nonfinite"] == 0 and e["max_abs_error"] <= 1e-4 * max(30.0, float(np.abs(ref[n]).max()))
                 for n, e in report["outputs"].items())
        return ok, {}

    def accept_interp(feed, ref, got, report):
        peaks = _peak_agreement(modules["interp"], feed, ref, got)
        return peaks["moved_unambiguous"] == 0, {"peaks": peaks}

    def accept_parsing(feed, ref, got, report):
        labels = _label_agreement(modules["parsing"], feed, ref, got)
        return labels["fraction_changed"] <= 1e-3, {"labels": labels}

    rules = {"source": (source_feed, accept_source), "interp": (lambda outputs: feeds["interp"], accept_interp),
             "parsing": (parsing_feed, accept_parsing), "frame": (frame_feed, None)}   # frame: the default tolerances
    stages = [ExportStage(spec, modules[spec.name], modules[spec.name], *rules[spec.name])
              for spec in stage_specs(height, width)]

    def finish(manifest: Dict[str, Any], work: Path) -> None:
        manifest["fp32_layers"] = {"op_type": "InstanceNormalization", "why": "FP16 overflow in TensorRT / ONNX Runtime",
                                   "nodes": {s.spec.name: _instance_norm_nodes(work / s.spec.file) for s in stages}}

    manifest = {"canvas": [height, width], "precision": "fp32",
                "config": {"joints": 18, "classes": CLASSES, "sigma": sigma, "aa_norm": aa_norm,
                           "image": "RGB in [-1, 1] ((x / 255 - 0.5) / 0.5)", "peak_threshold": 0.5},
                "bn_stats": bn_stats,
                "checkpoint": {"path": str(Path(checkpoint_dir).resolve()),
                               "sha256": {name: sha256_file(path) for name, path in files.items()}}}
    return ExportPlan(stages, manifest, finish=finish)
