"""Test helper for the segmentation node: a node plus a camera-and-listener node in one Context and executor.

The listener publishes frames (reliable, so a test's frames all arrive) and records every output it receives per
topic. Tests spin with deadlines through :meth:`Harness.spin_until` and assert on what arrived, never on time.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header, String

from espnet_ros.segmentation_node import IMAGE_OUTPUTS, SegmentationNode

REPO = Path(__file__).resolve().parents[1]
WEIGHTS_DIR = Path(os.environ.get("ESPNET_ROS_WEIGHTS_DIR") or REPO.parent / "shared" / "espnet" / "weights")
SAMPLES_DIR = Path(os.environ.get("ESPNET_ROS_SAMPLES_DIR") or REPO.parent / "shared" / "espnet" / "samples")
TIMEOUT = 60.0  # a deadline for a loaded 2-core machine; tests finish as soon as the data is there

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
ALL_OUTPUTS = (*IMAGE_OUTPUTS, "camera_info")


def sample_frames() -> list[NDArray[np.uint8]]:
    """The two 2048x1024 Cityscapes sample frames (BGR)."""
    frames = []
    for path in sorted(SAMPLES_DIR.glob("*.png")):
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        assert img is not None, path
        frames.append(np.ascontiguousarray(img))
    assert len(frames) == 2, f"expected the two sample frames in {SAMPLES_DIR}"
    return frames


def textured(height: int, width: int, seed: int = 0) -> NDArray[np.uint8]:
    """A smooth random BGR image (so the network sees structure, not noise)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    return np.ascontiguousarray(cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR))


class Harness:
    """A :class:`SegmentationNode` and a ``camera`` helper node on one executor."""

    def __init__(
        self,
        context: Context,
        overrides: dict[str, Any] | None = None,
        *,
        subscribe: Iterable[str] = ALL_OUTPUTS,
        namespace: str | None = None,
    ) -> None:
        # Tests send frames at arbitrary moments: no frame is dropped for its age or for waiting unless a test
        # asks for it (test_node_load covers both rules).
        params = {"device": "cpu", "num_threads": 1, "weights_dir": str(WEIGHTS_DIR), "input_qos": "reliable:10",
                  "max_frame_age": 30.0, "max_queue_delay": -1.0}
        params.update(overrides or {})
        kwargs: dict[str, Any] = {"context": context,
                                  "parameter_overrides": [Parameter(k, value=v) for k, v in params.items()]}
        if namespace:
            kwargs["namespace"] = namespace
        self.node = SegmentationNode(**kwargs)
        self.helper = Node("camera", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.helper)
        self.received: dict[str, list[Any]] = defaultdict(list)
        self._publishers: dict[str, Any] = {}
        for cam in range(len(self.node.camera_names)):
            topics = self.node.camera_topics_of(cam)
            for name in subscribe:
                self.listen(topics.output(name), CameraInfo if name == "camera_info" else Image)

    def listen(self, topic: str, msg_type: Any, qos: QoSProfile = RELIABLE) -> list[Any]:
        """Record messages on ``topic`` into ``self.received[topic]``; return that list."""
        store = self.received[topic]
        self.helper.create_subscription(msg_type, topic, store.append, qos)
        return store

    def publisher(self, topic: str, msg_type: Any = Image) -> Any:
        """A reliable publisher on ``topic`` (cached)."""
        if topic not in self._publishers:
            self._publishers[topic] = self.helper.create_publisher(msg_type, topic, RELIABLE)
        return self._publishers[topic]

    def header(self, frame_id: str = "camera", age: float = 0.0) -> Header:
        """A header stamped now (minus ``age`` seconds) by the node's clock."""
        now = self.node.get_clock().now().nanoseconds - int(age * 1e9)
        return Header(stamp=Time(nanoseconds=now).to_msg(), frame_id=frame_id)

    def spin_until(self, predicate: Callable[[], bool], timeout: float = TIMEOUT) -> bool:
        """Spin until ``predicate()`` holds or ``timeout`` seconds pass; return the predicate."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                return predicate()
            self.executor.spin_once(timeout_sec=0.05)
        return True

    def wait_connected(self, camera: int = 0) -> None:
        """Wait until the node subscribes to the camera's image topic and the listener to its outputs."""
        topics = self.node.camera_topics_of(camera)
        pub = self.publisher(topics.image, CompressedImage if topics.image.endswith("/compressed") else Image)
        outputs = [t for t in self.received if t.startswith(topics.prefix + "/")]
        ok = self.spin_until(
            lambda: pub.get_subscription_count() > 0 and all(self.node.count_subscribers(t) > 0 for t in outputs)
        )
        assert ok, "discovery did not complete"

    def send(self, topic: str, msg: Image | CompressedImage | CameraInfo) -> None:
        """Publish ``msg`` on ``topic``."""
        self.publisher(topic, type(msg)).publish(msg)

    def on(self, camera: int, output: str) -> list[Any]:
        """Messages received on ``output`` of camera ``camera``."""
        return self.received[self.node.camera_topics_of(camera).output(output)]

    def handled(self, camera: int = 0) -> int:
        """Frames of a camera the worker has finished with (segmented, rejected, late, stale or skipped)."""
        s = self.node.stats(camera)
        return (s.processed + s.rejected + s.dropped_late + s.dropped_stale + s.skipped_no_subscribers
                + s.internal_errors)

    def close(self) -> None:
        """Destroy both nodes and the executor."""
        self.executor.shutdown()
        self.node.destroy_node()
        self.helper.destroy_node()


def labels_listener(harness: Harness, camera: int = 0) -> list[String]:
    """Subscribe (late, transient local) to the camera's ``segmentation/labels``."""
    return harness.listen(harness.node.camera_topics_of(camera).output("labels"), String, LATCHED)
