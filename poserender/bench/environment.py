"""What a result was measured on: the machine, library versions, git state, and memory use.

:func:`environment` goes into every result file; :class:`MemorySampler` records the peak RSS of
this process (and the used GPU memory through NVML, when it answers) while a cell runs.
"""
from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from .. import gpumem

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSIONED = ("numpy", "onnxruntime", "onnxruntime-gpu", "onnx", "torch", "tensorrt", "pycuda",
             "opencv-python-headless", "av", "matplotlib", "nvidia-ml-py")


def environment(argv: Sequence[str], threads: int) -> Dict[str, Any]:
    """The machine, library versions, git commit and command line, for the result file."""
    from importlib import metadata

    from .. import __version__
    from ..engines.machine import cpu_flags, cpu_model, nvidia_smi

    versions = {"python": platform.python_version(), "poserender": __version__}
    for dist in VERSIONED:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    try:
        mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                       if line.startswith("MemTotal"))
    except (OSError, StopIteration, ValueError):
        mem_kib = None
    gpus = nvidia_smi()
    return {"command_line": " ".join(shlex.quote(str(a)) for a in argv), "argv": list(argv), "python": sys.executable,
            "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "git": git_state(), "cpu_model": cpu_model(), "cpu_flags": cpu_flags(), "cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "threads": threads, "ram_gib": round(mem_kib / 2 ** 20, 1) if mem_kib else None,
            "platform": platform.platform(), "gpus": gpus["gpus"], "gpu_error": gpus["error"],
            "load_average_start": load_average(), "versions": versions}


def model_identity(folder: Path) -> Dict[str, str]:
    """The exported model a result describes: its folder and the sha256 of its manifest.json
    (which holds the sha256 of every graph file and of the checkpoint)."""
    import hashlib

    manifest = Path(folder) / "manifest.json"
    return {"folder": str(folder), "manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest()}


def load_average() -> Optional[list]:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def git_state() -> Dict[str, Any]:
    """The commit of this checkout and whether tracked files (outside benchmarks/results/) differ
    from it (None: not a git tree)."""
    def git(*args: str) -> Optional[str]:
        try:
            out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    # the results folder is left out: a benchmark run writes there, and it is not measured code
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)benchmarks/results") \
        if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


class MemorySampler:
    """Peak RSS of this process (and used GPU memory, when NVML answers) while the block runs."""

    def __init__(self, period_s: float = 0.005, gpu: bool = False):
        self.period_s, self.gpu = period_s, gpu
        self.peak_rss = self.peak_gpu = self.gpu_before = None
        self._stop = threading.Event()
        found = gpumem.handles() if gpu else None
        self._nvml = list(found.values()) if found else None

    def _sample(self) -> None:
        rss = _rss_bytes()
        if rss is not None:
            self.peak_rss = max(self.peak_rss or 0, rss)
        if self._nvml:
            used = sum(gpumem.used_bytes(h) for h in self._nvml)
            self.peak_gpu = max(self.peak_gpu or 0, used)

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s if not self._nvml else max(self.period_s, 0.02)):
            self._sample()

    def __enter__(self) -> "MemorySampler":
        if self._nvml:
            self.gpu_before = sum(gpumem.used_bytes(h) for h in self._nvml)
        self._sample()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def report(self) -> Dict[str, Any]:
        mib = lambda b: None if b is None else round(b / 2 ** 20, 1)  # noqa: E731
        out = {"peak_rss_mib": mib(self.peak_rss)}
        if self.gpu:
            out["gpu_memory_used_peak_mib"] = mib(self.peak_gpu)
            out["gpu_memory_how"] = ("NVML used memory of all visible GPUs, sampled" if self._nvml else
                                     gpumem.NOT_MEASURED)
        return out


def _rss_bytes() -> Optional[int]:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource  # ru_maxrss: the process peak so far (KiB on Linux), the best fallback
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
