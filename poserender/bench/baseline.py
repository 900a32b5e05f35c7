"""The reference baseline (``--baseline reference``): the model run the way its authors run it.

Only Pose2Img has one: PyTorch eager FP32, ``FullPipeline`` (all three U-Nets) per frame at
batch 1, every per-sample input (source heat maps, limb-mask prior, target heat maps, limb
transforms) recomputed each frame, then ``(y + 1) * 127.5`` to uint8 BGR. The per-sample
preprocessing is our vectorised torch code, faster than the reference's numpy loops, so the
baseline is flattered, never handicapped. For another family the baseline is one skipped row
with the reason (the Family interface has no reference forward; docs/bench.md).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Sequence, Tuple

import numpy as np

from .. import families
from .inputs import BenchInputs
from .rows import Skip, row
from .stats import Method
from .timing import Step, measure

#: the family whose authors' full forward this baseline runs
FAMILY = "pose2img"


class ReferenceBaseline:
    """The authors' way, from the checkpoint the model was exported from (see the module doc)."""

    def __init__(self, manifest: Mapping[str, Any], inputs: BenchInputs, threads: int):
        family = families.of(manifest).name
        if family != FAMILY:
            raise Skip(f"the reference baseline is the Pose2Img authors' full forward; a {family} model has none "
                       "(compare its backends with each other, or with --backend torch)")
        checkpoint = (manifest.get("checkpoint") or {}).get("path")
        if not checkpoint or not Path(checkpoint).is_file():
            raise Skip(f"needs the checkpoint the model was exported from ({checkpoint or 'not recorded'}); "
                       "bench the checkpoint itself")
        try:
            import torch
        except ImportError:
            raise Skip("needs torch (pip install 'poserender[export]')") from None
        from ..config import Pose2ImgConfig
        from ..models.checkpoint import load_generator
        from ..models.pose2img import FullPipeline, Pose2ImgGeometry, to_uint8_bgr

        torch.set_num_threads(threads)
        generator, _ = load_generator(checkpoint)
        geometry = Pose2ImgGeometry.from_config(Pose2ImgConfig.from_dict(manifest["config"]),
                                                manifest.get("warp_mode", "legacy"))
        self.torch, self.to_uint8 = torch, to_uint8_bgr
        self.pipeline = FullPipeline(generator, geometry).eval()
        identity = inputs.adapter.identity_feed()           # the Pose2Img adapter's names
        targets = inputs.adapter.frame_feed(inputs.frames)
        self.fixed = [torch.from_numpy(identity[n]) for n in ("source_image", "source_keypoints", "source_valid")]
        self.targets = torch.from_numpy(targets["target_keypoints"]), torch.from_numpy(targets["target_valid"])

    def step(self, indices: np.ndarray) -> Tuple[Dict[str, float], np.ndarray]:
        start = time.perf_counter()
        frames = []
        with self.torch.no_grad():
            for i in indices.tolist():   # batch 1, one frame at a time
                sl = slice(i, i + 1)
                y = self.pipeline(*self.fixed, self.targets[0][sl], self.targets[1][sl])
                frames.append(self.to_uint8(y).numpy()[0])
        return {"full_forward": time.perf_counter() - start}, np.stack(frames)


def baseline_row(manifest: Mapping[str, Any], inputs: BenchInputs, method: Method, reference: Dict[int, np.ndarray],
                 canvas: Sequence[int], log: Callable[[str], None]) -> Dict[str, Any]:
    """The baseline's row (skipped with the reason when it cannot run); its first frames go to
    ``reference`` for the other rows' frame checks."""
    key = ("reference", "full", 1, "fp32", canvas, "default")
    try:
        base = ReferenceBaseline(manifest, inputs, method.threads)
    except Skip as exc:
        return row(*key, status="skipped", reason=str(exc), is_baseline=True)
    from ..flops import torch_call_flops

    counted: Dict[str, float] = {}

    def count(step: Step, indices: np.ndarray) -> None:
        counted["flops"] = torch_call_flops(lambda: step(indices))[1]

    log("timing the reference baseline: torch eager FP32, full forward per frame, batch 1")
    n_frames = len(inputs.frames)
    cell = measure(base.step, 1, n_frames, method, reference, False, count)
    for i in range(min(method.compare_frames, n_frames)):   # untimed: for the checks
        if i not in reference:
            reference[i] = base.step(np.array([i]))[1][0]
    return row(*key, status="ok", is_baseline=True, flops_per_frame=counted["flops"],
               flops_from="torch FlopCounterMode, one call", transfer_ms=None, **cell)
