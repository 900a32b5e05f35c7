"""Eager PyTorch engine: runs a stage's nn.Module (the reference for every other backend)."""
from __future__ import annotations

from typing import Callable, Dict

import numpy as np

from ..specs import StageSpec
from .base import Engine


def is_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


class TorchEngine(Engine):
    """``module_loader`` is a cheap callable returning the stage module; it runs at activate()."""

    backend = "torch"

    def __init__(self, spec: StageSpec, module_loader: Callable[[], "object"], device: str = "cpu"):
        super().__init__(spec)
        self.module_loader = module_loader
        self.device = device
        self.module = None

    def _activate_impl(self) -> None:
        self.module = self.module_loader().to(self.device).eval()

    def _infer_impl(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        import torch

        with torch.no_grad():
            out = self.module(*(torch.from_numpy(feed[n]).to(self.device) for n in self.spec.input_names))
        out = out if isinstance(out, (tuple, list)) else (out,)
        return {n: t.cpu().numpy() for n, t in zip(self.spec.output_names, out)}

    def _deactivate_impl(self) -> None:
        self.module = None
