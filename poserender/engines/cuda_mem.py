"""CUDA memory, streams and events for the native TensorRT engine: the only module that imports pycuda.

pycuda is imported inside functions, never at module import, so this file imports on any
machine. Contexts: pycuda keeps a context stack per thread, so each worker thread pushes the
device's *primary* context (shared with torch and ONNX Runtime in the same process) around
its CUDA calls (:class:`DeviceContext`), and one engine is used by one thread at a time.

CUDA graphs: pycuda (checked up to 2026.1) wraps no stream-capture or graph API, so
:class:`Stream` captures through the CUDA driver itself (``libcuda``, which pycuda has loaded
already), with ctypes and the driver's stable C entry points: ``cuStreamBeginCapture_v2`` in
thread-local mode (another worker thread's allocations cannot invalidate the capture),
``cuStreamEndCapture``, ``cuGraphInstantiateWithFlags`` (CUDA >= 11.4), ``cuGraphLaunch``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import threading
from typing import Any, Callable, Dict, Optional, Tuple

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
        """Start recording this stream's work into a graph (nothing runs until it is launched)."""
        graph_api().begin_capture(self.handle)

    def end_capture(self) -> "CudaGraph":
        """Stop recording; the captured work as an executable graph replayed on this stream."""
        return CudaGraph(graph_api(), self.handle)


# CUstreamCaptureMode (cuda.h)
CAPTURE_MODE_THREAD_LOCAL = 1


class GraphAPI:
    """The five driver entry points graph capture needs, bound with ctypes.

    ``library`` is anything with those functions as attributes (``ctypes.CDLL`` of libcuda, or a
    stand-in in tests); every call's ``CUresult`` is checked and a failure raises with the
    driver's own error name.
    """

    def __init__(self, library: Any):
        self._lib = library
        vp, p_vp = ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)
        signatures = {"cuStreamBeginCapture_v2": [vp, ctypes.c_int],
                      "cuStreamEndCapture": [vp, p_vp],
                      "cuGraphInstantiateWithFlags": [p_vp, vp, ctypes.c_ulonglong],
                      "cuGraphLaunch": [vp, vp],
                      "cuGraphExecDestroy": [vp],
                      "cuGraphDestroy": [vp],
                      "cuGetErrorName": [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]}
        for name, argtypes in signatures.items():
            function = getattr(library, name)
            function.argtypes, function.restype = argtypes, ctypes.c_int

    def _check(self, result: int, call: str) -> None:
        if result != 0:
            name = ctypes.c_char_p()
            known = self._lib.cuGetErrorName(result, ctypes.byref(name)) == 0 and name.value
            raise RuntimeError(f"CUDA graph capture: {call} failed with "
                               f"{name.value.decode() if known else 'CUresult'} ({result})")

    def begin_capture(self, stream: int) -> None:
        self._check(self._lib.cuStreamBeginCapture_v2(stream, CAPTURE_MODE_THREAD_LOCAL), "cuStreamBeginCapture")

    def end_capture(self, stream: int) -> int:
        graph = ctypes.c_void_p()
        self._check(self._lib.cuStreamEndCapture(stream, ctypes.byref(graph)), "cuStreamEndCapture")
        return graph.value

    def instantiate(self, graph: int) -> int:
        executable = ctypes.c_void_p()
        self._check(self._lib.cuGraphInstantiateWithFlags(ctypes.byref(executable), graph, 0),
                    "cuGraphInstantiateWithFlags")
        return executable.value

    def launch(self, executable: int, stream: int) -> None:
        self._check(self._lib.cuGraphLaunch(executable, stream), "cuGraphLaunch")

    def destroy(self, executable: Optional[int], graph: Optional[int]) -> None:
        if executable:
            self._check(self._lib.cuGraphExecDestroy(executable), "cuGraphExecDestroy")
        if graph:
            self._check(self._lib.cuGraphDestroy(graph), "cuGraphDestroy")


_GRAPH_API: Optional[GraphAPI] = None


def _load_libcuda() -> Any:
    for name in ("libcuda.so.1", ctypes.util.find_library("cuda")):
        if name:
            try:
                return ctypes.CDLL(name)
            except OSError:
                continue
    raise RuntimeError("CUDA graphs need the CUDA driver library (libcuda.so.1), which is not loadable here")


def graph_api(loader: Callable[[], Any] = _load_libcuda) -> GraphAPI:
    """The process's :class:`GraphAPI` over libcuda (loaded on first use)."""
    global _GRAPH_API
    with _INIT_LOCK:
        if _GRAPH_API is None:
            _GRAPH_API = GraphAPI(loader())
    return _GRAPH_API


class CudaGraph:
    """A captured and instantiated graph, replayed on the stream it was captured on.

    The capture is ended (and its graph freed) even when instantiation fails, so the stream is
    never left capturing. Call :meth:`free` with the device's context current.
    """

    def __init__(self, api: GraphAPI, stream: int):
        self._api, self._stream, self._executable = api, stream, None
        self._graph = api.end_capture(stream)
        try:
            self._executable = api.instantiate(self._graph)
        except Exception:
            self.free()
            raise

    def launch(self) -> None:
        self._api.launch(self._executable, self._stream)

    def free(self) -> None:
        executable, graph, self._executable, self._graph = self._executable, self._graph, None, None
        self._api.destroy(executable, graph)


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
