"""``espnet-ros segment-bag`` and ``extract-frames`` on real rosbag2 recordings written with rosbags.

The output bags are read back with rosbags' own reader and every class mask is compared with the Segmenter's labels
for the same frame; headers, bag times and the label metadata are checked per camera. Bad input (a corrupt bag, an
unknown topic, a topic that is not an image, an existing output, a full disk) ends in one line and exit status 2.
"""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from bag_fixtures import FRONT, FRONT_INFO, NOTES, REAR, Recorded, textured, write_bag
from node_harness import WEIGHTS_DIR
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String

from espnet_ros.bags import IMAGE_TYPE, LABEL_INFO_TYPE, BagMessage, BagReader, BagWriter, read_frame, typestore
from espnet_ros.cli import main
from espnet_ros.core.errors import ImageError
from espnet_ros.core.segmenter import Segmenter
from espnet_ros.image_codec import decode_compressed, decode_image
from espnet_ros.label_msgs import labels_json

COMMON = ["--preset", "camvid", "--weights-dir", str(WEIGHTS_DIR)]
PREFIX = {FRONT: "/front/segmentation", REAR: "/rear/segmentation"}


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    return Segmenter("camvid", weights_dir=WEIGHTS_DIR)


def read_back(path: Path) -> dict[str, list[tuple[int, Any, str]]]:
    """Every message of the bag at ``path`` by topic: (bag time, raw bytes, type), read with rosbags' Reader."""
    out: dict[str, list[tuple[int, Any, str]]] = defaultdict(list)
    with Reader(path) as reader:
        for conn, t, raw in reader.messages():
            out[conn.topic].append((t, bytes(raw), conn.msgtype))
    return out


def check_segmented(out: Path, recorded: list[Recorded], segmenter: Segmenter) -> dict[str, list[tuple[int, Any, str]]]:
    """Every good frame has a class mask equal to the Segmenter's, with its header and bag time; labels once."""
    topics = read_back(out)
    good = [r for r in recorded if r.bgr is not None]
    for camera in (FRONT, REAR):
        prefix = PREFIX[camera]
        frames = [r for r in good if r.topic == camera]
        masks = topics[f"{prefix}/class_mask"]
        assert len(masks) == len(frames), camera
        for r, (t, raw, kind) in zip(frames, masks, strict=True):
            assert kind == "sensor_msgs/msg/Image"
            msg = deserialize_message(raw, Image)
            assert t == r.time_ns
            assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == r.stamp_ns
            assert msg.header.frame_id == r.frame_id
            assert r.bgr is not None
            expected = segmenter.segment(r.bgr).class_ids
            got = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width)
            np.testing.assert_array_equal(got, expected)
        labels = topics[f"{prefix}/labels"]
        assert len(labels) == 1 and labels[0][0] == frames[0].time_ns
        doc = json.loads(deserialize_message(labels[0][1], String).data)
        assert doc == json.loads(labels_json(segmenter.labels, "camvid", doc["drivable_ids"]))
        info = topics[f"{prefix}/label_info"]
        assert len(info) == 1 and info[0][2] == LABEL_INFO_TYPE
        label_info: Any = typestore().deserialize_cdr(info[0][1], LABEL_INFO_TYPE)
        assert [c.class_name for c in label_info.class_map] == list(segmenter.labels.names)
    return topics


def test_segment_bags_in_both_formats_in_parallel(tmp_path: Path, segmenter: Segmenter,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    inputs = tmp_path / "archive"
    recorded = {"drive_mcap": write_bag(inputs / "drive_mcap", "mcap"),
                "drive_sqlite": write_bag(inputs / "drive_sqlite", "sqlite3")}
    out = tmp_path / "out"
    status = main(["-q", "segment-bag", str(inputs), "--out", str(out), "--jobs", "2", *COMMON])
    assert status == 0, capsys.readouterr().err
    for name, frames in recorded.items():
        topics = check_segmented(out / name, frames, segmenter)
        assert (out / name / f"{name}.mcap").is_file()
        assert len(topics["/front/segmentation/camera_info"]) == 3  # the front camera has a recorded CameraInfo
        assert "/rear/segmentation/camera_info" not in topics
        assert NOTES not in topics and FRONT not in topics


def test_segment_bag_sqlite_output_with_inputs_ground_and_compressed_overlays(
        tmp_path: Path, segmenter: Segmenter, capsys: pytest.CaptureFixture[str]) -> None:
    recorded = write_bag(tmp_path / "drive.mcap.d", "mcap")
    bare = next((tmp_path / "drive.mcap.d").glob("*.mcap"))  # a bare .mcap file, without metadata.yaml
    out = tmp_path / "out"
    status = main(["-q", "segment-bag", str(bare), "--out", str(out), "--storage", "sqlite3", "--copy-inputs",
                   "--compress-overlays", "jpeg", "--grid", "--camera-mount=0,0,1.2,0,0.2,0", *COMMON])
    assert status == 0, capsys.readouterr().err
    assert next(out.glob("*.db3")).is_file()
    topics = check_segmented(out, recorded, segmenter)
    good = [r for r in recorded if r.bgr is not None and r.topic == FRONT]
    for name in ("drivable_grid", "obstacle_points"):
        assert [t for t, _, _ in topics[f"/front/segmentation/{name}"]] == [r.time_ns for r in good]
    overlays = topics["/front/segmentation/overlay/compressed"]
    assert len(overlays) == len(good) and "/front/segmentation/overlay" not in topics
    assert decode_compressed(deserialize_message(overlays[0][1], CompressedImage)).image.shape == (48, 64, 3)
    for topic in (FRONT, REAR, FRONT_INFO, NOTES):  # --copy-inputs: every input message, same bag times
        assert [t for t, _, _ in topics[topic]] == [r.time_ns for r in recorded if r.topic == topic] or topic in (
            FRONT_INFO, NOTES)
    assert len(topics[NOTES]) == 1 and len(topics[FRONT_INFO]) == 1
    info = deserialize_message(topics["/front/segmentation/camera_info"][0][1], CameraInfo)
    assert (info.width, info.height) == (64, 48)


def test_bad_frame_is_skipped_counted_and_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_bag(tmp_path / "in", "mcap", frames=1)
    status = main(["segment-bag", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                   "--outputs", "class_mask", "--preset", "camvid", "--weights-dir", str(WEIGHTS_DIR)])
    err = capsys.readouterr().err
    assert status == 0, err
    assert f"{FRONT}: 1 frame(s) segmented, 1 skipped" in err
    assert "1 x unsupported image encoding '32FC1'" in err
    assert len(read_back(tmp_path / "out")["/front/segmentation/class_mask"]) == 1


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("espnet-ros: error: ")
    return err[0]


def test_corrupt_bag_is_one_line_and_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_bag(tmp_path / "in", "mcap")
    whole = next((tmp_path / "in").glob("*.mcap")).read_bytes()
    for name, data in (("truncated.mcap", whole[: len(whole) // 2]), ("garbage.db3", b"not a database" * 100)):
        path = tmp_path / name
        path.write_bytes(data)
        assert main(["-q", "segment-bag", str(path), "--out", str(tmp_path / f"out_{name}"), *COMMON]) == 2
        line = _one_error_line(capsys)
        assert f"cannot read bag {path}" in line
        assert not (tmp_path / f"out_{name}").exists()


def test_unknown_and_non_image_topics_are_one_line_and_status_2(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    write_bag(tmp_path / "in", "sqlite3")
    assert main(["-q", "segment-bag", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--topics", "/nope",
                 *COMMON]) == 2
    line = _one_error_line(capsys)
    assert "has no topic /nope" in line and FRONT in line and REAR in line and NOTES in line
    assert main(["-q", "segment-bag", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--topics", NOTES,
                 *COMMON]) == 2
    line = _one_error_line(capsys)
    assert f"{NOTES} is std_msgs/msg/String" in line and FRONT in line
    assert not (tmp_path / "o").exists()


def test_existing_output_needs_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_bag(tmp_path / "in", "mcap", frames=1, bad_frame=False)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    args = ["segment-bag", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--outputs", "class_mask", *COMMON]
    assert main(args) == 2
    assert "exists; choose another --out or add --overwrite" in _one_error_line(capsys)
    assert main([*args, "--overwrite"]) == 2  # not a bag: never deleted
    assert "is not a bag" in _one_error_line(capsys)
    (tmp_path / "out" / "notes.txt").unlink()
    assert main([*args, "--overwrite"]) == 0
    assert main([*args, "--overwrite"]) == 0  # replaces its own output
    assert len(read_back(tmp_path / "out")["/front/segmentation/class_mask"]) == 1


def test_full_disk_stops_with_a_readable_bag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_bag(tmp_path / "in", "mcap", frames=1, bad_frame=False)
    out = tmp_path / "out"
    status = main(["-q", "segment-bag", str(tmp_path / "in"), "--out", str(out), "--reserve-mb", "1e12", *COMMON])
    assert status == 2
    line = _one_error_line(capsys)
    assert "nearly full" in line and "readable up to its last message" in line
    assert read_back(out) == {}  # closed cleanly, nothing written after the disk check


def test_measure_writes_both_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_bag(tmp_path / "in", "mcap", frames=2, bad_frame=False)
    report = tmp_path / "m.json"
    assert main(["-q", "segment-bag", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--measure", str(report),
                 "--repeat", "1", *COMMON]) == 0
    doc = json.loads(report.read_text())
    assert doc["frames"] == 4 and doc["batch_size"] == 4
    assert doc["segmenter"]["fps_median"] > 0 and doc["segment_bag"]["fps_median"] > 0
    assert "segment-bag (read, decode" in capsys.readouterr().out


def test_extract_frames_from_a_bag_and_a_video(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recorded = write_bag(tmp_path / "in", "sqlite3", frames=3)
    out = tmp_path / "frames"
    assert main(["-q", "extract-frames", str(tmp_path / "in"), "--out", str(out), "--every", "2"]) == 0
    front = sorted((out / "front_image_raw").iterdir())
    stamps = [r.stamp_ns for r in recorded if r.topic == FRONT and r.bgr is not None]
    assert [p.name for p in front] == [f"front_image_raw_{s // 10**9}_{s % 10**9:09d}.png" for s in stamps[::2]]
    first = next(r for r in recorded if r.topic == FRONT)
    np.testing.assert_array_equal(cv2.imread(str(front[0])), first.bgr)
    assert len(list((out / "rear_image_raw_compressed").iterdir())) == 2
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(10):
        writer.write(textured(48, 64, seed=i))
    writer.release()
    assert main(["-q", "extract-frames", str(video), "--out", str(out), "--fps", "4"]) == 0
    names = sorted(p.name for p in (out / "clip").iterdir())
    assert names == ["clip_0_000000000.png", "clip_0_300000000.png", "clip_0_600000000.png",
                     "clip_0_900000000.png"]
    assert main(["-q", "extract-frames", str(tmp_path / "in"), "--out", str(out), "--topics", "/x"]) == 2
    assert "has no topic /x" in _one_error_line(capsys)


def test_decode_of_recorded_frames_matches_what_was_recorded(tmp_path: Path) -> None:
    recorded = write_bag(tmp_path / "in", "mcap", frames=2, bad_frame=False)
    topics = read_back(tmp_path / "in")
    for r, (_, raw, _) in zip([r for r in recorded if r.topic == FRONT], topics[FRONT], strict=True):
        decoded = decode_image(deserialize_message(raw, Image))
        image = decoded.image if decoded.color_order == "bgr" else decoded.image[:, :, ::-1]
        np.testing.assert_array_equal(image, r.bgr)


def test_recorded_frames_are_read_in_place_and_corrupt_records_skipped(
        tmp_path: Path, segmenter: Segmenter, capsys: pytest.CaptureFixture[str]) -> None:
    recorded = write_bag(tmp_path / "in", "mcap", frames=2, bad_frame=False)
    with BagReader(tmp_path / "in") as reader:
        records = list(reader.messages([FRONT, REAR]))
    for m in records:
        frame = read_frame(m)
        msg = deserialize_message(m.data, Image if m.topic == FRONT else CompressedImage)
        assert frame.header == msg.header and (frame.topic, frame.time_ns) == (m.topic, m.time_ns)
        want = decode_image(msg) if m.topic == FRONT else decode_compressed(msg)
        got = frame.decode()
        np.testing.assert_array_equal(got.image, want.image)
        assert got.color_order == want.color_order
        if m.topic == FRONT:  # raw pixels are a view of the record: not copied, read-only
            assert not got.image.flags.writeable
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # the Segmenter takes a read-only frame without a warning
                ids = segmenter.segment(got.image, color_order=got.color_order).class_ids
            copy = segmenter.segment(got.image.copy(), color_order=got.color_order).class_ids
            np.testing.assert_array_equal(ids, copy)
    front = next(m for m in records if m.topic == FRONT)
    for bad in (front.data[:60], front.data[:-10], b""):
        with pytest.raises(ImageError, match=r"cannot deserialize sensor_msgs/msg/Image"):
            read_frame(BagMessage(front.topic, front.msgtype, front.time_ns, bad))

    # a truncated record inside a bag: skipped, counted and reported, the other frames segmented
    with BagWriter(tmp_path / "cut", "mcap") as w:
        w.add_topic(FRONT, IMAGE_TYPE)
        for i, m in enumerate([m for m in records if m.topic == FRONT]):
            w.write_raw(FRONT, m.time_ns, m.data[:-10] if i == 0 else m.data)
    status = main(["segment-bag", str(tmp_path / "cut"), "--out", str(tmp_path / "out"), "--outputs", "class_mask",
                   *COMMON])
    err = capsys.readouterr().err
    assert status == 0, err
    assert f"{FRONT}: 1 frame(s) segmented, 1 skipped" in err and "cannot deserialize sensor_msgs/msg/Image" in err
    assert len(read_back(tmp_path / "out")["/front/segmentation/class_mask"]) == 1
    assert recorded
