"""Playing rosbag2 recordings into ROS: what ``image_player`` does when its inputs are bags.

This module owns the playback of recorded camera topics: :class:`BagPlayback` picks the image topics of one or
more bags (all of them, or ``topics``) and the recorded ``camera_info`` beside each, and yields their messages in
recorded order; :class:`BagPublisher` publishes them from a node under their recorded names (remappable as usual)
at the recorded pace times ``speed`` or, with ``speed`` 0, one frame per tick of ``rate``. Stamps are the recorded
ones or re-stamped to the node's clock at publish time. The default, ``stamps: auto``, re-stamps unless ``/clock``
is published: a recording's stamps are old, and a node with the default ``max_frame_age`` (1 s) drops every frame
older than that by its own clock; with ``publish_clock`` the recorded bag time goes out on ``/clock`` so that nodes
with ``use_sim_time`` see recorded stamps as current. Reading goes through :mod:`espnet_ros.bags`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rclpy.node import Node
from rclpy.qos import QoSProfile
from rosgraph_msgs.msg import Clock

from espnet_ros.bags import (
    CAMERA_INFO_TYPE,
    IMAGE_TYPES,
    BagMessage,
    BagReader,
    deserialize,
    is_bag,
    select_image_topics,
    time_msg,
)
from espnet_ros.ros_compat import RCLError

__all__ = ["STAMP_MODES", "BagPlayback", "BagPublisher", "PlaybackItem", "all_bags", "restamps"]

STAMP_MODES: tuple[str, ...] = ("auto", "now", "recorded")
"""``stamps`` parameter values: ``auto`` (``now`` unless publishing ``/clock``), ``now``, ``recorded``."""


def all_bags(paths: Sequence[str]) -> bool:
    """Whether every input path is a bag (and there is at least one)."""
    return bool(paths) and all(is_bag(Path(p).expanduser()) for p in paths)


def restamps(stamps: str, publish_clock: bool) -> bool:
    """Whether messages get the node's clock as stamp (see :data:`STAMP_MODES`)."""
    return stamps == "now" or (stamps == "auto" and not publish_clock)


@dataclass(frozen=True)
class PlaybackItem:
    """One message to publish: its recorded topic and bag time, the rclpy message, and whether it is a frame."""

    topic: str
    time_ns: int
    msg: Any
    is_image: bool


class BagPlayback:
    """The camera topics of one or more bags, in recorded order.

    Args:
        paths: the bags, played one after another.
        topics: image topics to play (default: every Image / CompressedImage topic); each bag must have them.

    ``types`` maps every topic that will be played (images and their recorded ``camera_info``) to its rclpy class.
    Raises :class:`~espnet_ros.bags.BagError` for a bag that cannot be read or a topic it lacks.
    """

    def __init__(self, paths: Sequence[str | Path], topics: Sequence[str] | None = None) -> None:
        self.paths = [Path(p).expanduser() for p in paths]
        self.types: dict[str, Any] = {}
        self.images: set[str] = set()
        self.frames = 0
        for path in self.paths:
            with BagReader(path) as reader:
                kinds, counts = reader.topics, reader.counts
                for topic in select_image_topics(reader, topics or None):
                    self.types[topic] = IMAGE_TYPES[kinds[topic]]
                    self.images.add(topic)
                    self.frames += counts.get(topic, 0)
                    base = topic[: -len("/compressed")] if topic.endswith("/compressed") else topic
                    info = base.rsplit("/", 1)[0] + "/camera_info"
                    if kinds.get(info) == CAMERA_INFO_TYPE:
                        from sensor_msgs.msg import CameraInfo

                        self.types[info] = CameraInfo

    def one_pass(self) -> Generator[PlaybackItem, None, None]:
        """Every message of the played topics, bag after bag, deserialized on the way."""
        for path in self.paths:
            with BagReader(path) as reader:
                wanted = [t for t in self.types if t in reader.topics]
                message: BagMessage
                for message in reader.messages(wanted):
                    yield PlaybackItem(message.topic, message.time_ns, deserialize(message),
                                       message.topic in self.images)


class BagPublisher:
    """Publishes a :class:`BagPlayback` from ``node``.

    Args:
        node: the node that owns the publishers and timers.
        playback: what to play.
        qos: the publishers' QoS.
        speed: recorded pace times ``speed`` (2.0: twice as fast); 0 plays one frame per ``1 / rate`` seconds.
        rate: frames per second when ``speed`` is 0.
        restamp: stamp every message with ``node``'s clock when it is published (else keep the recorded stamps).
        publish_clock: publish each message's bag time on ``/clock`` before it.
        wait_for_subscribers: hold the first message until every image topic has this many subscribers.
        loop: start again after the last message.
        count: stop after this many frames (0: no limit).
        on_finish: called once with ``True`` when playback ends (or with ``False`` if the bags had no frame).
    """

    def __init__(self, node: Node, playback: BagPlayback, qos: QoSProfile, *, speed: float, rate: float,
                 restamp: bool, publish_clock: bool, wait_for_subscribers: int, loop: bool, count: int,
                 on_finish: Callable[[bool], None]) -> None:
        self.node = node
        self.playback = playback
        self.speed, self.rate, self.restamp, self.loop, self.count = speed, rate, restamp, loop, count
        self.on_finish = on_finish
        self.publishers = {t: node.create_publisher(cls, t, qos) for t, cls in playback.types.items()}
        self.clock = node.create_publisher(Clock, "/clock", 10) if publish_clock else None
        self.published = 0
        self._pass_frames = 0
        self._stream = playback.one_pass()
        self._next: PlaybackItem | None = None
        self._origin: tuple[float, int] | None = None  # (monotonic s, bag ns) of the pass's first message
        self._timer: Any = None
        self._waiting = wait_for_subscribers
        self._done = False
        self._schedule(0.0)

    @property
    def topics(self) -> list[str]:
        """The fully qualified (remapped) topics published."""
        return [p.topic_name for p in self.publishers.values()]

    def _schedule(self, delay_s: float) -> None:
        if self._timer is not None:
            self.node.destroy_timer(self._timer)
        self._timer = self.node.create_timer(max(delay_s, 1e-4), self._on_timer)

    def _peek(self) -> PlaybackItem | None:
        if self._next is None:
            self._next = next(self._stream, None)
            if self._next is None and self.loop and self._pass_frames:
                self._pass_frames, self._origin = 0, None
                self._stream = self.playback.one_pass()
                self._next = next(self._stream, None)
        return self._next

    def _due_in(self, item: PlaybackItem) -> float:
        """Seconds until ``item`` is due at the recorded pace."""
        now = time.monotonic()
        if self._origin is None:
            self._origin = (now, item.time_ns)
        start, first = self._origin
        return start + (item.time_ns - first) * 1e-9 / self.speed - now

    def _on_timer(self) -> None:
        if self._done:
            return
        if self._waiting:
            if any(self.publishers[t].get_subscription_count() < self._waiting for t in self.playback.images):
                self._schedule(0.1)
                return
            self._waiting = 0
        while True:
            item = self._peek()
            if item is None:
                self.stop(self.published > 0)
                return
            if self.speed > 0:
                wait = self._due_in(item)
                if wait > 1e-3:
                    self._schedule(wait)
                    return
            self._next = None
            self._publish(item)
            if self.count and self.published >= self.count:
                self.stop(True)
                return
            if item.is_image and self.speed <= 0:
                self._schedule(1.0 / self.rate)
                return

    def _publish(self, item: PlaybackItem) -> None:
        msg = item.msg
        if self.clock is not None:
            self.clock.publish(Clock(clock=time_msg(item.time_ns)))
        if self.restamp:
            msg.header.stamp = self.node.get_clock().now().to_msg()
        try:
            self.publishers[item.topic].publish(msg)
        except RCLError as exc:  # e.g. "cannot publish data" from a reliable writer under overload
            self.node.get_logger().warning(f"publishing failed, message dropped: {exc}", throttle_duration_sec=5.0)
            return
        if item.is_image:
            self.published += 1
            self._pass_frames += 1

    def stop(self, ok: bool) -> None:
        """Stop playing and report the end once."""
        if self._done:
            return
        self._done = True
        if self._timer is not None:
            self.node.destroy_timer(self._timer)
            self._timer = None
        self._stream.close()
        self.on_finish(ok)
