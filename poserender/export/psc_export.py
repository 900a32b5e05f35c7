"""``poserender export`` for PSC: a folder with the authors' pm.pth / aa.pth / ct.pth -> DIR with
source.onnx, interp.onnx, parsing.onnx, frame.onnx and manifest.json ("family": "psc").

Every graph is exported with a dynamic batch and verified against torch with ONNX Runtime at
batch 2 before the folder is written (a temporary sibling renamed at the end). The manifest names
the InstanceNormalization nodes of each graph (``fp32_layers``): they overflow in FP16 on TensorRT
and ONNX Runtime, so a reduced-precision build must keep them in FP32.
"""
from __future__ import annotations

import datetime
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Union

import cv2
import numpy as np
import torch

from .. import __version__
from ..errors import UserError
from ..fileio import check_writable, output_error, temp_dir_beside
from ..keypoints.coco18 import template_pose
from ..manifest import MANIFEST, sha256_file
from .trt_check import check_onnx
from ..models.psc.blocks import BN_STATS
from ..models.psc.checkpoint import CHECKPOINT_FILES, load_psc_nets
from ..models.psc.ops import SIGMA
from ..models.psc.stages import CLASSES, InterpStage, ParsingStage, psc_stages
from .onnx_export import OPSET, export_stage, publish
from .verify import compare_outputs, passes, run_onnx, run_torch

#: user-facing names of AA-Net's BatchNorm statistics (export --aa-norm) -> blocks.BN_STATS
AA_NORM_CHOICES = {"authors": "sample", "eval": "running"}


def verification_feeds(height: int, width: int, seed: int = 0) -> Dict[str, Dict[str, np.ndarray]]:
    """Realistic inputs for every stage at batch 2: a smooth image, a parsing of a drawn figure
    (labels 0-4), template poses with jitter (one joint missing) and two t values."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(-1, 1, size=(max(height // 16, 2), max(width // 16, 2), 3)).astype(np.float32)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)[None]
    pose = template_pose(height, width)
    labels = np.zeros((height, width), np.uint8)
    pts = lambda idx: np.round(pose[list(idx)]).astype(np.int32)  # noqa: E731
    thick = max(2, width // 20)
    cv2.fillConvexPoly(labels, pts((2, 5, 11, 8)), 4)
    for limb in ((2, 3), (3, 4), (5, 6), (6, 7), (8, 9), (9, 10), (11, 12), (12, 13)):
        cv2.line(labels, *map(tuple, pts(limb)), 3, thick)
    cv2.circle(labels, tuple(pts((0,))[0]), max(3, width // 18), 2, -1)
    cv2.circle(labels, tuple(pts((14,))[0]), max(2, width // 40), 1, -1)
    targets = pose[None] + rng.normal(0, width / 40, size=(2, 18, 2))
    valid = np.ones((2, 18), np.float32)
    valid[1, 10] = 0
    targets[1, 10] = -1
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return {
        "source": {"source_image": f32(image), "source_labels": labels[None]},
        "interp": {"pose_a": f32(pose[None]), "valid_a": np.ones((1, 18), np.float32),
                   "pose_b": f32(targets[:1]), "valid_b": np.ones((1, 18), np.float32),
                   "t": np.array([0.3, 0.7], np.float32)},
        "parsing": {"target_keypoints": f32(targets), "target_valid": valid},
    }


def _peak_agreement(module: InterpStage, feed: Dict[str, np.ndarray], ref: Dict[str, np.ndarray],
                    got: Dict[str, np.ndarray]) -> Dict[str, Any]:
    """Joints whose peak moved, not counting ambiguous ones (top-2 gap < 1e-4 in torch's maps:
    sigma-100 peaks are flat, so tiny float differences may legitimately move them)."""
    with torch.no_grad():
        maps = module.pose_maps(*(torch.from_numpy(feed[k]) for k in ("pose_a", "valid_a", "pose_b", "valid_b", "t")))
    top2 = torch.topk(maps.flatten(2), 2, dim=-1).values
    ambiguous = ((top2[..., 0] - top2[..., 1]) < 1e-4).numpy() | (np.abs(top2[..., 0].numpy() - 0.5) < 1e-4)
    moved = (np.abs(ref["keypoints"] - got["keypoints"]).max(-1) > 0) | (ref["valid"] != got["valid"])
    return {"joints": int(moved.size), "moved": int(moved.sum()), "ambiguous": int(ambiguous.sum()),
            "moved_unambiguous": int((moved & ~ambiguous).sum())}


def _label_agreement(module: ParsingStage, feed: Dict[str, np.ndarray], ref, got) -> Dict[str, Any]:
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


def export_psc(checkpoint_dir: Union[str, Path], out_dir: Union[str, Path], aa_norm: str = "authors",
               height: int = 256, width: int = 256, sigma: float = SIGMA,
               log: Callable[[str], None] = lambda s: None) -> Dict[str, Any]:
    """Export, verify and write ``out_dir``. ``aa_norm``: "authors" (AA-Net BatchNorm with per-sample
    batch statistics, what the reference's test.py computes) or "eval" (running statistics)."""
    if aa_norm not in AA_NORM_CHOICES:
        raise UserError(f"--aa-norm {aa_norm!r}; expected one of {', '.join(AA_NORM_CHOICES)}")
    bn_stats = AA_NORM_CHOICES[aa_norm]
    assert bn_stats in BN_STATS
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file():
        raise UserError("exists and is not an exported model folder; choose a new or empty -o folder", out_dir)
    if height % 16 or width % 16:
        raise UserError(f"canvas {height}x{width}: both sides must be multiples of 16 (PSC nets downsample 16x)")
    pm, aa, ct, files = load_psc_nets(checkpoint_dir, bn_stats)
    log(f"exporting PSC nets from {checkpoint_dir} (AA-Net BatchNorm: {aa_norm}) to {out_dir}")
    stages = psc_stages(pm, aa, ct, height, width, sigma)
    feeds = verification_feeds(height, width)
    check_writable(out_dir, "the exported model")
    work = temp_dir_beside(out_dir)
    try:
        entries, fp32_layers, outputs = [], {}, {}
        for spec, module in stages:
            started = time.perf_counter()
            feed = dict(feeds.get(spec.name, {}))
            if spec.name == "parsing":
                feed["parsing_code"] = outputs["source"]["parsing_code"][:1]
            elif spec.name == "frame":
                feed = {"target_labels": outputs["parsing"]["target_labels"],
                        **{k: v[:1] for k, v in outputs["source"].items() if k != "parsing_code"}}
            if spec.name == "source":   # batch 2 = two identities (the same one twice, flipped)
                feed = {k: np.concatenate([v, v[..., ::-1]]).copy() for k, v in feed.items()}
            log(f"exporting {spec.name} stage to {spec.file} ...")
            first = {t.name: feed[t.name][:1] if t.shape[0] == "batch" else feed[t.name] for t in spec.inputs}
            export_stage(module, spec, work / spec.file, first)
            ref = run_torch(module, spec, feed)
            got = run_onnx(work / spec.file, feed)
            report: Dict[str, Any] = {"outputs": compare_outputs(ref, got)}
            if spec.name == "interp":
                report["peaks"] = _peak_agreement(module, feed, ref, got)
                ok = report["peaks"]["moved_unambiguous"] == 0
            elif spec.name == "parsing":
                report["labels"] = _label_agreement(module, feed, ref, got)
                ok = report["labels"]["fraction_changed"] <= 1e-3
            elif spec.name == "source":   # CT-Net features reach |x| ~ 30: relative 1e-4
                ok = all(e["nonfinite"] == 0 and e["max_abs_error"] <= 1e-4 * max(30.0, float(np.abs(ref[n]).max()))
                         for n, e in report["outputs"].items())
            else:
                ok = passes(report["outputs"])
            if not ok:
                raise UserError(f"{spec.name} stage: ONNX Runtime disagrees with torch: {report}")
            outputs[spec.name] = ref
            fp32_layers[spec.name] = _instance_norm_nodes(work / spec.file)
            readiness = check_onnx(work / spec.file, spec)   # recorded, not fatal: CPU backends do not need it
            log(f"  {readiness.summary()}")
            entries.append({**spec.to_dict(), "sha256": sha256_file(work / spec.file),
                            "verification": {"backend": "ort-cpu", "batch": 2, **report},
                            "tensorrt_readiness": readiness.to_dict(),
                            "export_seconds": round(time.perf_counter() - started, 2)})
            log(f"  {spec.name}: verified against torch at batch 2")
        import onnx

        manifest = {
            "family": "psc", "format_version": 1, "poserender": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "canvas": [height, width], "precision": "fp32", "opset": OPSET,
            "config": {"joints": 18, "classes": CLASSES, "sigma": sigma, "aa_norm": aa_norm,
                       "image": "RGB in [-1, 1] ((x / 255 - 0.5) / 0.5)", "peak_threshold": 0.5},
            "bn_stats": bn_stats,
            "checkpoint": {"path": str(Path(checkpoint_dir).resolve()),
                           "sha256": {name: sha256_file(path) for name, path in files.items()}},
            "fp32_layers": {"op_type": "InstanceNormalization", "why": "FP16 overflow in TensorRT / ONNX Runtime",
                            "nodes": fp32_layers},
            "versions": {"torch": torch.__version__, "onnx": onnx.__version__},
            "stages": entries,
        }
        return publish(work, out_dir, manifest)
    except OSError as exc:     # disk full, ulimit -f, ...: nothing is left behind
        raise output_error(exc, out_dir, "the exported model") from None
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


__all__ = ["AA_NORM_CHOICES", "CHECKPOINT_FILES", "export_psc", "verification_feeds"]
