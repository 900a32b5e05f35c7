"""Layer rules: rendering needs neither torch nor onnx; nothing loads GPU libraries at import."""
from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_render_path_imports_without_torch_or_onnx():
    proc = _run("""
        import sys
        for blocked in ("torch", "onnx", "tensorrt", "pycuda"):
            sys.modules[blocked] = None          # any import of these now fails
        import poserender.cli, poserender.runtime.render, poserender.runtime.sinks
        import poserender.engines.select, poserender.engines.ort_engine, poserender.engines.torch_engine
        import poserender.keypoints, poserender.manifest, poserender.doctor
        from poserender.engines import select
        print(select.resolve_backend("auto"))
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ort-cpu"


def test_no_gpu_library_is_imported_by_any_module():
    proc = _run("""
        import importlib, pkgutil, sys
        import poserender
        for info in pkgutil.walk_packages(poserender.__path__, "poserender."):
            importlib.import_module(info.name)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorrt", "pycuda", "cupy"))
        print(loaded)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
