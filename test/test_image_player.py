"""Tests of the image_player node and its main() with real rclpy, a fresh Context per test."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import rclpy
from numpy.typing import NDArray
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from espnet_ros.core.frames import FrameSourceError
from espnet_ros.image_codec import decode_compressed, decode_image
from espnet_ros.image_player import ImagePlayer, ImagePlayerConfigError, main

SpinUntil = Callable[[Any, Callable[[], bool], float], bool]  # the conftest fixture's signature
RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
TIMEOUT = 20.0  # generous deadline for discovery on a loaded 2-core machine; tests finish as soon as data arrives


def solid(bgr: tuple[int, int, int], height: int = 24, width: int = 32) -> NDArray[np.uint8]:
    image = np.zeros((height, width, 3), np.uint8)
    image[:, :] = bgr
    image[0, 0] = (1, 2, 3)  # one distinct pixel to pin orientation and channel order
    return image


A = solid((10, 20, 200))
B = solid((150, 60, 5))


@pytest.fixture
def frames_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    assert cv2.imwrite(str(folder / "a.png"), A)
    assert cv2.imwrite(str(folder / "b.png"), B)
    return folder


class Harness:
    """A player and a subscriber node in one context, spun by one executor."""

    def __init__(self, context: Context, overrides: dict[str, Any], compressed: bool = False) -> None:
        params = [Parameter(name, value=value) for name, value in overrides.items()]
        self.player = ImagePlayer(context=context, parameter_overrides=params)
        self.listener = Node("listener", context=context)
        self.images: list[Image | CompressedImage] = []
        self.infos: list[CameraInfo] = []
        if compressed:
            self.listener.create_subscription(CompressedImage, "image/compressed", self.images.append, RELIABLE)
        else:
            self.listener.create_subscription(Image, "image", self.images.append, RELIABLE)
        self.listener.create_subscription(CameraInfo, "camera_info", self.infos.append, RELIABLE)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.player)
        self.executor.add_node(self.listener)

    def close(self) -> None:
        self.executor.shutdown()
        self.player.destroy_node()
        self.listener.destroy_node()


@pytest.fixture
def harness(ros_context: Context) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(overrides: dict[str, Any], compressed: bool = False) -> Harness:
        h = Harness(ros_context, overrides, compressed)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def stamp_ns(msg: Any) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def test_raw_bgr8_frames_and_camera_info(
    frames_dir: Path, harness: Callable[..., Harness], spin_until: SpinUntil
) -> None:
    h = harness({"paths": [str(frames_dir)], "rate": 100.0, "qos": "reliable", "depth": 10, "frame_id": "cam0"})
    assert h.player._image_pub.topic_name == "/image"
    assert spin_until(h.executor, lambda: len(h.images) >= 6 and len(h.infos) >= 6, TIMEOUT)
    images = list(h.images)
    for msg in images:
        assert (msg.encoding, msg.width, msg.height, msg.step) == ("bgr8", 32, 24, 96)
        assert msg.header.frame_id == "cam0"
    # Frames alternate a, b, a, b (loop is on by default), with the pixels written to the files.
    decoded = [decode_image(m) for m in images]
    assert all(d.color_order == "bgr" for d in decoded)
    kinds = ["a" if np.array_equal(d.image, A) else "b" if np.array_equal(d.image, B) else "?" for d in decoded]
    assert "?" not in kinds
    assert all(x != y for x, y in itertools.pairwise(kinds))
    # Stamps come from the node clock and increase; every camera_info has the header of one image.
    stamps = [stamp_ns(m) for m in images]
    assert all(s > 0 for s in stamps) and stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    image_headers = {stamp_ns(m): m.header.frame_id for m in images}
    spin_until(h.executor, lambda: len(h.infos) >= len(images), TIMEOUT)
    for info in h.infos[: len(images)]:
        assert image_headers.get(stamp_ns(info)) == "cam0"
        assert (info.width, info.height, info.distortion_model) == (32, 24, "plumb_bob")
        assert list(info.k) == [32.0, 0.0, 16.0, 0.0, 32.0, 12.0, 0.0, 0.0, 1.0]
        assert list(info.p) == [32.0, 0.0, 16.0, 0.0, 0.0, 32.0, 12.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        assert list(info.d) == [0.0] * 5
        assert list(info.r) == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize(
    ("encoding", "expected"),
    [
        ("rgb8", lambda bgr: bgr[:, :, ::-1]),
        ("mono8", lambda bgr: np.repeat(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)[:, :, None], 3, axis=2)),
        ("rgba8", lambda bgr: bgr[:, :, ::-1]),
    ],
)
def test_raw_encodings(
    tmp_path: Path, harness: Callable[..., Harness], spin_until: SpinUntil, encoding: str, expected: Any
) -> None:
    path = tmp_path / "one.png"
    cv2.imwrite(str(path), A)
    h = harness({"paths": str(path), "rate": 100.0, "qos": "reliable", "encoding": encoding})
    assert spin_until(h.executor, lambda: len(h.images) >= 2, TIMEOUT)
    msg = h.images[0]
    assert msg.encoding == encoding
    np.testing.assert_array_equal(decode_image(msg).image, expected(A))


@pytest.mark.parametrize("encoding", ["bgr8", "rgb8", "mono8"])
def test_compressed_jpeg(
    frames_dir: Path, harness: Callable[..., Harness], spin_until: SpinUntil, encoding: str
) -> None:
    h = harness(
        {"paths": [str(frames_dir / "a.png")], "rate": 100.0, "qos": "reliable", "compressed": True,
         "encoding": encoding, "jpeg_quality": 95},
        compressed=True,
    )
    assert h.player._image_pub.topic_name == "/image/compressed"
    assert spin_until(h.executor, lambda: len(h.images) >= 2 and len(h.infos) >= 2, TIMEOUT)
    msg = h.images[0]
    expected_format = {"bgr8": "bgr8; jpeg compressed bgr8", "rgb8": "rgb8; jpeg compressed bgr8",
                       "mono8": "mono8; jpeg compressed "}[encoding]
    assert msg.format == expected_format
    out = decode_compressed(msg)
    reference = A if encoding != "mono8" else cv2.cvtColor(cv2.cvtColor(A, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    assert np.abs(out.image[4:, 4:].astype(int) - reference[4:, 4:]).max() <= 8  # jpeg, away from the odd pixel
    assert stamp_ns(h.infos[0]) in {stamp_ns(m) for m in h.images}


def test_camera_info_parameters(frames_dir: Path, harness: Callable[..., Harness], spin_until: SpinUntil) -> None:
    h = harness({"paths": str(frames_dir), "rate": 100.0, "qos": "reliable", "fx": 500.0, "cx": 10.5, "cy": 7.25})
    assert spin_until(h.executor, lambda: len(h.infos) >= 1, TIMEOUT)
    assert list(h.infos[0].k) == [500.0, 0.0, 10.5, 0.0, 500.0, 7.25, 0.0, 0.0, 1.0]


def test_count_and_no_loop_finish(ros_context: Context, tmp_path: Path, spin_until: SpinUntil) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), solid((i, i, i)))
    executor = SingleThreadedExecutor(context=ros_context)
    counted = ImagePlayer(context=ros_context, parameter_overrides=[
        Parameter("paths", value=[str(folder)]), Parameter("rate", value=200.0), Parameter("count", value=7)])
    once = ImagePlayer("once", context=ros_context, parameter_overrides=[
        Parameter("paths", value=[str(folder)]), Parameter("rate", value=200.0), Parameter("loop", value=False)])
    executor.add_node(counted)
    executor.add_node(once)
    try:
        assert spin_until(executor, lambda: counted.finished.done() and once.finished.done(), TIMEOUT)
        assert counted.finished.result() is True and counted.published == 7  # looped over 3 frames
        assert once.finished.result() is True and once.published == 3
        # Nothing more is published after finishing.
        spin_until(executor, lambda: False, 0.1)
        assert counted.published == 7 and once.published == 3
        assert counted._image_pub.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT  # sensor_data default
        assert counted._image_pub.qos_profile.depth == 5
    finally:
        executor.shutdown()
        counted.destroy_node()
        once.destroy_node()


def write_video(path: Path, n: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (32, 24))
    assert writer.isOpened()
    for i in range(n):
        writer.write(solid((40 * i, 100, 200 - 40 * i)))
    writer.release()
    return path


def test_video_input(tmp_path: Path, harness: Callable[..., Harness], spin_until: SpinUntil) -> None:
    video = write_video(tmp_path / "clip.avi", 4)
    h = harness({"paths": [str(video)], "rate": 100.0, "qos": "reliable", "loop": False})
    assert spin_until(h.executor, lambda: h.player.finished.done() and len(h.images) >= 4, TIMEOUT)
    assert h.player.published == 4 and len(h.images) == 4
    blues = [float(decode_image(m).image[8:, 8:, 0].mean()) for m in h.images]
    assert blues == sorted(blues) and blues[-1] - blues[0] > 100  # frames arrive in order


def test_cache_replays_without_files(frames_dir: Path, harness: Callable[..., Harness], spin_until: SpinUntil) -> None:
    h = harness({"paths": [str(frames_dir)], "rate": 100.0, "qos": "reliable"})
    assert spin_until(h.executor, lambda: h.player.published >= 2, TIMEOUT)  # one full pass read from disk
    for path in frames_dir.iterdir():
        path.unlink()
    before = h.player.published
    assert spin_until(h.executor, lambda: h.player.published >= before + 4, TIMEOUT)
    assert not h.player.finished.done()


def test_without_cache_unreadable_files_stop_the_player(
    frames_dir: Path, harness: Callable[..., Harness], spin_until: SpinUntil
) -> None:
    h = harness({"paths": [str(frames_dir)], "rate": 100.0, "qos": "reliable", "cache_mb": 0})
    assert spin_until(h.executor, lambda: h.player.published >= 2, TIMEOUT)
    for path in frames_dir.iterdir():
        path.write_bytes(b"corrupted")
    assert spin_until(h.executor, lambda: h.player.finished.done(), TIMEOUT)
    assert h.player.finished.result() is False  # a whole pass produced no frame


@pytest.mark.parametrize(
    ("overrides", "error", "pattern"),
    [
        ({"paths": ""}, ImagePlayerConfigError, "no inputs given"),
        ({"paths": ["/nonexistent/frames"]}, FrameSourceError, "does not exist"),
        ({"rate": 0.0}, Exception, "rate"),
        ({"encoding": "yuv422"}, ImagePlayerConfigError, "encoding 'yuv422' is not supported"),
        ({"encoding": "rgba8", "compressed": True}, ImagePlayerConfigError, "with compressed:=true"),
        ({"qos": "fast"}, ImagePlayerConfigError, "qos 'fast' with depth 5 is not supported: unknown QoS"),
        ({"paths": [1, 2]}, ImagePlayerConfigError, "paths must be a string or a list of strings"),
    ],
)
def test_configuration_errors(
    ros_context: Context, frames_dir: Path, overrides: dict[str, Any], error: type[Exception], pattern: str
) -> None:
    params = {"paths": [str(frames_dir)], **overrides}
    with pytest.raises(error, match=pattern):
        ImagePlayer(context=ros_context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])


def test_main_runs_to_completion(frames_dir: Path, ros_env: int) -> None:
    argv = ["image_player", str(frames_dir), "--ros-args", "-p", "count:=3", "-p", "rate:=200.0",
            "-r", "__node:=player_under_test"]
    assert main(argv) == 0
    assert not rclpy.ok()  # main shut its context down


def test_main_reports_bad_input(tmp_path: Path, ros_env: int) -> None:
    assert main(["image_player", str(tmp_path / "missing")]) == 1
    assert main(["image_player", "--ros-args", "-p", "rate:=5.0"]) == 1  # no paths at all
    assert main(["image_player", str(tmp_path), "--ros-args", "-p", "rate:=5"]) == 1  # integer for a double
    assert main(["image_player", str(tmp_path), "--ros-args", "-p", "rate:=0.0"]) == 1  # out of range


def test_main_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["image_player", "--help"])
    assert exc.value.code == 0
    assert "--ros-args" in capsys.readouterr().out
