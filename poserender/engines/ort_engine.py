"""ONNX Runtime engine: CPU, CUDA and TensorRT execution providers.

On a GPU (``device_id`` set) the session runs with IO binding: inputs are bound (numpy arrays
are copied once, OrtValues already on the device are used in place) and outputs are allocated
on the device, so :meth:`OrtEngine.run_bound` can hand one stage's outputs to the next stage
without a trip through host memory; :meth:`infer` copies the outputs to numpy. Asking for a
provider this onnxruntime does not have lists the ones it has; a session that silently fell
back to the CPU is an error, not a slow surprise.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from ..errors import UserError
from ..specs import StageSpec
from .base import Engine
from .compat import version_tuple

Provider = Union[str, tuple]     # "CPUExecutionProvider" or (name, {option: value})


def is_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def cuda_providers(device: int) -> List[Provider]:
    return [("CUDAExecutionProvider", {"device_id": device, "cudnn_conv_algo_search": "EXHAUSTIVE"}),
            "CPUExecutionProvider"]


def tensorrt_providers(device: int, model_dir: Path, precision: str = "fp32",
                       spec: Optional[StageSpec] = None) -> List[Provider]:
    """TensorRT EP with its engine and timing caches in ``MODEL_DIR/ort_trt_cache`` (built on the
    first run, reused after), the StageSpec's batch range as its optimisation profile, CUDA for
    any node TensorRT does not take, then CPU."""
    if precision not in ("fp32", "fp16", "bf16"):
        raise UserError(f"--precision {precision}; expected fp32, fp16 or bf16")
    cache = str(Path(model_dir) / "ort_trt_cache")
    options: Dict[str, Any] = {"device_id": device, "trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
                               "trt_timing_cache_enable": True, "trt_timing_cache_path": cache,
                               "trt_fp16_enable": precision == "fp16"}
    if precision == "bf16":
        _require_ort_bf16()
        options["trt_bf16_enable"] = True
    if spec is not None:
        for key, batch in (("min", spec.min_batch), ("opt", spec.opt_batch), ("max", spec.max_batch)):
            options[f"trt_profile_{key}_shapes"] = ",".join(
                f"{t.name}:{'x'.join(map(str, t.concrete_shape(batch)))}" for t in spec.inputs)
    return [("TensorrtExecutionProvider", options)] + cuda_providers(device)


#: first onnxruntime-gpu with the TensorRT EP option ``trt_bf16_enable``: absent from the 1.22.0
#: wheel, present in 1.23.0 (strings of onnxruntime_pybind11_state / libonnxruntime_providers_tensorrt;
#: microsoft/onnxruntime PR #24743). Older Python bindings throw "Invalid TensorRT EP option", and
#: InferenceSession then falls back to CUDA/CPU as if TensorRT's libraries were missing.
ORT_BF16_VERSION = (1, 23)


def _require_ort_bf16(version: Optional[str] = None) -> None:
    if version is None:
        import onnxruntime
        version = onnxruntime.__version__
    if version_tuple(version)[:2] < ORT_BF16_VERSION:
        raise UserError(f"--precision bf16 on the TensorRT execution provider needs onnxruntime-gpu >= "
                        f"{'.'.join(map(str, ORT_BF16_VERSION))} (trt_bf16_enable); this is {version}: "
                        "upgrade it, or use --precision fp16/fp32, or the trt backend")


def _name(provider: Provider) -> str:
    return provider if isinstance(provider, str) else provider[0]


class OrtEngine(Engine):
    backend = "ort-cpu"

    def __init__(self, spec: StageSpec, onnx_path: Path, providers: Sequence[Provider] = ("CPUExecutionProvider",),
                 threads: Optional[int] = None, device_id: Optional[int] = None, io_binding: Optional[bool] = None):
        super().__init__(spec)
        self.onnx_path = Path(onnx_path)
        self.providers = list(providers)
        self.threads = threads
        self.device_id = device_id
        #: IO binding is the default on a GPU; on the CPU it can be asked for (it is how it is tested)
        self.io_binding = device_id is not None if io_binding is None else io_binding
        self.backend = {"TensorrtExecutionProvider": "ort-trt", "CUDAExecutionProvider": "ort-cuda"}.get(
            _name(self.providers[0]), "ort-cpu")
        self.session = None

    def _activate_impl(self) -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        missing = [_name(p) for p in self.providers if _name(p) not in available]
        if missing:
            raise UserError(f"onnxruntime {ort.__version__} has no {', '.join(missing)}; it has "
                            f"{', '.join(available)} (for GPU providers install onnxruntime-gpu alone; "
                            "see `poserender doctor`)")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self.threads or (os.cpu_count() or 1)
        options.log_severity_level = 3
        if _name(self.providers[0]) == "TensorrtExecutionProvider":
            Path(dict(self.providers[0][1])["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
        try:
            self.session = ort.InferenceSession(str(self.onnx_path), options, providers=self.providers)
        except Exception as exc:    # truncated, foreign or hand-edited graph: ORT's own text is one line of it
            detail = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise UserError(f"ONNX Runtime cannot load this graph of stage {self.spec.name!r} ({detail[:240]}); "
                            "re-export the model (poserender export)", self.onnx_path) from None
        self._check_io()
        used = self.session.get_providers()
        if _name(self.providers[0]) not in used:      # e.g. CUDA libraries not found: ORT falls back quietly
            raise UserError(f"onnxruntime could not start {_name(self.providers[0])} (running on {', '.join(used)}); "
                            "check the CUDA/cuDNN/TensorRT libraries with `poserender doctor`", self.onnx_path)
        self._outputs = [o.name for o in self.session.get_outputs()]
        self._device = ("cuda", self.device_id) if self.device_id is not None else ("cpu", 0)

    def _check_io(self) -> None:
        """The graph must have the stage's inputs and outputs (a graph of another stage or model
        loads fine in ONNX Runtime and fails only at the first frame otherwise)."""
        have_in = {i.name for i in self.session.get_inputs()}
        have_out = {o.name for o in self.session.get_outputs()}
        missing = [t.name for t in self.spec.inputs if t.name not in have_in] + \
                  [t.name for t in self.spec.outputs if t.name not in have_out]
        if missing:
            self.session = None
            raise UserError(f"this graph lacks stage {self.spec.name!r}'s tensors {', '.join(missing)} (it has inputs "
                            f"{', '.join(sorted(have_in))}); re-export the model (poserender export)", self.onnx_path)

    def run_bound(self, feed: Dict[str, Any]) -> Dict[str, Any]:
        """IO-bound run: values are numpy arrays or OrtValues (kept where they are); the
        outputs are OrtValues on this engine's device (``.numpy()`` copies one to the host)."""
        import onnxruntime as ort

        binding = self.session.io_binding()
        for tensor in self.spec.inputs:
            value = feed[tensor.name]
            if isinstance(value, ort.OrtValue):
                binding.bind_ortvalue_input(tensor.name, value)
            else:
                tensor.check(value, self.spec.name)
                binding.bind_cpu_input(tensor.name, np.ascontiguousarray(value))
        for name in self._outputs:
            binding.bind_output(name, self._device[0], self._device[1])
        self.session.run_with_iobinding(binding)
        return dict(zip(self._outputs, binding.get_outputs()))

    def _infer_impl(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        if self.io_binding:
            return {name: value.numpy() for name, value in self.run_bound(feed).items()}
        return dict(zip(self._outputs, self.session.run(self._outputs, feed)))

    def _deactivate_impl(self) -> None:
        self.session = None
