"""The ``segmentation_recorder`` node: saves the segmentation node's outputs as image files and reports latency.

For the demo and for looking at results without rviz: it subscribes to ``segmentation/<output>`` (relative, so
namespaces and remapping apply) for each requested output, writes every message as ``<output>_<stamp>.png`` (masks,
lossless) or ``.jpg`` (overlays) into ``output_dir``, logs the latency from the message's header stamp to its
receipt, and after ``count`` frames of the first output (0: never) logs p50/p95 latency per output and exits.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.utilities import remove_ros_args
from sensor_msgs.msg import Image

from espnet_ros.diagnostics import percentile
from espnet_ros.image_codec import ImageEncodingError, decode_image, decode_mono8
from espnet_ros.spinning import StopSignals, spin_until_shutdown

__all__ = ["SegmentationRecorder", "main"]

DEFAULT_OUTPUTS = ("overlay", "drivable_overlay", "color_mask", "class_mask")
_LOSSY = {"overlay", "drivable_overlay"}


class SegmentationRecorder(Node):
    """Write outputs of ``segmentation/`` to files; ``done`` becomes true after ``count`` frames."""

    def __init__(self, output_dir: str | Path, outputs: Sequence[str] = DEFAULT_OUTPUTS, count: int = 0,
                 **kwargs: Any) -> None:
        super().__init__("segmentation_recorder", **kwargs)
        if not outputs:
            raise ValueError("give at least one output to record, e.g. overlay")
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.outputs = tuple(outputs)
        self.count = int(count)
        self.latencies: dict[str, list[float]] = {o: [] for o in self.outputs}
        self.rejected = 0
        """Messages that could not be saved (malformed image, unwritable file); each is logged (throttled)."""
        self.done = False
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        for name in self.outputs:
            self.create_subscription(Image, f"segmentation/{name}", partial(self._on_image, name), qos)
        self.get_logger().info(
            f"recording {', '.join(self.outputs)} from {self.get_namespace().rstrip('/')}/segmentation/ into "
            f"{self.output_dir}" + (f" until {self.count} frames" if self.count else "")
        )

    def _on_image(self, name: str, msg: Image) -> None:
        stamp_ns = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)  # any stamp, even < 0
        latency = (self.get_clock().now().nanoseconds - stamp_ns) * 1e-9
        stamp = f"{msg.header.stamp.sec}_{msg.header.stamp.nanosec:09d}"
        path = self.output_dir / f"{name}_{stamp}.{'jpg' if name in _LOSSY else 'png'}"
        try:
            if msg.encoding == "mono8":
                image = np.ascontiguousarray(decode_mono8(msg))
            else:
                decoded = decode_image(msg)
                image = decoded.image
                if decoded.color_order == "rgb":
                    image = np.asarray(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), np.uint8)
            ok, data = cv2.imencode(path.suffix, image)
            if not ok:
                raise ImageEncodingError(f"OpenCV cannot encode a {image.shape} image as {path.suffix}")
            data.tofile(path)
        except (ImageEncodingError, OSError, cv2.error) as exc:
            self.rejected += 1
            self.get_logger().warning(f"cannot save {name} stamped {stamp}: {exc} ({self.rejected} not saved)",
                                      throttle_duration_sec=5.0)
            return
        self.latencies[name].append(latency)
        self.get_logger().info(f"{name} {msg.width}x{msg.height} {msg.header.frame_id!r}: latency "
                               f"{latency * 1000:.1f} ms -> {path.name}")
        if self.count and len(self.latencies[self.outputs[0]]) >= self.count:
            self.done = True

    def summary(self) -> str:
        """Frames and latency p50/p95 per output, one line."""
        parts = []
        for name, values in self.latencies.items():
            if values:
                parts.append(f"{name}: {len(values)} frames, latency p50 {percentile(values, 50) * 1000:.1f} ms, "
                             f"p95 {percentile(values, 95) * 1000:.1f} ms")
            else:
                parts.append(f"{name}: no frames")
        return "; ".join(parts)


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="segmentation_recorder", description=__doc__)
    parser.add_argument("--output-dir", default="segmentation_out", help="folder for the files (created)")
    parser.add_argument("--outputs", nargs="+", default=list(DEFAULT_OUTPUTS), help="outputs to record")
    parser.add_argument("--count", type=int, default=0, help="exit after this many frames (0: run until Ctrl-C)")
    return parser.parse_args(list(argv))


def main(args: Sequence[str] | None = None) -> int:
    """Run the recorder until ``--count`` frames arrived or Ctrl-C; log the latency summary."""
    argv = list(sys.argv if args is None else ["segmentation_recorder", *args])
    options = _parse(remove_ros_args(argv)[1:])
    signals = StopSignals()  # before rclpy.init: see espnet_ros.spinning
    rclpy.init(args=argv)
    node: SegmentationRecorder | None = None
    try:
        node = recorder = SegmentationRecorder(options.output_dir, options.outputs, options.count)
        spin_until_shutdown(recorder, until=lambda: recorder.done)
    except KeyboardInterrupt:  # Ctrl-C while starting
        pass
    finally:
        signals.cleaning_up()
        if node is not None:
            node.get_logger().info(node.summary())
            node.destroy_node()
        rclpy.try_shutdown()
        signals.exiting()
    return 0


if __name__ == "__main__":
    sys.exit(main())
