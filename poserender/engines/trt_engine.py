"""Native TensorRT engine (TensorRT 10+ tensor-address API, pycuda memory via cuda_mem).

``activate()`` checks the plan against the compatibility manifest (compat.check_engine)
before deserialising it, then, inside the device's primary context: creates the execution
context, allocates device buffers for the *max* profile once, pinned host buffers for the
inputs and outputs, and a stream. ``infer()`` sets the input shapes, uploads, runs
``execute_async_v3`` on the engine's stream, downloads, and synchronises once. With
``cuda_graphs=True`` the enqueue for each batch size is captured once and replayed after.
One engine is driven by one thread at a time (the runtime gives each worker its own).
Written against the TensorRT 10 Python API (name-based tensor API, checked against the bindings in
NVIDIA/TensorRT python/src/infer/pyCore.cpp; TensorRT 11's removals are about weak typing and
build-time flags, none of the runtime calls here is on the part of that list we could read);
not run in this workplace (no TensorRT here).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional

import numpy as np

from ..specs import StageSpec
from . import compat
from .base import Engine


def check_io(trt, engine, spec: StageSpec) -> list:
    """The spec's inputs, after checking the engine's I/O tensors (num_io_tensors /
    get_tensor_name / get_tensor_mode) against the StageSpec: a missing name, or one that is an
    input in one and an output in the other, is a plan built from another graph. (TensorRT keeps
    unused network inputs as engine inputs: "[RemoveDeadLayers] Input Tensor ... is unused ...
    but is not being removed", so every spec tensor must be there.)"""
    modes = {engine.get_tensor_name(i): engine.get_tensor_mode(engine.get_tensor_name(i))
             for i in range(engine.num_io_tensors)}
    wrong = [t.name for t in spec.inputs if modes.get(t.name) != trt.TensorIOMode.INPUT]
    wrong += [t.name for t in spec.outputs if modes.get(t.name) != trt.TensorIOMode.OUTPUT]
    if wrong:
        raise RuntimeError(f"the TensorRT plan of stage {spec.name!r} does not match its StageSpec: "
                           f"{', '.join(wrong)} (engine I/O: {', '.join(sorted(modes))}); rebuild it")
    return list(spec.inputs)


class TrtEngine(Engine):
    backend = "trt"

    def __init__(self, spec: StageSpec, model_dir: Path, manifest: Mapping[str, Any], device: int = 0,
                 precision: Optional[str] = None, cuda_graphs: bool = False,
                 facts_fn: Callable[[int], compat.MachineFacts] = compat.current_facts):
        super().__init__(spec)
        self.model_dir, self.manifest, self.device = Path(model_dir), manifest, int(device)
        self.precision, self.cuda_graphs, self.facts_fn = precision, cuda_graphs, facts_fn
        self.last_gpu_ms: Optional[float] = None     # GPU time of the last infer(), from CUDA events
        self._graphs: Dict[int, Any] = {}

    def _activate_impl(self) -> None:
        import tensorrt as trt

        from . import cuda_mem

        record = compat.check_engine(self.model_dir, self.manifest, self.spec.name, self.device,
                                     self.precision, self.facts_fn)
        self._context_guard = cuda_mem.DeviceContext(self.device)
        with self._context_guard:
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            self._engine = self._runtime.deserialize_cuda_engine((self.model_dir / record["file"]).read_bytes())
            if self._engine is None:
                raise RuntimeError(f"TensorRT could not deserialise {record['file']} (see the TensorRT log above)")
            self._context = self._engine.create_execution_context()
            self._inputs = check_io(trt, self._engine, self.spec)
            self._stream = cuda_mem.Stream()
            self._start, self._end = cuda_mem.Event(), cuda_mem.Event()
            self._device_buffers, self._host_buffers = {}, {}
            for tensor in self._inputs + list(self.spec.outputs):
                shape = tensor.concrete_shape(self.spec.max_batch)
                dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(tensor.name)))
                self._host_buffers[tensor.name] = cuda_mem.pinned_empty(shape, dtype)
                self._device_buffers[tensor.name] = cuda_mem.DeviceBuffer(self._host_buffers[tensor.name].nbytes)
                if not self._context.set_tensor_address(tensor.name, int(self._device_buffers[tensor.name])):
                    raise RuntimeError(f"TensorRT refused the address of {tensor.name!r} (see the TensorRT log)")

    def _batch(self, feed: Dict[str, np.ndarray]) -> int:
        dynamic = [feed[t.name].shape[0] for t in self.spec.inputs if t.shape and t.shape[0] == "batch"]
        batch = dynamic[0] if dynamic else 1
        if not self.spec.min_batch <= batch <= self.spec.max_batch:
            raise ValueError(f"stage {self.spec.name!r}: batch {batch} is outside the engine's profile "
                             f"{self.spec.min_batch}..{self.spec.max_batch} (rebuild with another StageSpec)")
        return batch

    def _infer_impl(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        batch = self._batch(feed)
        with self._context_guard:
            for tensor in self._inputs:
                array = feed[tensor.name]
                if not self._context.set_input_shape(tensor.name, tuple(array.shape)):
                    raise ValueError(f"stage {self.spec.name!r}: TensorRT refused shape {tuple(array.shape)} for "
                                     f"{tensor.name!r} (outside the engine's optimisation profile?)")
                staging = self._host_buffers[tensor.name].reshape(-1)[:array.size].reshape(array.shape)
                np.copyto(staging, array)
                self._stream.upload(self._device_buffers[tensor.name], staging)
            self._start.record(self._stream)
            self._enqueue(batch)
            self._end.record(self._stream)
            out = {}
            for tensor in self.spec.outputs:
                shape = tuple(self._context.get_tensor_shape(tensor.name))
                host = self._host_buffers[tensor.name].reshape(-1)[:int(np.prod(shape))].reshape(shape)
                self._stream.download(host, self._device_buffers[tensor.name])
                out[tensor.name] = host
            self._stream.synchronize()
            self.last_gpu_ms = self._end.elapsed_ms(self._start)
        return {name: array.copy() for name, array in out.items()}   # pinned buffers are reused

    def _enqueue(self, batch: int) -> None:
        if not self.cuda_graphs:
            if not self._context.execute_async_v3(self._stream.handle):
                raise RuntimeError(f"TensorRT execute_async_v3 failed for stage {self.spec.name!r}")
            return
        graph = self._graphs.get(batch)
        if graph is None:
            # TensorRT needs one plain enqueue after a shape change before capture (it may
            # allocate or upload on the first run with new shapes)
            if not self._context.execute_async_v3(self._stream.handle):
                raise RuntimeError(f"TensorRT execute_async_v3 failed for stage {self.spec.name!r}")
            self._stream.synchronize()                     # enqueue once and wait, then capture
            self._stream.begin_capture()
            captured = self._context.execute_async_v3(self._stream.handle)
            graph = self._stream.end_capture()             # always end the capture, even on failure
            if not captured:
                graph.free()
                raise RuntimeError(f"TensorRT execute_async_v3 failed during CUDA graph capture "
                                   f"for stage {self.spec.name!r}")
            self._graphs[batch] = graph
        graph.launch()

    def _deactivate_impl(self) -> None:
        with self._context_guard:
            for graph in self._graphs.values():
                graph.free()
            self._graphs.clear()
            for buffer in self._device_buffers.values():
                buffer.free()
            self._device_buffers, self._host_buffers = {}, {}
            self._context = self._engine = self._runtime = None
        self._context_guard.release()
