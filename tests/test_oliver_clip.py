"""The real Oliver clip: 304 generated poses with the speech audio, rendered at 256 x 256 by a
randomly initialised full-size model (Oliver.yaml with scale 2.5) through the streaming pipeline
with --batch 4: from the .npz, as JSON lines on stdin, and over the TCP listener. Slow: about
2-4 minutes each on 2 CPU cores (the model is exported once per session into the test cache)."""
from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from poserender.cli import main

OLIVER = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "oliver"
STEM = "Auto_Lending_-_Last_Week_Tonight_with_John_Oliver_HBO-4U2eDJnwz_s_58_000_0_00_05.405405"


@pytest.fixture(scope="module")
def random_full_checkpoint(tmp_path_factory):
    if not OLIVER.is_dir():
        pytest.skip("../shared not found: the Oliver data is not in this checkout")
    import torch

    from poserender.models.checkpoint import save_checkpoint
    from poserender.models.pose2img import Pose2ImgGenerator

    torch.manual_seed(0)
    ckpt = tmp_path_factory.mktemp("oliver_ckpt") / "random_full.pth"
    save_checkpoint(ckpt, Pose2ImgGenerator(width=64).eval(), {"note": "random init"})
    return ckpt


def oliver_json_lines() -> list:
    """The 304 .npz poses as a live tracker would send them: 137 OpenPose points in image pixels."""
    from poserender.config import load_pose2img_config
    from poserender.keypoints import OPENPOSE_TO_122, read_npz

    seq = read_npz(OLIVER / "varying_tmplt.npz", load_pose2img_config(OLIVER / "Oliver.yaml", scale=2.5))
    lines = []
    for t in range(len(seq)):
        rows = np.zeros((137, 3))
        rows[list(OPENPOSE_TO_122), :2] = seq.xy[t]
        rows[list(OPENPOSE_TO_122), 2] = 1.0
        lines.append(json.dumps({"frame": t, "keypoints": rows.tolist()}))
    return lines


def render(ckpt, keypoints, out, input=None):
    return CliRunner().invoke(main, [
        "render", str(ckpt), "--config", str(OLIVER / "Oliver.yaml"), "--scale", "2.5",
        "--source", str(OLIVER / f"{STEM}.jpg"), "--source-keypoints", str(OLIVER / f"{STEM}.npy"),
        "--keypoints", keypoints, "--audio", str(OLIVER / "varying_tmplt.mp4"),
        "-o", str(out), "--batch", "4"], input=input, catch_exceptions=False)


def check_video(result, out):
    assert result.exit_code == 0, result.output
    assert "rendered 304/304 frames" in result.stdout and "256x256" in result.stdout
    assert "frames: in 304 = out 304 + dropped 0 + skipped 0" in result.stdout
    with av.open(str(out)) as container:
        video, audio = container.streams.video[0], container.streams.audio
        assert (video.width, video.height) == (256, 256)
        assert sum(1 for _ in container.decode(video=0)) == 304
        assert len(audio) == 1
        video_seconds = 304 / 15
        assert abs(float(audio[0].duration * audio[0].time_base) - video_seconds) < 0.2


@pytest.mark.slow
def test_oliver_clip_renders_with_audio(random_full_checkpoint, tmp_path):
    out = tmp_path / "oliver.mp4"
    check_video(render(random_full_checkpoint, str(OLIVER / "varying_tmplt.npz"), out), out)


@pytest.mark.slow
def test_oliver_clip_from_json_lines_on_stdin(random_full_checkpoint, tmp_path):
    out = tmp_path / "oliver_stdin.mp4"
    check_video(render(random_full_checkpoint, "-", out, input="\n".join(oliver_json_lines()) + "\n"), out)


@pytest.mark.slow
def test_oliver_clip_over_the_tcp_listener(random_full_checkpoint, tmp_path, tcp_sender):
    # the first run exports the checkpoint before it listens: give the client 300 s
    port, join = tcp_sender(oliver_json_lines(), timeout=300)
    out = tmp_path / "oliver_tcp.mp4"
    result = render(random_full_checkpoint, f"tcp://127.0.0.1:{port}", out)
    assert not join()
    check_video(result, out)
