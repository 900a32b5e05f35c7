"""Layer rules: rendering needs neither torch nor onnx (nor openvino); nothing loads GPU libraries or
OpenVINO at import; and
every import in the package, at module level or inside a function, goes to its own layer or a
lower one (docs/architecture.md, "Layers")."""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "poserender"
#: lowest first; a module may import its own layer and the ones before it
LAYERS = (
    ("errors", "fileio", "signals", "cache", "specs", "config", "manifest", "images", "flops", "gpumem", "__init__"),
    ("keypoints",),
    ("models",),
    ("training",),
    ("engines",),
    ("runtime",),
    ("families",),
    ("export",),
    ("bench", "triton", "demo"),
    ("doctor", "commands", "cli"),
)
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def _top(module: str) -> str:
    """poserender.runtime.pipeline -> runtime; poserender.errors -> errors."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path):
    """(line, imported poserender module) for every import in ``path``, relative ones resolved."""
    module = "poserender." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                names = [".".join(base + ([node.module] if node.module else []))]
                if not node.module:     # from . import x, y
                    names = [".".join(base + [a.name]) for a in node.names]
            else:
                names = [node.module or ""]
        else:
            continue
        for name in names:
            if name == "poserender" or name.startswith("poserender."):
                yield node.lineno, module, name


def test_every_import_goes_down_the_layers():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for line, module, imported in _imports(path):
            here, there = LAYER_OF[_top(module)], LAYER_OF.get(_top(imported), -1)
            if there > here:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module} imports {imported} "
                             f"({_top(imported)} is above {_top(module)})")
    assert not wrong, "\n".join(wrong)


def test_every_package_has_a_layer():
    tops = {p.name if p.is_dir() else p.stem for p in PACKAGE.iterdir()
            if (p.is_dir() and (p / "__init__.py").is_file()) or p.suffix == ".py"}
    assert tops <= set(LAYER_OF), sorted(tops - set(LAYER_OF))


def test_render_path_imports_without_torch_or_onnx():
    proc = _run("""
        import sys
        for blocked in ("torch", "onnx", "tensorrt", "pycuda", "openvino", "nncf"):
            sys.modules[blocked] = None          # any import of these now fails
        import poserender.cli, poserender.runtime.stream, poserender.runtime.sinks, poserender.families
        import poserender.engines.select, poserender.engines.ort_engine, poserender.engines.torch_engine
        import poserender.keypoints, poserender.manifest, poserender.doctor, poserender.commands.render
        from poserender.engines import select
        print(select.resolve_backend("auto"))
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() in ("ort-cpu", "ort-cuda")     # auto: ONNX Runtime, CUDA where a GPU is usable


def test_no_gpu_library_nor_openvino_is_imported_by_any_module():
    proc = _run("""
        import importlib, pkgutil, sys
        import poserender
        for info in pkgutil.walk_packages(poserender.__path__, "poserender."):
            importlib.import_module(info.name)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorrt", "pycuda", "cupy", "openvino", "nncf"))
        print(loaded)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
