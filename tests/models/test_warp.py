"""LimbWarp in both modes against small numpy re-implementations written from the fixtures'
quirk list (README quirks 1-3): 'legacy' is the reference sampler, 'exact' correct bilinear."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from poserender.models.warp import WARP_MODES, LimbWarp

K = 8


# ---------------------------------------------------------------------------------------------
# numpy references
# ---------------------------------------------------------------------------------------------
def ref_legacy_warp(image: np.ndarray, T: np.ndarray, dtype=np.float32) -> np.ndarray:
    """The reference ``interpolate`` on one (C, H, W) image and one 2x3 target->source map:

    x_s = a1*col - b1*row + a0 on the integer grid (float32); reflect-pad by 1; u = x_s + 1 is
    used for BOTH axes (y = x); corners floor(u), floor(u)+1 clamped to the padded image
    [0, W+1] / [0, H+1]; bilinear weights from the clamped upper corner: dx = x1 - u, the four
    weights dx*dy, dx*(1-dy), (1-dx)*dy, (1-dx)*(1-dy) on (y0,x0), (y1,x0), (y0,x1), (y1,x1).

    ``dtype`` float32 does the weights and the blend in float32, in the reference's order, as the
    reference runs; float64 does them exactly. They differ where the coordinate is clamped: the
    weights then grow like (distance outside)^2 and cancel (they still sum to 1), which costs
    float32 about 1e-7 * dx^2.
    """
    f = dtype
    C, H, W = image.shape
    padded = np.pad(image.astype(f), ((0, 0), (1, 1), (1, 1)), mode="reflect")
    rows, cols = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    grid = np.stack([cols.ravel(), rows.ravel(), np.ones(H * W)]).astype(np.float32)
    x_s = (T.astype(np.float32) @ grid)[0]
    u = (x_s + np.float32(1)).astype(f)
    x0 = np.floor(u)
    x1 = np.clip(x0 + 1, 0, W + 1)
    y1 = np.clip(x0 + 1, 0, H + 1)
    y0 = np.clip(x0, 0, H + 1)
    x0 = np.clip(x0, 0, W + 1)
    dx = x1 - u
    dy = y1 - u
    one = f(1)
    x0, x1, y0, y1 = (v.astype(int) for v in (x0, x1, y0, y1))
    out = (dx * dy * padded[:, y0, x0] + dx * (one - dy) * padded[:, y1, x0]
           + (one - dx) * dy * padded[:, y0, x1] + (one - dx) * (one - dy) * padded[:, y1, x1])
    assert out.dtype == f
    return out.reshape(C, H, W)


def legacy_coordinate(T: np.ndarray, H: int, W: int) -> np.ndarray:
    """x_s of every target pixel, (H, W)."""
    rows, cols = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    return T[0, 0] * cols + T[0, 1] * rows + T[0, 2]


def ref_exact_warp(image: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Plain bilinear sampling at (row = y_s, col = x_s), clamped to the image edge."""
    C, H, W = image.shape
    rows, cols = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
    xs = np.clip(T[0, 0] * cols + T[0, 1] * rows + T[0, 2], 0, W - 1)
    ys = np.clip(T[1, 0] * cols + T[1, 1] * rows + T[1, 2], 0, H - 1)
    x0 = np.floor(xs).astype(int)
    y0 = np.floor(ys).astype(int)
    x1 = np.minimum(x0 + 1, W - 1)
    y1 = np.minimum(y0 + 1, H - 1)
    fx, fy = xs - x0, ys - y0
    img = image.astype(np.float64)
    return ((1 - fx) * (1 - fy) * img[:, y0, x0] + (1 - fx) * fy * img[:, y1, x0]
            + fx * (1 - fy) * img[:, y0, x1] + fx * fy * img[:, y1, x1])


def ref_warp(parts: np.ndarray, transforms: np.ndarray, mode: str, dtype=np.float32) -> np.ndarray:
    """(P, K, C, H, W) parts (P = 1 or B), (B, K, 2, 3) -> (B, K*C, H, W)."""
    B, K_, _, _ = transforms.shape
    C, H, W = parts.shape[2:]
    out = np.empty((B, K_ * C, H, W))
    for b in range(B):
        for k in range(K_):
            part = parts[b if parts.shape[0] > 1 else 0, k]
            out[b, k * C:(k + 1) * C] = (ref_legacy_warp(part, transforms[b, k], dtype) if mode == "legacy"
                                         else ref_exact_warp(part, transforms[b, k]))
    return out


def random_parts(batch: int, height: int, width: int, seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).uniform(-1, 1, (batch, K, 3, height, width)).astype(np.float32))


def identity(batch: int) -> torch.Tensor:
    return torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(batch, K, 2, 3).contiguous()


def random_transforms(batch: int, seed: int, size: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    s = rng.uniform(0.7, 1.3, (batch, K))
    theta = rng.uniform(-0.5, 0.5, (batch, K))
    a1, b1 = s * np.cos(theta), s * np.sin(theta)
    a0, b0 = rng.uniform(-0.4 * size, 0.4 * size, (2, batch, K))
    T = np.stack([np.stack([a1, -b1, a0], -1), np.stack([b1, a1, b0], -1)], -2)
    return torch.from_numpy(T.astype(np.float32))


# ---------------------------------------------------------------------------------------------
def test_invalid_mode_raises():
    assert set(WARP_MODES) == {"legacy", "exact"}
    with pytest.raises(ValueError, match="bilinear"):
        LimbWarp(16, 16, "bilinear")


def test_exact_identity_reproduces_the_parts():
    H, W = 24, 40
    parts = random_parts(2, H, W, 0)
    out = LimbWarp(H, W, "exact")(parts, identity(2))
    assert out.shape == (2, K * 3, H, W)
    assert torch.equal(out, parts.reshape(2, K * 3, H, W))


@pytest.mark.parametrize("tx,ty", [(3, -2), (-5, 4), (0, 7)])
def test_exact_integer_translation_shifts_with_edge_clamp(tx, ty):
    H, W = 24, 40
    parts = random_parts(1, H, W, 1)
    T = identity(1).clone()
    T[..., 0, 2] = tx
    T[..., 1, 2] = ty
    out = LimbWarp(H, W, "exact")(parts, T).numpy().reshape(1, K, 3, H, W)
    rows = np.clip(np.arange(H) + ty, 0, H - 1)
    cols = np.clip(np.arange(W) + tx, 0, W - 1)
    expected = parts.numpy()[:, :, :, rows][:, :, :, :, cols]
    np.testing.assert_array_equal(out, expected)


def test_exact_random_transforms_match_numpy():
    H, W = 24, 40
    parts = random_parts(2, H, W, 2)
    T = random_transforms(2, 3, min(H, W))
    got = LimbWarp(H, W, "exact")(parts, T).numpy()
    np.testing.assert_allclose(got, ref_warp(parts.numpy(), T.numpy().astype(np.float64), "exact"), rtol=0, atol=1e-5)


def test_legacy_identity_samples_the_diagonal():
    """Quirk 1: y_s is discarded, so output (r, c) = input (c, c) for every row r."""
    S = 20
    parts = random_parts(1, S, S, 4)
    out = LimbWarp(S, S, "legacy")(parts, identity(1)).numpy().reshape(K, 3, S, S)
    src = parts.numpy()[0]
    diag = src[:, :, np.arange(S), np.arange(S)]                # (K, 3, S): input (c, c)
    np.testing.assert_array_equal(out, np.broadcast_to(diag[:, :, None, :], out.shape))
    np.testing.assert_allclose(out, ref_warp(parts.numpy(), identity(1).numpy(), "legacy")[0].reshape(K, 3, S, S),
                               rtol=0, atol=1e-6)
    # and it is not the identity warp of 'exact' mode
    assert not np.allclose(out, src)


def test_legacy_border_reads_the_reflect_padded_edge():
    """Quirk 2: a source coordinate below -1 reads padded (0, 0) = input (1, 1); above W reads
    padded (W+1, W+1) = input (W-2, W-2)."""
    S = 16
    parts = random_parts(1, S, S, 5)
    src = parts.numpy()[0]
    warp = LimbWarp(S, S, "legacy")
    for tx, col, expected in ((-3, 0, src[:, :, 1, 1]), (3, S - 1, src[:, :, S - 2, S - 2])):
        T = identity(1).clone()
        T[..., 0, 2] = tx
        out = warp(parts, T).numpy().reshape(K, 3, S, S)
        np.testing.assert_allclose(out[:, :, :, col], np.broadcast_to(expected[:, :, None], (K, 3, S)), rtol=0, atol=1e-6)


@pytest.mark.parametrize("part_batch", [2, 1])
def test_legacy_random_transforms_match_numpy(part_batch):
    S = 32
    parts = random_parts(part_batch, S, S, 6)
    T = random_transforms(2, 7, S)
    got = LimbWarp(S, S, "legacy")(parts, T).numpy()
    assert got.shape == (2, K * 3, S, S)
    # the reference's float32 arithmetic
    np.testing.assert_allclose(got, ref_warp(parts.numpy(), T.numpy(), "legacy"), rtol=0, atol=1e-5)
    # exact arithmetic: equal where the sampling coordinate is inside [-1, S] (no clamping); the
    # clamped pixels carry the reference's own float32 cancellation (<= ~1e-7 * distance^2)
    exact = ref_warp(parts.numpy(), T.numpy(), "legacy", np.float64)
    x_s = np.stack([np.stack([legacy_coordinate(T.numpy()[b, k].astype(np.float64), S, S) for k in range(K)])
                    for b in range(2)])                                       # (2, K, S, S)
    inside = np.repeat((x_s >= -1) & (x_s <= S), 3, axis=1)                  # (2, K*3, S, S)
    outside = np.repeat(np.maximum(-1 - x_s, x_s - S).clip(min=0), 3, axis=1)
    assert inside.mean() > 0.3 and (~inside).mean() > 0.05                   # both regimes are tested
    np.testing.assert_allclose(got[inside], exact[inside], rtol=0, atol=1e-5)
    assert np.all(np.abs(got - exact) <= 1e-5 + 4e-7 * (outside + 1) ** 2)


@pytest.mark.parametrize("mode", ["legacy", "exact"])
def test_shared_parts_broadcast_over_the_batch(mode):
    S = 32
    parts = random_parts(1, S, S, 8)
    T = random_transforms(3, 9, S)
    warp = LimbWarp(S, S, mode)
    shared = warp(parts, T)
    repeated = warp(parts.expand(3, -1, -1, -1, -1).contiguous(), T)
    singles = torch.cat([warp(parts, T[i:i + 1]) for i in range(3)])
    assert torch.equal(shared, repeated)
    assert torch.allclose(shared, singles, rtol=0, atol=1e-6)
