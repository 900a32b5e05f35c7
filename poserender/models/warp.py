"""Limb-wise warps of the masked source image, batched and exportable.

Two sampling modes:

``legacy``  the reference sampler, bit for bit in its arithmetic: the target pixel grid is
            integer pixel centres (x = column, y = row); ``x_s = a1*x - b1*y + a0`` is used
            for BOTH sampling coordinates (the reference overwrites y_s with x_s); the image
            is reflect-padded by one pixel and corner indices are clamped to the padded
            image, with bilinear weights taken from the clamped upper corner as the reference
            does (so coordinates beyond the border read the border of the padded image).
            The authors' checkpoints were trained with this sampler.
``exact``   correct bilinear sampling at (row = y_s, col = x_s), clamped to the image edge.

Both gather four corners from a flattened ``(K * H' * W', 3)`` table with one flat index per
output pixel, which ONNX exports as a plain Gather and TensorRT runs natively.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

WARP_MODES = ("legacy", "exact")


class LimbWarp(nn.Module):
    """Warp K masked source images by K per-frame transforms.

    ``parts``: (1 or B, K, 3, H, W), the source image times each limb's mask.
    ``transforms``: (B, K, 2, 3) target -> source pixel maps (see ``LimbTransforms``).
    Returns (B, K * 3, H, W): limb k's warp in channels 3k..3k+2.
    """

    def __init__(self, height: int, width: int, mode: str = "legacy"):
        super().__init__()
        if mode not in WARP_MODES:
            raise ValueError(f"warp mode {mode!r}; expected one of {', '.join(WARP_MODES)}")
        self.mode = mode
        self.height, self.width = int(height), int(width)
        rows = torch.arange(self.height, dtype=torch.float32).view(-1, 1).expand(self.height, self.width)
        cols = torch.arange(self.width, dtype=torch.float32).view(1, -1).expand(self.height, self.width)
        # (3, H*W) homogeneous target grid, as the reference builds it
        grid = torch.stack([cols.reshape(-1), rows.reshape(-1), torch.ones(self.height * self.width)])
        self.register_buffer("grid", grid, persistent=False)

    def forward(self, parts: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
        batch, limbs = transforms.shape[0], transforms.shape[1]
        channels = parts.shape[2]
        H, W = self.height, self.width
        coords = torch.matmul(transforms, self.grid)                    # (B, K, 2, H*W)
        if self.mode == "legacy":
            table = F.pad(parts.flatten(0, 1), [1, 1, 1, 1], mode="reflect")
            Hp, Wp = H + 2, W + 2
            u = coords[:, :, 0] + 1.0                                   # y_s discarded (quirk)
            col, row = u, u
        else:
            table = parts.flatten(0, 1)
            Hp, Wp = H, W
            col = torch.clamp(coords[:, :, 0], 0, W - 1)
            row = torch.clamp(coords[:, :, 1], 0, H - 1)
        x0 = torch.floor(col)
        y0 = torch.floor(row)
        x1 = torch.clamp(x0 + 1, 0, Wp - 1)
        y1 = torch.clamp(y0 + 1, 0, Hp - 1)
        x0 = torch.clamp(x0, 0, Wp - 1)
        y0 = torch.clamp(y0, 0, Hp - 1)
        dx = x1 - col
        dy = y1 - row
        # table: (P*K, C, Hp, Wp) with P = 1 or B -> rows of C values
        flat = table.permute(0, 2, 3, 1).reshape(-1, channels)
        per_part = Hp * Wp
        part_batch = parts.shape[0]
        offset = torch.arange(limbs, device=parts.device).view(1, limbs, 1) * per_part
        if part_batch != 1:
            offset = offset + torch.arange(batch, device=parts.device).view(batch, 1, 1) * (limbs * per_part)
        x0i, x1i, y0i, y1i = (v.to(torch.int64) for v in (x0, x1, y0, y1))

        def corner(yi: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
            return flat[(yi * Wp + xi + offset).reshape(-1)].reshape(batch, limbs, H * W, channels)

        wa = (dx * dy).unsqueeze(-1)
        wb = (dx * (1 - dy)).unsqueeze(-1)
        wc = ((1 - dx) * dy).unsqueeze(-1)
        wd = ((1 - dx) * (1 - dy)).unsqueeze(-1)
        out = (wa * corner(y0i, x0i) + wb * corner(y1i, x0i)
               + wc * corner(y0i, x1i) + wd * corner(y1i, x1i))       # (B, K, H*W, C)
        return out.permute(0, 1, 3, 2).reshape(batch, limbs * channels, H, W)
