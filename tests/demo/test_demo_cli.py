"""`poserender demo` with the shipped trained model: it runs, and the model has learned the puppet."""
import json

import av
import cv2
import numpy as np
from click.testing import CliRunner

from poserender.cli import main
from poserender.demo import CLIP_PATH, MODEL_DIR, puppet_inputs
from poserender.demo import gestures as g
from poserender.demo.puppet import draw_puppet
from poserender.export.quality import psnr

BUDGET_BYTES = 25_000_000


def test_the_trained_model_and_clip_ship_in_the_package_within_budget():
    manifest = json.loads((MODEL_DIR / "manifest.json").read_text())
    assert manifest["family"] == "pose2img" and list(manifest["canvas"]) == [256, 256]
    assert manifest["demo_training"]["config"] == "configs/demo.yaml"
    files = [MODEL_DIR / s["file"] for s in manifest["stages"]] + [MODEL_DIR / "manifest.json", CLIP_PATH]
    assert all(f.is_file() for f in files)
    assert sum(f.stat().st_size for f in files) <= BUDGET_BYTES
    clip = np.load(CLIP_PATH)
    assert clip.ndim == 3 and clip.shape[1:] == (3, 137) and len(clip) >= 100


def test_demo_renders_a_new_sequence_with_a_sheet(tmp_path, monkeypatch):
    monkeypatch.setenv("POSERENDER_CACHE", str(tmp_path / "cache"))
    video, sheet, metrics = tmp_path / "o" / "demo.mp4", tmp_path / "o" / "demo.png", tmp_path / "m.json"
    result = CliRunner().invoke(main, ["demo", "-o", str(video), "--sheet", str(sheet), "--frames", "12",
                                       "--seed", "5", "--metrics", str(metrics)])
    assert result.exit_code == 0, result.output
    from poserender.engines.registry import pick_auto

    assert "fps" in result.output and pick_auto()[0] in result.output        # auto: ort-cpu here, ort-cuda on a GPU
    with av.open(str(video)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 12
    assert cv2.imread(str(sheet)) is not None
    assert json.loads(metrics.read_text())["frames"]["out"] == 12


def test_demo_bad_arguments(tmp_path):
    result = CliRunner().invoke(main, ["demo", "-o", str(tmp_path / "x.mp4"), "--frames", "0"])
    assert result.exit_code == 2 and "--frames 0" in result.output
    assert not (tmp_path / "x.mp4").exists()


def test_the_shipped_model_renders_held_out_poses_like_the_puppet(tmp_path):
    """Random weights would not pass: the model's frames must be close to the puppet drawn at
    held-out poses, and much closer than the source frame (the puppet at rest) is."""
    image, source_kp, _ = puppet_inputs(tmp_path / "in")
    poses = g.gesture_sequence(150, 256, seed=1234)[::25]            # 6 poses across several gestures
    np.save(tmp_path / "t.npy", np.stack([g.pose122_to_openpose(p) for p in poses]))
    out = tmp_path / "frames"
    result = CliRunner().invoke(main, ["render", str(MODEL_DIR), "--source", str(image), "--source-keypoints",
                                       str(source_kp), "--keypoints", str(tmp_path / "t.npy"), "-o", str(out),
                                       "--format", "png", "--backend", "ort-cpu"])
    assert result.exit_code == 0, result.output
    frames = sorted(out.glob("*.png"))
    assert len(frames) == 6
    source = cv2.imread(str(image)).astype(np.float64)
    scores = []
    for path, pose in zip(frames, poses):
        truth = draw_puppet(pose).astype(np.float64)
        model = psnr(truth, cv2.imread(str(path)).astype(np.float64), 255.0)
        trivial = psnr(truth, source, 255.0)
        assert model > 25.0 and model > trivial + 6.0, (path.name, model, trivial)
        scores.append(model)
    assert np.mean(scores) > 28.0, scores


def test_demo_needs_neither_torch_nor_onnx(tmp_path):
    """The quick start installs the base package only: the demo must run on ONNX Runtime alone."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import sys
        for blocked in ("torch", "onnx", "tensorrt", "pycuda"):
            sys.modules[blocked] = None
        from poserender.cli import main
        sys.argv = ["poserender", "demo", "-o", {str(tmp_path / 'd.mp4')!r}, "--sheet", "", "--frames", "4"]
        main()
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "POSERENDER_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "d.mp4").stat().st_size > 0


def test_demo_inputs_writes_the_model_and_the_puppet_and_renders_nothing(tmp_path):
    """`demo --inputs DIR`: what the README's Triton commands take (an exported model folder, a
    source image, its keypoints, a clip), with nothing to download."""
    folder = tmp_path / "demo_inputs"
    for _ in range(2):                                   # a second run replaces the first
        result = CliRunner().invoke(main, ["demo", "--inputs", str(folder), "-o", str(tmp_path / "x.mp4")])
        assert result.exit_code == 0, result.output
    assert "250 frames" in result.output and not (tmp_path / "x.mp4").exists()
    assert sorted(p.name for p in folder.iterdir()) == ["clip.npy", "model", "puppet_source.npy", "puppet_source.png"]
    for item in MODEL_DIR.iterdir():
        if item.is_file():
            assert (folder / "model" / item.name).read_bytes() == item.read_bytes()
    assert np.array_equal(np.load(folder / "clip.npy"), np.load(CLIP_PATH))
    result = CliRunner().invoke(main, ["demo", "--inputs", str(folder), "--frames", "5", "--seed", "2"])
    assert result.exit_code == 0 and np.load(folder / "clip.npy").shape == (5, 3, 137)
    assert sorted(p.name for p in folder.iterdir()) == ["clip.npy", "model", "puppet_source.npy", "puppet_source.png"]
