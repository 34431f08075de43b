"""The recording subcommands of ``espnet-ros``: ``segment-bag`` and ``extract-frames`` (registered by :mod:`cli`).

``segment-bag`` reads every ``sensor_msgs/Image`` / ``CompressedImage`` topic of one or more rosbag2 recordings
(:mod:`espnet_ros.bags`), decodes frames with :mod:`espnet_ros.image_codec`, segments them in batches with the
:class:`~espnet_ros.core.segmenter.Segmenter` the node uses and writes a new bag with the node's outputs under each
camera's namespace (``/front/image_raw`` → ``/front/segmentation/class_mask`` ...), each message with its source's
header and bag time, the label metadata once per camera (``labels`` JSON from :mod:`espnet_ros.label_msgs` and
``vision_msgs/LabelInfo``), optionally the input topics, and with ``--grid`` the ground outputs of
:mod:`espnet_ros.ground_msgs`. Several bags run in worker processes (``--jobs``), each loading the model through
:func:`load_segmenter`. ``--measure`` compares its throughput with the Segmenter's own on the same frames.
``extract-frames`` writes every N-th frame (or N per second) of bag topics or videos as PNG for labelling.
Frames that cannot be decoded are counted, skipped and reported; a corrupt bag or unknown topic is a
:class:`~espnet_ros.bags.BagError` (one line, exit status 2).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import shutil
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from espnet_ros.core.errors import EspnetRosError
from espnet_ros.core.labels import VOID_MEANINGS

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from espnet_ros.bags import BagWriter
    from espnet_ros.core.geometry import CameraPose, GridSpec
    from espnet_ros.core.segmenter import Segmenter

__all__ = [
    "DEFAULT_OUTPUTS",
    "OUTPUT_CHOICES",
    "BagSummary",
    "ModelSpec",
    "SegmentBagSettings",
    "add_extract_frames_parser",
    "add_segment_bag_parser",
    "load_segmenter",
    "segment_one_bag",
]

_log = logging.getLogger(__name__)

OUTPUT_CHOICES: tuple[str, ...] = (
    "class_mask", "confidence", "color_mask", "overlay", "drivable_mask", "drivable_overlay", "camera_info",
    "drivable_grid", "obstacle_points",
)
"""What ``--outputs`` accepts: the node's output topic names under ``<camera namespace>/segmentation/``."""

DEFAULT_OUTPUTS: tuple[str, ...] = ("class_mask", "overlay", "drivable_mask", "camera_info")
"""Outputs written without ``--outputs``: what a reviewer and a training pipeline need, at a cost within 10 % of the
network's own time on the CPU (docs/recordings.md). ``color_mask`` is ``class_mask`` through the palette of
``labels``; ``drivable_overlay`` and ``confidence`` (a softmax) on request; the ground outputs come with ``--grid``."""

_GROUND = ("drivable_grid", "obstacle_points")
_OVERLAYS = ("overlay", "drivable_overlay")


class BagCliError(EspnetRosError):
    """A problem with the options or the output path of a recording subcommand."""


__all__ += ["BagCliError"]


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
        from espnet_ros.segmentation_node import camera_topics

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
        if self.ground is not None and self.unknown_lut is not None and set(_GROUND) & out:
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
    from sensor_msgs.msg import CameraInfo, CompressedImage

    from espnet_ros.bags import CAMERA_INFO_TYPE, IMAGE_TYPES, BagError, BagReader, BagWriter, select_image_topics
    from espnet_ros.core.errors import ImageError
    from espnet_ros.core.segmenter import validate_image
    from espnet_ros.image_codec import decode_compressed, decode_image

    started = time.perf_counter()
    summary = BagSummary(bag=str(bag), out=str(out))
    with BagReader(bag) as reader:
        topics = select_image_topics(reader, settings.topics or None)
        kinds = reader.topics
        bases = {t: _base_topic(t, kinds[t]) for t in topics}
        from espnet_ros.segmentation_node import camera_topics

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
                        msg = deserialize_message(m.data, IMAGE_TYPES[m.msgtype])
                        decoded = decode_compressed(msg) if isinstance(msg, CompressedImage) else decode_image(msg)
                        validate_image(decoded.image)
                    except ImageError as exc:
                        _skip(summary, m.topic, str(exc))
                    except (RuntimeError, ValueError, TypeError) as exc:  # bytes rclpy cannot deserialize
                        _skip(summary, m.topic, f"cannot deserialize {m.msgtype}: {exc}")
                    else:
                        batch.append(_Item(m.topic, m.time_ns, msg.header, decoded.image, decoded.color_order,
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


# ----------------------------------------------------------------------------------------------- the command line
def add_segment_bag_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``segment-bag`` on the subparsers ``sub``; ``common`` adds ``--weights-dir`` / ``--device``."""
    p = sub.add_parser(
        "segment-bag", help="segment the image topics of rosbag2 recordings into new bags (MCAP or sqlite3)",
        description="Segment every sensor_msgs/Image and CompressedImage topic of the recordings (or --topics) and "
                    "write a new bag with the node's outputs under each camera's namespace (/front/image_raw -> "
                    "/front/segmentation/class_mask ...), each with its source's header and bag time, plus the label "
                    "metadata (labels, label_info) once per camera. One input bag: OUT is the new bag; several, or a "
                    "folder of bags: OUT is a folder with one new bag per input.")
    p.add_argument("inputs", nargs="+", metavar="IN", help="rosbag2 folders, .mcap / .db3 files, folders of bags")
    p.add_argument("--out", required=True, metavar="OUT", help="output bag (one input) or folder of bags")
    p.add_argument("--preset", default=None, help="weights preset (see `espnet-ros presets`; default cityscapes)")
    p.add_argument("--weights-file", default=None, metavar="FILE", help="explicit weights file (still verified)")
    p.add_argument("--topics", default=None, metavar="T1,T2", help="image topics to segment (default: all)")
    p.add_argument("--outputs", default=None, metavar="NAMES",
                   help=f"comma-separated outputs among {', '.join(OUTPUT_CHOICES)} (default: "
                        f"{','.join(DEFAULT_OUTPUTS)}; --grid adds drivable_grid,obstacle_points)")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="output storage (default: mcap)")
    p.add_argument("--compress-overlays", choices=("jpeg", "png"), default=None,
                   help="write overlay and drivable_overlay as CompressedImage on .../overlay/compressed")
    p.add_argument("--copy-inputs", action="store_true", help="also copy every input topic into the output bag")
    p.add_argument("--batch-size", type=int, default=4, metavar="N", help="frames per forward pass (default: 4)")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="bags segmented in parallel processes")
    p.add_argument("--overwrite", action="store_true", help="replace output bags that exist")
    p.add_argument("--output-size", choices=("input", "network"), default="input",
                   help="masks at the frame's resolution (default) or the network's")
    p.add_argument("--drivable-classes", default=None, metavar="NAMES",
                   help="comma-separated class names or ids that are drivable (default: road)")
    p.add_argument("--alpha", type=float, default=0.5, help="weight of the colour mask in the overlay (0..1)")
    p.add_argument("--reserve-mb", type=float, default=64.0, metavar="MIB",
                   help="stop (closing the bag cleanly) before the output disk has less than this free (default 64)")
    p.add_argument("--measure", default=None, metavar="JSON",
                   help="measure: time segment-bag on the first bag against Segmenter.segment_batch on the same "
                        "decoded frames in this process, print a table and write JSON")
    p.add_argument("--repeat", type=int, default=3, metavar="N", help="with --measure: runs of each (default 3)")
    g = p.add_argument_group("ground outputs", "As `espnet-ros segment --grid` (see its --help): drivable_grid "
                             "and obstacle_points in --grid-frame. Intrinsics: --camera-intrinsics, else the "
                             "recorded <camera namespace>/camera_info, else fx = fy = width at the centre.")
    g.add_argument("--grid", action="store_true", help="also write drivable_grid and obstacle_points")
    g.add_argument("--camera-intrinsics", metavar="FX,FY,CX,CY", default=None, help="pinhole intrinsics in pixels")
    g.add_argument("--camera-mount", metavar="X,Y,Z,ROLL,PITCH,YAW", default=None,
                   help="the camera in the grid frame (default: 0,0,1.5,0,0,0)")
    g.add_argument("--grid-resolution", type=float, default=None, metavar="M", help="cell side in metres (0.1)")
    g.add_argument("--grid-range", type=float, default=None, metavar="M", help="grid reach in metres (20)")
    g.add_argument("--grid-void", choices=VOID_MEANINGS, default="unknown", help="void pixels: unknown or obstacle")
    g.add_argument("--grid-frame", default="base_footprint", help="frame_id of the ground outputs (base_footprint)")
    common(p)
    p.set_defaults(func=run_segment_bag)


def add_extract_frames_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None] | None = None) -> None:
    """Register ``extract-frames`` on the subparsers ``sub``."""
    p = sub.add_parser(
        "extract-frames", help="write frames of recordings or videos as PNG for labelling",
        description="Write every N-th frame (--every) or N frames per second (--fps) of each image topic of the "
                    "bags (or of each video) as OUT/<topic>/<topic>_<sec>_<nanosec>.png, named by the frame's "
                    "header stamp (video frames by their time in the video).")
    p.add_argument("inputs", nargs="+", metavar="IN",
                   help="rosbag2 folders, .mcap / .db3 files, folders of bags or video files")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    p.add_argument("--topics", default=None, metavar="T1,T2", help="image topics (default: all)")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--every", type=int, default=None, metavar="N", help="every N-th frame per topic (default 1)")
    rate.add_argument("--fps", type=float, default=None, metavar="N", help="at most N frames per second per topic")
    p.set_defaults(func=run_extract_frames)


def _csv(text: str | None) -> tuple[str, ...]:
    return tuple(t.strip() for t in (text or "").split(",") if t.strip())


def _settings(args: argparse.Namespace) -> SegmentBagSettings:
    from espnet_ros.cli import _grid_settings

    outputs = _csv(args.outputs) or DEFAULT_OUTPUTS
    unknown = [o for o in outputs if o not in OUTPUT_CHOICES]
    if unknown:
        raise BagCliError(f"--outputs {', '.join(unknown)}: unknown; choose among {', '.join(OUTPUT_CHOICES)}")
    grid = _grid_settings(args)
    ground = None
    if grid is not None:
        spec, pose, intrinsics = grid
        ground = GroundSettings(spec, pose, intrinsics, args.grid_void, args.grid_frame)
        if not args.outputs:
            outputs = (*outputs, *_GROUND)
    elif set(outputs) & set(_GROUND):
        raise BagCliError("--outputs drivable_grid / obstacle_points need --grid (and the camera's mount)")
    if args.batch_size < 1:
        raise BagCliError(f"--batch-size {args.batch_size}: expected >= 1")
    if not 0.0 <= args.alpha <= 1.0:
        raise BagCliError(f"--alpha must be between 0 and 1, got {args.alpha}")
    if args.reserve_mb < 0:
        raise BagCliError(f"--reserve-mb {args.reserve_mb}: expected >= 0")
    drivable = _csv(args.drivable_classes) or None
    if drivable is not None:
        from espnet_ros.core.weights import DEFAULT_PRESET, get_preset

        get_preset(args.preset or DEFAULT_PRESET).label_set.resolve_classes(list(drivable))  # fails early
    return SegmentBagSettings(outputs=tuple(dict.fromkeys(outputs)), topics=_csv(args.topics), storage=args.storage,
                              batch_size=args.batch_size, compress_overlays=args.compress_overlays,
                              copy_inputs=args.copy_inputs, drivable_classes=drivable, alpha=args.alpha,
                              ground=ground, reserve_mb=args.reserve_mb)


def _bag_name(bag: Path) -> str:
    return bag.name if bag.is_dir() else bag.stem


def _targets(inputs: Sequence[str], bags: Sequence[Path], out: Path) -> list[Path]:
    """One input bag: ``out`` itself; otherwise ``out/<bag name>`` per bag (names must be unique)."""
    from espnet_ros.bags import is_bag

    if len(bags) == 1 and len(inputs) == 1 and is_bag(Path(inputs[0]).expanduser()):
        return [out]
    names = Counter(_bag_name(b) for b in bags)
    twice = sorted(n for n, c in names.items() if c > 1)
    if twice:
        raise BagCliError(f"several input bags are named {', '.join(twice)}; their outputs would collide in {out}. "
                          "Segment them in separate calls with different --out")
    return [out / _bag_name(b) for b in bags]


def _clear(target: Path, overwrite: bool) -> None:
    """Refuse an existing output unless ``overwrite``; then remove it (only if it is a bag)."""
    if not target.exists():
        return
    if not overwrite:
        raise BagCliError(f"output {target} exists; choose another --out or add --overwrite to replace it")
    from espnet_ros.bags import is_bag

    if not is_bag(target) and not (target.is_dir() and all(p.suffix in (".mcap", ".db3", ".yaml")
                                                            for p in target.iterdir())):
        raise BagCliError(f"output {target} exists and is not a bag; --overwrite replaces bags only, so remove it "
                          "yourself or choose another --out")
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()


def _worker(spec: ModelSpec, bag: str, out: str, settings: SegmentBagSettings, queue: Any) -> BagSummary:
    """One bag in a worker process (loads its own model); progress goes to ``queue``."""
    from espnet_ros.bags import BagError

    segmenter = load_segmenter(spec)
    try:
        return segment_one_bag(segmenter, Path(bag), Path(out), settings, progress=queue.put)
    except BagError as exc:
        return BagSummary(bag=bag, out=out, error=str(exc))


def _progress_bar(quiet: bool, **kwargs: Any) -> Any:
    from tqdm import tqdm

    return tqdm(disable=quiet, file=sys.stderr, dynamic_ncols=True, **kwargs)


def _total_images(bags: Sequence[Path], topics: tuple[str, ...]) -> int | None:
    from espnet_ros.bags import BagReader, select_image_topics

    total = 0
    for bag in bags:
        with BagReader(bag) as reader:
            counts = reader.counts
            total += sum(counts.get(t, 0) for t in select_image_topics(reader, topics or None))
    return total or None


def run_segment_bag(args: argparse.Namespace) -> int:
    """``espnet-ros segment-bag``: check everything, then segment each bag (in ``--jobs`` processes)."""
    from espnet_ros.bags import BagError, find_bags

    settings = _settings(args)
    bags = find_bags(args.inputs)
    if args.jobs < 1:
        raise BagCliError(f"--jobs {args.jobs}: expected >= 1")
    out = Path(args.out).expanduser()
    if args.measure:
        return _measure(args, settings, bags[0], out)
    targets = _targets(args.inputs, bags, out)
    total = _total_images(bags, settings.topics)  # opens every bag: corrupt ones and unknown topics fail here
    for target in targets:
        _clear(target, args.overwrite)
    if len(targets) > 1 or targets[0] != out:
        out.mkdir(parents=True, exist_ok=True)
    summaries: list[BagSummary] = []
    started = time.perf_counter()
    with _progress_bar(args.quiet, total=total, unit="frame", desc="segment-bag") as bar:
        if args.jobs == 1 or len(bags) == 1:
            segmenter = load_segmenter(ModelSpec.from_args(args))
            for bag, target in zip(bags, targets, strict=True):
                try:
                    summaries.append(segment_one_bag(segmenter, bag, target, settings, progress=bar.update))
                except BagError as exc:
                    summaries.append(BagSummary(bag=str(bag), out=str(target), error=str(exc)))
        else:
            summaries = _run_parallel(args, settings, bags, targets, bar)
    _print_summary(summaries, time.perf_counter() - started, args.quiet)
    failed = [s for s in summaries if s.error is not None]
    for s in failed:
        print(f"espnet-ros: error: {s.error}", file=sys.stderr)
    return 2 if failed else 0


def _run_parallel(args: argparse.Namespace, settings: SegmentBagSettings, bags: Sequence[Path],
                  targets: Sequence[Path], bar: Any) -> list[BagSummary]:
    import multiprocessing

    jobs = min(args.jobs, len(bags))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    spec = ModelSpec.from_args(args, num_threads=threads)
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that holds torch's thread pools
    with ctx.Manager() as manager:
        queue = manager.Queue()
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = [pool.submit(_worker, spec, str(b), str(t), settings, queue)
                       for b, t in zip(bags, targets, strict=True)]
            pending = set(futures)
            while pending:
                while not queue.empty():
                    bar.update(queue.get())
                pending = {f for f in pending if not f.done()}
                time.sleep(0.1)
            while not queue.empty():
                bar.update(queue.get())
            return [f.result() for f in as_completed(futures)]


def _print_summary(summaries: Sequence[BagSummary], seconds: float, quiet: bool) -> None:
    if quiet:
        return
    frames = 0
    for s in summaries:
        if s.error is not None and not s.frames:
            continue
        print(f"{s.bag} -> {s.out}: {s.written} message(s) in {s.seconds:.1f} s", file=sys.stderr)
        for topic, n in s.frames.items():
            frames += n
            skipped = s.skipped.get(topic, 0)
            line = f"  {topic}: {n} frame(s) segmented"
            if skipped:
                line += f", {skipped} skipped"
            print(line, file=sys.stderr)
            for reason, count in s.reasons.get(topic, {}).items():
                print(f"    {count} x {reason}", file=sys.stderr)
    rate = frames / seconds if seconds > 0 else math.nan
    print(f"{frames} frame(s) from {len(summaries)} bag(s) in {seconds:.1f} s ({rate:.2f} frames/s)", file=sys.stderr)


# --------------------------------------------------------------------------------------------------- measuring
def _decoded_frames(bag: Path, topics: tuple[str, ...]) -> tuple[list[Any], list[Any]]:
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CompressedImage

    from espnet_ros.bags import IMAGE_TYPES, BagReader, select_image_topics
    from espnet_ros.image_codec import decode_compressed, decode_image

    images, orders = [], []
    with BagReader(bag) as reader:
        for m in reader.messages(select_image_topics(reader, topics or None)):
            msg = deserialize_message(m.data, IMAGE_TYPES[m.msgtype])
            decoded = decode_compressed(msg) if isinstance(msg, CompressedImage) else decode_image(msg)
            images.append(decoded.image.copy())
            orders.append(decoded.color_order)
    return images, orders


def _measure(args: argparse.Namespace, settings: SegmentBagSettings, bag: Path, out: Path) -> int:
    """``--measure``: alternate segment-bag runs and Segmenter.segment_batch runs on the same frames."""
    import torch

    if args.repeat < 1:
        raise BagCliError(f"--repeat {args.repeat}: expected >= 1")
    _clear(out, args.overwrite)
    segmenter = load_segmenter(ModelSpec.from_args(args))
    images, orders = _decoded_frames(bag, settings.topics)
    if not images:
        raise BagCliError(f"{bag} has no decodable frame to measure with")
    n, size = len(images), settings.batch_size
    confidence = "confidence" in settings.outputs
    segmenter.segment_batch(images[:size], color_order=orders[:size], confidence=confidence)  # type: ignore[arg-type]
    own, full = [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        for i in range(0, n, size):
            segmenter.segment_batch(images[i:i + size], color_order=orders[i:i + size],  # type: ignore[arg-type]
                                    confidence=confidence)
        own.append(time.perf_counter() - t0)
        _clear(out, True)
        t0 = time.perf_counter()
        summary = segment_one_bag(segmenter, bag, out, settings)
        full.append(time.perf_counter() - t0)
    rows = {"segmenter": own, "segment_bag": full}
    doc: dict[str, Any] = {
        "command": "espnet-ros " + " ".join(sys.argv[1:]) if sys.argv else "",
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "inference_path": segmenter.inference_path,
        "preset": segmenter.preset.name, "bag": str(bag), "frames": n, "batch_size": size,
        "frame_size": [int(images[0].shape[1]), int(images[0].shape[0])], "outputs": list(settings.outputs),
        "storage": settings.storage, "written": summary.written,
    }
    for name, times in rows.items():
        doc[name] = {"seconds": times, "median_s": statistics.median(times), "best_s": min(times),
                     "fps_median": n / statistics.median(times), "fps_best": n / min(times)}
    doc["ratio_median"] = doc["segment_bag"]["fps_median"] / doc["segmenter"]["fps_median"]
    doc["ratio_best"] = doc["segment_bag"]["fps_best"] / doc["segmenter"]["fps_best"]
    table = [["what", "frames", "median s", "best s", "frames/s (median)", "vs segmenter"],
             ["Segmenter.segment_batch (decoded frames in memory)", str(n), f"{statistics.median(own):.3f}",
              f"{min(own):.3f}", f"{doc['segmenter']['fps_median']:.2f}", "1.000"],
             ["segment-bag (read, decode, segment, render, encode, write)", str(n), f"{statistics.median(full):.3f}",
              f"{min(full):.3f}", f"{doc['segment_bag']['fps_median']:.2f}", f"{doc['ratio_median']:.3f}"]]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for k, row in enumerate(table):
        print("  ".join(c.ljust(w_) for c, w_ in zip(row, widths, strict=True)).rstrip())
        if k == 0:
            print("  ".join("-" * w_ for w_ in widths))
    path = Path(args.measure).expanduser()
    try:
        path.write_text(json.dumps(doc, indent=2) + "\n")
    except OSError as exc:
        raise BagCliError(f"cannot write --measure {path}: {exc.strerror}") from exc
    return 0


# ---------------------------------------------------------------------------------------------- extract-frames
def _slug(name: str) -> str:
    return name.strip("/").replace("/", "_") or "image"


def run_extract_frames(args: argparse.Namespace) -> int:
    """``espnet-ros extract-frames``: PNGs of every N-th frame (or N per second) per topic or video."""
    from espnet_ros.bags import find_bags, is_bag
    from espnet_ros.core.frames import is_video_file

    if args.every is not None and args.every < 1:
        raise BagCliError(f"--every {args.every}: expected >= 1")
    if args.fps is not None and not (math.isfinite(args.fps) and args.fps > 0):
        raise BagCliError(f"--fps {args.fps}: expected a rate > 0")
    out = Path(args.out).expanduser()
    inputs: list[Path] = []
    for path in (Path(i).expanduser() for i in args.inputs):
        if not path.exists():
            raise BagCliError(f"{path} does not exist; give a rosbag2 folder, an .mcap / .db3 file or a video")
        if path.is_dir() and not is_bag(path):
            inputs.extend(find_bags([path]))  # a folder of bags
        elif is_bag(path) or is_video_file(path):
            inputs.append(path)
        else:
            raise BagCliError(f"{path} is neither a bag nor a video file")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BagCliError(f"cannot create output folder {out}: {exc.strerror}") from exc
    written: Counter[str] = Counter()
    skipped: dict[str, Counter[str]] = defaultdict(Counter)
    with _progress_bar(args.quiet, unit="frame", desc="extract-frames") as bar:
        for path in inputs:
            if is_bag(path):
                _extract_bag(path, out, args, written, skipped, bar)
            else:
                _extract_video(path, out, args, written, bar)
    if not args.quiet:
        for name, n in written.items():
            print(f"{name}: {n} PNG(s) in {out / _slug(name)}", file=sys.stderr)
        for name, reasons in skipped.items():
            for reason, n in reasons.items():
                print(f"{name}: skipped {n} x {reason}", file=sys.stderr)
    return 0


class _Keep:
    """Every N-th frame, or at most N per second of stamps, per stream."""

    def __init__(self, every: int | None, fps: float | None) -> None:
        self.every, self.period_ns = every or 1, (None if fps is None else int(1e9 / fps))
        self.seen: Counter[str] = Counter()
        self.last: dict[str, int] = {}

    def __call__(self, stream: str, t_ns: int) -> bool:
        n = self.seen[stream]
        self.seen[stream] += 1
        if self.period_ns is None:
            return n % self.every == 0
        last = self.last.get(stream)
        if last is not None and t_ns - last < self.period_ns:
            return False
        self.last[stream] = t_ns
        return True


def _png(out: Path, stream: str, t_ns: int, image_bgr: Any) -> None:
    from espnet_ros.cli import _write_image

    folder = out / _slug(stream)
    folder.mkdir(parents=True, exist_ok=True)
    _write_image(folder / f"{_slug(stream)}_{t_ns // 1_000_000_000}_{t_ns % 1_000_000_000:09d}.png", image_bgr)


def _extract_bag(path: Path, out: Path, args: argparse.Namespace, written: Counter[str],
                 skipped: dict[str, Counter[str]], bar: Any) -> None:
    import cv2
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CompressedImage

    from espnet_ros.bags import IMAGE_TYPES, BagReader, select_image_topics, stamp_ns
    from espnet_ros.core.errors import ImageError
    from espnet_ros.image_codec import decode_compressed, decode_image

    keep = _Keep(args.every, args.fps)
    with BagReader(path) as reader:
        topics = select_image_topics(reader, _csv(args.topics) or None)
        for m in reader.messages(topics):
            try:
                msg = deserialize_message(m.data, IMAGE_TYPES[m.msgtype])
            except (RuntimeError, ValueError, TypeError) as exc:
                skipped[m.topic][f"cannot deserialize {m.msgtype}: {exc}"] += 1
                continue
            t = stamp_ns(msg.header) or m.time_ns
            if not keep(m.topic, t):
                continue
            try:
                decoded = decode_compressed(msg) if isinstance(msg, CompressedImage) else decode_image(msg)
            except ImageError as exc:
                skipped[m.topic][str(exc)] += 1
                continue
            image = decoded.image if decoded.color_order == "bgr" else cv2.cvtColor(decoded.image, cv2.COLOR_RGB2BGR)
            _png(out, m.topic, t, image)
            written[m.topic] += 1
            bar.update(1)


def _extract_video(path: Path, out: Path, args: argparse.Namespace, written: Counter[str], bar: Any) -> None:
    import cv2

    from espnet_ros.core.frames import FrameSource

    capture = cv2.VideoCapture(str(path))
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    capture.release()
    if args.fps is not None and not (math.isfinite(fps) and fps > 0):
        raise BagCliError(f"{path} does not state its frame rate; use --every N instead of --fps")
    keep = _Keep(args.every, args.fps)
    period_ns = 1e9 / fps if math.isfinite(fps) and fps > 0 else 0.0
    for frame in FrameSource([path]):
        t = round(frame.frame_number * period_ns) if period_ns else frame.frame_number
        if keep(path.stem, t):
            _png(out, path.stem, t, frame.image)
            written[path.stem] += 1
            bar.update(1)
