"""The server-free repository check catches what Triton would refuse: schema errors, configs that
disagree with the ONNX graphs, broken ensemble wiring. Each case damages a copy of a good
repository in one place."""
from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from poserender.errors import UserError
from poserender.triton.validate import dims_match_wildcard, validate_repository

REPO_ROOT = Path(__file__).resolve().parents[2]


def damaged(repo: Path, tmp_path: Path, model: str, old: str, new: str) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(repo, copy)
    config = copy / model / "config.pbtxt"
    text = config.read_text()
    assert old in text, old
    config.write_text(text.replace(old, new, 1))
    return copy


@pytest.mark.parametrize("model, old, new, message", [
    ("pose2img_frame", "dims: [ -1, 122, 2 ]", "dims: [ -1, 121, 2 ]", "'target_keypoints' has dims [-1, 121, 2]"),
    ("pose2img_frame", "data_type: TYPE_UINT8", "data_type: TYPE_FP32", "output 'frames' is TYPE_FP32"),
    ("pose2img_frame", 'name: "background"', 'name: "backdrop"', "has ['background'"),
    ("pose2img_frame", "max_batch_size: 0", "max_batch_size: 4",
     "takes one identity per call"),                                   # Triton would merge identities
    ("pose2img_source", "max_batch_size: 4", "max_batch_size: 0", "has dims [3, 64, 64]"),
    ("pose2img_source", "preferred_batch_size: [ 4 ]", "preferred_batch_size: [ 16 ]",
     "preferred_batch_size 16 is outside 1..4"),
    ("pose2img_source", "kind: KIND_CPU", "kind: KIND_GPU", "lists no gpus"),
    ("pose2img_source", 'name: "pose2img_source"', 'name: "source"', "Triton expects the folder name"),
    ("pose2img", 'key: "background"\n          value: "background"', 'key: "background"\n          value: "bg"',
     "never runs"),
    ("pose2img", 'key: "source_parts"\n          value: "source_parts"\n        },\n        {\n'
                 '          key: "background"', 'key: "source_parts"\n          value: "source_parts"\n        },\n'
                 '        {\n          key: "backgroundz"', "maps from output 'backgroundz'"),
    ("pose2img", "dims: [ 1, 3, 64, 64 ]", "dims: [ 2, 3, 32, 64 ]", "ensemble tensor 'source_image' has shape"),
    ("pose2img", 'model_name: "pose2img_frame"', 'model_name: "pose2img_frames"', "not in the repository"),
])
def test_each_damage_is_reported(pose2img_repo, tmp_path, model, old, new, message):
    repo = damaged(pose2img_repo, tmp_path, model, old, new)
    report = validate_repository(repo, strict=False)
    assert not report.ok and any(message in p for p in report.problems), report.problems
    with pytest.raises(UserError, match="Triton repository check failed"):
        validate_repository(repo)


def test_schema_errors_name_the_file(pose2img_repo, tmp_path):
    """An unknown field or enum is refused by Triton's protobuf schema (as tritonserver would)."""
    for old, new in (("max_batch_size: 0", "max_batch: 0"), ("kind: KIND_CPU", "kind: KIND_TPU")):
        with pytest.raises(UserError) as info:
            validate_repository(damaged(pose2img_repo, tmp_path / old.split(":")[0], "pose2img_frame"
                                        if "max" in old else "pose2img_source", old, new))
        assert "not a valid Triton model config" in str(info.value) and "config.pbtxt" in str(info.value)


def test_missing_model_file_and_metadata(pose2img_repo, psc_repo, tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(psc_repo, copy)
    (copy / "psc_parsing" / "1" / "model.onnx").unlink()
    with pytest.raises(UserError, match="psc_parsing: version folder 1/ has no model.onnx"):
        validate_repository(copy)
    (copy / "poserender_triton.json").unlink()
    with pytest.raises(UserError, match="no poserender_triton.json"):
        validate_repository(copy)


def test_wildcard_dims_follow_tritons_rule():
    assert dims_match_wildcard([-1, 122, 2], [1, 122, 2]) and dims_match_wildcard([3], [-1])
    assert not dims_match_wildcard([122, 2], [1, 122, 2]) and not dims_match_wildcard([4, 2], [3, 2])


def test_nothing_imports_tritonclient_or_the_triton_package():
    """tritonclient is imported lazily; generating without it says how to get it (exit 2); no
    other package imports poserender.triton (layer rule)."""
    code = textwrap.dedent("""
        import sys
        sys.modules["tritonclient"] = None
        import poserender.triton.repository, poserender.triton.validate, poserender.triton.client
        import poserender.triton.local, poserender.commands.triton, poserender.triton.server
        import poserender.triton.python_backend, poserender.triton.contract
        print(sorted(m for m, mod in sys.modules.items() if m.startswith("tritonclient") and mod is not None))
        from poserender.triton.validate import load_config
        try:
            load_config("x/config.pbtxt")
        except Exception as exc:
            print(type(exc).__name__, exc)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "[]" and lines[1].startswith("UserError") and "pip install" in lines[1]
    offenders = []
    for path in (REPO_ROOT / "poserender").rglob("*.py"):
        rel = path.relative_to(REPO_ROOT / "poserender").as_posix()
        if rel.startswith("triton/") or rel == "commands/triton.py":
            continue
        text = path.read_text()
        if "from ..triton" in text or "from .triton" in text or "import poserender.triton" in text \
                or "from poserender.triton" in text:
            offenders.append(rel)
    assert offenders == []


def test_without_onnx_the_graph_check_says_how_to_get_it(tiny_model, tmp_path):
    code = textwrap.dedent("""
        import sys
        sys.modules["onnx"] = None
        from poserender.errors import UserError
        from poserender.triton.repository import TritonOptions, generate_repository
        try:
            generate_repository(sys.argv[1], sys.argv[2], TritonOptions(devices=("cpu",)))
        except UserError as exc:
            print("UserError", exc)
    """)
    proc = subprocess.run([sys.executable, "-c", code, str(tiny_model), str(tmp_path / "repo")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("UserError checking a repository against its ONNX graphs needs onnx: pip install")
    assert not (tmp_path / "repo").exists()
