"""The ``espnet_segmentation`` ROS 2 node: camera images in, class masks, overlays and drivable area out.

This module owns the node's threading and topic layout. Subscription callbacks only put the message into its
camera's one-frame slot (latest frame wins; a replaced frame is counted as dropped) and wake the worker thread. The
worker takes the latest frame of every camera at once, skips frames that waited for it longer than
``max_queue_delay`` while a newer one is due (:mod:`espnet_ros.scheduling`), drops frames older than
``max_frame_age``, decodes them (malformed ones are counted and reported per camera, never fatal), segments all good
frames in one batched forward pass, renders only the outputs that have subscribers and publishes them with the
input's header. Per camera with image topic ``<ns>/<image>`` (after remapping) the node reads ``<ns>/camera_info``
and publishes under ``<ns>/segmentation/``: ``class_mask`` (mono8 class ids), ``confidence`` (mono8), ``color_mask``
(rgb8), ``overlay`` (bgr8), ``drivable_mask`` (mono8 0/255), ``drivable_overlay`` (bgr8), ``camera_info`` (scaled to
the masks), the ground outputs ``drivable_grid`` (nav_msgs/OccupancyGrid) and ``obstacle_points``
(sensor_msgs/PointCloud2) in ``grid_frame`` (made by :mod:`espnet_ros.ground_msgs` from the class mask, the camera's
latest CameraInfo or the ``camera_intrinsics`` parameter, and the pose from ``camera_mount`` or TF), and latched
``labels`` (std_msgs/String JSON) and ``label_info`` (vision_msgs/LabelInfo, where installed). Every output carries
the image's stamp; image outputs also its frame_id. Health goes to ``/diagnostics`` once a second. Parameters are
declared in :mod:`espnet_ros.parameters`.

Each image output but ``confidence`` and ``drivable_mask`` also has its compressed form as image_transport lays it
out (:data:`COMPRESSED_OUTPUTS`: ``overlay/compressed``, ``drivable_overlay/compressed``, ``color_mask/compressed`` in
JPEG, ``class_mask/compressed`` in PNG); an image is rendered once if its raw or compressed topic has subscribers. The
node is a managed lifecycle node (``docs/lifecycle.md``): configure builds the Segmenter and the publishers, activate
subscribes, deactivate unsubscribes, cleanup releases them; with ``autostart`` (the default) it configures and
activates itself at start.
"""

from __future__ import annotations

import math
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import OccupancyGrid
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.expand_topic_name import expand_topic_name
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.qos import QoSProfile
from rclpy.subscription import Subscription
from rclpy.timer import Timer
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header, String

from espnet_ros.core.errors import EspnetRosError, ImageError
from espnet_ros.core.geometry import CameraModel, CameraPose, GeometryError, scale_pixel_coordinate
from espnet_ros.core.memory import release_freed_memory, retain_freed_memory
from espnet_ros.core.modelfile import resolve_preset
from espnet_ros.core.render import Renderer, colorize
from espnet_ros.core.segmenter import SegmentationResult, Segmenter, validate_image
from espnet_ros.diagnostics import (
    OK,
    CameraSnapshot,
    CameraStats,
    DiagKey,
    LatencyWindow,
    build_diagnostic_array,
    camera_level,
    fmt_ms,
    frames_before_first,
    sequence_gap,
)
from espnet_ros.ground_msgs import (
    GroundOutputs,
    ParameterPoseSource,
    PoseSource,
    PoseSourceError,
    PoseUnavailableError,
    TfPoseSource,
    camera_model_from_camera_info,
)
from espnet_ros.image_codec import DecodedImage, decode_compressed, decode_image, encode_compressed, encode_image
from espnet_ros.label_msgs import label_info_msg, label_info_type, labels_string_msg
from espnet_ros.parameters import (
    NodeConfig,
    ParameterError,
    apply_updates,
    declare_parameters,
    parameter_values,
    parse_frame_sizes,
    read_config,
)
from espnet_ros.qos import LATCHED_QOS, OUTPUT_QOS, parse_qos
from espnet_ros.ros_compat import EVENTS, MESSAGE_INFO_CALLBACKS, PUBLISH_ERRORS
from espnet_ros.ros_logging import RosLogHandler, bridge_logging, unbridge_logging
from espnet_ros.scheduling import frame_is_late, frame_period
from espnet_ros.spinning import CallbackErrors, StopSignals, spin_until_shutdown
from espnet_ros.transport import profile_hint

__all__ = [
    "COMPRESSED_OUTPUTS",
    "GROUND_OUTPUTS",
    "IMAGE_OUTPUTS",
    "NODE_NAME",
    "OUTPUT_NAMESPACE",
    "CameraTopics",
    "NotConfiguredError",
    "SegmentationNode",
    "camera_info_image_size",
    "camera_topics",
    "main",
    "scale_camera_info",
    "stamp_age_problem",
]

NODE_NAME = "espnet_segmentation"
OUTPUT_NAMESPACE = "segmentation"
IMAGE_OUTPUTS: tuple[str, ...] = (
    "class_mask", "confidence", "color_mask", "overlay", "drivable_mask", "drivable_overlay",
)
"""Image outputs per camera, each published under ``<camera namespace>/segmentation/``."""
GROUND_OUTPUTS: tuple[str, ...] = ("drivable_grid", "obstacle_points")
"""Ground outputs per camera (OccupancyGrid and PointCloud2 in ``grid_frame``), also under ``.../segmentation/``."""
COMPRESSED_OUTPUTS: dict[str, Literal["jpeg", "png"]] = {
    "class_mask": "png", "color_mask": "jpeg", "overlay": "jpeg", "drivable_overlay": "jpeg",
}
"""Image outputs also published as ``<output>/compressed`` (sensor_msgs/CompressedImage, image_transport's layout),
with their format: PNG keeps the class ids exact, JPEG (``jpeg_quality``) keeps pictures small."""

_WARN_PERIOD_S = 5.0
_WORKER_JOIN_S = 30.0  # how long a deactivation or cleanup waits for the batch in hand
_TF_TIMEOUT_S = 0.05  # how long the worker waits for a transform at the image's stamp (the executor keeps spinning)
_GROUND_COUNTERS = ("no_camera_model", "no_pose", "ground_error", "mappings_built")

_PUBLISH_ERRORS = PUBLISH_ERRORS
_MESSAGE_INFO = MESSAGE_INFO_CALLBACKS
_EVENTS = EVENTS
_PERIOD_ARRIVALS = 9  # arrivals per camera behind its frame period (median of the last 8 gaps)
_MAX_CALLBACK_DELAY_S = 10.0  # a gap outside [0, 10 s] between reception and callback: the clock stepped, ignore it


def _rendered(wanted: frozenset[str], name: str) -> bool:
    """Whether image output ``name`` has subscribers raw or compressed (it is rendered once for both)."""
    return name in wanted or f"{name}/compressed" in wanted


class NotConfiguredError(EspnetRosError):
    """The node is unconfigured (lifecycle): it has no Segmenter, cameras or configuration until it is configured."""


class _NoCameraModelError(EspnetRosError):
    """Neither a CameraInfo nor the camera_intrinsics parameter: the ground outputs cannot be made."""


def _age_s(now_ns: int, header: Header) -> float:
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
class _Camera:
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
class _Frame:
    camera: _Camera
    msg: Image | CompressedImage
    wanted: frozenset[str]
    decoded: DecodedImage | None = None


class SegmentationNode(LifecycleNode):
    """ESPNet semantic segmentation of one or more cameras (see the module docstring for topics and threading).

    A managed (lifecycle) node, ``docs/lifecycle.md``: *configure* reads and checks the parameters, builds the
    Segmenter (weights, the CPU backend's compile, the ``warmup_sizes`` frames) and creates the publishers and
    diagnostics; *activate* subscribes to the cameras and publishes the latched labels; *deactivate* unsubscribes
    and drops waiting frames; *cleanup* stops the worker thread and releases the Segmenter, the publishers and their
    memory; *shutdown* works from every state. A failed transition logs one error line and ends in the error
    processing state, which releases what was built and returns to *unconfigured*. With ``autostart`` (default)
    the constructor configures and activates the node itself.

    Keyword arguments go to :class:`rclpy.node.Node` (``context=``, ``parameter_overrides=``, ``namespace=`` ...),
    except ``pose_source``: a :class:`~espnet_ros.ground_msgs.PoseSource` that replaces the one
    ``camera_pose_source`` selects (a seam for tests and for other transform sources).

    Raises:
        ParameterError: a parameter value is unusable (with ``autostart`` false only a value of the wrong type,
        which cannot be declared). With ``autostart`` true also WeightsError: weights missing or damaged.
        DeviceError: the device is unusable. PoseSourceError: ``camera_pose_source`` is ``tf`` and tf2_ros is
        missing. (The node is destroyed before the error propagates.)
    """

    def __init__(self, node_name: str = NODE_NAME, *, pose_source: PoseSource | None = None, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._node_name = node_name
        # core log lines ("compiling ...") reach this node's log
        self._log_bridge: RosLogHandler | None = bridge_logging(self.get_logger())
        self._transport_warned = False
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stopping = False
        self._busy = False
        self._worker: threading.Thread | None = None
        self._serving = threading.Event()  # set once the node is fully set up (or is being destroyed)
        self.max_pending_frames = 0
        """High-water mark of frames waiting in the slots (at most one per camera)."""
        self._segment_times = LatencyWindow()  # seconds per forward pass (guarded by the lock)
        self._segmenter: Segmenter | None = None
        self._cameras: list[_Camera] = []
        self._diagnostics_pub: Publisher | None = None
        self._diagnostics_timer: Timer | None = None
        self._pose_injected = pose_source is not None
        self._pose_source = pose_source
        self._mount_pose: tuple[tuple[float, ...], ParameterPoseSource] | None = None
        self._raise_transition_errors = False  # the constructor raises a failed autostart instead of logging it
        self._transition_error: Exception | None = None
        self.callback_errors = CallbackErrors()
        """Exceptions raised by the node's executor callbacks and survived (rclpy's parameter services included)."""
        try:
            declare_parameters(self)
            self.autostart = bool(self.get_parameter("autostart").value)
            """Whether the node configured and activated itself at start (parameter ``autostart``)."""
            self.add_on_set_parameters_callback(self._on_set_parameters)
            if self.autostart:
                self._raise_transition_errors = True
                for trigger in (self.trigger_configure, self.trigger_activate):
                    if trigger() != TransitionCallbackReturn.SUCCESS:
                        raise self._transition_error or EspnetRosError("the node could not start")
                self._raise_transition_errors = False
        except BaseException:
            self.destroy_node()
            raise
        if not self.autostart:
            self.get_logger().info(
                "unconfigured (autostart is false): waiting for a lifecycle manager, e.g. "
                f"`ros2 lifecycle set {self.get_fully_qualified_name()} configure`, then `activate`"
            )

    # ----------------------------------------------------------------------------------------------- lifecycle
    @property
    def lifecycle_state(self) -> str:
        """The lifecycle state's label: ``unconfigured``, ``inactive``, ``active``, ``finalized`` or a transition's."""
        return str(self._state_machine.current_state[1])

    @property
    def segmenter(self) -> Segmenter:
        """The Segmenter built at configure (raises :class:`NotConfiguredError` while the node is unconfigured)."""
        if self._segmenter is None:
            raise NotConfiguredError(
                f"node {self.get_fully_qualified_name()} is {self.lifecycle_state}: it has no Segmenter until it is "
                "configured (ros2 lifecycle set <node> configure)"
            )
        return self._segmenter

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Read and check the parameters, build the Segmenter, create the publishers and the diagnostics."""
        return self._transition("configure", self._configure)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe to every camera's image and camera_info; publish the latched labels."""
        return self._transition("activate", self._activate)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe from the cameras, drop waiting frames and let the batch in hand finish (configuration kept)."""
        return self._transition("deactivate", self._deactivate)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop the worker thread, destroy the publishers and release the Segmenter and its memory."""
        return self._transition("cleanup", self._release)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Deactivate and clean up as far as ``state`` (the state shutdown started from) needs."""
        def shutdown() -> None:
            if state.label == "active":
                self._deactivate()
            self._release()
        return self._transition("shutdown", shutdown)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """After a failed transition: release whatever was built; the node returns to *unconfigured*."""
        try:
            self._release()
        except Exception as exc:  # the node cannot be reused: finalized
            self.get_logger().error(f"releasing the node after a failed transition failed: {exc!r}")
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def _transition(self, name: str, action: Callable[[], None]) -> TransitionCallbackReturn:
        """Run a transition's ``action``; an exception ends it with ERROR (error processing) and one log line."""
        self._transition_error = None
        try:
            action()
        except Exception as exc:
            self._transition_error = exc
            if not self._raise_transition_errors:
                text = str(exc) if isinstance(exc, EspnetRosError) else f"{type(exc).__name__}: {exc}"
                self.get_logger().error(f"{name} failed: {text}")
                self.get_logger().debug(traceback.format_exc())
            return TransitionCallbackReturn.ERROR
        return TransitionCallbackReturn.SUCCESS

    def _configure(self) -> None:
        self._config = read_config(self)
        self._jpeg_quality = int(self.get_parameter("jpeg_quality").value)
        warmup = parse_frame_sizes(str(self.get_parameter("warmup_sizes").value))
        if self._pose_source is None:  # an injected or TF source is kept across cleanup (TF: one listener)
            self._pose_source = self._make_pose_source(self._config)
        self._mount_pose = None
        self._segmenter = self._start_worker(self._node_name, warmup)
        self.labels = self.segmenter.labels
        self._palette_rgb = self.labels.palette_rgb()
        self._renderer = self._make_renderer(self._config)
        # classes that count neither way in the ground outputs (grid_void; preset and grid_void are read-only)
        self._ground_unknown_lut = self.labels.void_lut(self._config.grid_void)
        self._label_info_type = label_info_type()
        self._cameras = [self._setup_camera(i, topic) for i, topic in enumerate(self._config.cameras)]
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._diagnostics_timer = self.create_timer(1.0, self._publish_diagnostics, clock=self._steady)
        self._serving.set()
        self.get_logger().info(
            f"segmenting {len(self._cameras)} camera(s) with {'model' if self._config.model else 'preset'} "
            f"{self.segmenter.preset.name!r} on "
            f"{self.segmenter.device}: {self._config.summary()}, autostart={self.autostart!r}, "
            f"warmup_sizes={warmup!r}, jpeg_quality={self._jpeg_quality!r}"
        )
        for cam in self._cameras:
            self.get_logger().info(f"camera {cam.name}: {cam.topics.image} -> {cam.topics.prefix}/*")

    def _activate(self) -> None:
        for cam in self._cameras:
            self._subscribe_camera(cam)
        self._publish_labels()
        if not self.autostart:
            self.get_logger().info(f"active: segmenting {', '.join(c.topics.image for c in self._cameras)}")

    def _deactivate(self) -> None:
        for cam in self._cameras:
            self._unsubscribe_camera(cam)
        with self._wake:
            dropped = sum(c.pending is not None for c in self._cameras)
            for cam in self._cameras:
                cam.pending = None
            self._wake.wait_for(lambda: not self._busy, timeout=_WORKER_JOIN_S)
        self.get_logger().info(f"inactive: unsubscribed from the cameras, dropped {dropped} waiting frame(s)")

    def _release(self) -> None:
        """Stop the worker, destroy every camera's entities and the diagnostics, drop the Segmenter, free memory."""
        self._stop_worker()
        for cam in self._cameras:
            self._unsubscribe_camera(cam)
            for pub in (*cam.publishers.values(), cam.labels_publisher, cam.label_info_publisher):
                if pub is not None:
                    self.destroy_publisher(pub)
        self._cameras = []
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
            self._diagnostics_timer = None
        if self._diagnostics_pub is not None:
            self.destroy_publisher(self._diagnostics_pub)
            self._diagnostics_pub = None
        had_segmenter = self._segmenter is not None
        self._segmenter = None
        with self._lock:
            self._segment_times = LatencyWindow()
        self._worker = None
        if had_segmenter:
            release_freed_memory()
            self.get_logger().info("unconfigured: released the Segmenter, the worker thread and the publishers")

    def _stop_worker(self) -> None:
        """Stop the worker thread (it finishes the batch in hand) and wait for it."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        self._serving.set()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout=_WORKER_JOIN_S)

    # ----------------------------------------------------------------------------------------------- set-up
    def _start_worker(self, node_name: str, warmup: Sequence[tuple[int, int]] = ()) -> Segmenter:
        """Start the worker thread; it builds the Segmenter (returned here, errors re-raised) and then serves frames.

        The build is the slow part of configure (loading the weights; on the CPU the compiled backend's first-use
        compile, cached afterwards): it is announced before and timed after, and so is one frame of every
        ``warmup`` size (width, height), so that no camera frame waits on first-use work unannounced.

        All of the node's torch work runs on that one thread, set-up included. A second thread that has run a
        parallel torch operation keeps an OpenMP thread team of its own; with more OpenMP threads than cores, GNU
        OpenMP stops spinning at its barriers and puts the threads to sleep at every one of them, which slows every
        forward pass (docs/performance.md, "Thread pools").
        """
        config = self._config
        built: Future[Segmenter] = Future()
        with self._lock:
            self._stopping = False  # a configure after a cleanup starts a new worker
        self._serving.clear()
        log = self.get_logger()
        log.info(
            f"configuring: building the {config.preset!r} segmenter (device {config.device}, backend "
            f"{config.backend}): loading and checking the weights, preparing the backend (on the CPU the compiled "
            "backend compiles the network once per preset, about a minute, and loads it from its cache afterwards)"
        )

        def run() -> None:
            try:
                started = time.perf_counter()
                segmenter = Segmenter(
                    resolve_preset(config.preset, config.model),
                    weights_dir=config.weights_dir or None,
                    weights_file=config.weights_file or None,
                    device=config.device,
                    output_size="input" if config.output_resolution == "camera" else "network",
                    num_threads=config.num_threads or None,
                    backend=config.backend,
                    half=config.gpu_precision == "float16",
                )
                log.info(f"built the segmenter in {time.perf_counter() - started:.1f} s: "
                         f"{segmenter.inference_path} on {segmenter.device}")
                for width, height in warmup:
                    started = time.perf_counter()
                    for confidence in (False, True):  # both forward paths (class ids only; with confidence)
                        segmenter.segment(np.zeros((height, width, 3), np.uint8), confidence=confidence)
                    log.info(f"warmed up {width}x{height} frames in {time.perf_counter() - started:.1f} s")
                segmenter.forward_batch_sizes.clear()  # diagnostics count camera frames only
                built.set_result(segmenter)
            except BaseException as exc:  # handed to on_configure, which reports it
                built.set_exception(exc)
                return
            self._serving.wait()
            if not self._stopping:
                self._work()

        self._worker = threading.Thread(target=run, name=f"{node_name}_worker", daemon=True)
        self._worker.start()
        return built.result()

    @property
    def worker_thread(self) -> threading.Thread | None:
        """The one thread that builds the Segmenter and runs every forward pass."""
        return self._worker

    def _setup_camera(self, index: int, topic: str) -> _Camera:
        resolve = getattr(self, "resolve_topic_name", None)  # rclpy >= Iron applies remapping rules
        resolved = resolve(topic) if resolve is not None else expand_topic_name(
            topic, self.get_name(), self.get_namespace())
        topics = camera_topics(resolved, self._config.image_transport)
        cam = _Camera(index=index, name=resolved, topics=topics, stats=CameraStats(topic=topics.image))
        for name in IMAGE_OUTPUTS:
            cam.publishers[name] = self.create_publisher(Image, topics.output(name), OUTPUT_QOS)
        for name in COMPRESSED_OUTPUTS:
            cam.publishers[f"{name}/compressed"] = self.create_publisher(
                CompressedImage, topics.output(f"{name}/compressed"), OUTPUT_QOS)
        cam.publishers["camera_info"] = self.create_publisher(CameraInfo, topics.output("camera_info"), OUTPUT_QOS)
        cam.publishers["drivable_grid"] = self.create_publisher(OccupancyGrid, topics.output("drivable_grid"),
                                                                OUTPUT_QOS)
        cam.publishers["obstacle_points"] = self.create_publisher(PointCloud2, topics.output("obstacle_points"),
                                                                  OUTPUT_QOS)
        cam.ground = GroundOutputs(self._config.grid_spec, self._config.grid_frame)
        cam.labels_publisher = self.create_publisher(String, topics.output("labels"), LATCHED_QOS)
        if self._label_info_type is not None:
            cam.label_info_publisher = self.create_publisher(
                self._label_info_type, topics.output("label_info"), LATCHED_QOS
            )
        return cam

    def _subscribe_camera(self, cam: _Camera) -> None:
        """Create the camera's image and camera_info subscriptions (activate)."""
        topics = cam.topics
        qos: QoSProfile = parse_qos(self._config.input_qos)
        msg_type = CompressedImage if self._config.image_transport == "compressed" else Image
        callback: Any = (
            (lambda m, i, c=cam: self._on_frame(c, m, i)) if _MESSAGE_INFO
            else (lambda m, c=cam: self._on_frame(c, m))  # rclpy without MessageInfo (Humble): arrival = callback time
        )
        events = _EVENTS.SubscriptionEventCallbacks(message_lost=partial(self._on_message_lost, cam))
        try:
            cam.image_subscription = self.create_subscription(msg_type, topics.image, callback, qos,
                                                              event_callbacks=events)
            cam.loss_reported = True
        except _EVENTS.UnsupportedEventTypeError:  # a middleware without the message-lost event
            cam.image_subscription = self.create_subscription(msg_type, topics.image, callback, qos)
        cam.info_subscription = self.create_subscription(
            CameraInfo, topics.camera_info, partial(self._on_camera_info, cam), qos)

    def _unsubscribe_camera(self, cam: _Camera) -> None:
        """Destroy the camera's subscriptions (deactivate); no callback of theirs runs afterwards."""
        for sub in (cam.image_subscription, cam.info_subscription):
            if sub is not None:
                self.destroy_subscription(sub)
        cam.image_subscription = cam.info_subscription = None

    def _make_pose_source(self, config: NodeConfig) -> PoseSource | None:
        """The TF pose source when ``camera_pose_source`` is tf; ``None`` for parameters (:meth:`_pose_source_for`)."""
        if config.camera_pose_source != "tf":
            return None
        try:
            return TfPoseSource.from_node(self, config.grid_frame, timeout_s=_TF_TIMEOUT_S)
        except PoseSourceError as exc:
            raise PoseSourceError(
                f"parameter camera_pose_source='tf' needs tf2_ros: {exc}; or set camera_pose_source:=parameters and "
                "camera_mount:=[x, y, z, roll, pitch, yaw]"
            ) from None

    def _pose_source_for(self, config: NodeConfig) -> PoseSource:
        """The pose source for this batch: TF (or the injected one), else ``camera_mount`` (tunable) as it is now."""
        if self._pose_source is not None:
            return self._pose_source
        if self._mount_pose is None or self._mount_pose[0] != config.camera_mount:
            self._mount_pose = (config.camera_mount, ParameterPoseSource(config.camera_pose))
        return self._mount_pose[1]

    def _make_renderer(self, config: NodeConfig) -> Renderer:
        return Renderer(
            self.labels, config.drivable_ids, color_order="bgr", alpha=config.overlay_alpha,
            drivable_alpha=config.overlay_alpha,
        )

    def _publish_labels(self) -> None:
        header = Header(stamp=self.get_clock().now().to_msg())
        labels = labels_string_msg(self.labels, self.segmenter.preset.name, self._config.drivable_ids)
        for cam in self._cameras:
            if cam.labels_publisher is not None:
                self._publish(cam, "labels", cam.labels_publisher, labels)
            if cam.label_info_publisher is not None:
                self._publish(cam, "label_info", cam.label_info_publisher, label_info_msg(self.labels, header))

    # ----------------------------------------------------------------------------------------------- public
    @property
    def config(self) -> NodeConfig:
        """The configuration in force (tunables included); raises :class:`NotConfiguredError` before configure."""
        if self._segmenter is None:
            raise NotConfiguredError(
                f"node {self.get_fully_qualified_name()} is {self.lifecycle_state}: it has no configuration until "
                "it is configured (ros2 lifecycle set <node> configure)"
            )
        return self._config

    @property
    def camera_names(self) -> list[str]:
        """Fully qualified image topic of each camera (before ``/compressed``), in parameter order."""
        return [c.name for c in self._cameras]

    def camera_topics_of(self, camera: str | int = 0) -> CameraTopics:
        """The topic layout of a camera, by index or fully qualified image topic."""
        return self._camera(camera).topics

    def stats(self, camera: str | int = 0) -> CameraSnapshot:
        """A snapshot of one camera's counters and rates (by index or fully qualified image topic)."""
        cam = self._camera(camera)
        with self._lock:
            return cam.stats.snapshot(time.monotonic())

    def published_outputs(self, camera: str | int = 0) -> dict[str, int]:
        """How many messages of each output (and ``labels``/``label_info``) a camera has published."""
        cam = self._camera(camera)
        with self._lock:
            return dict(cam.published_outputs)

    def output_publisher(self, camera: str | int, output: str) -> Publisher:
        """The publisher of one output (``class_mask`` ... ``camera_info``, ``drivable_grid``, ``obstacle_points``)."""
        return self._camera(camera).publishers[output]

    def ground_counts(self, camera: str | int = 0) -> dict[str, int]:
        """Ground-output events of a camera: frames without a grid for want of a camera model (``no_camera_model``),
        of a pose (``no_pose``) or for a geometry error (``ground_error``), and ``mappings_built``."""
        cam = self._camera(camera)
        with self._lock:
            return {k: cam.ground_counts[k] for k in _GROUND_COUNTERS}

    def idle(self) -> bool:
        """True when no frame waits and the worker is not handling one (everything taken so far is published)."""
        with self._lock:
            return not self._busy and all(c.pending is None for c in self._cameras)

    def pending_frames(self) -> int:
        """Frames waiting for the worker right now (never more than the number of cameras)."""
        with self._lock:
            return sum(c.pending is not None for c in self._cameras)

    def destroy_node(self) -> None:
        """Stop the worker thread (it finishes the batch in hand), then destroy the node."""
        self._stop_worker()
        if getattr(self, "_log_bridge", None) is not None:
            unbridge_logging(self._log_bridge)
            self._log_bridge = None
        super().destroy_node()

    def _camera(self, camera: str | int) -> _Camera:
        if isinstance(camera, int):
            return self._cameras[camera]
        for c in self._cameras:
            if camera in (c.name, c.topics.image):
                return c
        raise KeyError(f"no camera {camera!r}; cameras: {', '.join(self.camera_names)}")

    # ----------------------------------------------------------------------------------------------- callbacks
    def _on_frame(self, cam: _Camera, msg: Image | CompressedImage, info: Mapping[str, Any] | None = None) -> None:
        now = time.monotonic()
        arrival = now
        received_ns = info.get("received_timestamp", 0) if info is not None else 0
        if isinstance(received_ns, int) and received_ns > 0:
            # The callback can run long after the middleware received the frame (the worker holds the GIL
            # during inference); the reception time (system clock) is what the frame's wait counts from.
            delay = (time.time_ns() - received_ns) * 1e-9
            if 0.0 <= delay <= _MAX_CALLBACK_DELAY_S:
                arrival = now - delay
        sequence = info.get("publication_sequence_number") if info is not None else None
        sub = cam.image_subscription
        if sub is not None and sequence is not None and sub.get_publisher_count() != 1:
            sequence = None  # gaps are per publisher; with several (or none left) only restart the count
        with self._wake:
            cam.stats.missed_before_first += frames_before_first(cam.stats.last_sequence, sequence,
                                                                 cam.stats.received == 0)
            missed, cam.stats.last_sequence = sequence_gap(cam.stats.last_sequence, sequence)
            cam.stats.missed_upstream += missed
            if cam.pending is not None:
                cam.stats.dropped_superseded += 1
            cam.pending = (msg, arrival)
            cam.stats.received += 1
            cam.stats.last_input = now
            cam.stats.input_rate.add(arrival)
            pending = sum(c.pending is not None for c in self._cameras)
            self.max_pending_frames = max(self.max_pending_frames, pending)
            self._wake.notify()

    def _on_message_lost(self, cam: _Camera, event: Any) -> None:
        """The middleware's message-lost event (``total_count``: frames lost in transport so far)."""
        with self._lock:
            cam.stats.lost_in_transport = max(cam.stats.lost_in_transport, int(event.total_count))
            first = not self._transport_warned
            self._transport_warned = True
        if first:  # once per node: /diagnostics reports every period
            self.get_logger().warning(f"camera {cam.name}: frames are being lost in transport; {profile_hint()}")

    def _on_camera_info(self, cam: _Camera, msg: CameraInfo) -> None:
        with self._lock:
            cam.camera_info = msg

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        """Validate runtime updates and apply them (rclpy has already refused read-only and out-of-range values).

        This is the node's only set-parameters callback, so a successful validation is final and the new config
        takes effect here (post-set callbacks do not exist on Humble). The worker reads the config per batch.
        While the node is unconfigured (lifecycle) every update is taken; configure validates them all.
        """
        if self._segmenter is None:
            return SetParametersResult(successful=True)
        old = self._config
        try:
            new = apply_updates(old, parameter_values(parameters))
        except ParameterError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self._config = new
        self.get_logger().info("parameters updated: " + ", ".join(f"{p.name}={p.value!r}" for p in parameters))
        if new.drivable_ids != old.drivable_ids:
            self._publish_labels()
        return SetParametersResult(successful=True)

    # ----------------------------------------------------------------------------------------------- worker
    def _work(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and all(c.pending is None for c in self._cameras):
                    self._wake.wait()
                if self._stopping or not self.context.ok():
                    return
                taken = self._take_frames(time.monotonic())
                if not taken:
                    continue
                self._busy = True
            try:
                self._process(taken)
            except Exception as exc:  # a bug must not kill the worker: count it, log it, go on
                self._internal_error([c for c, _ in taken], exc)
            finally:
                with self._wake:
                    self._busy = False
                    self._wake.notify_all()  # a deactivation waits for the batch in hand

    def _take_frames(self, now: float) -> list[tuple[_Camera, Image | CompressedImage]]:
        """Empty every slot (lock held): the frames to process; late ones (see :mod:`espnet_ros.scheduling`) dropped."""
        delay = self._config.max_queue_delay
        taken = []
        for c in self._cameras:
            if c.pending is None:
                continue
            msg, arrival = c.pending
            c.pending = None
            period = frame_period(c.stats.input_rate.last(_PERIOD_ARRIVALS))
            if frame_is_late(now - arrival, delay, period, c.skipped_late):
                c.skipped_late = True
                c.stats.dropped_late += 1
                continue
            c.skipped_late = False
            c.stats.queue_wait.add(now - arrival)
            taken.append((c, msg))
        return taken

    def _warn(self, cam: _Camera, kind: str, text: str) -> None:
        """Log a per-frame problem at most once per 5 s per camera and kind."""
        now = time.monotonic()
        if now - cam.last_warning.get(kind, -math.inf) >= _WARN_PERIOD_S:
            cam.last_warning[kind] = now
            self.get_logger().warning(f"camera {cam.name}: {text}")

    def _wanted(self, cam: _Camera) -> frozenset[str]:
        """Outputs of ``cam`` that have subscribers (one whose count cannot be read is tried, so its error counts)."""
        wanted = set()
        for name, pub in cam.publishers.items():
            try:
                if pub.get_subscription_count() > 0:
                    wanted.add(name)
            except _PUBLISH_ERRORS:
                wanted.add(name)
        return frozenset(wanted)

    def _process(self, taken: Sequence[tuple[_Camera, Image | CompressedImage]]) -> None:
        """Decode, segment and publish one batch; a frame's failure costs only that frame (counted on its camera)."""
        config = self._config
        if (config.overlay_alpha, config.drivable_ids) != (self._renderer.alpha, self._renderer.drivable_ids):
            self._renderer = self._make_renderer(config)
        frames: list[_Frame] = []
        for cam, msg in taken:
            try:
                frame = self._prepare(cam, msg, config)
            except Exception as exc:  # a bug on one camera's frame must not cost the other cameras theirs
                self._internal_error([cam], exc)
                continue
            if frame is not None:
                frames.append(frame)
        if not frames:
            return
        for frame, result in self._segment(frames):
            if result is None:
                continue
            try:
                with self._lock:
                    frame.camera.stats.processed += 1
                self._publish_frame(frame, result)
            except Exception as exc:
                self._internal_error([frame.camera], exc)

    def _prepare(self, cam: _Camera, msg: Image | CompressedImage, config: NodeConfig) -> _Frame | None:
        """Check the frame's age, decode it and check it again (decoding can be slow); ``None``: not to segment."""
        wanted = self._wanted(cam)
        if not wanted:
            with self._lock:
                cam.stats.skipped_no_subscribers += 1
            return None
        if self._drop_if_stale(cam, msg, config):
            return None
        try:
            decoded = decode_compressed(msg) if isinstance(msg, CompressedImage) else decode_image(msg)
            validate_image(decoded.image)
        except ImageError as exc:
            with self._lock:
                cam.stats.rejected += 1
                cam.stats.last_problem = str(exc)
            self._warn(cam, "malformed", f"rejected a malformed frame: {exc}")
            return None
        if self._drop_if_stale(cam, msg, config, " (it aged while it was decoded)"):
            return None
        self._check_camera_info_size(cam, decoded.image.shape[1], decoded.image.shape[0])
        return _Frame(cam, msg, wanted, decoded)

    def _check_camera_info_size(self, cam: _Camera, width: int, height: int) -> None:
        """Warn once per camera when its CameraInfo describes an image of another size (it is scaled to fit)."""
        with self._lock:
            info = cam.camera_info
            if info is None or cam.info_size_warned:
                return
        described = camera_info_image_size(info)
        if described is None or described == (width, height):
            return
        cam.info_size_warned = True
        self.get_logger().warning(
            f"camera {cam.name}: its CameraInfo on {cam.topics.camera_info} describes {described[0]}x{described[1]} "
            f"images (width/height, ROI and binning) but the images are {width}x{height}; the intrinsics are "
            "stretched to the image, which is right only if the image was resized from the calibrated one. "
            "Publish the CameraInfo of the published image (image_proc resize/crop do). Warned once per camera."
        )

    def _drop_if_stale(self, cam: _Camera, msg: Image | CompressedImage, config: NodeConfig, why: str = "") -> bool:
        """Count and report a frame whose stamp is more than ``max_frame_age`` away from now, either way."""
        problem = stamp_age_problem(_age_s(self.get_clock().now().nanoseconds, msg.header), config.max_frame_age)
        if problem is None:
            return False
        with self._lock:
            cam.stats.dropped_stale += 1
        self._warn(cam, "stale", problem + why)
        return True

    def _segment(self, frames: list[_Frame]) -> list[tuple[_Frame, SegmentationResult | None]]:
        """Segment ``frames`` in one forward pass; if that fails, each alone, so a failure costs only its frame."""
        try:
            return list(zip(frames, self._segment_batch(frames), strict=True))
        except Exception as exc:
            if len(frames) == 1:
                self._internal_error([frames[0].camera], exc)
                return [(frames[0], None)]
        out: list[tuple[_Frame, SegmentationResult | None]] = []
        for frame in frames:
            try:
                out.append((frame, self._segment_batch([frame])[0]))
            except Exception as exc:
                self._internal_error([frame.camera], exc)
                out.append((frame, None))
        return out

    def _segment_batch(self, frames: list[_Frame]) -> list[SegmentationResult]:
        started = time.perf_counter()
        results = self.segmenter.segment_batch(
            [f.decoded.image for f in frames if f.decoded is not None],
            color_order=[f.decoded.color_order for f in frames if f.decoded is not None],
            confidence=any("confidence" in f.wanted for f in frames),
        )
        with self._lock:
            self._segment_times.add(time.perf_counter() - started)
        return results

    def _internal_error(self, cameras: Sequence[_Camera], exc: BaseException) -> None:
        """Count an unexpected exception (a bug) on ``cameras`` and log it with its traceback (throttled)."""
        text = f"internal error while processing frames: {exc!r}"
        with self._lock:
            for c in cameras:
                c.stats.internal_errors += 1
                c.stats.last_problem = text
        self.get_logger().error(f"{text}\n{traceback.format_exc()}", throttle_duration_sec=_WARN_PERIOD_S)

    def _frame_bgr(self, decoded: DecodedImage, size: tuple[int, int]) -> npt.NDArray[np.uint8]:
        """The frame in BGR at ``size`` (width, height) for the overlays."""
        img = decoded.image
        if decoded.color_order == "rgb":
            img = np.asarray(cv2.cvtColor(img, cv2.COLOR_RGB2BGR), np.uint8)
        if (img.shape[1], img.shape[0]) != size:
            img = np.asarray(cv2.resize(img, size, interpolation=cv2.INTER_AREA), np.uint8)
        return img

    def _publish_frame(self, frame: _Frame, result: SegmentationResult) -> None:
        cam, header, wanted = frame.camera, frame.msg.header, frame.wanted
        ids = result.class_ids
        published = 0
        if _rendered(wanted, "class_mask"):
            published += self._publish_image(cam, "class_mask", ids, "mono8", header, wanted)
        if "confidence" in wanted and result.confidence is not None:
            published += self._publish(cam, "confidence", cam.publishers["confidence"],
                                       encode_image(result.confidence, "mono8", header))
        if _rendered(wanted, "color_mask"):
            published += self._publish_image(cam, "color_mask", colorize(ids, self._palette_rgb), "rgb8", header,
                                             wanted)
        drivable = None
        if "drivable_mask" in wanted or _rendered(wanted, "drivable_overlay"):
            drivable = self._renderer.drivable_mask(ids)
        if "drivable_mask" in wanted and drivable is not None:
            published += self._publish(cam, "drivable_mask", cam.publishers["drivable_mask"],
                                       encode_image(drivable, "mono8", header))
        if (_rendered(wanted, "overlay") or _rendered(wanted, "drivable_overlay")) and frame.decoded is not None:
            bgr = self._frame_bgr(frame.decoded, result.output_size)
            if _rendered(wanted, "overlay"):
                published += self._publish_image(cam, "overlay", self._renderer.class_overlay(bgr, ids), "bgr8",
                                                 header, wanted)
            if _rendered(wanted, "drivable_overlay") and drivable is not None:
                img = self._renderer.drivable_overlay(bgr, mask=drivable)
                published += self._publish_image(cam, "drivable_overlay", img, "bgr8", header, wanted)
        if "camera_info" in wanted:
            with self._lock:
                info = cam.camera_info
            if info is not None:
                w, h = result.output_size
                published += self._publish(cam, "camera_info", cam.publishers["camera_info"],
                                           scale_camera_info(info, w, h, header))
        if "drivable_grid" in wanted or "obstacle_points" in wanted:
            published += self._publish_ground(frame, result)
        latency = _age_s(self.get_clock().now().nanoseconds, header)
        with self._lock:
            if published:
                cam.stats.published += 1
                cam.stats.output_rate.add(time.monotonic())
                cam.stats.latency.add(latency)

    def _publish_image(self, cam: _Camera, name: str, image: npt.NDArray[np.uint8], encoding: str, header: Header,
                       wanted: frozenset[str]) -> int:
        """Publish one rendered image raw on ``name`` and/or compressed on ``name/compressed``, as subscribed.

        The compressed form is PNG or JPEG (``jpeg_quality``) as :data:`COMPRESSED_OUTPUTS` says, in BGR channel order
        (image_transport's compressed plugin does the same with rgb8 images). Returns the messages published.
        """
        published = 0
        if name in wanted:
            published += self._publish(cam, name, cam.publishers[name], encode_image(image, encoding, header))
        compressed = f"{name}/compressed"
        if compressed in wanted:
            pixels = np.asarray(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), np.uint8) if encoding == "rgb8" else image
            msg = encode_compressed(pixels, COMPRESSED_OUTPUTS[name], header, quality=self._jpeg_quality)
            published += self._publish(cam, compressed, cam.publishers[compressed], msg)
        return published

    # ----------------------------------------------------------------------------------------------- ground outputs
    def _camera_model(self, cam: _Camera, config: NodeConfig, image_size: tuple[int, int]) -> CameraModel:
        """The camera model of the input image: ``camera_intrinsics`` if set, else the latest CameraInfo (cached)."""
        with self._lock:
            info = None if config.camera_intrinsics else cam.camera_info
            cached = cam.model_cache
        if cached is not None and cached[0] is info and cached[1] == image_size:
            return cached[2]
        if config.camera_intrinsics:
            fx, fy, cx, cy = config.camera_intrinsics
            model = CameraModel.pinhole(image_size[0], image_size[1], fx, fy, cx, cy)
        elif info is None:
            raise _NoCameraModelError(
                f"no drivable_grid/obstacle_points: no CameraInfo received on {cam.topics.camera_info} and the "
                "camera_intrinsics parameter is empty; publish the camera's CameraInfo there (or remap it), or set "
                "camera_intrinsics:=[fx, fy, cx, cy]"
            )
        else:
            model = camera_model_from_camera_info(info, image_size)
        with self._lock:
            cam.model_cache = (info, image_size, model)
        return model

    def _skip_ground(self, cam: _Camera, kind: str, text: str) -> None:
        with self._lock:
            cam.ground_counts[kind] += 1
            cam.stats.last_problem = text
        self._warn(cam, kind, text)

    def _publish_ground(self, frame: _Frame, result: SegmentationResult) -> int:
        """Publish the wanted ground outputs of one frame; a missing camera model or pose skips them (counted)."""
        cam, header, config = frame.camera, frame.msg.header, self._config
        if cam.ground is None or frame.decoded is None:
            return 0
        want_grid, want_points = "drivable_grid" in frame.wanted, "obstacle_points" in frame.wanted
        image = frame.decoded.image
        try:
            model = self._camera_model(cam, config, (image.shape[1], image.shape[0]))
            pose = self._pose_source_for(config).pose(header.frame_id, header.stamp)
            builds = cam.ground.cache.misses
            grid_msg, cloud_msg = cam.ground.process(header, result.class_ids, self._renderer.mask_lut, model, pose,
                                                     want_grid=want_grid, want_points=want_points,
                                                     unknown_lut=self._ground_unknown_lut)
        except _NoCameraModelError as exc:
            self._skip_ground(cam, "no_camera_model", str(exc))
            return 0
        except PoseUnavailableError as exc:
            self._skip_ground(cam, "no_pose", f"no drivable_grid/obstacle_points for this frame: {exc}")
            return 0
        except (PoseSourceError, GeometryError) as exc:
            self._skip_ground(cam, "ground_error", f"no drivable_grid/obstacle_points: {exc}")
            return 0
        if cam.ground.cache.misses > builds:
            self._mapping_built(cam, model, pose, result.output_size)
        published = 0
        if grid_msg is not None:
            published += self._publish(cam, "drivable_grid", cam.publishers["drivable_grid"], grid_msg)
        if cloud_msg is not None:
            published += self._publish(cam, "obstacle_points", cam.publishers["obstacle_points"], cloud_msg)
        return published

    def _mapping_built(self, cam: _Camera, model: CameraModel, pose: CameraPose, mask_size: tuple[int, int]) -> None:
        """Log a (re)built ground mapping: once at info, rebuilds throttled, and say why frequent rebuilds hurt."""
        assert cam.ground is not None
        seconds = cam.ground.projector(model, pose, mask_size).build_seconds  # a cache hit now
        with self._lock:
            cam.ground_counts["mappings_built"] += 1
            builds = cam.ground_counts["mappings_built"]
        text = (f"camera {cam.name}: built the ground mapping for {mask_size[0]}x{mask_size[1]} masks in "
                f"{seconds:.2f} s (once per camera model, pose, grid and mask size; later frames reuse it)")
        if builds == 1:
            self.get_logger().info(text)
        elif builds > 5 and self._pose_source is not None:
            self._warn(cam, "ground_rebuild", (
                f"the ground mapping was rebuilt {builds} times ({seconds:.2f} s each): the pose of the image's "
                f"frame in grid_frame {self._config.grid_frame!r} keeps changing; use a grid_frame rigidly attached "
                "to the camera (e.g. base_footprint, not odom)"))
        else:
            self.get_logger().info(text, throttle_duration_sec=_WARN_PERIOD_S)

    def _publish(self, cam: _Camera, name: str, publisher: Publisher, msg: Any) -> int:
        """Publish ``msg``; a failure is counted and reported (throttled), never raised. Returns 1 on success."""
        try:
            publisher.publish(msg)
            with self._lock:
                cam.published_outputs[name] += 1
        except _PUBLISH_ERRORS as exc:
            if not self.context.ok():  # shutting down (Ctrl-C): not a publishing problem
                return 0
            with self._lock:
                cam.stats.publish_errors += 1
                cam.stats.last_problem = f"publishing {name} failed: {exc}"
            self._warn(cam, "publish", f"publishing {name} failed: {exc}")
            return 0
        return 1

    # ----------------------------------------------------------------------------------------------- diagnostics
    def _publish_diagnostics(self) -> None:
        publisher = self._diagnostics_pub
        if publisher is None or self._segmenter is None:  # cleaned up while the timer was due
            return
        now = time.monotonic()
        config = self._config
        rows = []
        state = self.lifecycle_state
        with self._lock:
            for cam in self._cameras:
                snap = cam.stats.snapshot(now)
                level, message = camera_level(snap, cam.previous, config.stall_timeout)
                if state != "active":  # not subscribed: no frames is expected, not a stall
                    level, message = OK, f"{state} (lifecycle): not subscribed to the camera"
                cam.previous = snap
                rows.append((snap, level, message))
            segment_p50, segment_p95 = self._segment_times.p50(), self._segment_times.p95()
        sizes = dict(sorted(self.segmenter.forward_batch_sizes.items()))
        summary = {
            DiagKey.LIFECYCLE_STATE: state,
            "device": str(self.segmenter.device),
            "inference": self.segmenter.inference_path,
            "preset": self.segmenter.preset.name,
            "output resolution": config.output_resolution,
            "cameras": len(self._cameras),
            "forward passes by batch size": ", ".join(f"{k}: {v}" for k, v in sizes.items()) or "none",
            DiagKey.SEGMENTATION_P50: fmt_ms(segment_p50),
            DiagKey.SEGMENTATION_P95: fmt_ms(segment_p95),
            "max frame age (s)": config.max_frame_age,
            "max queue delay (s)": config.max_queue_delay,
            "input qos": config.input_qos,
            "image transport": config.image_transport,
            "transport loss reported": "yes" if all(c.loss_reported for c in self._cameras)
            else "no (the middleware has no message-lost event)",
            "grid frame": config.grid_frame,
            "camera pose source": "injected" if self._pose_injected else config.camera_pose_source,
            DiagKey.CALLBACK_ERRORS: self.callback_errors.count,
            DiagKey.LAST_CALLBACK_ERROR: self.callback_errors.last or "none",
        }
        for cam in self._cameras:
            counts = self.ground_counts(cam.index)
            with self._lock:
                grids, points = cam.published_outputs["drivable_grid"], cam.published_outputs["obstacle_points"]
            summary[f"ground outputs of {cam.name}"] = (
                f"grids {grids}, point clouds {points}; skipped: no camera model {counts['no_camera_model']}, "
                f"no pose {counts['no_pose']}, errors {counts['ground_error']}; mappings built "
                f"{counts['mappings_built']}"
            )
        msg = build_diagnostic_array(self.get_clock().now().to_msg(), self.get_fully_qualified_name(), rows, summary)
        try:
            publisher.publish(msg)
        except _PUBLISH_ERRORS as exc:
            self.get_logger().warning(f"publishing /diagnostics failed: {exc}", throttle_duration_sec=_WARN_PERIOD_S)


def main(args: Sequence[str] | None = None) -> int:
    """Run the node until Ctrl-C or shutdown; exit 1 with one clear message when its configuration is unusable."""
    heap_tuned = retain_freed_memory()  # before any thread starts: see espnet_ros.core.memory
    signals = StopSignals()  # before rclpy.init: see espnet_ros.spinning
    rclpy.init(args=None if args is None else list(args))
    node: SegmentationNode | None = None
    try:
        node = SegmentationNode()
        node.get_logger().info("heap: freed memory kept for reuse" if heap_tuned else
                               "heap: C library defaults (ESPNET_ROS_MALLOC_TUNING=0 or no glibc mallopt)")
        spin_until_shutdown(node, errors=node.callback_errors)
    except KeyboardInterrupt:  # Ctrl-C while starting
        pass
    except EspnetRosError as exc:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {exc}")
        return 1
    finally:
        signals.cleaning_up()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        signals.exiting()
    return 0


if __name__ == "__main__":
    sys.exit(main())
