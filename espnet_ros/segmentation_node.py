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
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from functools import partial
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import OccupancyGrid
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.expand_topic_name import expand_topic_name
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.qos import QoSProfile
from rclpy.timer import Timer
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header, String

from espnet_ros.cameras import (
    OUTPUT_NAMESPACE,
    CameraState,
    CameraTopics,
    Frame,
    camera_info_image_size,
    camera_topics,
    scale_camera_info,
    stamp_age_problem,
    stamp_age_s,
)
from espnet_ros.core.errors import EspnetRosError, ImageError
from espnet_ros.core.memory import release_freed_memory, retain_freed_memory
from espnet_ros.core.modelfile import resolve_preset
from espnet_ros.core.render import Renderer
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
)
from espnet_ros.image_codec import decode_compressed, decode_image
from espnet_ros.label_msgs import label_info_msg, label_info_type, labels_string_msg
from espnet_ros.node_outputs import COMPRESSED_OUTPUTS, WARN_PERIOD_S, NodeOutputs
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
IMAGE_OUTPUTS: tuple[str, ...] = (
    "class_mask", "confidence", "color_mask", "overlay", "drivable_mask", "drivable_overlay",
)
"""Image outputs per camera, each published under ``<camera namespace>/segmentation/``."""
GROUND_OUTPUTS: tuple[str, ...] = ("drivable_grid", "obstacle_points")
"""Ground outputs per camera (OccupancyGrid and PointCloud2 in ``grid_frame``), also under ``.../segmentation/``."""

_WORKER_JOIN_S = 30.0  # how long a deactivation or cleanup waits for the batch in hand
_GROUND_COUNTERS = ("no_camera_model", "no_pose", "ground_error", "mappings_built")

_MESSAGE_INFO = MESSAGE_INFO_CALLBACKS
_EVENTS = EVENTS
_PERIOD_ARRIVALS = 9  # arrivals per camera behind its frame period (median of the last 8 gaps)
_MAX_CALLBACK_DELAY_S = 10.0  # a gap outside [0, 10 s] between reception and callback: the clock stepped, ignore it


class NotConfiguredError(EspnetRosError):
    """The node is unconfigured (lifecycle): it has no Segmenter, cameras or configuration until it is configured."""


class SegmentationNode(NodeOutputs):
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
        self._free_since = -math.inf  # monotonic time the worker last finished a batch
        self._worker: threading.Thread | None = None
        self._serving = threading.Event()  # set once the node is fully set up (or is being destroyed)
        self.max_pending_frames = 0
        """High-water mark of frames waiting in the slots (at most one per camera)."""
        self._segment_times = LatencyWindow()  # seconds per forward pass (guarded by the lock)
        self._segmenter: Segmenter | None = None
        self._cameras: list[CameraState] = []
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

    def _setup_camera(self, index: int, topic: str) -> CameraState:
        resolve = getattr(self, "resolve_topic_name", None)  # rclpy >= Iron applies remapping rules
        resolved = resolve(topic) if resolve is not None else expand_topic_name(
            topic, self.get_name(), self.get_namespace())
        topics = camera_topics(resolved, self._config.image_transport)
        cam = CameraState(index=index, name=resolved, topics=topics, stats=CameraStats(topic=topics.image))
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

    def _subscribe_camera(self, cam: CameraState) -> None:
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

    def _unsubscribe_camera(self, cam: CameraState) -> None:
        """Destroy the camera's subscriptions (deactivate); no callback of theirs runs afterwards."""
        for sub in (cam.image_subscription, cam.info_subscription):
            if sub is not None:
                self.destroy_subscription(sub)
        cam.image_subscription = cam.info_subscription = None

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

    def _camera(self, camera: str | int) -> CameraState:
        if isinstance(camera, int):
            return self._cameras[camera]
        for c in self._cameras:
            if camera in (c.name, c.topics.image):
                return c
        raise KeyError(f"no camera {camera!r}; cameras: {', '.join(self.camera_names)}")

    # ----------------------------------------------------------------------------------------------- callbacks
    def _on_frame(self, cam: CameraState, msg: Image | CompressedImage, info: Mapping[str, Any] | None = None) -> None:
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

    def _on_message_lost(self, cam: CameraState, event: Any) -> None:
        """The middleware's message-lost event (``total_count``: frames lost in transport so far)."""
        with self._lock:
            cam.stats.lost_in_transport = max(cam.stats.lost_in_transport, int(event.total_count))
            first = not self._transport_warned
            self._transport_warned = True
        if first:  # once per node: /diagnostics reports every period
            self.get_logger().warning(f"camera {cam.name}: frames are being lost in transport; {profile_hint()}")

    def _on_camera_info(self, cam: CameraState, msg: CameraInfo) -> None:
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
                    self._free_since = time.monotonic()
                    self._wake.notify_all()  # a deactivation waits for the batch in hand

    def _take_frames(self, now: float) -> list[tuple[CameraState, Image | CompressedImage]]:
        """Empty every slot (lock held): the frames to process; late ones (see :mod:`espnet_ros.scheduling`) dropped."""
        delay = self._config.max_queue_delay
        taken = []
        for c in self._cameras:
            if c.pending is None:
                continue
            msg, arrival = c.pending
            c.pending = None
            period = frame_period(c.stats.input_rate.last(_PERIOD_ARRIVALS))
            busy = arrival < self._free_since  # the worker finished a batch after this frame arrived
            if frame_is_late(now - arrival, delay, period, c.skipped_late, arrived_while_busy=busy):
                c.skipped_late = True
                c.stats.dropped_late += 1
                continue
            c.skipped_late = False
            c.stats.queue_wait.add(now - arrival)
            taken.append((c, msg))
        return taken

    def _wanted(self, cam: CameraState) -> frozenset[str]:
        """Outputs of ``cam`` that have subscribers (one whose count cannot be read is tried, so its error counts)."""
        wanted = set()
        for name, pub in cam.publishers.items():
            try:
                if pub.get_subscription_count() > 0:
                    wanted.add(name)
            except PUBLISH_ERRORS:
                wanted.add(name)
        return frozenset(wanted)

    def _process(self, taken: Sequence[tuple[CameraState, Image | CompressedImage]]) -> None:
        """Decode, segment and publish one batch; a frame's failure costs only that frame (counted on its camera)."""
        config = self._config
        if (config.overlay_alpha, config.drivable_ids) != (self._renderer.alpha, self._renderer.drivable_ids):
            self._renderer = self._make_renderer(config)
        frames: list[Frame] = []
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

    def _prepare(self, cam: CameraState, msg: Image | CompressedImage, config: NodeConfig) -> Frame | None:
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
        return Frame(cam, msg, wanted, decoded)

    def _check_camera_info_size(self, cam: CameraState, width: int, height: int) -> None:
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

    def _drop_if_stale(self, cam: CameraState, msg: Image | CompressedImage, config: NodeConfig, why: str = "") -> bool:
        """Count and report a frame whose stamp is more than ``max_frame_age`` away from now, either way."""
        problem = stamp_age_problem(stamp_age_s(self.get_clock().now().nanoseconds, msg.header), config.max_frame_age)
        if problem is None:
            return False
        with self._lock:
            cam.stats.dropped_stale += 1
        self._warn(cam, "stale", problem + why)
        return True

    def _segment(self, frames: list[Frame]) -> list[tuple[Frame, SegmentationResult | None]]:
        """Segment ``frames`` in one forward pass; if that fails, each alone, so a failure costs only its frame."""
        try:
            return list(zip(frames, self._segment_batch(frames), strict=True))
        except Exception as exc:
            if len(frames) == 1:
                self._internal_error([frames[0].camera], exc)
                return [(frames[0], None)]
        out: list[tuple[Frame, SegmentationResult | None]] = []
        for frame in frames:
            try:
                out.append((frame, self._segment_batch([frame])[0]))
            except Exception as exc:
                self._internal_error([frame.camera], exc)
                out.append((frame, None))
        return out

    def _segment_batch(self, frames: list[Frame]) -> list[SegmentationResult]:
        started = time.perf_counter()
        results = self.segmenter.segment_batch(
            [f.decoded.image for f in frames if f.decoded is not None],
            color_order=[f.decoded.color_order for f in frames if f.decoded is not None],
            confidence=any("confidence" in f.wanted for f in frames),
        )
        with self._lock:
            self._segment_times.add(time.perf_counter() - started)
        return results

    def _internal_error(self, cameras: Sequence[CameraState], exc: BaseException) -> None:
        """Count an unexpected exception (a bug) on ``cameras`` and log it with its traceback (throttled)."""
        text = f"internal error while processing frames: {exc!r}"
        with self._lock:
            for c in cameras:
                c.stats.internal_errors += 1
                c.stats.last_problem = text
        self.get_logger().error(f"{text}\n{traceback.format_exc()}", throttle_duration_sec=WARN_PERIOD_S)

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
        except PUBLISH_ERRORS as exc:
            self.get_logger().warning(f"publishing /diagnostics failed: {exc}", throttle_duration_sec=WARN_PERIOD_S)


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
