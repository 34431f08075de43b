"""Drivable-area ground outputs as ROS messages, and where the camera pose comes from.

This module is the thin ROS side of :mod:`espnet_ros.core.geometry`. It turns a ``sensor_msgs/CameraInfo`` into a
:class:`~espnet_ros.core.geometry.CameraModel`, gets the camera pose from parameters or from TF behind a small seam,
and wraps the core results in ``nav_msgs/OccupancyGrid`` and ``sensor_msgs/PointCloud2`` (``x, y, z`` float32),
both stamped with the image's stamp and framed in ``grid_frame``. The node-facing API is::

    outputs = GroundOutputs(GridSpec.from_range(20.0, 0.1), grid_frame="base_footprint")   # once per camera
    pose_source = ParameterPoseSource(CameraPose(x, y, z, roll, pitch, yaw))    # optical frame in grid_frame
    #   or TfPoseSource.from_node(node, "base_footprint")                       # needs tf2_ros (ROS install)
    pose = pose_source.pose(image_header.frame_id, image_header.stamp)          # may raise PoseUnavailableError
    grid_msg, cloud_msg = outputs.process(image_header, class_ids, drivable_lut, camera_info_msg_or_model, pose,
                                          want_grid=..., want_points=...,       # None for what is not wanted
                                          unknown_lut=labels.mask_lut([labels.ignore_id]))  # void: unknown

``class_ids`` is the ``(H, W) uint8`` segmentation at any resolution (the camera model is scaled to it) and
``drivable_lut`` the ``(256,)`` table of ``LabelSet.mask_lut`` (``None``: the array is already a drivable mask,
non-zero = drivable); ``unknown_lut`` (optional) marks classes that count neither way, such as void. The first
frame of a new (camera, pose, grid, mask size) builds the per-pixel mapping (about 1.5 s for 2 MP with distortion
on this 2-core CPU); later frames reuse it from a :class:`~espnet_ros.core.geometry.ProjectorCache` (about 2–4 ms
for the grid). So ``grid_frame`` should be rigidly
attached to the camera (``base_footprint``, not ``odom``): a pose that changes every frame rebuilds the mapping
every frame. TF lookups go through a callable ``(target_frame, source_frame, stamp) -> TransformStamped``, so tests
and other transform sources plug in without tf2 (which is not on PyPI).
"""

from __future__ import annotations

import array
import importlib
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose, Transform, TransformStamped
from nav_msgs.msg import MapMetaData, OccupancyGrid
from sensor_msgs.msg import CameraInfo, PointCloud2, PointField
from std_msgs.msg import Header

from espnet_ros.core.errors import EspnetRosError
from espnet_ros.core.geometry import CameraModel, CameraPose, GridSpec, GroundProjector, ProjectorCache

__all__ = [
    "TF2_INSTALL_HINT",
    "GroundOutputs",
    "ParameterPoseSource",
    "PoseSource",
    "PoseSourceError",
    "PoseUnavailableError",
    "TfLookup",
    "TfPoseSource",
    "camera_model_from_camera_info",
    "occupancy_grid_msg",
    "point_cloud_msg",
    "pose_from_transform",
]

TF2_INSTALL_HINT = (
    "tf2_ros is not installed (it is not on PyPI): source a ROS 2 installation that has it "
    "(e.g. `sudo apt install ros-$ROS_DISTRO-tf2-ros`), or take the camera pose from parameters instead"
)
"""How to get tf2_ros, quoted in :class:`PoseSourceError`."""

TfLookup = Callable[[str, str, Time], TransformStamped]
"""``(target_frame, source_frame, stamp) -> TransformStamped``: the transform of ``source_frame`` in
``target_frame``, as ``tf2_ros.Buffer.lookup_transform`` returns it; raises :class:`PoseUnavailableError` when
there is none."""


class PoseSourceError(EspnetRosError):
    """The pose source cannot work at all (tf2_ros missing, transforms in the wrong frames)."""


class PoseUnavailableError(EspnetRosError):
    """No pose for this frame (e.g. TF has no transform for the image's stamp yet); the next frame may have one."""


# --------------------------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------------------------


def camera_model_from_camera_info(msg: CameraInfo, image_size: tuple[int, int] | None = None) -> CameraModel:
    """The camera model of a ``sensor_msgs/CameraInfo`` (``K``, ``D``, distortion model, binning and ROI).

    ``image_size`` (``width, height``), when given, stands in for a CameraInfo whose width or height is zero (some
    drivers leave them unset; ``K`` then refers to the image as published).

    Raises :class:`~espnet_ros.core.geometry.GeometryError` for an uncalibrated (all-zero ``K``) or unsupported
    CameraInfo, naming the fix.
    """
    roi = msg.roi
    width, height = int(msg.width), int(msg.height)
    if (width <= 0 or height <= 0) and image_size is not None:
        width, height = int(image_size[0]), int(image_size[1])
    return CameraModel.from_camera_info_fields(
        width, height, np.asarray(msg.k, np.float64), np.asarray(msg.d, np.float64),
        str(msg.distortion_model), binning_x=int(msg.binning_x), binning_y=int(msg.binning_y),
        roi=(int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height)),
    )


def _output_header(header: Header, grid_frame: str) -> Header:
    return Header(stamp=Time(sec=header.stamp.sec, nanosec=header.stamp.nanosec), frame_id=grid_frame)


def occupancy_grid_msg(header: Header, grid: npt.NDArray[np.int8], spec: GridSpec, grid_frame: str) -> OccupancyGrid:
    """A ``nav_msgs/OccupancyGrid`` of ``grid`` (``spec.shape`` int8) with the stamp of ``header``.

    ``header.frame_id`` becomes ``grid_frame``; ``info.map_load_time`` is the stamp too; the origin is the corner
    of cell ``(0, 0)`` with identity orientation.
    """
    if grid.shape != spec.shape or grid.dtype != np.int8:
        raise ValueError(f"grid must be int8 of shape {spec.shape}, got {grid.dtype} {grid.shape}")
    msg = OccupancyGrid()
    msg.header = _output_header(header, grid_frame)
    info = MapMetaData()
    info.map_load_time = Time(sec=header.stamp.sec, nanosec=header.stamp.nanosec)
    info.resolution = float(spec.resolution)
    info.width = spec.width
    info.height = spec.height
    origin = Pose()
    origin.position.x = float(spec.origin_x)
    origin.position.y = float(spec.origin_y)
    origin.orientation.w = 1.0
    info.origin = origin
    msg.info = info
    msg.data = array.array("b", np.ascontiguousarray(grid).tobytes())  # fast path: no per-element checks
    return msg


_XYZ_FIELDS = tuple(
    PointField(name=name, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, name in enumerate("xyz")
)


def point_cloud_msg(header: Header, points: npt.NDArray[np.float32], grid_frame: str) -> PointCloud2:
    """An unorganised ``sensor_msgs/PointCloud2`` (fields ``x, y, z`` float32, 12-byte points) of ``(N, 3)`` points.

    The stamp is copied from ``header``; the frame is ``grid_frame``.
    """
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {pts.shape}")
    data = np.ascontiguousarray(pts, dtype="<f4")
    msg = PointCloud2()
    msg.header = _output_header(header, grid_frame)
    msg.height = 1
    msg.width = int(data.shape[0])
    msg.fields = [PointField(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count) for f in _XYZ_FIELDS]
    msg.is_bigendian = False
    msg.point_step = 12
    msg.row_step = 12 * msg.width
    msg.data = data.tobytes()
    msg.is_dense = bool(np.isfinite(data).all())
    return msg


# --------------------------------------------------------------------------------------------------------------
# Pose sources
# --------------------------------------------------------------------------------------------------------------


def pose_from_transform(transform: TransformStamped | Transform) -> CameraPose:
    """The camera pose that a transform of the camera's optical frame in the grid frame describes."""
    t = transform.transform if isinstance(transform, TransformStamped) else transform
    return CameraPose.from_translation_quaternion(
        (t.translation.x, t.translation.y, t.translation.z),
        (t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w),
    )


class PoseSource(Protocol):
    """Where the pose of a camera's optical frame in the grid frame comes from."""

    def pose(self, camera_frame: str, stamp: Time) -> CameraPose:
        """The pose of ``camera_frame`` (the image's ``header.frame_id``) at ``stamp``.

        Raises :class:`PoseUnavailableError` when there is none for this frame.
        """
        ...


class ParameterPoseSource:
    """A fixed pose, e.g. from the ``x, y, z, roll, pitch, yaw`` parameters; ignores frame and stamp."""

    def __init__(self, pose: CameraPose) -> None:
        self._pose = pose

    def pose(self, camera_frame: str, stamp: Time) -> CameraPose:
        """The configured pose."""
        return self._pose


def _frame(name: str) -> str:
    return name[1:] if name.startswith("/") else name


class TfPoseSource:
    """The pose of the image's frame in ``grid_frame`` from TF, through a lookup callable (the seam).

    Args:
        grid_frame: the frame of the grid (target frame of the lookup).
        lookup: ``(target_frame, source_frame, stamp) -> TransformStamped``; :meth:`from_node` makes one from a
            ``tf2_ros.Buffer``; tests pass a function that returns a fixed transform.
        use_image_stamp: look the transform up at the image's stamp (right for moving cameras); ``False`` asks for
            the latest transform (stamp zero), which suits a camera fixed to the robot.

    The image's ``header.frame_id`` must be the camera's optical frame (z forward, x right, y down), as REP-103
    asks of camera drivers.
    """

    def __init__(self, grid_frame: str, lookup: TfLookup, *, use_image_stamp: bool = True) -> None:
        if not grid_frame:
            raise PoseSourceError("grid_frame is empty; set it to the frame of the grid, e.g. base_footprint")
        self.grid_frame = _frame(grid_frame)
        self.use_image_stamp = use_image_stamp
        self._lookup = lookup
        self._keepalive: list[Any] = []

    @classmethod
    def from_node(cls, node: Any, grid_frame: str, *, timeout_s: float = 0.0,
                  use_image_stamp: bool = True) -> TfPoseSource:
        """A TF pose source listening on ``node`` (``rclpy.node.Node``) with a ``tf2_ros`` buffer and listener.

        ``timeout_s`` is how long one lookup may wait for a transform (0: do not wait; waiting inside an executor
        callback of a single-threaded executor would block the listener). Raises :class:`PoseSourceError` where
        tf2_ros is not installed.
        """
        try:
            tf2_ros = importlib.import_module("tf2_ros")
        except ImportError as exc:
            raise PoseSourceError(TF2_INSTALL_HINT) from exc
        from rclpy.duration import Duration
        from rclpy.time import Time as RclpyTime

        buffer = tf2_ros.Buffer()
        listener = tf2_ros.TransformListener(buffer, node)
        timeout = Duration(seconds=float(timeout_s))
        transform_exception = tf2_ros.TransformException

        def lookup(target: str, source: str, stamp: Time) -> TransformStamped:
            try:
                result: TransformStamped = buffer.lookup_transform(target, source, RclpyTime.from_msg(stamp),
                                                                   timeout=timeout)
            except transform_exception as exc:
                raise PoseUnavailableError(
                    f"no transform from {source!r} to {target!r} at {stamp.sec}.{stamp.nanosec:09d}: {exc}"
                ) from exc
            return result

        source = cls(grid_frame, lookup, use_image_stamp=use_image_stamp)
        source._keepalive = [buffer, listener]
        return source

    def pose(self, camera_frame: str, stamp: Time) -> CameraPose:
        """Look up ``camera_frame`` in ``grid_frame`` and return it as a :class:`CameraPose`."""
        if not camera_frame:
            raise PoseSourceError(
                "the image has an empty header.frame_id, so TF cannot place the camera; set the driver's frame_id "
                "to the camera's optical frame"
            )
        when = stamp if self.use_image_stamp else Time()
        transform = self._lookup(self.grid_frame, _frame(camera_frame), when)
        parent, child = _frame(transform.header.frame_id), _frame(transform.child_frame_id)
        if parent != self.grid_frame or (child and child != _frame(camera_frame)):
            raise PoseSourceError(
                f"the TF lookup for {camera_frame!r} in {self.grid_frame!r} returned a transform from {child!r} to "
                f"{parent!r}; the lookup callable must return target=grid_frame, source=camera frame"
            )
        return pose_from_transform(transform)


# --------------------------------------------------------------------------------------------------------------
# Per-camera outputs
# --------------------------------------------------------------------------------------------------------------


class GroundOutputs:
    """The drivable grid and obstacle points of one camera, as messages in ``grid_frame``.

    Args:
        spec: grid layout and cell rules (default: 20 m around the grid origin at 0.1 m).
        grid_frame: ``frame_id`` of both outputs; its ``z = 0`` is the ground.
        cache: projector cache to use (default: a private one holding 4 projectors).
    """

    def __init__(self, spec: GridSpec | None = None, grid_frame: str = "base_footprint", *,
                 cache: ProjectorCache | None = None) -> None:
        if not grid_frame:
            raise ValueError("grid_frame is empty; set it to the frame of the grid, e.g. base_footprint")
        self.spec = spec if spec is not None else GridSpec.from_range(20.0, 0.1)
        self.grid_frame = _frame(grid_frame)
        self.cache = cache if cache is not None else ProjectorCache()

    def projector(self, camera: CameraInfo | CameraModel, pose: CameraPose,
                  mask_size: tuple[int, int]) -> GroundProjector:
        """The (cached) projector for masks of ``mask_size`` = ``(width, height)``."""
        model = camera if isinstance(camera, CameraModel) else camera_model_from_camera_info(camera)
        return self.cache.get(model, pose, self.spec, mask_size)

    def process(self, header: Header, class_ids: npt.NDArray[np.uint8], drivable_lut: npt.ArrayLike | None,
                camera: CameraInfo | CameraModel, pose: CameraPose, *, want_grid: bool = True,
                want_points: bool = True,
                unknown_lut: npt.ArrayLike | None = None) -> tuple[OccupancyGrid | None, PointCloud2 | None]:
        """Grid and obstacle-point messages for one segmentation.

        Args:
            header: the image's header (its stamp is copied; the frame becomes ``grid_frame``).
            class_ids: ``(H, W) uint8`` class ids (or a drivable mask when ``drivable_lut`` is ``None``).
            drivable_lut: ``(256,)`` table, non-zero for drivable class ids, or ``None``.
            camera: the CameraInfo message (or model) of the image, at any resolution.
            pose: the optical frame in ``grid_frame``.
            want_grid, want_points: skip what nobody subscribes to.
            unknown_lut: ``(256,)`` table, non-zero for class ids that count as unseen (e.g. void), or ``None``
                (see :meth:`GroundProjector.grid`).

        Returns:
            ``(OccupancyGrid or None, PointCloud2 or None)``.
        """
        if not (want_grid or want_points):
            return None, None
        ids = np.asarray(class_ids)
        if ids.ndim != 2:
            raise ValueError(f"class_ids must be a 2-D (H, W) array, got shape {ids.shape}")
        projector = self.projector(camera, pose, (ids.shape[1], ids.shape[0]))
        grid_msg = (occupancy_grid_msg(header, projector.grid(ids, drivable_lut, unknown_lut), self.spec,
                                       self.grid_frame) if want_grid else None)
        cloud_msg = (point_cloud_msg(header, projector.obstacle_points(ids, drivable_lut, unknown_lut),
                                     self.grid_frame) if want_points else None)
        return grid_msg, cloud_msg
