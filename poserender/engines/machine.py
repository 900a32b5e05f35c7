"""What this machine has, as facts the backend probes read: installed packages (imported inside
functions, at call time, a missing or broken one reported as text: "not installed", "import
failed: ..."), the GPUs nvidia-smi lists, CUDA_VISIBLE_DEVICES, the CPU's feature flags. Nothing heavy is imported when
this module is imported; nothing here raises for a missing package or driver.

``poserender doctor`` formats these facts and the registry's probes (engines/registry.py).
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import warnings
from fractions import Fraction
from typing import Any, Callable, Dict, FrozenSet, Iterable, Optional, Tuple

# display name -> module imported to probe it
PACKAGES: Dict[str, str] = {
    "numpy": "numpy", "opencv": "cv2", "av": "av", "torch": "torch", "onnx": "onnx",
    "onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt", "pycuda": "pycuda.driver",
}
ENCODERS: Tuple[str, ...] = ("libx264", "h264_nvenc")
NVIDIA_SMI_TIMEOUT_S = 10.0
NOT_INSTALLED = "not installed"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def _import(module_name: str) -> Tuple[Any, Optional[str]]:
    """(module, None), or (None, "not installed" | "import failed: <why>")."""
    try:
        __import__(module_name)  # through builtins.__import__, so tests can intercept it
        return sys.modules[module_name], None
    except ModuleNotFoundError as e:
        if e.name is None or module_name == e.name or module_name.startswith(e.name + "."):
            return None, NOT_INSTALLED
        return None, f"import failed: {_first_line(e)}"  # a dependency of it is missing
    except Exception as e:  # noqa: BLE001 - a broken install (missing .so, bad driver) is a finding
        return None, f"import failed: {_first_line(e)}"


def _av_details(av: Any) -> Dict[str, Any]:
    encoders = {}
    for name in ENCODERS:
        try:
            av.codec.Codec(name, "w")
        except Exception:  # noqa: BLE001
            encoders[name] = {"usable": False, "reason": "not in this FFmpeg build"}
            continue
        try:  # h264_nvenc is in the PyPI wheels but opens only with an NVIDIA GPU and driver
            context = av.codec.CodecContext.create(name, "w")
            context.width, context.height, context.pix_fmt = 256, 256, "yuv420p"
            context.time_base = Fraction(1, 25)
            context.open()
            encoders[name] = {"usable": True, "reason": ""}
        except Exception as e:  # noqa: BLE001
            why = getattr(e, "strerror", None) or _first_line(e)
            encoders[name] = {"usable": False, "reason": f"in the build but cannot open: {why}"}
    version = av.library_versions.get("libavcodec", ())
    return {"libavcodec": ".".join(map(str, version)), "encoders": encoders}


def _torch_details(torch: Any) -> Dict[str, Any]:
    with warnings.catch_warnings():  # an old driver makes is_available() warn; we report it
        warnings.simplefilter("ignore")
        available = bool(torch.cuda.is_available())
    devices = []
    for index in range(torch.cuda.device_count() if available else 0):
        major, minor = torch.cuda.get_device_capability(index)
        devices.append({"name": torch.cuda.get_device_name(index), "capability": f"{major}.{minor}"})
    return {"cuda_build": torch.version.cuda, "cuda_available": available, "devices": devices}


def _pycuda_details(driver: Any) -> Dict[str, Any]:
    import pycuda  # already imported with pycuda.driver
    return {"version": pycuda.VERSION_TEXT,
            "cuda_compiled": ".".join(map(str, driver.get_version()))}


_DETAILS: Dict[str, Callable[[Any], Dict[str, Any]]] = {
    "av": _av_details,
    "torch": _torch_details,
    "onnx": lambda onnx: {"opset": onnx.defs.onnx_opset_version()},
    "onnxruntime": lambda ort: {"providers": list(ort.get_available_providers()),
                                "device": ort.get_device()},
    "openvino": lambda ov: {"devices": list(ov.Core().available_devices)},
    "pycuda": _pycuda_details,
}


def _probe(name: str) -> Dict[str, Any]:
    """{"version": str | None, "error": str | None, ...package-specific details}."""
    module, error = _import(PACKAGES[name])
    if module is None:
        return {"version": None, "error": error}
    info: Dict[str, Any] = {"version": str(getattr(module, "__version__", "unknown")),
                            "error": None}
    try:
        info.update(_DETAILS.get(name, lambda _: {})(module))
    except Exception as e:  # noqa: BLE001 - keep the version, say what failed
        info["error"] = f"probe failed: {_first_line(e)}"
    return info


def probe_packages(names: Iterable[str] = tuple(PACKAGES)) -> Dict[str, Dict[str, Any]]:
    return {name: _probe(name) for name in names}


def nvidia_smi() -> Dict[str, Any]:
    """GPUs as nvidia-smi reports them: {"gpus": [{name, driver_version, compute_cap}], "error"}."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {"gpus": [], "error": "nvidia-smi not found"}
    command = [exe, "--query-gpu=name,driver_version,compute_cap", "--format=csv,noheader"]
    try:
        result = subprocess.run(command, capture_output=True, text=True,
                                timeout=NVIDIA_SMI_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"gpus": [], "error": f"nvidia-smi timed out after {NVIDIA_SMI_TIMEOUT_S:g} s"}
    except OSError as e:
        return {"gpus": [], "error": f"nvidia-smi failed: {_first_line(e)}"}
    if result.returncode != 0:
        said = (result.stderr or result.stdout).strip().splitlines()
        return {"gpus": [], "error": f"nvidia-smi exited with code {result.returncode}"
                + (f": {said[0]}" if said else "")}
    gpus = []
    for line in result.stdout.splitlines():
        parts = [part.strip() for part in line.rsplit(",", 2)]
        if len(parts) == 3:
            gpus.append(dict(zip(("name", "driver_version", "compute_cap"), parts)))
    return {"gpus": gpus, "error": None}


def _visible_gpus(torch_info: Dict[str, Any], driver: Dict[str, Any]) -> int:
    """CUDA devices this process may use: torch's count if it sees any, else nvidia-smi's."""
    if torch_info.get("cuda_available"):
        return len(torch_info.get("devices", []))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and (not visible.strip() or visible.strip().startswith("-1")):
        return 0
    return len(driver.get("gpus", []))


def _tensorrt_libraries(trt_info: Dict[str, Any]) -> bool:
    if trt_info.get("version"):
        return True  # the tensorrt wheel brings libnvinfer with it
    import ctypes.util
    return ctypes.util.find_library("nvinfer") is not None


def ort_distributions() -> Tuple[str, ...]:
    """Installed pip distributions that provide the ``onnxruntime`` module. Only one may be
    installed: with both, the CPU wheel's files win and the CUDA providers vanish
    (microsoft/onnxruntime#26996)."""
    from importlib import metadata

    found = []
    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
        found.append(dist)
    return tuple(found)


def cpu_flag_set() -> FrozenSet[str]:
    """Every feature flag this CPU reports in /proc/cpuinfo (empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags") and ":" in line:
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


class Facts:
    """The package probes, nvidia-smi and the CPU's feature flags, each read once, on first use.
    ``cpu_flags`` given: those flags instead of this CPU's (a test simulates another CPU)."""

    def __init__(self, cpu_flags: Optional[Iterable[str]] = None):
        self._packages: Dict[str, Dict[str, Any]] = {}
        self._driver: Optional[Dict[str, Any]] = None
        self._cpu_flags: Optional[FrozenSet[str]] = None if cpu_flags is None else frozenset(cpu_flags)

    @property
    def cpu_flags(self) -> FrozenSet[str]:
        if self._cpu_flags is None:
            self._cpu_flags = cpu_flag_set()
        return self._cpu_flags

    def package(self, name: str) -> Dict[str, Any]:
        if name not in self._packages:
            self._packages[name] = _probe(name)
        return self._packages[name]

    @property
    def driver(self) -> Dict[str, Any]:
        if self._driver is None:
            self._driver = nvidia_smi()
        return self._driver

    @property
    def gpus(self) -> int:
        return _visible_gpus(self.package("torch"), self.driver)

    @property
    def no_gpu(self) -> str:
        return "no CUDA device" + (f" ({self.driver['error']})" if self.driver.get("error") else "")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("model name", "Hardware", "Processor")) and ":" in line:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


#: the CPU features that decide which kernels (and so which speeds) a CPU result reflects
NOTABLE_CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")


def cpu_flags(wanted=NOTABLE_CPU_FLAGS) -> list:
    """Which of ``wanted`` this CPU reports in /proc/cpuinfo (empty where it cannot be read)."""
    have = cpu_flag_set()
    return [flag for flag in wanted if flag in have]
