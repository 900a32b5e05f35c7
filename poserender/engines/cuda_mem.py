"""CUDA memory, streams and events for the native TensorRT engine: the only module that imports pycuda.

pycuda is imported inside functions, never at module import, so this file imports on any
machine. Contexts: pycuda keeps a context stack per thread, so each worker thread pushes the
device's *primary* context (shared with torch and ONNX Runtime in the same process) around
its CUDA calls (:class:`DeviceContext`), and one engine is used by one thread at a time.
"""
from __future__ import annotations

import threading
from typing import Any, Dict, Tuple

import numpy as np

_INIT_LOCK = threading.Lock()
_INITIALISED = False


def driver():
    """``pycuda.driver``, initialised once per process (no context is created here)."""
    global _INITIALISED
    import pycuda.driver as cuda

    with _INIT_LOCK:
        if not _INITIALISED:
            cuda.init()
            _INITIALISED = True
    return cuda


def device_count() -> int:
    return driver().Device.count()


def _version_text(number: int) -> str:
    """CUDA's integer versions (12040) as text ("12.4")."""
    return f"{number // 1000}.{(number % 1000) // 10}"


def device_facts(index: int) -> Dict[str, str]:
    """Name, compute capability and CUDA versions of GPU ``index``."""
    cuda = driver()
    device = cuda.Device(index)
    major, minor = device.compute_capability()
    compiled = cuda.get_version()             # CUDA toolkit pycuda was built with, e.g. (12, 4, 0)
    return {"name": device.name(), "compute_capability": f"{major}.{minor}",
            "cuda": ".".join(map(str, compiled[:2])),
            "driver_cuda": _version_text(cuda.get_driver_version())}


class DeviceContext:
    """The primary context of one GPU, pushed on the calling thread for a ``with`` block."""

    def __init__(self, index: int):
        self.index = index
        self._context = driver().Device(index).retain_primary_context()

    def __enter__(self) -> "DeviceContext":
        self._context.push()
        return self

    def __exit__(self, *exc) -> None:
        driver().Context.pop()

    def release(self) -> None:
        self._context = None


class DeviceBuffer:
    """``nbytes`` of device memory, allocated once; ``int(buffer)`` is the device pointer."""

    def __init__(self, nbytes: int):
        self.nbytes = int(nbytes)
        self._allocation = driver().mem_alloc(max(self.nbytes, 1))

    def __int__(self) -> int:
        return int(self._allocation)

    def free(self) -> None:
        if self._allocation is not None:
            self._allocation.free()
            self._allocation = None


def pinned_empty(shape: Tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A page-locked host array (fast, truly asynchronous copies)."""
    return driver().pagelocked_empty(tuple(shape), np.dtype(dtype))


class Stream:
    """A CUDA stream with the few operations the TensorRT engine needs."""

    def __init__(self):
        self._stream = driver().Stream()

    @property
    def handle(self) -> int:
        return self._stream.handle

    def upload(self, buffer: DeviceBuffer, host: np.ndarray) -> None:
        driver().memcpy_htod_async(int(buffer), host, self._stream)

    def download(self, host: np.ndarray, buffer: DeviceBuffer) -> None:
        driver().memcpy_dtoh_async(host, int(buffer), self._stream)

    def synchronize(self) -> None:
        self._stream.synchronize()

    def begin_capture(self) -> None:
        self._stream.begin_capture()

    def end_capture(self) -> Any:
        """The captured work as an executable graph (``launch(stream)`` replays it)."""
        return CudaGraph(self._stream.end_capture().instantiate(), self)


class CudaGraph:
    def __init__(self, executable: Any, stream: Stream):
        self._executable, self._stream = executable, stream

    def launch(self) -> None:
        self._executable.launch(self._stream._stream)


class Event:
    """A CUDA event; ``end.elapsed_ms(start)`` is GPU time between two recorded events."""

    def __init__(self):
        self._event = driver().Event()

    def record(self, stream: Stream) -> None:
        self._event.record(stream._stream)

    def synchronize(self) -> None:
        self._event.synchronize()

    def elapsed_ms(self, start: "Event") -> float:
        return float(self._event.time_since(start._event))
