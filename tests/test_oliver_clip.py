"""The real Oliver clip: 304 generated poses with the speech audio, rendered at 256 x 256 by a
randomly initialised full-size model (Oliver.yaml with scale 2.5). Slow: about 2-4 minutes on
2 CPU cores."""
from __future__ import annotations

from pathlib import Path

import av
import pytest
from click.testing import CliRunner

from poserender.cli import main

OLIVER = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "oliver"
STEM = "Auto_Lending_-_Last_Week_Tonight_with_John_Oliver_HBO-4U2eDJnwz_s_58_000_0_00_05.405405"


@pytest.mark.slow
def test_oliver_clip_renders_with_audio(tmp_path):
    if not OLIVER.is_dir():
        pytest.skip("../shared not found: the Oliver data is not in this checkout")
    import torch

    from poserender.models.checkpoint import save_checkpoint
    from poserender.models.pose2img import Pose2ImgGenerator

    torch.manual_seed(0)
    ckpt = tmp_path / "random_full.pth"
    save_checkpoint(ckpt, Pose2ImgGenerator(width=64).eval(), {"note": "random init"})
    out = tmp_path / "oliver.mp4"
    result = CliRunner().invoke(main, [
        "render", str(ckpt), "--config", str(OLIVER / "Oliver.yaml"), "--scale", "2.5",
        "--source", str(OLIVER / f"{STEM}.jpg"), "--source-keypoints", str(OLIVER / f"{STEM}.npy"),
        "--keypoints", str(OLIVER / "varying_tmplt.npz"), "--audio", str(OLIVER / "varying_tmplt.mp4"),
        "-o", str(out), "--batch", "8"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "rendered 304/304 frames" in result.stdout and "256x256" in result.stdout
    with av.open(str(out)) as container:
        video, audio = container.streams.video[0], container.streams.audio
        assert (video.width, video.height) == (256, 256)
        assert sum(1 for _ in container.decode(video=0)) == 304
        assert len(audio) == 1
        video_seconds = 304 / 15
        assert abs(float(audio[0].duration * audio[0].time_base) - video_seconds) < 0.2
