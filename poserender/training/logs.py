"""What a run writes besides checkpoints: TensorBoard events and ``metrics.jsonl``.

Only rank 0 logs. TensorBoard (the ``train`` extra) is optional: without it the run says so
once and writes ``metrics.jsonl`` only. Image grids show, per row, source | target | output,
converted from the networks' BGR [-1, 1] to RGB for display.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np
import torch


def image_grid(rows, max_rows: int = 4, bgr: bool = True) -> np.ndarray:
    """``rows``: tensors (B, 3, H, W) in [-1, 1] (BGR, or RGB with ``bgr=False``), shown side by
    side -> (3, R*H, C*W) RGB uint8."""
    columns = [r[:max_rows].detach().float().cpu().clamp(-1, 1) for r in rows]
    grid = torch.cat([torch.cat(list(c), dim=2) for c in zip(*columns)], dim=1)   # (3, R*H, C*W)
    grid = ((grid + 1.0) * 127.5).round().to(torch.uint8)
    return (grid.flip(0) if bgr else grid).numpy()


class RunLog:
    """TensorBoard writer + JSON-lines metrics in ``run_dir``; a no-op when ``enabled`` is False."""

    def __init__(self, run_dir: Path, enabled: bool, warn: Callable[[str], None]):
        self.enabled = enabled
        self.writer = None
        self.metrics = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = open(run_dir / "metrics.jsonl", "a", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            warn("tensorboard is not installed (pip install 'poserender[train]'): logging to metrics.jsonl only")
            return
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def scalars(self, step: int, values: Dict[str, float], split: str = "train") -> None:
        if not self.enabled:
            return
        self.metrics.write(json.dumps({"step": step, "split": split, **values}) + "\n")
        self.metrics.flush()
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(f"{split}/{name}", value, step)

    def images(self, step: int, tag: str, grid: np.ndarray) -> None:
        if self.enabled and self.writer is not None:
            self.writer.add_image(tag, grid, step, dataformats="CHW")

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.metrics is not None:
            self.metrics.close()


def read_metrics(path: Path, split: Optional[str] = "train"):
    """The records of ``metrics.jsonl`` (for tests and scripts)."""
    with open(path, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [r for r in records if split is None or r["split"] == split]
