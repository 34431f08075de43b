"""Per camera: the topic layout, CameraInfo scaling and checks, stamp ages, and the node's bookkeeping.

Pure functions of messages and topic names (:func:`camera_topics`, :func:`scale_camera_info`,
:func:`camera_info_image_size`, :func:`stamp_age_problem`) and the two records the segmentation node keeps per camera
(:class:`CameraState`) and per frame taken by its worker (:class:`Frame`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from rclpy.publisher import Publisher
from rclpy.subscription import Subscription
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from espnet_ros.core.geometry import CameraModel, scale_pixel_coordinate
from espnet_ros.diagnostics import CameraSnapshot, CameraStats
from espnet_ros.ground_msgs import GroundOutputs
from espnet_ros.image_codec import DecodedImage

__all__ = [
    "OUTPUT_NAMESPACE",
    "CameraState",
    "CameraTopics",
    "Frame",
    "camera_info_image_size",
    "camera_topics",
    "scale_camera_info",
    "stamp_age_problem",
    "stamp_age_s",
]

OUTPUT_NAMESPACE = "segmentation"
"""The namespace of a camera's outputs, beside its image topic (``<camera namespace>/segmentation/...``)."""


def stamp_age_s(now_ns: int, header: Header) -> float:
    """Seconds from ``header.stamp`` to ``now_ns`` (negative for a stamp in the future; any stamp, even < 0)."""
    return (now_ns - (int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec))) * 1e-9


def stamp_age_problem(age: float, max_frame_age: float) -> str | None:
    """Why a frame ``age`` seconds old is dropped as stale, or ``None`` to keep it (``max_frame_age`` <= 0: keep).

    A frame is stale when its stamp is more than ``max_frame_age`` seconds in the past, and also when it is more
    than that in the future: the camera's clock and the node's disagree (clock skew, or use_sim_time on one side
    only), so neither the frame's age nor the outputs' stamps can be trusted.
    """
    if max_frame_age <= 0 or -max_frame_age <= age <= max_frame_age:
        return None
    if age > 0:
        return (f"dropped a frame {age:.3f} s old (max_frame_age {max_frame_age} s); check the camera's clock or "
                "use_sim_time, or raise max_frame_age")
    return (f"dropped a frame stamped {-age:.3f} s in the future (more than max_frame_age {max_frame_age} s): the "
            "camera's clock is ahead of the node's; synchronise the clocks (chrony/PTP) or set use_sim_time alike "
            "on both sides")


@dataclass(frozen=True)
class CameraTopics:
    """The fully qualified topics of one camera (after remapping).

    ``image`` is the subscribed image topic (``.../compressed`` for the compressed transport), ``camera_info`` its
    sibling ``camera_info`` and ``prefix`` the namespace of the outputs (``<camera namespace>/segmentation``).
    """

    image: str
    camera_info: str
    prefix: str

    def output(self, name: str) -> str:
        """The topic of output ``name`` (``class_mask``, ``labels`` ...)."""
        return f"{self.prefix}/{name}"


def camera_topics(resolved_image_topic: str, transport: str = "raw") -> CameraTopics:
    """Lay out a camera's topics from its fully qualified image topic (image_transport's convention).

    ``/front/image_raw`` → image ``/front/image_raw`` (or ``/front/image_raw/compressed``), camera_info
    ``/front/camera_info``, outputs under ``/front/segmentation``; ``/image`` → ``/camera_info``, ``/segmentation``.
    """
    if not resolved_image_topic.startswith("/"):
        raise ValueError(f"expected a fully qualified topic, got {resolved_image_topic!r}")
    parent = resolved_image_topic.rsplit("/", 1)[0]
    image = resolved_image_topic + ("/compressed" if transport == "compressed" else "")
    return CameraTopics(image=image, camera_info=f"{parent}/camera_info", prefix=f"{parent}/{OUTPUT_NAMESPACE}")


def scale_camera_info(info: CameraInfo, width: int, height: int, header: Header) -> CameraInfo:
    """Return ``info`` describing an image of ``width`` x ``height`` pixels, with ``header``.

    The source size is the region the camera info describes (its ROI, divided by its binning, else its
    width/height; an all-zero size means "the size of the image", which the caller passes as ``width``/``height``).
    Intrinsics (``K``, ``P``) are scaled with pixel centres aligned
    (:func:`~espnet_ros.core.geometry.scale_pixel_coordinate`), which is how the segmenter resizes masks;
    distortion and rectification are unchanged; binning and ROI of the result are zero.
    """
    out = CameraInfo()
    out.header = header
    out.distortion_model = info.distortion_model
    out.d = list(info.d)
    out.r = list(info.r)
    k = [float(v) for v in info.k]
    p = [float(v) for v in info.p]
    bx = int(info.binning_x) or 1
    by = int(info.binning_y) or 1
    roi = info.roi
    if roi.width > 0 and roi.height > 0:
        x0, y0, src_w, src_h = float(roi.x_offset), float(roi.y_offset), roi.width / bx, roi.height / by
    else:
        x0, y0, src_w, src_h = 0.0, 0.0, float(info.width) / bx, float(info.height) / by
    if src_w <= 0 or src_h <= 0:
        src_w, src_h = float(width), float(height)
    sx, sy = width / src_w, height / src_h

    def fx_(f: float) -> float:
        return f / bx * sx

    def fy_(f: float) -> float:
        return f / by * sy

    def cx_(c: float) -> float:
        return scale_pixel_coordinate((c - x0) / bx, sx)

    def cy_(c: float) -> float:
        return scale_pixel_coordinate((c - y0) / by, sy)

    if any(k):
        k[0], k[1], k[2] = fx_(k[0]), k[1] / bx * sx, cx_(k[2])
        k[4], k[5] = fy_(k[4]), cy_(k[5])
    if any(p):
        p[0], p[1], p[2], p[3] = fx_(p[0]), p[1] / bx * sx, cx_(p[2]), p[3] / bx * sx
        p[5], p[6], p[7] = fy_(p[5]), cy_(p[6]), p[7] / by * sy
    out.k = k
    out.p = p
    out.width = int(width)
    out.height = int(height)
    return out


def camera_info_image_size(info: CameraInfo) -> tuple[int, int] | None:
    """The image size (width, height) a CameraInfo describes: its ROI (else width/height) over its binning.

    ``None`` when the CameraInfo leaves the size unset (zero), which means "the size of the image".
    """
    bx, by = int(info.binning_x) or 1, int(info.binning_y) or 1
    roi = info.roi
    width, height = (int(roi.width), int(roi.height)) if roi.width > 0 and roi.height > 0 else (
        int(info.width), int(info.height))
    if width <= 0 or height <= 0:
        return None
    return width // bx, height // by


@dataclass
class CameraState:
    """Everything the node keeps per camera (slot and info guarded by the node's lock)."""

    index: int
    name: str
    topics: CameraTopics
    stats: CameraStats
    publishers: dict[str, Publisher] = field(default_factory=dict)
    labels_publisher: Publisher | None = None
    label_info_publisher: Publisher | None = None
    image_subscription: Subscription | None = None
    info_subscription: Subscription | None = None
    loss_reported: bool = False
    """Whether the middleware reports frames lost in transport for this camera (its message-lost event)."""
    pending: tuple[Image | CompressedImage, float] | None = None
    """The latest frame and its arrival (monotonic seconds, from the middleware's reception time)."""
    skipped_late: bool = False
    camera_info: CameraInfo | None = None
    info_size_warned: bool = False
    """Whether the node has warned that this camera's CameraInfo describes an image of another size."""
    last_warning: dict[str, float] = field(default_factory=dict)
    published_outputs: Counter[str] = field(default_factory=Counter)
    previous: CameraSnapshot | None = None
    ground: GroundOutputs | None = None
    ground_counts: Counter[str] = field(default_factory=Counter)
    model_cache: tuple[CameraInfo | None, tuple[int, int], CameraModel] | None = None


@dataclass
class Frame:
    """One frame taken by the node's worker: its camera, the message, the outputs wanted, and the decoded image."""

    camera: CameraState
    msg: Image | CompressedImage
    wanted: frozenset[str]
    decoded: DecodedImage | None = None
