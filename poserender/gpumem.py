"""GPU memory as NVML reports it (``nvidia-ml-py``, in the ``gpu`` extra).

NVML counts every allocation on a device, from any library (TensorRT, ONNX Runtime's arena,
torch's caching allocator, pycuda), which is what a user sizing a GPU needs. Without the
package or a driver the callers report memory as not measured, with this module's reason.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

NOT_MEASURED = "not measured: pynvml (nvidia-ml-py) is not installed or no NVIDIA driver answers"


def handles(indices: Optional[Sequence[int]] = None) -> Optional[Dict[int, Any]]:
    """NVML device handles by index (all devices when ``indices`` is None); None when NVML is unusable."""
    try:
        import pynvml

        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        wanted = range(count) if indices is None else [i for i in indices if 0 <= i < count]
        return {i: pynvml.nvmlDeviceGetHandleByIndex(i) for i in wanted}
    except Exception:  # noqa: BLE001 - not installed, no driver: memory is then reported as not measured
        return None


def used_bytes(handle: Any) -> int:
    import pynvml

    return int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)


def used_mib(indices: Sequence[int]) -> Dict[str, Any]:
    """``{"0": MiB used, ...}`` for the given GPUs, or ``{"not_measured": reason}``."""
    found = handles(indices)
    if not found:
        return {"not_measured": NOT_MEASURED}
    return {str(i): round(used_bytes(h) / 2 ** 20, 1) for i, h in found.items()}
