"""FLOPs per frame of a cell: counted from the model's ONNX graphs, or by torch for torch engines.

The counting itself is poserender.flops; here it is summed over the stages a cell runs, which
the model's family names (identity stages for ``source``, per-frame stages for ``frame`` and
``stream``, both for ``all``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Tuple

import numpy as np

from .. import families


class GraphFlops:
    """FLOPs of a model's cells from its ONNX graphs, counted once per (stage, batch)."""

    def __init__(self, model_dir: Path, manifest: Mapping[str, Any]):
        self.files = {s["name"]: Path(model_dir) / s["file"] for s in manifest["stages"]}
        family = families.of(manifest)
        self.identity_stages, self.frame_stages = family.identity_stages, family.frame_stages
        self.cache: Dict[Tuple[str, int], Dict[str, Any]] = {}

    def count(self, stage: str, batch: int) -> Dict[str, Any]:
        """poserender.flops.onnx_graph_flops of one stage's graph at ``batch``."""
        from ..flops import onnx_graph_flops

        if (stage, batch) not in self.cache:
            self.cache[stage, batch] = onnx_graph_flops(self.files[stage], batch)
        return self.cache[stage, batch]

    def per_frame(self, cell_stage: str, batch: int) -> float:
        """source: per identity; frame and stream: per frame; all: (identity + B frames) / B."""
        if cell_stage == "all":
            return (sum(self.count(s, 1)["flops"] for s in self.identity_stages)
                    + sum(self.count(s, batch)["flops"] for s in self.frame_stages)) / batch
        stages = self.identity_stages if cell_stage == "source" else self.frame_stages
        return sum(self.count(s, batch)["flops_per_item"] for s in stages)

    def summary(self) -> Dict[str, Dict[str, Any]]:
        """Every stage of the model at batch 1 (auxiliary ones too), for the result file."""
        return {name: {k: v for k, v in self.count(name, 1).items() if k != "counted"} for name in self.files}


def count_torch_flops(counted: Dict[str, Any], batch: int) -> Callable[[Callable, np.ndarray], None]:
    """An ``on_first`` hook for timing.measure: counts one call's FLOPs per frame with torch's
    FlopCounterMode into ``counted["flops"]``."""
    def count(step, indices: np.ndarray) -> None:
        from ..flops import torch_call_flops

        counted["flops"] = torch_call_flops(lambda: step(indices))[1] / batch
    return count
