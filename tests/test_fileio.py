"""Outputs written through temporary names get the usual umask mode, not mkstemp's 0600."""
from __future__ import annotations

import os
import stat

import numpy as np

from poserender.fileio import temp_dir_beside, temp_file_beside
from poserender.runtime.sinks import open_sink


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_temp_entries_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        fd, name = temp_file_beside(tmp_path / "x.bin")
        os.close(fd)
        assert _mode(name) == 0o644
        assert _mode(temp_dir_beside(tmp_path / "folder")) == 0o755
        with open_sink(tmp_path / "clip.mp4", fps=10) as sink:
            sink.write(np.zeros((2, 16, 16, 3), np.uint8))
        with open_sink(tmp_path / "frames", "png") as sink:
            sink.write(np.zeros((1, 16, 16, 3), np.uint8))
        assert _mode(tmp_path / "clip.mp4") == 0o644
        assert _mode(tmp_path / "frames") == 0o755 and _mode(tmp_path / "frames" / "000000.png") == 0o644
    finally:
        os.umask(old)


def test_exported_model_is_readable_by_others(tiny_model):
    assert _mode(tiny_model) & 0o005 == 0o005
    assert _mode(tiny_model / "manifest.json") & 0o004
