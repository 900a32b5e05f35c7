"""GPU memory reporting (NVML): the stream report and bench read it through poserender.gpumem.
No GPU here, so a stand-in pynvml module plays NVML; without it memory is 'not measured'."""
from __future__ import annotations

import sys
import types

import pytest

from poserender import gpumem
from poserender.runtime.report import gpu_memory


@pytest.fixture
def fake_nvml(monkeypatch):
    used = {0: 1536 * 2 ** 20, 1: 512 * 2 ** 20}
    module = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlDeviceGetCount=lambda: len(used),
        nvmlDeviceGetHandleByIndex=lambda i: ("handle", i),
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(used=used[h[1]], total=80 * 2 ** 30))
    monkeypatch.setitem(sys.modules, "pynvml", module)
    return used


def test_cpu_only_streams_report_no_gpu_memory():
    assert gpu_memory(("cpu",)) is None and gpu_memory(("cpu", "cpu")) is None


def test_without_nvml_gpu_memory_is_marked_not_measured(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)           # import pynvml -> ImportError
    assert gpu_memory(("0",)) == {"not_measured": gpumem.NOT_MEASURED}


def test_stream_reports_the_gpus_it_used_once_each(fake_nvml):
    assert gpu_memory(("0", "0")) == {"0": 1536.0}
    assert gpu_memory(("1", "0")) == {"0": 1536.0, "1": 512.0}
    assert gpu_memory(("7",)) == {"not_measured": gpumem.NOT_MEASURED}    # no such device


def test_bench_memory_sampler_sums_every_visible_gpu(fake_nvml):
    from poserender.bench import MemorySampler

    with MemorySampler(gpu=True) as memory:
        pass
    report = memory.report()
    assert report["gpu_memory_used_peak_mib"] == 2048.0
    assert report["gpu_memory_how"].startswith("NVML used memory")
