"""The reference baseline (``--baseline reference``): the model run the way its authors run it.

The family says what that is (``Family.reference_forward``: Pose2Img's is PyTorch eager FP32,
all three U-Nets per frame at batch 1, every per-sample input recomputed each frame); a family
without one, or one that cannot run here (no checkpoint, no torch), gets one skipped row with
the reason.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, Mapping, Sequence, Tuple

import numpy as np

from .. import families
from ..errors import UserError
from .inputs import BenchInputs
from .rows import Skip, row
from .stats import Method
from .timing import Step, measure


class ReferenceBaseline:
    """The authors' way, from the checkpoint the model was exported from, one frame at a time."""

    def __init__(self, manifest: Mapping[str, Any], inputs: BenchInputs, threads: int):
        family = families.of(manifest)
        try:
            self.forward = family.reference_forward(manifest, threads)
        except UserError as exc:
            raise Skip(str(exc)) from None
        if self.forward is None:
            raise Skip(f"poserender knows no reference forward for {family.name} models "
                       "(compare its backends with each other, or with --backend torch)")
        self.identity = inputs.adapter.identity_feed()
        self.targets = inputs.adapter.frame_feed(inputs.frames)

    def step(self, indices: np.ndarray) -> Tuple[Dict[str, float], np.ndarray]:
        start = time.perf_counter()
        frames = [self.forward(self.identity, {n: v[i:i + 1] for n, v in self.targets.items()})
                  for i in indices.tolist()]   # batch 1, one frame at a time
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

    log("timing the reference baseline: the authors' full forward per frame, batch 1")
    n_frames = len(inputs.frames)
    cell = measure(base.step, 1, n_frames, method, reference, False, count)
    for i in range(min(method.compare_frames, n_frames)):   # untimed: for the checks
        if i not in reference:
            reference[i] = base.step(np.array([i]))[1][0]
    return row(*key, status="ok", is_baseline=True, flops_per_frame=counted["flops"],
               flops_from="torch FlopCounterMode, one call", transfer_ms=None, **cell)
