"""Pose2Img preprocessing as batched, exportable tensor code.

All coordinates are canvas pixels (x = column, y = row, origin top-left, y down) of the
network canvas (the 640 x 640 crop divided by the config's ``scale``). Keypoints come as
``(B, 122, 2)`` float tensors with a ``(B, 122)`` validity mask (1 = use the joint, 0 =
missing). With every joint valid the results equal the reference implementation, quirks
included (see ``../shared/fixtures/pose2img/README.md``); invalid joints are excluded from
heat maps, limb masks and limb fits (README, "Missing joints and warp modes").

Nothing here loops over batch items, joints or pixels in Python: loops run over the 13
clusters / 8 limbs only at construction time, to build index tables.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import nn

from ..keypoints.layout import CLUSTERS, LIMBS


def _index_table(groups: Sequence[Sequence[int]]) -> Tuple[torch.Tensor, torch.Tensor]:
    """(G, Jmax) joint indices padded with 0, and the (G, Jmax) 0/1 mask of real entries."""
    width = max(len(g) for g in groups)
    index = torch.zeros(len(groups), width, dtype=torch.long)
    present = torch.zeros(len(groups), width)
    for gi, group in enumerate(groups):
        index[gi, :len(group)] = torch.tensor(list(group))
        present[gi, :len(group)] = 1.0
    return index, present


def _trunc(x: torch.Tensor) -> torch.Tensor:
    """Round toward zero like the reference's ``int(x)``; ONNX opset 17 has no Trunc op."""
    return torch.sign(x) * torch.floor(torch.abs(x))


def gather_groups(joints: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B, 122, ...) -> (B, G, Jmax, ...) by a table from :func:`_index_table`."""
    return joints[:, index]


class ClusterHeatmaps(nn.Module):
    """13 joint-cluster heat maps, ``(B, 122, 2) -> (B, 13, H, W)``.

    Each joint paints an isotropic Gaussian ``exp(-d^2 / (2 var))`` (peak 1) on an L x L
    window centred on its truncated position, ``L = 11`` if var < 10 else 49; a cluster is the
    sum of its joints' windows. The reference pastes a pre-computed patch with several border
    quirks (window end clamped to H-1/W-1; a window starting exactly at 0 is pasted only if it
    fits whole; clipped windows are cut from the patch's far side). All of them act per axis,
    so each joint's map is an outer product ``g_y (H) x g_x (W)`` times a paint flag, and a
    cluster's map is one ``(H x J) @ (J x W)`` matmul.
    """

    def __init__(self, height: int, width: int, var_root: Sequence[float],
                 clusters: Sequence[Sequence[int]] = CLUSTERS):
        super().__init__()
        if len(var_root) != len(clusters):
            raise ValueError(f"{len(var_root)} variances for {len(clusters)} clusters")
        self.height, self.width = int(height), int(width)
        index, present = _index_table(clusters)
        var = torch.tensor([float(v) ** 2 for v in var_root]).unsqueeze(1)       # (C, 1)
        patch = torch.where(var < 10, torch.tensor(11.0), torch.tensor(49.0))
        self.register_buffer("index", index, persistent=False)
        self.register_buffer("present", present, persistent=False)
        self.register_buffer("var", var, persistent=False)
        self.register_buffer("patch", patch, persistent=False)
        self.register_buffer("rows", torch.arange(self.height, dtype=torch.float32), persistent=False)
        self.register_buffer("cols", torch.arange(self.width, dtype=torch.float32), persistent=False)

    def _axis(self, centre: torch.Tensor, size: int):
        """Per-axis window of the reference paste: start, end, tail/head slicing, patch length."""
        L = self.patch
        half = torch.div(L, 2, rounding_mode="floor")
        start = centre - half
        end = torch.clamp(start + L, 0, size - 1)
        start_c = torch.clamp(start, 0, size)
        valid = end - start_c                       # python slice length before clamping at 0
        region = torch.clamp(valid, min=0)
        tail_len = torch.clamp(valid, 0, None)      # patch[L - v:]  (top/left clipped windows)
        head_len = torch.where(valid >= 0, valid, torch.clamp(L + valid, min=0))  # patch[:v]
        return start, start_c, end, valid, region, tail_len, head_len, half

    def forward(self, joints: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        L = self.patch
        xy = gather_groups(joints, self.index)                          # (B, C, J, 2)
        weight = gather_groups(valid, self.index) * self.present        # (B, C, J)
        cx = _trunc(xy[..., 0])
        cy = _trunc(xy[..., 1])
        sx, sx_c, ex, vx, rx, tx, hx, half = self._axis(cx, self.width)
        sy, sy_c, ey, vy, ry, ty, hy, _ = self._axis(cy, self.height)
        # The reference picks a slicing mode from the signs of both window starts: any start
        # exactly 0 keeps the whole patch; otherwise each axis is cut from the far side
        # (start < 0) or the near side (start > 0).
        whole = (sx == 0) | (sy == 0)
        len_x = torch.where(whole, L, torch.where(sx < 0, tx, hx))
        len_y = torch.where(whole, L, torch.where(sy < 0, ty, hy))
        painted = (len_x == rx) & (len_y == ry)
        # canvas index of the patch centre (differs from the joint only in the quirky cases)
        shift_x = torch.where(~whole & (sx < 0), L - vx, torch.zeros_like(vx))
        shift_y = torch.where(~whole & (sy < 0), L - vy, torch.zeros_like(vy))
        ox = sx_c + half - shift_x
        oy = sy_c + half - shift_y
        var2 = 2.0 * self.var.unsqueeze(-1)                              # (C, 1, 1)
        cols, rows = self.cols, self.rows
        in_x = (cols >= sx_c.unsqueeze(-1)) & (cols < ex.unsqueeze(-1))
        in_y = (rows >= sy_c.unsqueeze(-1)) & (rows < ey.unsqueeze(-1))
        gx = torch.exp(-(cols - ox.unsqueeze(-1)) ** 2 / var2) * in_x.to(joints.dtype)
        gy = torch.exp(-(rows - oy.unsqueeze(-1)) ** 2 / var2) * in_y.to(joints.dtype)
        gx = gx * (weight * painted.to(joints.dtype)).unsqueeze(-1)     # (B, C, J, W)
        return torch.matmul(gy.transpose(-1, -2), gx)                   # (B, C, H, W)


class LimbMaskPrior(nn.Module):
    """The 9-channel log prior of stage A: ``log(cat(1 - max_k m_k, m_1..m_8) + 1e-10)``.

    Limb k's mask is an oriented Gaussian centred on the mean of its joints, with variance
    ``max(5, |p1 - p0|^2 / 1.5)`` along the first two joints and ``sigma_perp^2`` across,
    divided by its canvas maximum (+1e-6). The angle is taken as cos/sin of the p0 -> p1
    direction (no atan2, which ONNX lacks); a zero-length limb uses angle 0, like atan2(0, 0).
    Invalid joints leave the centre; if p0 or p1 is invalid the limb falls back to the
    zero-length shape; a limb with no valid joint has an empty mask.
    """

    def __init__(self, height: int, width: int, sigma_perp: Sequence[float],
                 limbs: Sequence[Sequence[int]] = LIMBS):
        super().__init__()
        if len(sigma_perp) != len(limbs):
            raise ValueError(f"{len(sigma_perp)} widths for {len(limbs)} limbs")
        index, present = _index_table(limbs)
        self.register_buffer("index", index, persistent=False)
        self.register_buffer("present", present, persistent=False)
        self.register_buffer("var_perp", torch.tensor([float(s) ** 2 for s in sigma_perp]), persistent=False)
        self.register_buffer("rows", torch.arange(int(height), dtype=torch.float32), persistent=False)
        self.register_buffer("cols", torch.arange(int(width), dtype=torch.float32), persistent=False)

    def forward(self, joints: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        xy = gather_groups(joints, self.index)                          # (B, K, J, 2)
        w = gather_groups(valid, self.index) * self.present             # (B, K, J)
        n = w.sum(-1)
        centre = (xy * w.unsqueeze(-1)).sum(-2) / torch.clamp(n, min=1.0).unsqueeze(-1)
        ends_ok = w[..., 0] * w[..., 1]
        dx = (xy[..., 0, 0] - xy[..., 1, 0]) * ends_ok                  # p0.x - p1.x
        dy = (xy[..., 1, 1] - xy[..., 0, 1]) * ends_ok                  # p1.y - p0.y
        length2 = dx * dx + dy * dy
        length = torch.sqrt(length2)
        has_dir = length > 0
        cos = torch.where(has_dir, dx / torch.where(has_dir, length, torch.ones_like(length)), torch.ones_like(dx))
        sin = torch.where(has_dir, dy / torch.where(has_dir, length, torch.ones_like(length)), torch.zeros_like(dy))
        var_par = torch.clamp(length2 / 1.5, min=5.0)
        var_perp = self.var_perp
        a = cos * cos / (2 * var_par) + sin * sin / (2 * var_perp)
        b = -(2 * sin * cos) / (4 * var_par) + (2 * sin * cos) / (4 * var_perp)
        c = sin * sin / (2 * var_par) + cos * cos / (2 * var_perp)
        ddx = self.cols.view(1, 1, 1, -1) - centre[..., 0, None, None]  # (B, K, 1, W)
        ddy = self.rows.view(1, 1, -1, 1) - centre[..., 1, None, None]  # (B, K, H, 1)
        a, b, c = (t[..., None, None] for t in (a, b, c))
        masks = torch.exp(-(a * ddx * ddx + 2 * b * ddx * ddy + c * ddy * ddy))
        masks = masks * (n > 0).to(masks.dtype)[..., None, None]
        peak = torch.amax(masks, dim=(-2, -1), keepdim=True)
        masks = masks / (peak + 1e-6)
        background = 1.0 - torch.amax(masks, dim=1, keepdim=True)
        return torch.log(torch.cat([background, masks], dim=1) + 1e-10)


class LimbTransforms(nn.Module):
    """Per-limb similarity from TARGET to SOURCE canvas pixels, ``(B, 8, 2, 3)``.

    Row-major ``[[a1, -b1, a0], [b1, a1, b0]]`` maps a target pixel (x, y, 1) to the source
    pixel to sample. It is the least-squares fit over the limb's joints (exact for 2-joint
    limbs) in closed form on centred coordinates. Only joints valid in both poses take part.
    Degenerate fits follow the reference's ``np.linalg.lstsq`` minimum-norm answer when the
    target joints coincide; a limb with one usable joint gets a pure translation, and with
    none the identity (README, "Missing joints and warp modes").
    ``source`` may have batch 1 (one identity for a batch of frames).
    """

    def __init__(self, limbs: Sequence[Sequence[int]] = LIMBS):
        super().__init__()
        index, present = _index_table(limbs)
        self.register_buffer("index", index, persistent=False)
        self.register_buffer("present", present, persistent=False)

    def forward(self, source: torch.Tensor, source_valid: torch.Tensor,
                target: torch.Tensor, target_valid: torch.Tensor) -> torch.Tensor:
        s = gather_groups(source, self.index)                           # (B, K, J, 2)
        t = gather_groups(target, self.index)
        w = gather_groups(source_valid, self.index) * gather_groups(target_valid, self.index) * self.present
        n = w.sum(-1, keepdim=True)                                     # (B, K, 1)
        n_safe = torch.clamp(n, min=1.0)
        mt = (t * w.unsqueeze(-1)).sum(-2) / n_safe                     # (B, K, 2)
        ms = (s * w.unsqueeze(-1)).sum(-2) / n_safe
        tc = (t - mt.unsqueeze(-2)) * w.unsqueeze(-1)
        sc = s - ms.unsqueeze(-2)
        spread = (tc * tc).sum((-2, -1))                                # sum |t'|^2, (B, K)
        dot = (tc * sc).sum((-2, -1))
        cross = (tc[..., 0] * sc[..., 1] - tc[..., 1] * sc[..., 0]).sum(-1)
        tx, ty, sx, sy = mt[..., 0], mt[..., 1], ms[..., 0], ms[..., 1]
        fit = spread > 1e-9
        safe = torch.where(fit, spread, torch.ones_like(spread))
        a1 = dot / safe
        b1 = cross / safe
        a0 = sx - a1 * tx + b1 * ty
        b0 = sy - b1 * tx - a1 * ty
        # coincident target joints: minimum-norm solution of the rank-2 system (reference)
        norm = 1.0 + tx * tx + ty * ty
        d_a0, d_b0 = sx / norm, sy / norm
        d_a1 = (tx * sx + ty * sy) / norm
        d_b1 = (tx * sy - ty * sx) / norm
        count = n.squeeze(-1)
        one, zero = torch.ones_like(a1), torch.zeros_like(a1)
        single = count < 1.5                                            # 0 or 1 usable joints
        a1 = torch.where(fit, a1, torch.where(single, one, d_a1))
        b1 = torch.where(fit, b1, torch.where(single, zero, d_b1))
        a0 = torch.where(fit, a0, torch.where(single, (sx - tx) * (count > 0.5), d_a0))
        b0 = torch.where(fit, b0, torch.where(single, (sy - ty) * (count > 0.5), d_b0))
        row0 = torch.stack([a1, -b1, a0], dim=-1)
        row1 = torch.stack([b1, a1, b0], dim=-1)
        return torch.stack([row0, row1], dim=-2)                        # (B, K, 2, 3)


def transforms_to_reference_layout(transforms: torch.Tensor) -> torch.Tensor:
    """(B, K, 2, 3) -> the reference's ``trans_in`` layout (B, 2, 3, K)."""
    return transforms.permute(0, 2, 3, 1)


def transforms_from_reference_layout(trans_in: torch.Tensor) -> torch.Tensor:
    """The reference's ``trans_in`` (B, 2, 3, K) -> (B, K, 2, 3)."""
    return trans_in.permute(0, 3, 1, 2)
