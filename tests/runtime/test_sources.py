"""Keypoint sources: JSON lines, TCP listener, OpenPose folders (whole and followed), files."""
from __future__ import annotations

import io
import json
import socket
import threading
import time

import numpy as np
import pytest

from poserender.errors import UserError
from poserender.keypoints import OPENPOSE_TO_122
from poserender.runtime.live import JsonLinesSource, TcpSource, loopback_address, open_source, parse_record
from poserender.runtime.sources import OpenPoseFolderSource


def openpose_points(seed: int = 0) -> list:
    """137 OpenPose points [x, y, c]: the 122 used ones detected, the other 15 missing (c = 0)."""
    rng = np.random.default_rng(seed)
    rows = np.zeros((137, 3))
    rows[list(OPENPOSE_TO_122), :2] = rng.uniform(10, 200, size=(122, 2))
    rows[list(OPENPOSE_TO_122), 2] = 0.9
    return rows.round(3).tolist()


def openpose_doc(points: list) -> dict:
    rows = np.asarray(points)
    return {"version": 1.3, "people": [{
        "pose_keypoints_2d": rows[:25].ravel().tolist(), "face_keypoints_2d": rows[25:95].ravel().tolist(),
        "hand_left_keypoints_2d": rows[95:116].ravel().tolist(), "hand_right_keypoints_2d": rows[116:].ravel().tolist()}]}


def test_record_with_137_points_keeps_pixels_and_openpose_validity():
    points = openpose_points()
    frame = parse_record(json.dumps({"frame": 7, "keypoints": points, "t": 1.5}), 0, 0.0)
    assert frame.bad is None and frame.index == 7 and frame.timestamp == 1.5
    np.testing.assert_array_equal(frame.xy, np.asarray(points)[:, :2])
    assert frame.valid.sum() == 122 and not frame.valid[8]          # c = 0: missing


def test_openpose_document_line_equals_keypoints_line():
    points = openpose_points(1)
    a = parse_record(json.dumps({"frame": 0, "keypoints": points}), 0, 0.0)
    b = parse_record(json.dumps(openpose_doc(points)), 0, 0.0)
    np.testing.assert_array_equal(a.xy, b.xy)
    np.testing.assert_array_equal(a.valid, b.valid)


@pytest.mark.parametrize("line, kind", [
    ('{"frame": 3, "keypoints": [[1, 2, 0.5], [3]]}', "decode"),
    ('{"frame": 3, "keypoints": [[1, NaN, 0.5]]}', "nan"),
    ('{"frame": 3, "keypoints": [[1, 1e39, 0.5]]}', "range"),
    ('{"frame": 3, "keypoints": [[1, -2e6, 0.5]]}', "range"),
    ('{"frame": 3, "keypoints": [[1, 2, 1e999]]}', "nan"),
    ('{"frame": 3, "keypoints": [[1, 2, 0.5]], "t": 1e999}', None),
    ('{"frame": 3, "keypoints": [[1e400, 2, 0.5]]}', "nan"),
    ('{"frame": 3, "keypoints": [[1' + "0" * 400 + ', 2]]}', "decode"),    # an integer no float holds
    ('{"people": [{"pose_keypoints_2d": [1, 2, 3]}]}', "shape"),
])
def test_bad_records_with_an_index_are_bad_frames_at_that_index(line, kind):
    frame = parse_record(line, 3, 0.0, "<stdin>")
    assert frame.index == 3
    if kind is None:
        assert frame.bad is None and frame.timestamp == 0.0       # a non-finite "t" is ignored
        return
    assert frame.bad is not None and frame.bad.kind == kind
    assert "frame 3" in str(frame.bad) and "<stdin>" in str(frame.bad)


@pytest.mark.parametrize("line", ['{"frame": 3, "keypoints": [[1, 2', '[1, 2, 3]', '{"frame": -1, "keypoints": []}',
                                  '{"frame": "7", "keypoints": []}', '{"frame": 2.5, "keypoints": []}',
                                  '{"frame": true, "keypoints": []}', '{"foo": 1}', '"text"', "\xff\xfe garbage",
                                  "[" * 100000 + "]" * 100000, '{"frame": 1e400, "keypoints": []}'])
def test_undecodable_lines_are_bad_frames_without_an_index(line):
    frame = parse_record(line, 3, 0.0, "<stdin>")
    assert frame.index is None and frame.bad is not None and frame.bad.kind == "decode"
    assert "frame 3" not in str(frame.bad) and "<stdin>" in str(frame.bad)


def test_three_joint_record_is_delivered_for_the_adapter_to_judge():
    frame = parse_record('{"frame": 0, "keypoints": [[1, 2, 1], [3, 4, 1], [5, 6, 1]]}', 0, 0.0)
    assert frame.bad is None and frame.xy.shape == (3, 2)


def test_json_lines_source_numbers_frames_and_ignores_blank_lines():
    lines = [json.dumps({"keypoints": openpose_points()}), "", "{broken",
             json.dumps({"frame": 10, "keypoints": openpose_points()}), json.dumps({"keypoints": openpose_points()})]
    frames = list(JsonLinesSource(io.StringIO("\n".join(lines) + "\n")))
    assert [f.index for f in frames] == [0, None, 10, 11]       # the broken line takes no index
    assert [f.bad.kind if f.bad else None for f in frames] == [None, "decode", None, None]


def test_line_reader_bounds_memory_and_reports_long_lines():
    from poserender.runtime.live import LineReader, TooLong

    reader = LineReader(limit=10)
    chunks = [b"short\n0123456789", b"ABC", b"DEF\nok\n", b"x" * 50, b"", ]
    out = [item for chunk in chunks for item in reader.feed(chunk)]
    assert out[0] == b"short" and isinstance(out[1], TooLong) and out[1].size == 16 and out[2] == b"ok"
    assert isinstance(out[3], TooLong) and out[3].size == 50 and len(out) == 4
    assert len(reader._buffer) == 0


def test_json_lines_source_an_over_long_line_is_one_decode_frame_without_an_index():
    good = json.dumps({"frame": 0, "keypoints": openpose_points()})
    text = good + "\n" + "x" * 5000 + "\n" + json.dumps({"frame": 1, "keypoints": openpose_points()}) + "\n"
    frames = list(JsonLinesSource(io.BytesIO(text.encode()), max_line=4096))
    assert [f.index for f in frames] == [0, None, 1]
    assert frames[1].bad.kind == "decode" and "over the limit of 4096" in str(frames[1].bad)


def test_tcp_source_receives_lines_from_a_client():
    source = TcpSource("tcp://127.0.0.1:0")
    lines = [json.dumps({"frame": i, "keypoints": openpose_points(i)}) for i in range(5)]

    def send():
        with socket.create_connection(("127.0.0.1", source.port), timeout=5) as conn:
            for line in lines:
                conn.sendall((line + "\n").encode())

    sender = threading.Thread(target=send)
    sender.start()
    frames = list(source)
    sender.join()
    source.close()
    assert [f.index for f in frames] == list(range(5)) and all(f.bad is None for f in frames)


def test_tcp_source_close_unblocks_a_waiting_listener():
    source = TcpSource("tcp://127.0.0.1:0")
    threading.Timer(0.3, source.close).start()
    started = time.monotonic()
    assert list(source) == [] and time.monotonic() - started < 5


@pytest.mark.parametrize("spec", ["tcp://0.0.0.0:9000", "tcp://example.com:80", "tcp://127.0.0.1", "udp://127.0.0.1:1"])
def test_only_loopback_tcp_addresses(spec):
    with pytest.raises(UserError, match="tcp://127.0.0.1:PORT"):
        loopback_address(spec)


def test_loopback_forms():
    assert loopback_address("tcp://localhost:5000") == ("localhost", 5000)
    assert loopback_address("tcp://[::1]:5000") == ("::1", 5000)


def _write(folder, number, points=None, text=None):
    path = folder / f"clip_{number:012d}_keypoints.json"
    path.write_text(text if text is not None else json.dumps(openpose_doc(points or openpose_points(number))))
    return path


def test_openpose_folder_is_parsed_lazily_with_gaps_and_broken_files(tmp_path):
    for n in (0, 1, 3):
        _write(tmp_path, n)
    _write(tmp_path, 4, text='{"people": [')
    frames = list(OpenPoseFolderSource(tmp_path, fps=25))
    assert [f.index for f in frames] == [0, 1, 3, 4]           # the missing frame 2 is a jump (the policy fills it)
    assert [f.bad.kind if f.bad else None for f in frames] == [None, None, None, "decode"]
    assert "clip_000000000004_keypoints.json" in str(frames[3].bad)


def test_openpose_folder_with_a_huge_number_gap_is_two_frames(tmp_path):
    _write(tmp_path, 0)
    _write(tmp_path, 100_000_000)
    frames = list(OpenPoseFolderSource(tmp_path, fps=25))
    assert [f.index for f in frames] == [0, 100_000_000] and all(f.bad is None for f in frames)


def test_follow_picks_up_files_as_they_are_written_and_ends_when_idle(tmp_path):
    source = OpenPoseFolderSource(tmp_path, fps=25, follow=True, idle_seconds=0.6, poll_seconds=0.02,
                                  settle_seconds=0.3)

    def openpose_writing():
        for n in range(4):
            if n == 2:      # a half-written file first: must not be read as a bad frame yet
                path = _write(tmp_path, n, text='{"people": [')
                time.sleep(0.1)
                path.write_text(json.dumps(openpose_doc(openpose_points(n))))
            else:
                _write(tmp_path, n)
            time.sleep(0.1)

    writer = threading.Thread(target=openpose_writing)
    writer.start()
    frames = list(source)
    writer.join()
    assert [f.index for f in frames] == [0, 1, 2, 3] and all(f.bad is None for f in frames)


def test_open_source_dispatch(tmp_path):
    assert isinstance(open_source("-", None, 25, stdin=io.StringIO("")), JsonLinesSource)
    tcp = open_source("tcp://127.0.0.1:0", None, 25)
    assert isinstance(tcp, TcpSource)
    tcp.close()
    with pytest.raises(UserError, match="--follow watches a folder"):
        open_source(str(tmp_path / "x.npz"), None, 25, follow=True)
    seen = []
    open_source(str(tmp_path / "poses.npz"), lambda path, fps: seen.append((path.name, fps)), 12)
    assert seen == [("poses.npz", 12)]


def test_psc_csv_folder_source(tmp_path):
    """PSC's pose csv (an x row and a y row per pose, index column first) as a stream of 18-joint frames."""
    from poserender.runtime.sources import Coco18FileSource

    folder = tmp_path / "P1"
    folder.mkdir()
    for i in range(3):
        x = [str(i)] + [str(10.0 + i + j) for j in range(18)]
        y = [str(i)] + ["-1" if j == 4 else str(20.0 + j) for j in range(18)]
        (folder / f"pose{i}.csv").write_text(",".join(x) + "\n" + ",".join(y) + "\n")
    frames = list(Coco18FileSource(folder, fps=25))
    assert [f.index for f in frames] == [0, 1, 2] and all(f.bad is None for f in frames)
    assert frames[2].xy.shape == (18, 2) and frames[2].xy[0, 0] == 12.0 and not frames[2].valid[4]
