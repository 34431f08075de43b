"""Segmenting one rosbag2 recording: the model a worker loads, the settings, and the writer of the node's outputs.

:func:`segment_one_bag` reads every ``sensor_msgs/Image`` / ``CompressedImage`` topic of a recording
(:mod:`espnet_ros.bags`), decodes frames with :mod:`espnet_ros.image_codec`, segments them in batches with the
:class:`~espnet_ros.core.segmenter.Segmenter` the node uses (built by :func:`load_segmenter` from a picklable
:class:`ModelSpec`) and writes a new bag with the node's outputs under each camera's namespace
(``/front/image_raw`` → ``/front/segmentation/class_mask`` ...), each message with its source's header and bag time,
the label metadata once per camera (``labels`` JSON from :mod:`espnet_ros.label_msgs` and ``vision_msgs/LabelInfo``),
optionally the input topics, and with ground settings the ground outputs of :mod:`espnet_ros.ground_msgs`.
Frames that cannot be decoded are counted in the :class:`BagSummary` and skipped. The command line is
:mod:`espnet_ros.bag_cli`.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from espnet_ros.core.errors import EspnetRosError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from espnet_ros.bags import BagWriter
    from espnet_ros.core.geometry import CameraPose, GridSpec
    from espnet_ros.core.segmenter import Segmenter

__all__ = [
    "DEFAULT_OUTPUTS",
    "GROUND_OUTPUTS",
    "OUTPUT_CHOICES",
    "BagCliError",
    "BagSummary",
    "GroundSettings",
    "ModelSpec",
    "SegmentBagSettings",
    "load_segmenter",
    "segment_one_bag",
]

_log = logging.getLogger(__name__)

OUTPUT_CHOICES: tuple[str, ...] = (
    "class_mask", "confidence", "color_mask", "overlay", "drivable_mask", "drivable_overlay", "camera_info",
    "drivable_grid", "obstacle_points",
)
"""What ``--outputs`` accepts: the node's output topic names under ``<camera namespace>/segmentation/``."""

DEFAULT_OUTPUTS: tuple[str, ...] = ("class_mask", "drivable_mask", "camera_info")
"""Outputs written without ``--outputs``: what a training pipeline and a planner read, at a cost within 10 % of the
network's own time on the CPU (docs/recordings.md). Overlays for viewing (``overlay``, ``drivable_overlay``,
``color_mask``) and ``confidence`` (a softmax) on request; the ground outputs come with ``--grid``."""

GROUND_OUTPUTS: tuple[str, ...] = ("drivable_grid", "obstacle_points")
"""The ground outputs (with ground settings only)."""
_OVERLAYS = ("overlay", "drivable_overlay")


class BagCliError(EspnetRosError):
    """A problem with the options or the output path of a recording subcommand."""


# ----------------------------------------------------------------------------------------------------------- model
@dataclass(frozen=True)
class ModelSpec:
    """What :func:`load_segmenter` builds: a preset (or an explicit weights file) on a device (picklable)."""

    preset: str | None = None
    weights_dir: str | None = None
    weights_file: str | None = None
    device: str = "cpu"
    output_size: str = "input"
    num_threads: int | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace, num_threads: int | None = None) -> ModelSpec:
        """The model options of a parsed command line."""
        return cls(preset=args.preset, weights_dir=args.weights_dir, weights_file=getattr(args, "weights_file", None),
                   device=args.device, output_size=args.output_size, num_threads=num_threads)


def load_segmenter(spec: ModelSpec) -> Segmenter:
    """The Segmenter of ``spec`` (the one place where segment-bag loads a model)."""
    from espnet_ros.core.segmenter import Segmenter
    from espnet_ros.core.weights import DEFAULT_PRESET, get_preset

    return Segmenter(get_preset(spec.preset or DEFAULT_PRESET), weights_dir=spec.weights_dir,
                     weights_file=spec.weights_file, device=spec.device,
                     output_size="network" if spec.output_size == "network" else "input",
                     num_threads=spec.num_threads)


# ------------------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class GroundSettings:
    """``--grid``: the grid layout, the camera's mount and optional fixed intrinsics (as ``segment --grid``)."""

    spec: GridSpec
    pose: CameraPose
    intrinsics: tuple[float, ...] | None
    void: str
    grid_frame: str


@dataclass(frozen=True)
class SegmentBagSettings:
    """Everything of one ``segment-bag`` run except the model (picklable, handed to worker processes)."""

    outputs: tuple[str, ...] = DEFAULT_OUTPUTS
    topics: tuple[str, ...] = ()
    storage: str = "mcap"
    batch_size: int = 4
    compress_overlays: str | None = None
    copy_inputs: bool = False
    drivable_classes: tuple[str, ...] | None = None
    alpha: float = 0.5
    ground: GroundSettings | None = None
    reserve_mb: float = 64.0


@dataclass
class BagSummary:
    """What one bag run did: frames segmented and skipped per topic (with the reasons), messages written, time."""

    bag: str
    out: str
    frames: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, dict[str, int]] = field(default_factory=dict)
    written: int = 0
    seconds: float = 0.0
    error: str | None = None


__all__ += ["GroundSettings"]


# ----------------------------------------------------------------------------------------------------- one bag
@dataclass
class _Camera:
    topics: Any  # segmentation_node.CameraTopics
    info: Any = None  # latest recorded CameraInfo
    labelled: bool = False


@dataclass
class _Item:
    topic: str
    time_ns: int
    header: Any
    image: npt.NDArray[np.uint8]
    color_order: str
    info: Any


def _base_topic(topic: str, msgtype: str) -> tuple[str, str]:
    """The image topic before image_transport's ``/compressed`` suffix, and the transport."""
    from espnet_ros.bags import COMPRESSED_IMAGE_TYPE

    if msgtype == COMPRESSED_IMAGE_TYPE and topic.endswith("/compressed") and topic.count("/") > 1:
        return topic[: -len("/compressed")], "compressed"
    return topic, "raw"


class _BagSegmenter:
    """Segments the frames of one bag into a :class:`~espnet_ros.bags.BagWriter`."""

    def __init__(self, segmenter: Segmenter, settings: SegmentBagSettings, writer: BagWriter,
                 summary: BagSummary) -> None:
        from espnet_ros.core.geometry import ProjectorCache
        from espnet_ros.core.render import Renderer
        from espnet_ros.ground_msgs import GroundOutputs

        self.segmenter = segmenter
        self.settings = settings
        self.writer = writer
        self.summary = summary
        self.labels = segmenter.labels
        self.renderer = Renderer(self.labels, settings.drivable_classes, alpha=settings.alpha)
        self.palette_rgb = self.labels.palette_rgb()
        self.outputs = set(settings.outputs)
        g = settings.ground
        self.ground = GroundOutputs(g.spec, g.grid_frame, cache=ProjectorCache()) if g is not None else None
        self.unknown_lut = self.labels.void_lut(g.void) if g is not None else None
        self.cameras: dict[str, _Camera] = {}

    def declare(self, topic: str, msgtype: str, has_info: bool) -> _Camera:
        """Add the output topics of the camera recorded on ``topic`` (``camera_info`` only if one is recorded)."""
        from espnet_ros.bags import COMPRESSED_IMAGE_TYPE, IMAGE_TYPE, LABEL_INFO_TYPE
        from espnet_ros.cameras import camera_topics

        base, transport = _base_topic(topic, msgtype)
        cam = _Camera(camera_topics(base, transport))
        types = {"camera_info": "sensor_msgs/msg/CameraInfo", "drivable_grid": "nav_msgs/msg/OccupancyGrid",
                 "obstacle_points": "sensor_msgs/msg/PointCloud2"}
        for name in self.settings.outputs:
            if name == "camera_info" and not has_info:
                continue
            if name in _OVERLAYS and self.settings.compress_overlays:
                self.writer.add_topic(cam.topics.output(name) + "/compressed", COMPRESSED_IMAGE_TYPE)
            else:
                self.writer.add_topic(cam.topics.output(name), types.get(name, IMAGE_TYPE))
        self.writer.add_topic(cam.topics.output("labels"), "std_msgs/msg/String", latched=True)
        self.writer.add_topic(cam.topics.output("label_info"), LABEL_INFO_TYPE, latched=True)
        self.cameras[topic] = cam
        return cam

    def segment(self, batch: list[_Item]) -> None:
        """Segment ``batch`` in one forward pass and write every output of every frame."""
        if not batch:
            return
        results = self.segmenter.segment_batch([b.image for b in batch],
                                               color_order=[b.color_order for b in batch],  # type: ignore[misc]
                                               confidence="confidence" in self.outputs)
        for item, result in zip(batch, results, strict=True):
            self._write_frame(item, result)
            self.summary.frames[item.topic] = self.summary.frames.get(item.topic, 0) + 1

    def _write_frame(self, item: _Item, result: Any) -> None:
        import cv2
        import numpy as np

        from espnet_ros.bags import label_info_bytes
        from espnet_ros.core.render import colorize
        from espnet_ros.image_codec import encode_compressed, encode_image
        from espnet_ros.label_msgs import labels_string_msg

        cam = self.cameras[item.topic]
        header, t, out, w = item.header, item.time_ns, self.outputs, self.writer
        if not cam.labelled:
            preset = self.segmenter.preset.name
            w.write(cam.topics.output("labels"), t, labels_string_msg(self.labels, preset, self.renderer.drivable_ids))
            w.write_raw(cam.topics.output("label_info"), t, label_info_bytes(self.labels, header))
            cam.labelled = True
        ids = result.class_ids
        if "class_mask" in out:
            w.write(cam.topics.output("class_mask"), t, encode_image(ids, "mono8", header))
        if "confidence" in out and result.confidence is not None:
            w.write(cam.topics.output("confidence"), t, encode_image(result.confidence, "mono8", header))
        if "color_mask" in out:
            w.write(cam.topics.output("color_mask"), t, encode_image(colorize(ids, self.palette_rgb), "rgb8", header))
        drivable = self.renderer.drivable_mask(ids) if {"drivable_mask", "drivable_overlay"} & out else None
        if "drivable_mask" in out and drivable is not None:
            w.write(cam.topics.output("drivable_mask"), t, encode_image(drivable, "mono8", header))
        if _OVERLAYS[0] in out or _OVERLAYS[1] in out:
            bgr = item.image
            if item.color_order == "rgb":
                bgr = np.asarray(cv2.cvtColor(bgr, cv2.COLOR_RGB2BGR), np.uint8)
            if (bgr.shape[1], bgr.shape[0]) != result.output_size:
                bgr = np.asarray(cv2.resize(bgr, result.output_size, interpolation=cv2.INTER_AREA), np.uint8)
            images = {}
            if "overlay" in out:
                images["overlay"] = self.renderer.class_overlay(bgr, ids)
            if "drivable_overlay" in out and drivable is not None:
                images["drivable_overlay"] = self.renderer.drivable_overlay(bgr, mask=drivable)
            for name, img in images.items():
                fmt = self.settings.compress_overlays
                if fmt == "jpeg" or fmt == "png":
                    w.write(cam.topics.output(name) + "/compressed", t,
                            encode_compressed(img, "png" if fmt == "png" else "jpeg", header))
                else:
                    w.write(cam.topics.output(name), t, encode_image(img, "bgr8", header))
        if "camera_info" in out and item.info is not None:
            from espnet_ros.segmentation_node import scale_camera_info

            width, height = result.output_size
            w.write(cam.topics.output("camera_info"), t, scale_camera_info(item.info, width, height, header))
        if self.ground is not None and self.unknown_lut is not None and set(GROUND_OUTPUTS) & out:
            self._write_ground(cam, item, result)

    def _write_ground(self, cam: _Camera, item: _Item, result: Any) -> None:
        from espnet_ros.core.geometry import CameraModel
        from espnet_ros.ground_msgs import camera_model_from_camera_info

        g = self.settings.ground
        assert g is not None and self.ground is not None
        height, width = item.image.shape[:2]
        if g.intrinsics is not None or item.info is None:
            fx, fy, cx, cy = g.intrinsics or (width, width, (width - 1) / 2, (height - 1) / 2)
            model = CameraModel.pinhole(width, height, fx, fy, cx, cy)
        else:
            model = camera_model_from_camera_info(item.info, (width, height))
        grid, cloud = self.ground.process(item.header, result.class_ids, self.renderer.mask_lut, model, g.pose,
                                          want_grid="drivable_grid" in self.outputs,
                                          want_points="obstacle_points" in self.outputs,
                                          unknown_lut=self.unknown_lut)
        if grid is not None:
            self.writer.write(cam.topics.output("drivable_grid"), item.time_ns, grid)
        if cloud is not None:
            self.writer.write(cam.topics.output("obstacle_points"), item.time_ns, cloud)


def _skip(summary: BagSummary, topic: str, reason: str) -> None:
    summary.skipped[topic] = summary.skipped.get(topic, 0) + 1
    reasons = summary.reasons.setdefault(topic, {})
    reasons[reason] = reasons.get(reason, 0) + 1


def segment_one_bag(segmenter: Segmenter, bag: Path, out: Path, settings: SegmentBagSettings,
                    progress: Callable[[int], None] | None = None) -> BagSummary:
    """Segment the image topics of ``bag`` into the new bag ``out``; return what was done.

    Raises :class:`~espnet_ros.bags.BagError` for a bag that cannot be read or an unknown topic (before ``out`` is
    created), and for a write that fails; a bag that turns out corrupt part-way or a disk that fills up leaves
    ``out`` closed and readable up to its last message and raises with the summary's counts in the message.
    """
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo

    from espnet_ros.bags import CAMERA_INFO_TYPE, BagError, BagReader, BagWriter, read_frame, select_image_topics
    from espnet_ros.core.errors import ImageError
    from espnet_ros.core.segmenter import validate_image

    started = time.perf_counter()
    summary = BagSummary(bag=str(bag), out=str(out))
    with BagReader(bag) as reader:
        topics = select_image_topics(reader, settings.topics or None)
        kinds = reader.topics
        bases = {t: _base_topic(t, kinds[t]) for t in topics}
        from espnet_ros.cameras import camera_topics

        info_of = {t: camera_topics(*bases[t]).camera_info for t in topics}
        info_topics = {i for i in info_of.values() if kinds.get(i) == CAMERA_INFO_TYPE}
        infos: dict[str, Any] = {}
        read = None if settings.copy_inputs else [*topics, *sorted(info_topics)]
        with BagWriter(out, settings.storage, reserve_mb=settings.reserve_mb) as writer:
            writer.check_space()
            if settings.copy_inputs:
                for c in reader.connections:
                    writer.add_topic(c.topic, c.msgtype, msgdef=c.msgdef.data or None, digest=c.digest or None)
            work = _BagSegmenter(segmenter, settings, writer, summary)
            for topic in topics:
                summary.frames[topic] = 0
                work.declare(topic, kinds[topic], info_of[topic] in info_topics)
            batch: list[_Item] = []
            try:
                for m in reader.messages(read):
                    if settings.copy_inputs:
                        writer.write_raw(m.topic, m.time_ns, m.data)
                    if m.topic in info_topics:
                        infos[m.topic] = deserialize_message(m.data, CameraInfo)
                        continue
                    if m.topic not in bases:
                        continue
                    try:
                        frame = read_frame(m)
                        decoded = frame.decode()
                        validate_image(decoded.image)
                    except ImageError as exc:
                        _skip(summary, m.topic, str(exc))
                    else:
                        batch.append(_Item(m.topic, m.time_ns, frame.header, decoded.image, decoded.color_order,
                                           infos.get(info_of[m.topic])))
                        if len(batch) >= settings.batch_size:
                            work.segment(batch)
                            batch = []
                    if progress is not None:
                        progress(1)
                work.segment(batch)
            except BagError as exc:
                summary.error = str(exc)
                summary.written = writer.written
            finally:
                summary.seconds = time.perf_counter() - started
        summary.written = writer.written
    if summary.error is not None:
        raise BagError(f"{summary.error} [{out} was closed after {summary.written} message(s)]")
    return summary
