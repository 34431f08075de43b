"""image_player playing rosbag2 recordings: in one process (real rclpy), and into the segmentation node as separate
processes with the node's default parameters (every frame answered with its stamp)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bag_fixtures import DELAY, FRONT, FRONT_INFO, REAR, textured, write_bag
from diagnostic_msgs.msg import DiagnosticArray
from node_harness import LATCHED, RELIABLE, WEIGHTS_DIR
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header, String

from espnet_ros.bags import BagError
from espnet_ros.image_codec import encode_image
from espnet_ros.image_player import ImagePlayer, ImagePlayerConfigError

TIMEOUT = 30.0


def _ns(stamp: Any) -> int:
    return int(stamp.sec) * 10**9 + int(stamp.nanosec)


@pytest.fixture
def bag(tmp_path: Path) -> Path:
    write_bag(tmp_path / "drive", "mcap", frames=3)
    return tmp_path / "drive"


class Play:
    """A bag player and a listener in one context."""

    def __init__(self, context: Context, overrides: dict[str, Any], cli_args: list[str] | None = None) -> None:
        params = {"loop": False, "wait_for_subscribers": 1, "speed": 20.0, **overrides}
        self.player = ImagePlayer(context=context, cli_args=cli_args,
                                  parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        self.listener = Node("listener", context=context)
        self.got: dict[str, list[Any]] = {}
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.player)
        self.executor.add_node(self.listener)

    def listen(self, topic: str, kind: Any) -> None:
        self.got[topic] = []
        self.listener.create_subscription(kind, topic, self.got[topic].append, qos_profile_sensor_data)

    def run(self) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not self.player.finished.done() and time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)
        end = time.monotonic() + 0.5  # let the last messages arrive
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.05)
        assert self.player.finished.done() and self.player.finished.result()

    def close(self) -> None:
        self.executor.shutdown()
        self.player.destroy_node()
        self.listener.destroy_node()


@pytest.fixture
def play(ros_context: Context) -> Iterator[Any]:
    made: list[Play] = []

    def make(overrides: dict[str, Any], cli_args: list[str] | None = None) -> Play:
        p = Play(ros_context, overrides, cli_args)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def test_bag_topics_are_played_restamped_by_default(play: Any, bag: Path) -> None:
    p = play({"paths": [str(bag)]})
    p.listen(FRONT, Image)
    p.listen(REAR, CompressedImage)
    p.listen(FRONT_INFO, CameraInfo)
    started = p.player.get_clock().now().nanoseconds
    p.run()
    assert p.player.published == 7  # 4 front frames (one in an encoding the node rejects) and 3 rear ones
    assert len(p.got[FRONT]) == 4 and len(p.got[REAR]) == 3 and len(p.got[FRONT_INFO]) == 1
    assert [m.header.frame_id for m in p.got[FRONT]] == ["front_optical"] * 4
    stamps = [_ns(m.header.stamp) for m in p.got[FRONT]]
    assert stamps == sorted(stamps) and all(s >= started for s in stamps)  # re-stamped to now
    assert [m.encoding for m in p.got[FRONT]] == ["bgr8", "rgb8", "bgr8", "32FC1"]


def test_recorded_stamps_and_clock(play: Any, bag: Path) -> None:
    p = play({"paths": [str(bag)], "publish_clock": True, "topics": [FRONT]})
    p.listen(FRONT, Image)
    p.listen("/clock", Clock)
    p.run()
    stamps = [_ns(m.header.stamp) for m in p.got[FRONT]]
    assert len(stamps) == 4 and len({s for s in stamps}) == 4
    clock = {_ns(c.clock) for c in p.got["/clock"]}
    assert all(s + DELAY in clock for s in stamps)  # /clock carries the bag time of each message
    assert REAR not in [t for t, _ in p.listener.get_topic_names_and_types()]


def test_remap_and_fixed_rate(play: Any, bag: Path) -> None:
    p = play({"paths": [str(bag)], "topics": [FRONT], "speed": 0.0, "rate": 50.0, "count": 2},
             cli_args=["--ros-args", "-r", f"{FRONT}:=/cam/image"])
    p.listen("/cam/image", Image)
    p.run()
    assert len(p.got["/cam/image"]) == 2


def test_loop_restarts_the_recording(play: Any, bag: Path) -> None:
    p = play({"paths": [str(bag)], "topics": [FRONT], "loop": True, "count": 6})
    p.listen(FRONT, Image)
    p.run()
    assert [m.encoding for m in p.got[FRONT]] == ["bgr8", "rgb8", "bgr8", "32FC1", "bgr8", "rgb8"]


def test_bad_bag_inputs(ros_context: Context, bag: Path, tmp_path: Path) -> None:
    with pytest.raises(BagError, match=r"has no topic /nope; its topics are: .*/front/image_raw"):
        ImagePlayer(context=ros_context, parameter_overrides=[Parameter("paths", value=[str(bag)]),
                                                              Parameter("topics", value=["/nope"])])
    broken = tmp_path / "broken.mcap"
    broken.write_bytes(next(bag.glob("*.mcap")).read_bytes()[:100])
    with pytest.raises(BagError, match="cannot read bag"):
        ImagePlayer(context=ros_context, parameter_overrides=[Parameter("paths", value=[str(broken)])])
    with pytest.raises(ImagePlayerConfigError, match="stamps 'late'"):
        ImagePlayer(context=ros_context, parameter_overrides=[Parameter("paths", value=[str(bag)]),
                                                              Parameter("stamps", value="late")])


def _output(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(2)
    return proc.communicate(timeout=30)[0][-3000:]


def _last_status(diagnostics: list[DiagnosticArray]) -> str:
    """The node's last camera status on /diagnostics, as ``key=value`` pairs (what it received and dropped)."""
    for array in reversed(diagnostics):
        for status in array.status:
            if "/image" in status.name:
                return f"{status.name}: " + ", ".join(f"{kv.key}={kv.value}" for kv in status.values)
    return "no camera status on /diagnostics"


def test_bag_into_the_node_every_frame_answered(ros_context: Context, tmp_path: Path) -> None:
    """Separate processes, the node with its default frame rules (max_frame_age 1 s, sensor-data QoS).

    The backend is the fused one: the compiled one would first compile for a minute or more on a cold cache, which
    is the backend tests' business, not this one's."""
    bag = tmp_path / "clean"
    write_bag(bag, "sqlite3", frames=4, bad_frame=False)
    node = subprocess.Popen(
        [sys.executable, "-m", "espnet_ros.segmentation_node", "--ros-args", "-p", "preset:=camvid",
         "-p", "backend:=fused", "-p", f"weights_dir:={WEIGHTS_DIR}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    player: subprocess.Popen[str] | None = None
    listener = Node("listener", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(listener)
    labels: list[String] = []
    published: list[Image] = []
    masks: list[Image] = []
    listener.create_subscription(String, "/segmentation/labels", labels.append, LATCHED)
    listener.create_subscription(Image, "/segmentation/class_mask", masks.append, RELIABLE)
    diagnostics: list[DiagnosticArray] = []
    listener.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    try:
        deadline = time.monotonic() + 120.0
        while not labels and time.monotonic() < deadline and node.poll() is None:
            executor.spin_once(timeout_sec=0.1)
        assert labels, "the node did not start"
        # The node's first frame takes seconds (the backend warms up): by then the frames after it would be older
        # than max_frame_age. Warm it up with a frame of our own first.
        warm = listener.create_publisher(Image, "/image", qos_profile_sensor_data)
        deadline = time.monotonic() + 120.0
        while not masks and time.monotonic() < deadline:
            warm.publish(encode_image(textured(48, 64), "bgr8", Header(stamp=listener.get_clock().now().to_msg())))
            end = time.monotonic() + 1.0
            while not masks and time.monotonic() < end:
                executor.spin_once(timeout_sec=0.1)
        assert masks, _output(node)
        listener.destroy_publisher(warm)
        masks.clear()
        # the player re-stamps every frame when it publishes it, so the answers to played frames are those stamped
        # after it started (warm-up frames are older); the listener also records the played frames it receives
        # (reliably, but a reader matched late by discovery can miss the first); the node keeps its default
        # (sensor-data, best-effort) input QoS
        listener.create_subscription(Image, "/image", published.append, RELIABLE)
        start_ns = _ns(listener.get_clock().now().to_msg())
        # the recording at a tenth of its pace (a frame every second; the node keeps only the latest frame, so a
        # frame must be answered before the next arrives)
        player = subprocess.Popen(
            [sys.executable, "-m", "espnet_ros.image_player", str(bag), "--ros-args", "-r", f"{FRONT}:=/image",
             "-p", f"topics:=[{FRONT}]", "-p", "loop:=false", "-p", "speed:=0.1", "-p", "wait_for_subscribers:=2",
             "-p", "qos:=reliable"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        def answered() -> list[int]:  # answers to played frames, in stamp order
            return sorted(_ns(m.header.stamp) for m in masks if _ns(m.header.stamp) >= start_ns)

        deadline = time.monotonic() + 90.0
        while time.monotonic() < deadline and (player.poll() is None or len(answered()) < 4):
            executor.spin_once(timeout_sec=0.1)
        log = player.communicate(timeout=30)[0]
        assert player.returncode == 0 and "published 4 frame(s)" in log, log
        assert len(answered()) == 4, f"{len(answered())} of 4 answered; {_last_status(diagnostics)}\n{_output(node)}"
        assert {_ns(m.header.stamp) for m in published} <= set(answered())
        assert all(m.header.frame_id == "front_optical" for m in masks)
    finally:
        for proc in (player, node):
            if proc is not None and proc.poll() is None:
                proc.send_signal(2)
                try:
                    proc.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.communicate()
        executor.shutdown()
        listener.destroy_node()
