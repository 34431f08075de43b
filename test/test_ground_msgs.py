"""Tests of espnet_ros.ground_msgs with real ROS message classes: grid and cloud messages, CameraInfo conversion,
and the TF pose seam (tf2_ros is not on PyPI, so TF is a fixed lookup here) against the parameter pose."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import numpy.typing as npt
import pytest
import rclpy
from builtin_interfaces.msg import Time
from geometry_msgs.msg import TransformStamped
from nav_msgs.msg import OccupancyGrid
from rclpy.context import Context
from sensor_msgs.msg import CameraInfo, PointCloud2, PointField
from std_msgs.msg import Header

from espnet_ros.core.geometry import CameraModel, CameraPose, GeometryError, GridSpec, ProjectorCache
from espnet_ros.core.labels import CITYSCAPES
from espnet_ros.ground_msgs import (
    GroundOutputs,
    ParameterPoseSource,
    PoseSourceError,
    PoseUnavailableError,
    TfPoseSource,
    camera_model_from_camera_info,
    occupancy_grid_msg,
    point_cloud_msg,
    pose_from_transform,
)

W, H = 640, 360
K = (350.0, 0.0, 319.5, 0.0, 350.0, 179.5, 0.0, 0.0, 1.0)
D = (-0.2, 0.05, 0.0003, -0.0002, 0.0)
SPEC = GridSpec.from_range(10.0, 0.1, min_pixels=2)
STAMP = Time(sec=1_700_000_123, nanosec=456_789)


def camera_info(width: int = W, height: int = H) -> CameraInfo:
    msg = CameraInfo()
    msg.header.frame_id = "front_camera_optical_frame"
    msg.header.stamp = STAMP
    msg.width, msg.height = width, height
    scale = width / W
    msg.k = [K[0] * scale, 0.0, (K[2] + 0.5) * scale - 0.5, 0.0, K[4] * scale, (K[5] + 0.5) * scale - 0.5,
             0.0, 0.0, 1.0]
    msg.d = list(D)
    msg.distortion_model = "plumb_bob"
    return msg


def image_header() -> Header:
    return Header(stamp=STAMP, frame_id="front_camera_optical_frame")


def class_ids(width: int = W, height: int = H) -> npt.NDArray[np.uint8]:
    """Sky on top, road below, a car (class 13) in the lower middle, sidewalk (class 1) on the right."""
    ids = np.full((height, width), 10, np.uint8)  # sky
    ids[height // 2:] = 0  # road
    ids[int(height * 0.62):int(height * 0.75), int(width * 0.42):int(width * 0.55)] = 13  # car
    ids[height // 2:, int(width * 0.85):] = 1  # sidewalk
    return ids


LUT = CITYSCAPES.mask_lut([0])
POSE = CameraPose.from_body_rpy(0.25, 0.0, 1.1, pitch=math.radians(9.0))


def _qmul(a: tuple[float, ...], b: tuple[float, ...]) -> tuple[float, float, float, float]:
    """Hamilton product of quaternions given as (x, y, z, w)."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return (aw * bx + ax * bw + ay * bz - az * by, aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw, aw * bw - ax * bx - ay * by - az * bz)


def optical_transform(x: float, y: float, z: float, pitch: float, yaw: float) -> TransformStamped:
    """The transform TF would hold for a camera body at (x, y, z) turned by yaw and pitched down by pitch."""
    q_yaw = (0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2))
    q_pitch = (0.0, math.sin(pitch / 2), 0.0, math.cos(pitch / 2))
    q_optical = (-0.5, 0.5, -0.5, 0.5)  # camera_link -> camera_optical_frame, as in every camera URDF
    q = _qmul(_qmul(q_yaw, q_pitch), q_optical)
    t = TransformStamped()
    t.header.frame_id = "base_footprint"
    t.header.stamp = STAMP
    t.child_frame_id = "front_camera_optical_frame"
    t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = x, y, z
    t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z, t.transform.rotation.w = q
    return t


# ----------------------------------------------------------------------------------------------------------------


def test_camera_model_from_camera_info_message() -> None:
    msg = camera_info()
    model = camera_model_from_camera_info(msg)
    assert model == CameraModel(W, H, K, D, "plumb_bob")
    msg.binning_x = msg.binning_y = 2
    msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, msg.roi.height = 20, 10, 600, 340
    binned = camera_model_from_camera_info(msg)
    assert (binned.width, binned.height) == (300, 170)
    assert binned.k[2] == pytest.approx((319.5 - 20) / 2) and binned.k[0] == pytest.approx(175.0)
    uncalibrated = CameraInfo()
    uncalibrated.width, uncalibrated.height = W, H
    with pytest.raises(GeometryError, match="uncalibrated"):
        camera_model_from_camera_info(uncalibrated)


def test_occupancy_grid_message_layout() -> None:
    grid = np.full(SPEC.shape, -1, np.int8)
    grid[0, 1] = 0
    grid[2, 0] = 100
    grid[5, 7] = 42
    msg = occupancy_grid_msg(image_header(), grid, SPEC, "base_footprint")
    assert isinstance(msg, OccupancyGrid)
    assert msg.header.frame_id == "base_footprint"
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (STAMP.sec, STAMP.nanosec)
    assert (msg.info.map_load_time.sec, msg.info.map_load_time.nanosec) == (STAMP.sec, STAMP.nanosec)
    assert (msg.info.width, msg.info.height) == (SPEC.width, SPEC.height) == (200, 200)
    assert msg.info.resolution == pytest.approx(0.1)
    assert (msg.info.origin.position.x, msg.info.origin.position.y) == pytest.approx((-10.0, -10.0))
    assert msg.info.origin.orientation.w == 1.0
    data = np.asarray(msg.data, np.int8)
    assert data.size == 200 * 200
    # Row-major from cell (0, 0): index = j * width + i, i along +x, j along +y.
    assert data[0 * 200 + 1] == 0 and data[2 * 200 + 0] == 100 and data[5 * 200 + 7] == 42
    np.testing.assert_array_equal(data, grid.reshape(-1))
    with pytest.raises(ValueError, match="int8"):
        occupancy_grid_msg(image_header(), grid.astype(np.int16), SPEC, "base_footprint")


def test_point_cloud_message_layout() -> None:
    points = np.array([[1.0, 2.0, 0.0], [3.5, -1.25, 0.0], [7.0, 0.5, 0.0]], np.float32)
    msg = point_cloud_msg(image_header(), points, "odom")
    assert isinstance(msg, PointCloud2)
    assert msg.header.frame_id == "odom" and msg.header.stamp.sec == STAMP.sec
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, PointField.FLOAT32, 1), ("y", 4, PointField.FLOAT32, 1), ("z", 8, PointField.FLOAT32, 1)]
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, 3, 12, 36)
    assert msg.is_bigendian is False and msg.is_dense is True
    back = np.frombuffer(bytes(msg.data), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4")])
    np.testing.assert_array_equal(np.stack([back["x"], back["y"], back["z"]], -1), points)
    empty = point_cloud_msg(image_header(), np.zeros((0, 3), np.float32), "odom")
    assert (empty.width, empty.row_step, len(empty.data)) == (0, 0, 0)


def test_ground_outputs_process_gives_stamped_grid_and_points() -> None:
    outputs = GroundOutputs(SPEC, "base_footprint")
    grid_msg, cloud_msg = outputs.process(image_header(), class_ids(), LUT, camera_info(), POSE)
    assert grid_msg is not None and cloud_msg is not None
    for msg in (grid_msg, cloud_msg):
        assert msg.header.frame_id == "base_footprint"
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (STAMP.sec, STAMP.nanosec)
    data = np.asarray(grid_msg.data, np.int8).reshape(SPEC.shape)
    gx, gy = SPEC.cell_centers()
    ahead = (gx > 2.0) & (gx < 5.0) & (np.abs(gy) < 0.3)
    assert (data[ahead] >= 0).all()
    assert (data == 0).sum() > 500 and (data == 100).sum() > 100  # road and car/sidewalk both seen
    assert (data[gx < 0] == -1).all()  # nothing behind the camera
    points = np.frombuffer(bytes(cloud_msg.data), "<f4").reshape(-1, 3)
    assert cloud_msg.width == len(points) > 50
    assert (points[:, 2] == 0).all() and (points[:, 0] > 0).all()
    # The same numbers as the core projector.
    projector = ProjectorCache().get(camera_model_from_camera_info(camera_info()), POSE, SPEC, (W, H))
    np.testing.assert_array_equal(data, projector.grid(class_ids(), LUT))
    np.testing.assert_array_equal(points, projector.obstacle_points(class_ids(), LUT))
    # Second frame: the projector is reused; skipping outputs nobody wants.
    grid_only, no_cloud = outputs.process(image_header(), class_ids(), LUT, camera_info(), POSE, want_points=False)
    assert grid_only is not None and no_cloud is None
    assert outputs.cache.misses == 1 and outputs.cache.hits == 1
    assert outputs.process(image_header(), class_ids(), LUT, camera_info(), POSE, want_grid=False,
                           want_points=False) == (None, None)


def test_mask_at_network_size_with_full_size_camera_info() -> None:
    outputs = GroundOutputs(SPEC, "base_footprint")
    small = class_ids(W // 2, H // 2)
    grid_msg, _ = outputs.process(image_header(), small, LUT, camera_info(), POSE, want_points=False)
    scaled = camera_model_from_camera_info(camera_info()).scaled(W // 2, H // 2)
    expected = ProjectorCache().get(scaled, POSE, SPEC).grid(small, LUT)
    assert grid_msg is not None
    np.testing.assert_array_equal(np.asarray(grid_msg.data, np.int8).reshape(SPEC.shape), expected)


# ---------------------------------------------------------------------------------------------------------------- TF


def test_pose_from_transform_matches_the_body_pose() -> None:
    t = optical_transform(0.25, 0.0, 1.1, math.radians(9.0), 0.0)
    np.testing.assert_allclose(pose_from_transform(t).matrix(), POSE.matrix(), atol=1e-12)
    np.testing.assert_allclose(pose_from_transform(t.transform).matrix(), POSE.matrix(), atol=1e-12)


def test_tf_seam_and_parameter_pose_give_the_same_grid() -> None:
    pose = CameraPose.from_body_rpy(0.4, -0.2, 1.3, pitch=math.radians(11.0), yaw=math.radians(-7.0))
    calls: list[tuple[str, str, tuple[int, int]]] = []

    def fixed_lookup(target: str, source: str, stamp: Time) -> TransformStamped:
        calls.append((target, source, (stamp.sec, stamp.nanosec)))
        return optical_transform(0.4, -0.2, 1.3, math.radians(11.0), math.radians(-7.0))

    tf_source = TfPoseSource("base_footprint", fixed_lookup)
    param_source = ParameterPoseSource(pose)
    header = image_header()
    tf_pose = tf_source.pose(header.frame_id, header.stamp)
    assert calls == [("base_footprint", "front_camera_optical_frame", (STAMP.sec, STAMP.nanosec))]
    assert param_source.pose(header.frame_id, header.stamp) is pose
    # Separate outputs (and caches) so that each pose builds its own projector.
    by_tf = GroundOutputs(SPEC, "base_footprint").process(header, class_ids(), LUT, camera_info(), tf_pose)
    by_param = GroundOutputs(SPEC, "base_footprint").process(header, class_ids(), LUT, camera_info(), pose)
    assert by_tf[0] is not None and by_param[0] is not None and by_tf[1] is not None and by_param[1] is not None
    tf_grid = np.asarray(by_tf[0].data, np.int8)
    assert (tf_grid >= 0).sum() > 1000
    np.testing.assert_array_equal(tf_grid, np.asarray(by_param[0].data, np.int8))
    np.testing.assert_allclose(np.frombuffer(bytes(by_tf[1].data), "<f4"),
                               np.frombuffer(bytes(by_param[1].data), "<f4"), atol=1e-5)
    # A different transform gives a different grid: the comparison above can fail.
    moved = pose_from_transform(optical_transform(0.4, -0.2, 1.3, math.radians(13.0), math.radians(-7.0)))
    other = GroundOutputs(SPEC, "base_footprint").process(header, class_ids(), LUT, camera_info(), moved)[0]
    assert other is not None and not np.array_equal(np.asarray(other.data, np.int8), tf_grid)


def test_tf_source_latest_stamp_and_frame_checks() -> None:
    seen: list[tuple[int, int]] = []

    def lookup(target: str, source: str, stamp: Time) -> TransformStamped:
        seen.append((stamp.sec, stamp.nanosec))
        return optical_transform(0.0, 0.0, 1.0, 0.1, 0.0)

    TfPoseSource("/base_footprint", lookup, use_image_stamp=False).pose("/front_camera_optical_frame", STAMP)
    assert seen == [(0, 0)]  # stamp zero: the latest transform
    with pytest.raises(PoseSourceError, match="returned a transform"):
        TfPoseSource("odom", lookup).pose("front_camera_optical_frame", STAMP)
    with pytest.raises(PoseSourceError, match="frame_id"):
        TfPoseSource("base_footprint", lookup).pose("", STAMP)

    def missing(target: str, source: str, stamp: Time) -> TransformStamped:
        raise PoseUnavailableError(f"no transform from {source} to {target}")

    with pytest.raises(PoseUnavailableError):
        TfPoseSource("base_footprint", missing).pose("front_camera_optical_frame", STAMP)


@pytest.mark.skipif(importlib.util.find_spec("tf2_ros") is not None,
                    reason="tf2_ros is installed here; this checks the error where it is missing")
def test_tf_source_from_node_without_tf2_says_how_to_install(ros_context: Context) -> None:
    node = rclpy.create_node("ground_msgs_tf_test", context=ros_context)
    try:
        with pytest.raises(PoseSourceError, match="tf2_ros is not installed") as info:
            TfPoseSource.from_node(node, "base_footprint")
        assert "apt install" in str(info.value) and "parameters" in str(info.value)
    finally:
        node.destroy_node()
