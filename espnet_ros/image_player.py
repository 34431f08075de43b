"""The ``image_player`` ROS 2 node: publishes frames from image files, folders or videos as a camera would.

This module owns the player's parameters (declared once, read into a frozen :class:`PlayerConfig`; the ``qos``
string is parsed by :mod:`espnet_ros.qos`), the synthetic pinhole ``CameraInfo`` it publishes beside every frame,
and ``main()`` (the ``image_player`` executable; positional arguments are input paths). When the inputs are
rosbag2 recordings, :mod:`espnet_ros.bag_player` plays their camera topics instead (``topics``, ``speed``,
``stamps``, ``publish_clock``, ``wait_for_subscribers``). Otherwise frames come from
:class:`espnet_ros.core.frames.FrameSource`; they are converted and encoded once into messages which, when looping,
are cached so that later passes only stamp and publish. Topics are relative: ``image`` (or ``image/compressed``)
and ``camera_info``; both messages of a frame carry the same header, stamped from the node clock at publish time.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import rclpy
from numpy.typing import NDArray
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile
from rclpy.task import Future
from rclpy.utilities import remove_ros_args
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from espnet_ros.bag_player import STAMP_MODES, BagPlayback, BagPublisher, all_bags, restamps
from espnet_ros.core.errors import EspnetRosError
from espnet_ros.core.frames import Frame, FrameSource, FrameSourceError
from espnet_ros.image_codec import encode_compressed, encode_image
from espnet_ros.qos import QosError, parse_qos
from espnet_ros.ros_compat import RCLError
from espnet_ros.ros_logging import RosLogHandler, bridge_logging, unbridge_logging
from espnet_ros.spinning import StopSignals, spin_until_shutdown

__all__ = [
    "PLAYER_ENCODINGS",
    "ImagePlayer",
    "ImagePlayerConfigError",
    "PlayerConfig",
    "camera_info_for",
    "main",
]

PLAYER_ENCODINGS: tuple[str, ...] = ("bgr8", "rgb8", "mono8", "bgra8", "rgba8")
"""Encodings the player publishes raw; ``compressed`` accepts bgr8, rgb8 and mono8."""

_MIB = 1 << 20


class ImagePlayerConfigError(EspnetRosError, ValueError):
    """An image_player parameter has a value the player cannot use."""


@dataclass(frozen=True)
class PlayerConfig:
    """The player's resolved parameters (see :data:`_PARAMETERS` for their meaning)."""

    paths: tuple[str, ...]
    rate: float
    loop: bool
    count: int
    frame_id: str
    encoding: str
    compressed: bool
    jpeg_quality: int
    qos: str
    depth: int
    fx: float
    fy: float
    cx: float
    cy: float
    cache_mb: int
    topics: tuple[str, ...] = ()
    speed: float = 1.0
    stamps: str = "auto"
    publish_clock: bool = False
    wait_for_subscribers: int = 0


def _float_range(low: float, high: float) -> list[FloatingPointRange]:
    return [FloatingPointRange(from_value=low, to_value=high, step=0.0)]


def _int_range(low: int, high: int) -> list[IntegerRange]:
    return [IntegerRange(from_value=low, to_value=high, step=1)]


# name -> (default, descriptor). All read-only: changing one needs a restart.
_PARAMETERS: dict[str, tuple[Any, ParameterDescriptor]] = {
    "paths": (None, ParameterDescriptor(
        description="Inputs: image files, folders of images (natural order), video files or glob patterns. A string "
        "or a string list; positional command-line arguments override it.",
        dynamic_typing=True, read_only=True)),
    "rate": (10.0, ParameterDescriptor(
        description="Publishing rate in Hz.", floating_point_range=_float_range(0.001, 1000.0), read_only=True)),
    "loop": (True, ParameterDescriptor(
        description="Start again from the first frame after the last one; false stops after one pass.",
        read_only=True)),
    "count": (0, ParameterDescriptor(
        description="Stop after publishing this many frames in total (0 = no limit).",
        integer_range=_int_range(0, 2**31 - 1), read_only=True)),
    "frame_id": ("camera", ParameterDescriptor(
        description="header.frame_id of the image and camera_info messages.", read_only=True)),
    "encoding": ("bgr8", ParameterDescriptor(
        description=f"Image encoding to publish: {', '.join(PLAYER_ENCODINGS)} (compressed: bgr8, rgb8, mono8).",
        read_only=True)),
    "compressed": (False, ParameterDescriptor(
        description="Publish sensor_msgs/CompressedImage (jpeg) on image/compressed instead of raw on image.",
        read_only=True)),
    "jpeg_quality": (90, ParameterDescriptor(
        description="JPEG quality when compressed is true.", integer_range=_int_range(1, 100), read_only=True)),
    "qos": ("sensor_data", ParameterDescriptor(
        description="Publisher QoS of image and camera_info: sensor_data (best effort, REP-2003, the default), "
        "reliable or best_effort.", read_only=True)),
    "depth": (5, ParameterDescriptor(
        description="QoS history depth (keep last).", integer_range=_int_range(1, 1000), read_only=True)),
    "fx": (0.0, ParameterDescriptor(
        description="camera_info focal length x in pixels (0 = image width).", read_only=True)),
    "fy": (0.0, ParameterDescriptor(
        description="camera_info focal length y in pixels (0 = fx).", read_only=True)),
    "cx": (0.0, ParameterDescriptor(
        description="camera_info principal point x in pixels (0 = width / 2).", read_only=True)),
    "cy": (0.0, ParameterDescriptor(
        description="camera_info principal point y in pixels (0 = height / 2).", read_only=True)),
    "cache_mb": (1024, ParameterDescriptor(
        description="When looping, keep encoded frames of the first pass in memory up to this many MiB so later "
        "passes do not re-read files (0 = never cache).", integer_range=_int_range(0, 1 << 20), read_only=True)),
    # recordings (paths naming rosbag2 folders, .mcap or .db3 files)
    "topics": ([""], ParameterDescriptor(
        description="Bags: image topics to play (default: every Image / CompressedImage topic), each with its "
        "recorded camera_info; published under the recorded names (remap with -r /front/image_raw:=/image).",
        read_only=True)),
    "speed": (1.0, ParameterDescriptor(
        description="Bags: the recorded pace times speed (2.0 = twice as fast); 0 plays one frame per 1/rate s.",
        floating_point_range=_float_range(0.0, 1000.0), read_only=True)),
    "stamps": ("auto", ParameterDescriptor(
        description="Bags: now (re-stamp with the player's clock when published), recorded, or auto (now unless "
        "publish_clock). Recorded stamps are old: the segmentation node drops frames older than max_frame_age "
        "unless it runs with use_sim_time on this player's /clock.", read_only=True)),
    "publish_clock": (False, ParameterDescriptor(
        description="Bags: publish the recorded time on /clock (for nodes with use_sim_time:=true).",
        read_only=True)),
    "wait_for_subscribers": (0, ParameterDescriptor(
        description="Bags: hold the first message until every played image topic has at least this many "
        "subscribers (0 = start at once; 1 when the segmentation node starts beside the player).",
        integer_range=_int_range(0, 1000), read_only=True)),
}


def _publisher_qos(name: str, depth: int) -> QoSProfile:
    """The publishers' QoS from the ``qos`` and ``depth`` parameters (parsed by :func:`espnet_ros.qos.parse_qos`)."""
    try:
        return parse_qos(f"{name}:{depth}")
    except QosError as exc:
        raise ImagePlayerConfigError(
            f"qos {name!r} with depth {depth} is not supported: {exc}. Use reliable when subscribers must not miss "
            "frames, sensor_data to behave like a camera driver."
        ) from exc


def _paths_value(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(v for v in value if v)
    raise ImagePlayerConfigError(
        f"parameter paths must be a string or a list of strings, got {value!r}; e.g. -p paths:=frames/ or "
        "-p \"paths:=['a.png', 'b.png']\"."
    )


def _validate(config: PlayerConfig) -> None:
    if not config.paths:
        raise ImagePlayerConfigError(
            "no inputs given; pass image files, folders or videos as arguments (image_player frames/) or set the "
            "paths parameter (-p paths:=frames/)."
        )
    if not (math.isfinite(config.rate) and config.rate > 0.0):
        raise ImagePlayerConfigError(f"rate {config.rate} is invalid; expected a rate in Hz > 0 (e.g. 10.0).")
    if config.count < 0:
        raise ImagePlayerConfigError(f"count {config.count} is invalid; expected >= 0 (0 = no limit).")
    allowed = ("bgr8", "rgb8", "mono8") if config.compressed else PLAYER_ENCODINGS
    if config.encoding not in allowed:
        raise ImagePlayerConfigError(
            f"encoding {config.encoding!r} is not supported{' with compressed:=true' if config.compressed else ''};"
            f" expected one of {', '.join(allowed)}."
        )
    if not 1 <= config.jpeg_quality <= 100:
        raise ImagePlayerConfigError(f"jpeg_quality {config.jpeg_quality} is invalid; expected 1..100.")
    for name in ("fx", "fy", "cx", "cy"):
        value = getattr(config, name)
        if not (math.isfinite(value) and value >= 0.0):
            raise ImagePlayerConfigError(f"{name} {value} is invalid; expected pixels >= 0 (0 = derive from size).")
    if config.cache_mb < 0:
        raise ImagePlayerConfigError(f"cache_mb {config.cache_mb} is invalid; expected >= 0 (0 = no cache).")
    if config.stamps not in STAMP_MODES:
        raise ImagePlayerConfigError(f"stamps {config.stamps!r} is invalid; expected one of {', '.join(STAMP_MODES)}.")
    _publisher_qos(config.qos, config.depth)


def camera_info_for(width: int, height: int, header: Header, config: PlayerConfig) -> CameraInfo:
    """A pinhole ``CameraInfo`` (plumb_bob, zero distortion) for a ``width`` x ``height`` frame.

    ``fx`` defaults to the width (about a 53 degree horizontal field of view), ``fy`` to ``fx``, the principal
    point to the image centre; the parameters override each one that is non-zero.
    """
    fx = config.fx or float(width)
    fy = config.fy or fx
    cx = config.cx or width / 2.0
    cy = config.cy or height / 2.0
    info = CameraInfo()
    info.header = header
    info.width, info.height = width, height
    info.distortion_model = "plumb_bob"
    info.d = [0.0] * 5
    info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def _convert(image_bgr: NDArray[np.uint8], encoding: str) -> NDArray[np.uint8]:
    """The ``(H, W, 3) uint8 BGR`` frame in the channel layout of ``encoding``."""
    codes = {
        "rgb8": cv2.COLOR_BGR2RGB,
        "mono8": cv2.COLOR_BGR2GRAY,
        "bgra8": cv2.COLOR_BGR2BGRA,
        "rgba8": cv2.COLOR_BGR2RGBA,
    }
    if encoding == "bgr8":
        return image_bgr
    return np.asarray(cv2.cvtColor(image_bgr, codes[encoding]), dtype=np.uint8)


_Messages = tuple[Image | CompressedImage, CameraInfo]


class ImagePlayer(Node):
    """Publishes frames from files at a fixed rate on ``image`` (or ``image/compressed``) and ``camera_info``.

    ``finished`` is a future that completes with ``True`` once ``count`` frames are published or a pass without
    ``loop`` ends, and with ``False`` if no frame could be read. ``published`` counts published frames.
    """

    def __init__(self, node_name: str = "image_player", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.published = 0
        self.finished: Future = Future()
        self._bag: BagPublisher | None = None
        self._log_bridge: RosLogHandler | None = bridge_logging(self.get_logger())  # core lines reach this log
        try:
            self.config = self._read_config()
            _validate(self.config)
            if all_bags(self.config.paths):
                self._play_bags()
                return
            self._source = FrameSource(self.config.paths)
        except Exception:
            self.destroy_node()
            raise
        qos = _publisher_qos(self.config.qos, self.config.depth)
        if self.config.compressed:
            self._image_pub = self.create_publisher(CompressedImage, "image/compressed", qos)
        else:
            self._image_pub = self.create_publisher(Image, "image", qos)
        self._info_pub = self.create_publisher(CameraInfo, "camera_info", qos)
        self._bad_files: set[Path] = set()
        self._pass_frames = 0  # frames read in the current pass
        self._stream: Generator[Frame, None, None] = self._one_pass()
        caching = self.config.loop and self.config.cache_mb > 0
        self._cache: list[_Messages] | None = [] if caching else None
        self._cache_bytes = 0
        self._replay: Iterator[_Messages] | None = None
        self._timer = self.create_timer(1.0 / self.config.rate, self._on_timer)
        self._log_config()

    def _read_config(self) -> PlayerConfig:
        values: dict[str, Any] = {}
        for name, (default, descriptor) in _PARAMETERS.items():
            values[name] = self.declare_parameter(name, default, descriptor).value
        values["paths"] = _paths_value(values["paths"])
        values["topics"] = _paths_value(values["topics"])
        return PlayerConfig(**values)

    def _play_bags(self) -> None:
        c = self.config

        def finish(ok: bool) -> None:
            self.published = self._bag.published if self._bag is not None else 0
            self.get_logger().info(f"published {self.published} frame(s); done")
            self.finished.set_result(ok)

        playback = BagPlayback(c.paths, c.topics)
        self._bag = BagPublisher(self, playback, _publisher_qos(c.qos, c.depth), speed=c.speed, rate=c.rate,
                                 restamp=restamps(c.stamps, c.publish_clock), publish_clock=c.publish_clock,
                                 wait_for_subscribers=c.wait_for_subscribers, loop=c.loop, count=c.count,
                                 on_finish=finish)
        self.get_logger().info(
            f"playing {', '.join(c.paths)} ({playback.frames} frames per pass) on {', '.join(self._bag.topics)}: "
            f"{'recorded pace x' + str(c.speed) if c.speed > 0 else str(c.rate) + ' Hz'}, "
            f"stamps={'now' if restamps(c.stamps, c.publish_clock) else 'recorded'}, "
            f"publish_clock={c.publish_clock}, loop={c.loop}, count={c.count or 'unlimited'}, qos={c.qos} "
            f"depth={c.depth}")

    def _log_config(self) -> None:
        c = self.config
        frames = self._source.frame_count
        self.get_logger().info(
            f"publishing {len(self._source.files)} file(s) ({frames if frames is not None else 'unknown'} frames per "
            f"pass) from {', '.join(c.paths)} on {self._image_pub.topic_name} and {self._info_pub.topic_name}: "
            f"{'jpeg (quality ' + str(c.jpeg_quality) + ') of ' if c.compressed else ''}{c.encoding} at {c.rate} Hz, "
            f"loop={c.loop}, count={c.count or 'unlimited'}, frame_id={c.frame_id!r}, qos={c.qos} depth={c.depth}, "
            f"cache={c.cache_mb if self._cache is not None else 0} MiB"
        )

    def _one_pass(self) -> Generator[Frame, None, None]:
        """One pass over the inputs; a file that cannot be read is reported once and skipped from then on."""
        for path in self._source.files:
            if path in self._bad_files:
                continue
            try:
                yield from self._source.iter_file(path)
            except FrameSourceError as exc:
                self._bad_files.add(path)
                self.get_logger().error(f"skipping this input from now on: {exc}")

    def _encode(self, frame: Frame) -> _Messages:
        header = Header(frame_id=self.config.frame_id)
        msg: Image | CompressedImage
        if self.config.compressed:
            # JPEG data is always BGR (or grey), as image_transport writes it; the format's prefix names the
            # encoding a decompressing subscriber should restore ("rgb8; jpeg compressed bgr8").
            mono = self.config.encoding == "mono8"
            array = _convert(frame.image, "mono8") if mono else frame.image
            msg = encode_compressed(array, "jpeg", header, quality=self.config.jpeg_quality)
            if self.config.encoding == "rgb8":
                msg.format = "rgb8; jpeg compressed bgr8"
        else:
            msg = encode_image(_convert(frame.image, self.config.encoding), self.config.encoding, header)
        height, width = frame.image.shape[:2]
        return msg, camera_info_for(width, height, header, self.config)

    def _next_messages(self) -> _Messages | None:
        """The next frame's messages, or ``None`` when playback is over."""
        if self._replay is not None:
            item = next(self._replay, None)
            if item is None:
                self._replay = iter(self._cache or [])
                item = next(self._replay, None)
            return item
        for _ in range(2):  # at most one restart per call
            frame = next(self._stream, None)
            if frame is not None:
                self._pass_frames += 1
                messages = self._encode(frame)
                self._remember(messages)
                return messages
            if self._pass_frames == 0:
                self.get_logger().error("no frame could be read from the inputs; stopping")
                self._finish(False)
                return None
            if not self.config.loop:
                return None
            if self._cache is not None:
                self.get_logger().info(f"replaying {len(self._cache)} cached frames from memory")
                self._replay = iter(self._cache)
                return self._next_messages()
            self._pass_frames = 0
            self._stream = self._one_pass()
        return None

    def _remember(self, messages: _Messages) -> None:
        if self._cache is None:
            return
        self._cache_bytes += len(messages[0].data)
        if self._cache_bytes > self.config.cache_mb * _MIB:
            self.get_logger().info(
                f"the frames exceed cache_mb={self.config.cache_mb} MiB; every pass re-reads the files"
            )
            self._cache = None
            return
        self._cache.append(messages)

    def _on_timer(self) -> None:
        if self.finished.done():
            return
        messages = self._next_messages()
        if messages is None:
            if not self.finished.done():
                self._finish(True)
            return
        image_msg, info_msg = messages
        stamp = self.get_clock().now().to_msg()
        image_msg.header.stamp = stamp
        info_msg.header = image_msg.header
        try:
            self._image_pub.publish(image_msg)
            self._info_pub.publish(info_msg)
        except RCLError as exc:  # e.g. "cannot publish data" from a reliable writer under overload
            self.get_logger().warning(f"publishing failed, frame dropped: {exc}", throttle_duration_sec=5.0)
            return
        self.published += 1
        if self.config.count and self.published >= self.config.count:
            self._finish(True)

    def _finish(self, ok: bool) -> None:
        self._timer.cancel()
        self.get_logger().info(f"published {self.published} frame(s); done")
        self.finished.set_result(ok)

    def destroy_node(self) -> None:
        """Close the open input (a video being read) and destroy the node."""
        bag = getattr(self, "_bag", None)
        if bag is not None:
            bag.stop(False)
        stream = getattr(self, "_stream", None)
        if stream is not None:
            stream.close()  # releases a VideoCapture being read
        if getattr(self, "_log_bridge", None) is not None:
            unbridge_logging(self._log_bridge)
            self._log_bridge = None
        super().destroy_node()


def _parse_cli(argv: Sequence[str]) -> list[str]:
    parser = argparse.ArgumentParser(
        prog="image_player",
        description="Publish frames from images, folders or videos on image and camera_info. ROS parameters "
        "(rate, loop, count, encoding, compressed, qos, ...) follow --ros-args, e.g. "
        "image_player frames/ --ros-args -p rate:=5.0",
    )
    parser.add_argument("paths", nargs="*", help="image files, folders of images, videos or glob patterns")
    return list(parser.parse_args(list(argv)).paths)


def main(args: Sequence[str] | None = None) -> int:
    """Run the player until it finishes or is interrupted; ``args`` is a full argv (program name first).

    Returns 0 on success or interruption, 1 when the configuration or inputs are unusable or nothing could be read.
    """
    argv = list(sys.argv if args is None else args)
    cli_paths = _parse_cli(remove_ros_args(argv)[1:])
    signals = StopSignals()  # before rclpy.init: see espnet_ros.spinning
    rclpy.init(args=argv)
    node: ImagePlayer | None = None
    try:
        overrides = [Parameter("paths", Parameter.Type.STRING_ARRAY, cli_paths)] if cli_paths else []
        node = ImagePlayer(parameter_overrides=overrides)
        spin_until_shutdown(node, until=node.finished.done)
        return 1 if node.finished.done() and not node.finished.result() else 0
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0
    except (EspnetRosError, ParameterException) as exc:
        # ParameterException: a value outside a declared range or of the wrong type (e.g. -p rate:=5 for 5.0).
        rclpy.logging.get_logger("image_player").error(str(exc))
        return 1
    finally:
        signals.cleaning_up()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        signals.exiting()


if __name__ == "__main__":
    sys.exit(main())
