"""The segmentation node's output half: render a segmented frame's outputs and publish them.

:class:`NodeOutputs` is the base class of :class:`~espnet_ros.segmentation_node.SegmentationNode`. It publishes the
image outputs raw and compressed (only those with subscribers), the scaled CameraInfo and the ground outputs (the
camera model from ``camera_intrinsics`` or CameraInfo, the pose from TF or ``camera_mount``), counts every failure
on its camera and never raises one. The attributes declared on the class are set by the node at configure.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt
from rclpy.lifecycle import LifecycleNode
from rclpy.publisher import Publisher
from std_msgs.msg import Header

from espnet_ros.cameras import CameraState, Frame, scale_camera_info, stamp_age_s
from espnet_ros.core.errors import EspnetRosError
from espnet_ros.core.geometry import CameraModel, CameraPose, GeometryError
from espnet_ros.core.render import Renderer, colorize
from espnet_ros.core.segmenter import SegmentationResult
from espnet_ros.ground_msgs import (
    ParameterPoseSource,
    PoseSource,
    PoseSourceError,
    PoseUnavailableError,
    TfPoseSource,
    camera_model_from_camera_info,
)
from espnet_ros.image_codec import DecodedImage, encode_compressed, encode_image
from espnet_ros.parameters import NodeConfig
from espnet_ros.ros_compat import PUBLISH_ERRORS

__all__ = ["COMPRESSED_OUTPUTS", "NodeOutputs"]

COMPRESSED_OUTPUTS: dict[str, Literal["jpeg", "png"]] = {
    "class_mask": "png", "color_mask": "jpeg", "overlay": "jpeg", "drivable_overlay": "jpeg",
}
"""Image outputs also published as ``<output>/compressed`` (sensor_msgs/CompressedImage, image_transport's layout),
with their format: PNG keeps the class ids exact, JPEG (``jpeg_quality``) keeps pictures small."""

WARN_PERIOD_S = 5.0
"""The least time between two warnings of one kind about one camera."""
_TF_TIMEOUT_S = 0.05  # how long the worker waits for a transform at the image's stamp (the executor keeps spinning)


def _rendered(wanted: frozenset[str], name: str) -> bool:
    """Whether image output ``name`` has subscribers raw or compressed (it is rendered once for both)."""
    return name in wanted or f"{name}/compressed" in wanted


class _NoCameraModelError(EspnetRosError):
    """Neither a CameraInfo nor the camera_intrinsics parameter: the ground outputs cannot be made."""


class NodeOutputs(LifecycleNode):
    """Rendering and publishing of one frame's outputs, and the pose source of the ground outputs."""

    _lock: threading.Lock
    _config: NodeConfig
    _renderer: Renderer
    _palette_rgb: npt.NDArray[np.uint8]
    _jpeg_quality: int
    _ground_unknown_lut: npt.NDArray[np.uint8] | None
    _pose_source: PoseSource | None
    _mount_pose: tuple[tuple[float, ...], ParameterPoseSource] | None

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

    def _warn(self, cam: CameraState, kind: str, text: str) -> None:
        """Log a per-frame problem at most once per 5 s per camera and kind."""
        now = time.monotonic()
        if now - cam.last_warning.get(kind, -math.inf) >= WARN_PERIOD_S:
            cam.last_warning[kind] = now
            self.get_logger().warning(f"camera {cam.name}: {text}")

    def _frame_bgr(self, decoded: DecodedImage, size: tuple[int, int]) -> npt.NDArray[np.uint8]:
        """The frame in BGR at ``size`` (width, height) for the overlays."""
        img = decoded.image
        if decoded.color_order == "rgb":
            img = np.asarray(cv2.cvtColor(img, cv2.COLOR_RGB2BGR), np.uint8)
        if (img.shape[1], img.shape[0]) != size:
            img = np.asarray(cv2.resize(img, size, interpolation=cv2.INTER_AREA), np.uint8)
        return img

    def _publish_frame(self, frame: Frame, result: SegmentationResult) -> None:
        """Render and publish the outputs of one segmented frame that have subscribers; count it on its camera."""
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
        latency = stamp_age_s(self.get_clock().now().nanoseconds, header)
        with self._lock:
            if published:
                cam.stats.published += 1
                cam.stats.output_rate.add(time.monotonic())
                cam.stats.latency.add(latency)

    def _publish_image(self, cam: CameraState, name: str, image: npt.NDArray[np.uint8], encoding: str, header: Header,
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

    def _camera_model(self, cam: CameraState, config: NodeConfig, image_size: tuple[int, int]) -> CameraModel:
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

    def _skip_ground(self, cam: CameraState, kind: str, text: str) -> None:
        """Count and report (throttled) a frame whose ground outputs were skipped."""
        with self._lock:
            cam.ground_counts[kind] += 1
            cam.stats.last_problem = text
        self._warn(cam, kind, text)

    def _publish_ground(self, frame: Frame, result: SegmentationResult) -> int:
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

    def _mapping_built(
        self, cam: CameraState, model: CameraModel, pose: CameraPose, mask_size: tuple[int, int]
    ) -> None:
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
            self.get_logger().info(text, throttle_duration_sec=WARN_PERIOD_S)

    def _publish(self, cam: CameraState, name: str, publisher: Publisher, msg: Any) -> int:
        """Publish ``msg``; a failure is counted and reported (throttled), never raised. Returns 1 on success."""
        try:
            publisher.publish(msg)
            with self._lock:
                cam.published_outputs[name] += 1
        except PUBLISH_ERRORS as exc:
            if not self.context.ok():  # shutting down (Ctrl-C): not a publishing problem
                return 0
            with self._lock:
                cam.stats.publish_errors += 1
                cam.stats.last_problem = f"publishing {name} failed: {exc}"
            self._warn(cam, "publish", f"publishing {name} failed: {exc}")
            return 0
        return 1
