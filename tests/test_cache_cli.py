"""`poserender cache list|clear` and the cache line of `poserender doctor`."""
from __future__ import annotations

from click.testing import CliRunner

from poserender.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_list_and_clear_the_cache(tmp_path, monkeypatch, tiny_checkpoint, tiny_inputs):
    cache = tmp_path / "cache"
    monkeypatch.setenv("POSERENDER_CACHE", str(cache))
    assert "is empty" in run("cache", "list").output
    result = run("render", tiny_checkpoint, "--source", tiny_inputs / "source.png", "--source-keypoints",
                 tiny_inputs / "source.npy", "--keypoints", tiny_inputs / "targets.npy", "-o", tmp_path / "o.mp4")
    assert result.exit_code == 0, result.output              # the checkpoint is exported into the cache
    listing = run("cache", "list").output
    assert "exports/pose2img-" in listing and f"pose2img 64x64 from {tiny_checkpoint}" in listing
    assert "verified-files.json" in listing and "in all, in " in listing
    assert f"  cache        {cache} (" in run("doctor").output
    cleared = run("cache", "clear", "exports")
    assert cleared.exit_code == 0 and "removed exports from" in cleared.output and " freed" in cleared.output
    assert not (cache / "exports").exists() and (cache / "verified-files.json").exists()
    run("cache", "clear")
    assert not any(cache.iterdir())
    assert run("cache", "clear", "bogus").exit_code == 2
