"""Quality numbers and the reduced-precision gate (export.quality): SSIM against a direct
implementation and closed forms, frame_quality, QualityGate, and the gate inside `verify`."""
from __future__ import annotations

import math

import numpy as np
import pytest

from poserender.commands.verify import _verdict
from poserender.export.quality import QualityGate, frame_quality, ssim
from poserender.export.verify import compare_outputs, psnr

C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def direct_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM by the definition: every 11 x 11 window that fits, Gaussian weights (sigma 1.5,
    normalised), local means/variances/covariance, averaged over the windows."""
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5 ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    x, y = x.astype(np.float64), y.astype(np.float64)
    values = []
    for i in range(x.shape[0] - 10):
        for j in range(x.shape[1] - 10):
            a, b = x[i:i + 11, j:j + 11], y[i:i + 11, j:j + 11]
            mx, my = (w * a).sum(), (w * b).sum()
            vx, vy = (w * (a - mx) ** 2).sum(), (w * (b - my) ** 2).sum()
            cov = (w * (a - mx) * (b - my)).sum()
            values.append((2 * mx * my + C1) * (2 * cov + C2) / ((mx ** 2 + my ** 2 + C1) * (vx + vy + C2)))
    return float(np.mean(values))


def test_ssim_equals_the_definition_window_by_window():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (19, 23), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-30, 31, a.shape), 0, 255).astype(np.uint8)
    assert ssim(a, b) == pytest.approx(direct_ssim(a, b), abs=1e-9)
    assert ssim(a, b) == pytest.approx(ssim(b, a), abs=1e-12)            # symmetric
    assert 0 < ssim(a, b) < 1


def test_ssim_closed_forms_identity_and_channels():
    flat_a, flat_b = np.full((16, 16), 100, np.uint8), np.full((16, 16), 140, np.uint8)
    # no variance: SSIM is the luminance term alone
    assert ssim(flat_a, flat_b) == pytest.approx((2 * 100 * 140 + C1) / (100 ** 2 + 140 ** 2 + C1), abs=1e-12)
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    assert ssim(frames, frames) == pytest.approx(1.0, abs=1e-12)
    noisy = np.clip(frames.astype(int) + rng.normal(0, 20, frames.shape).round(), 0, 255).astype(np.uint8)
    per_channel = np.mean([direct_ssim(frames[n, :, :, c], noisy[n, :, :, c]) for n in range(2) for c in range(3)])
    assert ssim(frames, noisy) == pytest.approx(per_channel, abs=1e-9)
    more_noise = np.clip(frames.astype(int) + rng.normal(0, 60, frames.shape).round(), 0, 255).astype(np.uint8)
    assert ssim(frames, more_noise) < ssim(frames, noisy) < 1


def test_ssim_rejects_mismatched_or_tiny_inputs():
    with pytest.raises(ValueError, match="shapes differ"):
        ssim(np.zeros((16, 16)), np.zeros((16, 17)))
    with pytest.raises(ValueError, match="H, W >= 11"):
        ssim(np.zeros((8, 8)), np.zeros((8, 8)))


def test_frame_quality_numbers():
    rng = np.random.default_rng(2)
    ref = rng.integers(0, 256, (3, 24, 24, 3), dtype=np.uint8)
    got = ref.copy()
    got[0, 12, 12, 0] = np.uint8(int(ref[0, 12, 12, 0]) ^ 0x80)          # one value moved by 128 levels
    got[1, 5, 5, :] = np.clip(ref[1, 5, 5, :].astype(int) + 2, 0, 255)  # within 2 levels
    q = frame_quality(ref, got)
    assert q["frames"] == 3 and q["nonfinite"] == 0
    assert q["max_abs_error"] == 128.0
    assert q["psnr_db"] == pytest.approx(psnr(ref, got, 255.0), abs=1e-3)
    assert q["fraction_over_2_levels"] == pytest.approx(1 / ref.size, abs=1e-6)
    assert q["ssim"] < 1.0
    same = frame_quality(ref, ref)
    assert same["psnr_db"] is None and same["ssim"] == 1.0 and same["max_abs_error"] == 0.0   # None: infinite PSNR
    floats = ref.astype(np.float32)
    floats[2, 0, 0, 0] = np.nan
    assert frame_quality(ref, floats)["nonfinite"] == 1


def test_gate_passes_fails_and_says_why():
    gate = QualityGate()
    assert gate.min_psnr_db == 35.0 and gate.min_ssim is None
    good = {"psnr_db": 41.2, "ssim": 0.99, "max_abs_error": 7.0, "frames": 16, "nonfinite": 0}
    bad = {**good, "psnr_db": 31.24}
    assert gate.passes(good) and not gate.passes(bad)
    assert gate.failures(bad) == ["PSNR 31.24 dB < 35 dB"]
    line = gate.verdict(bad, "INT8 frame stage vs FP32")
    assert line.startswith("INT8 frame stage vs FP32: PSNR 31.24 dB, SSIM 0.9900, max |err| 7 levels over 16")
    assert "gate PSNR >= 35 dB: FAILED" in line and "\n" not in line
    assert "passed" in gate.verdict(good, "x")
    assert gate.passes({"psnr_db": None, "nonfinite": 0})                      # identical frames
    assert not gate.passes({"psnr_db": float("nan"), "nonfinite": 0})
    assert gate.failures({"psnr_db": 50.0, "nonfinite": 3}) == ["3 NaN/inf values"]
    strict = QualityGate(min_psnr_db=30, min_ssim=0.995)
    assert strict.failures(good) == ["SSIM 0.9900 < 0.995"] and strict.describe() == "PSNR >= 30 dB, SSIM >= 0.995"
    assert not strict.passes({"psnr_db": 40.0, "nonfinite": 0})                # SSIM asked for, not measured
    for bad_args in ((0.0, None), (-3.0, None), (35.0, 1.5)):
        with pytest.raises(ValueError):
            QualityGate(*bad_args)


def test_verify_uses_the_same_gate_for_fp16_bf16():
    ref = {"frames": np.full((1, 16, 16, 3), 120, np.uint8)}
    close = {"frames": ref["frames"].copy()}
    close["frames"][0, 0, 0, 0] = 121
    far = {"frames": (ref["frames"].astype(int) + np.random.default_rng(3).integers(-40, 41, (1, 16, 16, 3)))
           .clip(0, 255).astype(np.uint8)}
    assert _verdict(compare_outputs(ref, close), "fp16")
    report = compare_outputs(ref, far)
    assert report["frames"]["psnr_db"] < 35 and not _verdict(report, "bf16")
    nan_out = {"x": np.array([0.0, np.nan], np.float32)}
    assert not _verdict(compare_outputs({"x": np.zeros(2, np.float32)}, nan_out), "fp16")
    assert math.isinf(compare_outputs(ref, ref)["frames"]["psnr_db"]) and _verdict(compare_outputs(ref, ref), "fp16")
