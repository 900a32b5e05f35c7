"""What this machine can run: versions, GPUs and usable backends (``poserender doctor``).

Nothing heavy is imported when this module is imported: each probe imports its package inside a
function, at call time, and reports a missing or broken package as text ("not installed",
"import failed: ..."), never as an exception. :func:`backend_availability` is the single answer
to "can backend X run here?", shared by engine selection and by pytest skip reasons.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import warnings
from fractions import Fraction
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

BACKENDS: Tuple[str, ...] = ("torch", "torch-cuda", "ort-cpu", "ort-cuda", "ort-trt", "trt")
# display name -> module imported to probe it
PACKAGES: Dict[str, str] = {
    "numpy": "numpy", "opencv": "cv2", "av": "av", "torch": "torch", "onnx": "onnx",
    "onnxruntime": "onnxruntime", "tensorrt": "tensorrt", "pycuda": "pycuda.driver",
}
ENCODERS: Tuple[str, ...] = ("libx264", "h264_nvenc")
NVIDIA_SMI_TIMEOUT_S = 10.0
_NOT_INSTALLED = "not installed"


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
            return None, _NOT_INSTALLED
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


def _probe_packages(names: Iterable[str] = tuple(PACKAGES)) -> Dict[str, Dict[str, Any]]:
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


def _derive_backends(packages: Dict[str, Dict[str, Any]],
                     driver: Dict[str, Any]) -> Dict[str, Tuple[bool, str]]:
    torch_info, ort_info = packages["torch"], packages["onnxruntime"]
    trt_info, pycuda_info = packages["tensorrt"], packages["pycuda"]
    gpus = _visible_gpus(torch_info, driver)
    no_gpu = "no CUDA device" + (f" ({driver['error']})" if driver.get("error") else "")
    out: Dict[str, Tuple[bool, str]] = {}

    if torch_info["version"] is None:
        out["torch"] = out["torch-cuda"] = (False, f"torch {torch_info['error']}")
    else:
        out["torch"] = (True, f"torch {torch_info['version']} on CPU")
        if not torch_info.get("cuda_build"):
            out["torch-cuda"] = (False, f"torch {torch_info['version']} is a CPU-only build")
        elif not torch_info.get("cuda_available"):
            out["torch-cuda"] = (False, f"no CUDA device visible to torch (built with CUDA "
                                        f"{torch_info['cuda_build']})")
        else:
            out["torch-cuda"] = (True, f"{len(torch_info['devices'])} CUDA device(s)")

    providers = ort_info.get("providers") or []
    for backend, provider in (("ort-cpu", "CPUExecutionProvider"),
                              ("ort-cuda", "CUDAExecutionProvider"),
                              ("ort-trt", "TensorrtExecutionProvider")):
        if ort_info["version"] is None:
            out[backend] = (False, f"onnxruntime {ort_info['error']}")
        elif provider not in providers:
            hint = "" if backend == "ort-cpu" else " (install onnxruntime-gpu)"
            if backend != "ort-cpu" and len(ort_distributions()) > 1:
                hint = (" (onnxruntime and onnxruntime-gpu are both installed and shadow each other: "
                        "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu)")
            out[backend] = (False, f"{provider} not in onnxruntime providers{hint}")
        elif backend != "ort-cpu" and gpus == 0:
            out[backend] = (False, no_gpu)
        elif backend == "ort-trt" and not _tensorrt_libraries(trt_info):
            out[backend] = (False, "TensorRT libraries (libnvinfer) not found")
        else:
            out[backend] = (True, provider + ("" if backend == "ort-cpu" else f", {gpus} GPU(s)"))

    if trt_info["version"] is None:
        out["trt"] = (False, f"tensorrt {trt_info['error']}")
    elif pycuda_info["version"] is None:
        out["trt"] = (False, f"pycuda {pycuda_info['error']}")
    elif gpus == 0:
        out["trt"] = (False, no_gpu)
    else:
        out["trt"] = (True, f"TensorRT {trt_info['version']}, {gpus} GPU(s)")
    return {name: out[name] for name in BACKENDS}


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


def backend_availability() -> Dict[str, Tuple[bool, str]]:
    """{backend: (usable, reason)} for each name in BACKENDS; the reason says why not, or what."""
    packages = _probe_packages(("torch", "onnxruntime", "tensorrt", "pycuda"))
    return _derive_backends(packages, nvidia_smi())


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("model name", "Hardware", "Processor")) and ":" in line:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def collect() -> Dict[str, Any]:
    """Everything the report shows, as plain (JSON-serialisable) data."""
    from poserender import __version__
    packages = _probe_packages()
    driver = nvidia_smi()
    usable_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "poserender": __version__,
        "python": {"version": platform.python_version(),
                   "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "platform": platform.platform(),
        "cpu": {"model": _cpu_model(), "cores": os.cpu_count(), "usable_cores": usable_cores},
        "packages": packages,
        "nvidia": driver,
        "backends": {name: {"usable": ok, "reason": reason}
                     for name, (ok, reason) in _derive_backends(packages, driver).items()},
    }


def _package_line(name: str, info: Dict[str, Any]) -> str:
    if not info.get("version"):
        return info.get("error") or _NOT_INSTALLED
    parts = [info["version"]]
    if name == "av":
        encoders = info.get("encoders", {})
        parts.append(f"libavcodec {info.get('libavcodec', '?')}; encoders: " + ", ".join(
            f"{enc} " + ("yes" if e["usable"] else f"no ({e['reason']})")
            for enc, e in encoders.items()))
    elif name == "torch":
        parts.append(f"CUDA build: {info.get('cuda_build') or 'none'}; cuda available: "
                     + ("yes" if info.get("cuda_available") else "no"))
        parts += [f"cuda:{i} {d['name']} (sm {d['capability']})"
                  for i, d in enumerate(info.get("devices", []))]
    elif name == "onnx" and "opset" in info:
        parts.append(f"opset {info['opset']}")
    elif name == "onnxruntime":
        parts.append("providers: " + ", ".join(info.get("providers", [])))
    elif name == "pycuda" and "cuda_compiled" in info:
        parts.append(f"built for CUDA {info['cuda_compiled']}")
    if info.get("error"):
        parts.append(info["error"])
    return "; ".join(parts)


def format_report(info: Dict[str, Any]) -> str:
    """The doctor report as text (no trailing newline), from :func:`collect`'s dict."""
    python, cpu = info.get("python", {}), info.get("cpu", {})
    cores = f"{cpu.get('cores')} cores" + (f" ({cpu['usable_cores']} usable by this process)"
                                           if cpu.get("usable_cores") not in (None, cpu.get("cores"))
                                           else "")
    lines = [f"poserender {info.get('poserender', '?')}",
             f"  {'python':<12} {python.get('version', '?')} ({python.get('implementation', '?')},"
             f" {python.get('executable', '?')})",
             f"  {'platform':<12} {info.get('platform', '?')}",
             f"  {'cpu':<12} {cpu.get('model', '?')}, {cores}",
             "packages"]
    for name, package in info.get("packages", {}).items():
        lines.append(f"  {name:<12} {_package_line(name, package)}")
    nvidia = info.get("nvidia", {})
    lines.append("nvidia")
    if nvidia.get("error"):
        lines.append(f"  {'driver':<12} {nvidia['error']}")
    for index, gpu in enumerate(nvidia.get("gpus", [])):
        lines.append(f"  {'gpu ' + str(index):<12} {gpu['name']}; driver {gpu['driver_version']};"
                     f" compute capability {gpu['compute_cap']}")
    lines.append("backends")
    for name, backend in info.get("backends", {}).items():
        lines.append(f"  {name:<12} {'yes' if backend['usable'] else 'no ':<4} {backend['reason']}")
    return "\n".join(lines)
