"""Tests for poserender.doctor: real probes on this machine, and simulated missing/broken packages."""
from __future__ import annotations

import builtins
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from poserender import doctor
from poserender.engines import machine, registry

REPO = Path(__file__).resolve().parents[1]


def fake_module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


def fake_torch(cuda_build, devices=()) -> types.ModuleType:
    cuda = types.SimpleNamespace(
        is_available=lambda: bool(devices), device_count=lambda: len(devices),
        get_device_name=lambda i: devices[i], get_device_capability=lambda i: (9, 0))
    return fake_module("torch", __version__="9.9.9", version=types.SimpleNamespace(cuda=cuda_build),
                       cuda=cuda)


def fake_nvidia_smi(monkeypatch, stdout="", returncode=0, raises=None):
    """Make nvidia-smi exist and answer ``stdout`` (or raise ``raises``)."""
    monkeypatch.setattr(machine.shutil, "which", lambda name: f"/usr/bin/{name}")

    def run(command, **kwargs):
        assert "--query-gpu=name,driver_version,compute_cap" in command
        assert kwargs["timeout"] == machine.NVIDIA_SMI_TIMEOUT_S
        if raises is not None:
            raise raises
        return subprocess.CompletedProcess(command, returncode, stdout, "")

    monkeypatch.setattr(machine.subprocess, "run", run)


def no_nvidia_smi(monkeypatch):
    monkeypatch.setattr(machine.shutil, "which", lambda name: None)


def test_import_does_not_load_heavy_packages():
    code = ("import sys, poserender.doctor; print(sorted(m for m in ('torch', 'onnxruntime', "
            "'tensorrt', 'pycuda', 'onnx', 'av', 'cv2') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_collect_reports_the_installed_versions():
    import numpy
    import onnxruntime
    import torch

    info = doctor.collect()
    json.dumps(info)  # plain data, so the CLI can offer --json
    packages = info["packages"]
    assert packages["torch"]["version"] == torch.__version__
    assert packages["onnxruntime"]["version"] == onnxruntime.__version__
    assert packages["numpy"]["version"] == numpy.__version__
    assert "CPUExecutionProvider" in packages["onnxruntime"]["providers"]
    assert packages["torch"]["cuda_build"] == torch.version.cuda
    assert packages["av"]["encoders"]["libx264"]["usable"] is True
    assert info["cpu"]["cores"] >= 1 and info["python"]["version"].count(".") == 2
    backends = info["backends"]
    assert list(backends) == list(doctor.BACKENDS)
    assert backends["ort-cpu"]["usable"] is True and backends["torch"]["usable"] is True
    for name, backend in backends.items():
        assert backend["usable"] or backend["reason"], f"{name} is unusable without a reason"


def test_trt_backend_here_is_usable_or_says_why():
    usable, reason = doctor.backend_availability()["trt"]
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert (usable, reason) == (False, "tensorrt not installed")
    else:
        assert usable or reason


def test_format_report_names_every_backend_and_package():
    info = doctor.collect()
    report = doctor.format_report(info)
    for name in doctor.BACKENDS + tuple(machine.PACKAGES):
        assert f"  {name} " in report, name
    assert info["packages"]["onnxruntime"]["version"] in report
    ort_cpu_line = next(line for line in report.splitlines() if line.startswith("  ort-cpu "))
    assert ort_cpu_line.split()[1] == "yes"


def test_missing_tensorrt_via_sys_modules(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` fail
    assert doctor.backend_availability()["trt"] == (False, "tensorrt not installed")
    info = doctor.collect()
    assert info["packages"]["tensorrt"] == {"version": None, "error": "not installed"}
    assert "  tensorrt     not installed" in doctor.format_report(info).splitlines()


def test_missing_onnxruntime_via_import_hook(monkeypatch):
    real_import = builtins.__import__

    def import_without_onnxruntime(name, *args, **kwargs):
        if name.split(".")[0] == "onnxruntime":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", import_without_onnxruntime)
    backends = doctor.backend_availability()
    for name in ("ort-cpu", "ort-cuda", "ort-trt"):
        assert backends[name] == (False, "onnxruntime not installed")
    assert backends["torch"][0] is True


def test_broken_install_is_reported_not_raised(monkeypatch):
    real_import = builtins.__import__

    def import_broken_pycuda(name, *args, **kwargs):
        if name.startswith("pycuda"):
            raise OSError("libcuda.so.1: cannot open shared object file")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", import_broken_pycuda)
    monkeypatch.setitem(sys.modules, "tensorrt", fake_module("tensorrt", __version__="10.3.0"))
    info = doctor.collect()
    assert info["packages"]["pycuda"]["error"] == (
        "import failed: OSError: libcuda.so.1: cannot open shared object file")
    assert info["backends"]["trt"] == {
        "usable": False,
        "reason": "pycuda import failed: OSError: libcuda.so.1: cannot open shared object file"}
    assert "tensorrt     10.3.0" in doctor.format_report(info)


def test_trt_needs_a_gpu(monkeypatch):
    no_nvidia_smi(monkeypatch)
    monkeypatch.setitem(sys.modules, "torch", fake_torch(cuda_build=None))
    monkeypatch.setitem(sys.modules, "tensorrt", fake_module("tensorrt", __version__="10.3.0"))
    monkeypatch.setitem(sys.modules, "pycuda", fake_module("pycuda", VERSION_TEXT="2024.1"))
    monkeypatch.setitem(sys.modules, "pycuda.driver",
                        fake_module("pycuda.driver", get_version=lambda: (12, 4, 0)))
    backends = doctor.backend_availability()
    assert backends["trt"] == (False, "no CUDA device (nvidia-smi not found)")
    assert backends["torch-cuda"] == (False, "torch 9.9.9 is a CPU-only build")


def test_cuda_build_of_torch_without_a_device(monkeypatch):
    no_nvidia_smi(monkeypatch)
    monkeypatch.setitem(sys.modules, "torch", fake_torch(cuda_build="12.4"))
    assert doctor.backend_availability()["torch-cuda"] == (
        False, "no CUDA device visible to torch (built with CUDA 12.4)")


def test_gpu_machine_as_nvidia_smi_and_providers_report_it(monkeypatch):
    fake_nvidia_smi(monkeypatch, "NVIDIA H100 80GB HBM3, 550.54.15, 9.0\n"
                                 "NVIDIA H100 80GB HBM3, 550.54.15, 9.0\n")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    providers = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setitem(sys.modules, "onnxruntime", fake_module(
        "onnxruntime", __version__="1.20.0", get_available_providers=lambda: providers,
        get_device=lambda: "GPU"))
    monkeypatch.setitem(sys.modules, "torch", fake_torch("12.4", devices=("NVIDIA H100",) * 2))
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setattr("ctypes.util.find_library", lambda name: None)
    info = doctor.collect()
    assert info["nvidia"]["gpus"][0] == {"name": "NVIDIA H100 80GB HBM3",
                                         "driver_version": "550.54.15", "compute_cap": "9.0"}
    backends = info["backends"]
    assert backends["ort-cuda"] == {"usable": True, "reason": "CUDAExecutionProvider, 2 GPU(s)"}
    assert backends["torch-cuda"] == {"usable": True, "reason": "2 CUDA device(s)"}
    assert backends["ort-trt"]["reason"] == "TensorRT libraries (libnvinfer) not found"
    assert backends["trt"]["reason"] == "tensorrt not installed"
    report = doctor.format_report(info)
    assert "gpu 1        NVIDIA H100 80GB HBM3; driver 550.54.15; compute capability 9.0" in report


def test_cuda_visible_devices_hides_gpus(monkeypatch):
    fake_nvidia_smi(monkeypatch, "NVIDIA H100 80GB HBM3, 550.54.15, 9.0\n")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setitem(sys.modules, "onnxruntime", fake_module(
        "onnxruntime", __version__="1.20.0", get_device=lambda: "GPU",
        get_available_providers=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]))
    assert doctor.backend_availability()["ort-cuda"] == (False, "no CUDA device")


@pytest.mark.parametrize("kwargs, error", [
    ({"raises": subprocess.TimeoutExpired("nvidia-smi", 10)}, "nvidia-smi timed out after 10 s"),
    ({"stdout": "NVIDIA-SMI has failed because it couldn't communicate with the driver.",
      "returncode": 9}, "nvidia-smi exited with code 9: NVIDIA-SMI has failed"),
    ({"raises": PermissionError(13, "Permission denied")}, "nvidia-smi failed: PermissionError"),
])
def test_nvidia_smi_failures_are_text(monkeypatch, kwargs, error):
    fake_nvidia_smi(monkeypatch, **kwargs)
    result = doctor.nvidia_smi()
    assert result["gpus"] == [] and result["error"].startswith(error)
    report = doctor.format_report(doctor.collect())
    assert f"  driver       {result['error']}" in report


def test_both_onnxruntime_wheels_are_named_as_the_cause(monkeypatch):
    monkeypatch.setattr(registry, "ort_distributions", lambda: ("onnxruntime", "onnxruntime-gpu"))
    backends = doctor.backend_availability()
    assert backends["ort-cpu"][0]
    assert not backends["ort-cuda"][0] and "both installed" in backends["ort-cuda"][1]
