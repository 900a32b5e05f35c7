"""PSC's between-stage steps as batched tensor code, exported inside the stage graphs.

The reference does these on the host, one sample at a time, in numpy (network/psc_model.py):
keypoints -> 18 Gaussian heat maps (sigma 100), PM-Net output -> per-joint peak -> re-rendered
maps, AA-Net output -> argmax -> one-hot parsing, CT-Net output -> image. Here each is a small
module or function of (B, ...) tensors that traces to plain ONNX ops (Gather, ArgMax, Equal, ...).
Keypoints are (B, J, 2) float32 (x = column, y = row, pixels of the H x W canvas) with a
validity mask (B, J) float32 (1 = present); the reference's missing marker is x or y == -1.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
from torch import nn

PEAK_THRESHOLD = 0.5   # quirk peak-extraction: a joint is kept when its map's maximum is > 0.5
SIGMA = 100.0          # options/test_options.py: sigma


def gaussian_table(height: int, width: int, sigma: float) -> np.ndarray:
    """(H, W) float32: exp(-(a^2 + b^2) / (2 sigma^2)) for row offset a and column offset b,
    computed in float64 and rounded once, as the reference's dataset does (quirk pose-gaussian)."""
    a = np.arange(height, dtype=np.int64)[:, None] ** 2
    b = np.arange(width, dtype=np.int64)[None, :] ** 2
    return np.exp(-(a + b) / (2 * sigma ** 2)).astype(np.float32)


def truncate(x: torch.Tensor) -> torch.Tensor:
    """Python's int() toward zero (quirk pose-int-truncation), as sign * floor(|x|) (ONNX has no Trunc)."""
    return torch.sign(x) * torch.floor(torch.abs(x))


class PoseHeatmaps(nn.Module):
    """Keypoints -> (B, J, H, W) Gaussian maps equal to the reference's dataset tensors.

    The value at (row, col) depends only on the integer offsets |row - y| and |col - x| of the
    truncated joint, so for joints whose offsets stay inside the canvas it is looked up in a
    precomputed (H, W) table (two gathers: bit-identical to the reference's float64 exp rounded to
    float32). Joints farther off the canvas than its size (the reference renders any coordinate
    other than -1) use the separable float32 product g(dy) * g(dx), within an ulp or two.
    """

    def __init__(self, height: int, width: int, sigma: float = SIGMA):
        super().__init__()
        self.height, self.width, self.sigma = height, width, float(sigma)
        self.register_buffer("table", torch.from_numpy(gaussian_table(height, width, sigma)), persistent=False)

    def offsets(self, keypoints: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """|row - y| (B, J, H) and |col - x| (B, J, W) of the truncated joints, float32."""
        xy = truncate(keypoints)
        rows = torch.arange(self.height, dtype=xy.dtype, device=xy.device)
        cols = torch.arange(self.width, dtype=xy.dtype, device=xy.device)
        dy = torch.abs(rows.view(1, 1, -1) - xy[..., 1:2])
        dx = torch.abs(cols.view(1, 1, -1) - xy[..., 0:1])
        return dy, dx

    def value(self, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
        """Table value for offsets inside the table, separable product outside; ``dy`` and ``dx``
        broadcast against each other (e.g. (..., h, 1) and (..., 1, w))."""
        iy = torch.clamp(dy, max=self.height - 1).long()
        ix = torch.clamp(dx, max=self.width - 1).long()
        looked_up = self.table.reshape(-1)[iy * self.width + ix]      # one Gather, any batch size
        scale = -1.0 / (2.0 * self.sigma * self.sigma)
        product = torch.exp(dy * dy * scale) * torch.exp(dx * dx * scale)
        inside = (dy < self.height) & (dx < self.width)
        return torch.where(inside, looked_up, product)

    def forward(self, keypoints: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        dy, dx = self.offsets(keypoints)
        maps = self.value(dy.unsqueeze(-1), dx.unsqueeze(-2))
        return maps * valid[..., None, None]

    def snap(self, keypoints: torch.Tensor, valid: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``peaks(render(keypoints))`` without rendering: the reference re-extracts peaks from every
        pose it feeds AA-Net (for t = 1 from P1's own maps). A rendered map peaks at the canvas
        point nearest the truncated joint, uniquely (neighbouring values differ by more than an
        ulp wherever they exceed 0.5), and the joint survives when that value is > 0.5.
        Returns integer keypoints (B, J, 2) (-1 where missing) and validity (B, J), like
        :func:`extract_peaks`."""
        xy = truncate(keypoints)
        x = torch.clamp(xy[..., 0], 0, self.width - 1)
        y = torch.clamp(xy[..., 1], 0, self.height - 1)
        peak = self.value(torch.abs(y - xy[..., 1]).unsqueeze(-1), torch.abs(x - xy[..., 0]).unsqueeze(-1)).squeeze(-1)
        kept = (valid * (peak > PEAK_THRESHOLD).to(valid.dtype)).unsqueeze(-1)
        return torch.stack([x, y], dim=-1) * kept - (1 - kept), kept.squeeze(-1)


def extract_peaks(heatmaps: torch.Tensor, threshold: float = PEAK_THRESHOLD) -> Tuple[torch.Tensor, torch.Tensor]:
    """Quirk peak-extraction: per map, the first row-major maximum, kept when > ``threshold``.
    Returns keypoints (B, J, 2) float32 (x, y; -1 where missing) and validity (B, J) float32."""
    w = heatmaps.shape[-1]
    value, index = torch.max(heatmaps.flatten(2), dim=-1)
    kept = (value > threshold).to(heatmaps.dtype)
    xy = torch.stack([torch.remainder(index, w), torch.div(index, w, rounding_mode="floor")], dim=-1).to(heatmaps.dtype)
    return xy * kept.unsqueeze(-1) - (1 - kept.unsqueeze(-1)), kept


def argmax_labels(probabilities: torch.Tensor) -> torch.Tensor:
    """Quirk par-argmax-onehot, first half: (B, C, H, W) -> label map (B, H, W) uint8, first max on ties."""
    return torch.argmax(probabilities, dim=1).to(torch.uint8)


def one_hot(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """(B, H, W) integer labels -> (B, classes, H, W) float32 one-hot (labels >= classes give zeros;
    the host refuses such parsings before they get here)."""
    ids = torch.arange(classes, device=labels.device).view(1, classes, 1, 1)
    return (labels.long().unsqueeze(1) == ids).to(torch.float32)


def to_uint8_bgr(image: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [-1, 1] -> (B, H, W, 3) uint8 BGR: clip(round((x + 1) * 127.5), 0, 255)."""
    levels = torch.clamp(torch.round((image + 1.0) * 127.5), 0.0, 255.0)
    return levels.flip(1).permute(0, 2, 3, 1).to(torch.uint8)
