"""ONNX Runtime engine (CPU here; the CUDA/TensorRT providers plug into the same class later)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from ..specs import StageSpec
from .base import Engine


def is_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class OrtEngine(Engine):
    backend = "ort-cpu"

    def __init__(self, spec: StageSpec, onnx_path: Path, providers: Sequence[str] = ("CPUExecutionProvider",),
                 threads: Optional[int] = None):
        super().__init__(spec)
        self.onnx_path = Path(onnx_path)
        self.providers = list(providers)
        self.threads = threads
        self.session = None

    def _activate_impl(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self.threads or (os.cpu_count() or 1)
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.onnx_path), options, providers=self.providers)
        self._outputs = [o.name for o in self.session.get_outputs()]

    def _infer_impl(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return dict(zip(self._outputs, self.session.run(self._outputs, feed)))

    def _deactivate_impl(self) -> None:
        self.session = None
