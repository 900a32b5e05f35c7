"""Image-quality numbers and the quality gate of reduced-precision graphs and engines.

A reduced-precision path (INT8 QDQ on ONNX Runtime, FP16/BF16 on a GPU) is compared with the
FP32 graph on the *uint8 frames* it renders, on frames it was not calibrated on:

- PSNR in dB (peak 255; :func:`psnr`),
- SSIM (Wang et al. 2004: 11 x 11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255,
  computed per colour channel over the "valid" region, where the window fits inside the image,
  and averaged over channels and frames),
- the maximum absolute difference in levels and the share of values more than 2 levels off.

:class:`QualityGate` holds the thresholds (default: PSNR >= 35 dB, the DESIGN's target for
FP16 vs FP32; SSIM optional) and answers pass/fail with one line naming the numbers and the gate.
The same gate is used by ``poserender export --precision int8`` and by ``poserender verify``
for FP16/BF16 engines.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, List, Mapping, Optional

import numpy as np



def psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    """Peak signal-to-noise ratio in dB; inf for identical inputs."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)

SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03
DEFAULT_MIN_PSNR_DB = 35.0


def _gaussian_filter_valid(image: np.ndarray) -> np.ndarray:
    """11 x 11 Gaussian (sigma 1.5) weighted mean of every window that fits inside ``image``
    (H, W) float64: the result is (H - 10, W - 10)."""
    import cv2

    kernel = cv2.getGaussianKernel(SSIM_WINDOW, SSIM_SIGMA, cv2.CV_64F)
    half = SSIM_WINDOW // 2
    # the border mode only touches the rows/columns cropped away below
    full = cv2.sepFilter2D(image, cv2.CV_64F, kernel, kernel, borderType=cv2.BORDER_REFLECT)
    return full[half:image.shape[0] - half, half:image.shape[1] - half]


def ssim(reference: np.ndarray, test: np.ndarray, peak: float = 255.0) -> float:
    """Mean SSIM of two uint8 images or stacks: (H, W), (H, W, C) or (N, H, W, C), both sides at
    least 11 pixels. 1.0 means identical."""
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(test, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"ssim: shapes differ, {a.shape} vs {b.shape}")
    if a.ndim == 2:
        a, b = a[None, :, :, None], b[None, :, :, None]
    elif a.ndim == 3:
        a, b = a[None], b[None]
    if a.ndim != 4 or min(a.shape[1:3]) < SSIM_WINDOW:
        raise ValueError(f"ssim: expected (H, W), (H, W, C) or (N, H, W, C) with H, W >= {SSIM_WINDOW}; "
                         f"got {np.shape(reference)}")
    c1, c2 = (SSIM_K1 * peak) ** 2, (SSIM_K2 * peak) ** 2
    values = []
    for n in range(a.shape[0]):
        for c in range(a.shape[3]):
            x, y = np.ascontiguousarray(a[n, :, :, c]), np.ascontiguousarray(b[n, :, :, c])
            mu_x, mu_y = _gaussian_filter_valid(x), _gaussian_filter_valid(y)
            var_x = _gaussian_filter_valid(x * x) - mu_x ** 2
            var_y = _gaussian_filter_valid(y * y) - mu_y ** 2
            cov = _gaussian_filter_valid(x * y) - mu_x * mu_y
            ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
            values.append(float(ssim_map.mean()))
    return float(np.mean(values))


def frame_quality(reference: np.ndarray, test: np.ndarray) -> Dict[str, Any]:
    """PSNR, SSIM, max abs error and share over 2 levels of uint8 frames (N, H, W, 3) against the
    reference's; NaN/inf are counted for float inputs (a uint8 frame cannot hold one)."""
    reference, test = np.asarray(reference), np.asarray(test)
    if reference.shape != test.shape:
        raise ValueError(f"frame_quality: shapes differ, {reference.shape} vs {test.shape}")
    diff = np.abs(reference.astype(np.int32) - test.astype(np.int32)) if test.dtype.kind != "f" else \
        np.abs(reference.astype(np.float64) - test.astype(np.float64))
    nonfinite = int((~np.isfinite(test)).sum()) if test.dtype.kind == "f" else 0
    value = psnr(reference, test, 255.0)
    return {"frames": int(reference.shape[0]) if reference.ndim == 4 else 1,
            "psnr_db": None if math.isinf(value) else round(value, 3),
            "ssim": round(ssim(reference, test), 6) if not nonfinite else None,
            "max_abs_error": float(np.nanmax(diff)) if diff.size else 0.0,
            "fraction_over_2_levels": round(float((diff > 2).mean()), 6),
            "nonfinite": nonfinite}


@dataclasses.dataclass(frozen=True)
class QualityGate:
    """Thresholds a reduced-precision output must reach against FP32: PSNR (dB) and,
    optionally, SSIM. A PSNR of None in a quality record means identical frames (infinite)."""

    min_psnr_db: float = DEFAULT_MIN_PSNR_DB
    min_ssim: Optional[float] = None

    def __post_init__(self):
        if not self.min_psnr_db > 0:
            raise ValueError(f"min_psnr_db {self.min_psnr_db}; expected a positive number of dB")
        if self.min_ssim is not None and not -1.0 <= self.min_ssim <= 1.0:
            raise ValueError(f"min_ssim {self.min_ssim}; expected a value in [-1, 1]")

    def failures(self, quality: Mapping[str, Any]) -> List[str]:
        """What falls short in ``quality`` (a :func:`frame_quality` record, or an entry of
        :func:`poserender.export.verify.compare_outputs`); empty when it passes."""
        out = []
        if quality.get("nonfinite"):
            out.append(f"{quality['nonfinite']} NaN/inf values")
        value = quality.get("psnr_db")
        value = math.inf if value is None else float(value)
        if math.isnan(value) or value < self.min_psnr_db:
            out.append(f"PSNR {value:.2f} dB < {self.min_psnr_db:g} dB")
        if self.min_ssim is not None:
            s = quality.get("ssim")
            if s is None or s < self.min_ssim:
                out.append(f"SSIM {'n/a' if s is None else f'{s:.4f}'} < {self.min_ssim:g}")
        return out

    def passes(self, quality: Mapping[str, Any]) -> bool:
        return not self.failures(quality)

    def describe(self) -> str:
        return f"PSNR >= {self.min_psnr_db:g} dB" + ("" if self.min_ssim is None else f", SSIM >= {self.min_ssim:g}")

    def verdict(self, quality: Mapping[str, Any], what: str) -> str:
        """One line: ``WHAT: PSNR 31.20 dB, SSIM 0.9412, max |err| 41 levels over N frames;
        gate PSNR >= 35 dB: FAILED (PSNR 31.20 dB < 35 dB)``."""
        value = quality.get("psnr_db")
        numbers = [f"PSNR {'inf' if value is None else f'{value:.2f}'} dB"]
        if quality.get("ssim") is not None:
            numbers.append(f"SSIM {quality['ssim']:.4f}")
        if quality.get("max_abs_error") is not None:
            numbers.append(f"max |err| {quality['max_abs_error']:g} levels")
        frames = f" over {quality['frames']} held-out frames" if quality.get("frames") else ""
        failed = self.failures(quality)
        result = "passed" if not failed else f"FAILED ({'; '.join(failed)})"
        return f"{what}: {', '.join(numbers)}{frames}; gate {self.describe()}: {result}"

    def to_dict(self) -> Dict[str, Any]:
        return {"min_psnr_db": self.min_psnr_db, "min_ssim": self.min_ssim}
