"""Shared test helpers: where ../shared is, and a tiny exported model for CLI tests."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
OLIVER = SHARED / "data" / "oliver"
OLIVER_STEM = "Auto_Lending_-_Last_Week_Tonight_with_John_Oliver_HBO-4U2eDJnwz_s_58_000_0_00_05.405405"
FIXTURES = SHARED / "fixtures" / "pose2img"
PSC_FIXTURES = SHARED / "fixtures" / "psc"


def pytest_configure(config):
    """Under CI=true the reference data and fixtures in ../shared are required: parity tests must
    run there, not skip. A user's fresh clone (no ../shared) skips them, each with its reason."""
    import os

    if os.environ.get("CI", "").lower() == "true" and not (SHARED / "fixtures").is_dir():
        raise pytest.UsageError(f"CI=true but {SHARED} (the reference data and fixtures) is missing: the parity "
                                "tests would be skipped; link ../shared beside the clone")


@pytest.fixture(scope="session")
def psc_manifest():
    """../shared/fixtures/psc/manifest.json (skips when the PSC fixtures are absent)."""
    import json

    if not (PSC_FIXTURES / "manifest.json").is_file() or not (SHARED / "fixtures" / "weights.py").is_file():
        pytest.skip("../shared/fixtures/psc not found: PSC reference fixtures are not in this checkout")
    return json.loads((PSC_FIXTURES / "manifest.json").read_text())


@pytest.fixture(scope="session")
def psc_state_dicts(psc_manifest):
    """Reference-keyed state dicts (numpy) made by the fixtures' deterministic weight scheme."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("psc_fixture_weights", SHARED / "fixtures" / "weights.py")
    weights = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(weights)
    return {net: weights.make_state_dict(psc_manifest["nets"][net]["state_dict"])
            for net in ("pm_net", "aa_net", "ct_net")}


@pytest.fixture(scope="session")
def psc_checkpoint_dir(tmp_path_factory, psc_state_dicts):
    """pm.pth / aa.pth / ct.pth in the authors' format (plain state dicts), from the fixture weights."""
    import torch

    folder = tmp_path_factory.mktemp("psc_ckpt")
    for net, name in (("pm_net", "pm.pth"), ("aa_net", "aa.pth"), ("ct_net", "ct.pth")):
        torch.save({k: torch.from_numpy(v) for k, v in psc_state_dicts[net].items()}, folder / name)
    return folder


@pytest.fixture(scope="session")
def tiny_psc_builders(tmp_path_factory):
    """Builders of tiny PSC test inputs: ``checkpoint(seed)`` -> a folder with random-weight
    pm.pth / aa.pth / ct.pth (the authors' layout); ``identity(image, parsing, size, shift=0)``
    writes an I0 image and an S0 parsing, the export's verification source (rolled ``shift``
    pixels), as BGR image and 3-channel label png."""
    import types

    def checkpoint(seed: int) -> Path:
        import torch

        from poserender.models.psc import AANet, CTNet, PMNet

        folder = tmp_path_factory.mktemp(f"psc_ckpt_seed{seed}")
        torch.manual_seed(seed)
        for name, net in (("pm.pth", PMNet()), ("aa.pth", AANet()), ("ct.pth", CTNet())):
            torch.save(net.state_dict(), folder / name)
        return folder

    def identity(image: Path, parsing: Path, size: int, shift: int = 0) -> None:
        from poserender.families.psc_io import verification_feeds
        from poserender.families.psc_modes import image_to_bgr8

        source = verification_feeds(size, size)["source"]
        cv2.imwrite(str(image), image_to_bgr8(np.roll(source["source_image"], shift, axis=3)))
        cv2.imwrite(str(parsing), np.repeat(source["source_labels"][0][:, :, None], 3, axis=2))

    return types.SimpleNamespace(checkpoint=checkpoint, identity=identity)


@pytest.fixture
def tcp_sender():
    """``start(lines, timeout)`` picks a free loopback port and starts a thread that connects to it as
    soon as something listens and sends the lines; it returns ``(port, join)``, where ``join()``
    waits for the thread and returns its errors (empty when everything was sent)."""
    import socket
    import threading
    import time

    def start(lines, timeout: float = 60.0):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        errors = []

        def send():
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                        for line in lines:
                            conn.sendall((line + "\n").encode())
                        return
                except ConnectionRefusedError:
                    time.sleep(0.05)
            errors.append(f"the listener on port {port} never accepted a connection within {timeout:g} s")

        thread = threading.Thread(target=send)
        thread.start()

        def join():
            thread.join()
            return errors
        return port, join
    return start


@pytest.fixture(scope="session")
def write_openpose_json():
    """``write(path, rows)``: one OpenPose ``--face --hand`` JSON file for (137, 3) x/y/confidence rows."""
    import json

    def write(path: Path, rows: np.ndarray) -> Path:
        person = {"pose_keypoints_2d": rows[:25].ravel().tolist(), "face_keypoints_2d": rows[25:95].ravel().tolist(),
                  "hand_left_keypoints_2d": rows[95:116].ravel().tolist(),
                  "hand_right_keypoints_2d": rows[116:].ravel().tolist()}
        Path(path).write_text(json.dumps({"people": [person]}))
        return Path(path)
    return write


@pytest.fixture(scope="session")
def tiny_file_frames(tiny_inputs, tiny_model, tmp_path_factory):
    """The tiny model's 6 frames of targets.npy rendered from the file (png), the reference that
    stream tests compare their frames with."""
    from click.testing import CliRunner

    from poserender.cli import main

    out = tmp_path_factory.mktemp("tiny_file_frames") / "frames"
    result = CliRunner().invoke(main, ["render", str(tiny_model), "--source", str(tiny_inputs / "source.png"),
                                       "--source-keypoints", str(tiny_inputs / "source.npy"), "--keypoints",
                                       str(tiny_inputs / "targets.npy"), "-o", str(out), "--format", "png"])
    assert result.exit_code == 0, result.output
    return [cv2.imread(str(p)) for p in sorted(out.iterdir())]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Checkpoint exports made by `render CKPT` go to a per-session temp cache, never ~/.cache."""
    monkeypatch.setenv("POSERENDER_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def tiny_inputs(tmp_path_factory):
    """A 64 x 64 source image, its keypoints (.npy 2x122 image pixels) and 6 target frames (.npy)."""
    from poserender.demo import draw_figure
    from poserender.keypoints.template import gesture_sequence, template_pose

    folder = tmp_path_factory.mktemp("tiny_inputs")
    pose = template_pose(64, 64)
    cv2.imwrite(str(folder / "source.png"), draw_figure(pose, 64))
    np.save(folder / "source.npy", pose.T.copy())
    np.save(folder / "targets.npy", gesture_sequence(6, 64, 64, seed=1))
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """Our checkpoint format: a width-8 generator with its config (64 x 64 canvas) embedded."""
    import torch

    from poserender.config import Pose2ImgConfig
    from poserender.models.checkpoint import save_checkpoint
    from poserender.models.pose2img import Pose2ImgGenerator

    torch.manual_seed(3)
    generator = Pose2ImgGenerator(width=8).eval()
    config = Pose2ImgConfig(img_h=64, img_w=64, scale=1.0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    save_checkpoint(path, generator, {"config": config.to_dict(), "warp_mode": "exact"})
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, tiny_checkpoint):
    from poserender import families
    from poserender.export.exporter import export_checkpoint

    out = tmp_path_factory.mktemp("art") / "tiny"
    export_checkpoint(families.get("pose2img"), tiny_checkpoint, out, {})
    return out
