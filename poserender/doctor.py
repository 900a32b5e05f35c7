"""What this machine can run (``poserender doctor``): the facts engines.machine collects (versions,
GPUs) and the backend registry's probes (engines.registry), formatted.

Nothing heavy is imported when this module is imported: each probe imports its package inside a
function, at call time, and reports a missing or broken package as text ("not installed",
"import failed: ..."), never as an exception. :func:`backend_availability` is the registry's
answer to "can backend X run here?", shared by engine selection and by pytest skip reasons.
"""
from __future__ import annotations

import os
import platform
import sys
from typing import Any, Dict, Tuple

from .cache import cache_root
from .engines.machine import NOT_INSTALLED, Facts, cpu_model, nvidia_smi, probe_packages
from .engines.registry import BACKENDS as REGISTRY, availability

BACKENDS: Tuple[str, ...] = tuple(REGISTRY)


def backend_availability() -> Dict[str, Tuple[bool, str]]:
    """{backend: (usable, reason)}: the registry's probes on this machine."""
    return availability()


def collect() -> Dict[str, Any]:
    """Everything the report shows, as plain (JSON-serialisable) data."""
    from poserender import __version__
    packages = probe_packages()
    driver = nvidia_smi()
    facts = Facts()
    facts._packages.update(packages)
    facts._driver = driver
    usable_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "poserender": __version__,
        "python": {"version": platform.python_version(),
                   "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "platform": platform.platform(),
        "cpu": {"model": cpu_model(), "cores": os.cpu_count(), "usable_cores": usable_cores},
        "packages": packages,
        "nvidia": driver,
        "backends": {name: {"usable": ok, "reason": reason}
                     for name, (ok, reason) in availability(facts).items()},
        "cache": {"path": str(cache_root()), "bytes": _cache_bytes()},
    }


def _cache_bytes() -> int:
    root = cache_root()
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.is_dir() else 0


def _package_line(name: str, info: Dict[str, Any]) -> str:
    if not info.get("version"):
        return info.get("error") or NOT_INSTALLED
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
    elif name == "openvino" and "devices" in info:
        parts.append("devices: " + (", ".join(info["devices"]) or "none"))
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
             f"  {'cpu':<12} {cpu.get('model', '?')}, {cores}"]
    cache = info.get("cache")
    if cache:
        lines.append(f"  {'cache':<12} {cache['path']} ({cache['bytes'] / 2 ** 20:.1f} MB; `poserender cache list`)")
    lines.append("packages")
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
        precisions = f" [{', '.join(REGISTRY[name].precisions)}]" if name in REGISTRY else ""
        lines.append(f"  {name:<12} {'yes' if backend['usable'] else 'no ':<4} {backend['reason']}{precisions}")
    return "\n".join(lines)
