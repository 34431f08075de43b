"""The node's ground outputs on real rclpy (a fresh Context per test): drivable_grid and obstacle_points from an image
and its CameraInfo or the camera_intrinsics parameter, the camera_mount pose, the TF seam, and the reasons a grid is
not made (no camera model, no pose, tf2_ros missing); plus the validation of the grid parameters.

Expected grids come from :class:`~espnet_ros.ground_msgs.GroundOutputs` on the class mask the node published, with
the camera model and pose the parameters describe: the node's grid must equal them exactly.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from functools import partial
from typing import Any

import cv2
import node_harness
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import TransformStamped
from nav_msgs.msg import OccupancyGrid
from node_harness import SAMPLES_DIR, WEIGHTS_DIR, Harness
from numpy.typing import NDArray
from rclpy.context import Context
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header

from espnet_ros.core.geometry import CameraModel, CameraPose, GridSpec
from espnet_ros.core.labels import CITYSCAPES
from espnet_ros.ground_msgs import (
    GroundOutputs,
    PoseSource,
    PoseSourceError,
    PoseUnavailableError,
    TfPoseSource,
    camera_model_from_camera_info,
)
from espnet_ros.image_codec import encode_image
from espnet_ros.parameters import PARAMETERS, TUNABLE, ParameterError, apply_updates, config_from_values
from espnet_ros.segmentation_node import GROUND_OUTPUTS, SegmentationNode, main

WIDTH, HEIGHT = 320, 160
GRID = {"preset": "cityscapes-c-p2q3", "grid_resolution": 0.2, "grid_range": 10.0}
SPEC = GridSpec.from_range(10.0, 0.2)
OPTICAL_FRAME = "front_camera_optical_frame"
ROAD_LUT = CITYSCAPES.mask_lut([0])
VOID_LUT = CITYSCAPES.mask_lut([CITYSCAPES.ignore_id])  # grid_void: unknown (the default)


def street() -> NDArray[np.uint8]:
    """A Cityscapes sample frame at 320x160 (BGR): road in the lower middle, the ego car's bonnet at the bottom."""
    img = cv2.imread(str(SAMPLES_DIR / "frankfurt_000000_000294_leftImg8bit.png"), cv2.IMREAD_COLOR)
    assert img is not None
    return np.ascontiguousarray(cv2.resize(img, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA))


def camera_info(header: Header, f: float = 320.0) -> CameraInfo:
    info = CameraInfo()
    info.header = header
    info.width, info.height = WIDTH, HEIGHT
    info.distortion_model = "plumb_bob"
    info.d = [-0.05, 0.01, 0.0, 0.0, 0.0]
    info.k = [f, 0.0, WIDTH / 2 - 0.5, 0.0, f, HEIGHT / 2 - 0.5, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [f, 0.0, WIDTH / 2 - 0.5, 0.0, 0.0, f, HEIGHT / 2 - 0.5, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def mask_of(msg: Image) -> NDArray[np.uint8]:
    return np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)[:, : msg.width]


def grid_of(msg: OccupancyGrid) -> NDArray[np.int8]:
    return np.asarray(msg.data, np.int8).reshape(msg.info.height, msg.info.width)


def points_of(msg: PointCloud2) -> NDArray[np.float32]:
    return np.frombuffer(bytes(msg.data), "<f4").reshape(-1, 3)


def listen_ground(h: Harness, outputs: tuple[str, ...] = GROUND_OUTPUTS) -> dict[str, list[Any]]:
    topics = h.node.camera_topics_of(0)
    types = {"drivable_grid": OccupancyGrid, "obstacle_points": PointCloud2, "class_mask": Image}
    return {o: h.listen(topics.output(o), types[o]) for o in outputs}


def send_frame(h: Harness, info: Callable[[Header], CameraInfo] | None, frame_id: str = OPTICAL_FRAME) -> Header:
    """Publish (CameraInfo and) the street frame with one stamp; return the header once the worker is done with it.

    The CameraInfo and the image travel on different topics, so the image can reach the worker first: then the
    frame is sent again (the node counts it under ``no_camera_model``), as a camera would on its next frame.
    """
    info_pub = h.publisher("/camera_info", CameraInfo)
    for _ in range(5):
        header = h.header(frame_id=frame_id)
        if info is not None:
            assert h.spin_until(lambda: info_pub.get_subscription_count() > 0)
            info_pub.publish(info(header))
            h.spin_until(lambda: False, timeout=0.1)
        before, missing = h.handled(), h.node.ground_counts()["no_camera_model"]
        h.send("/image", encode_image(street(), "bgr8", header))
        done = h.spin_until(lambda: h.handled() > before and h.node.idle())  # noqa: B023 (called in this pass)
        assert done
        if info is None or h.node.ground_counts()["no_camera_model"] == missing:
            return header
    raise AssertionError("the CameraInfo never reached the node")


def expected(mask: NDArray[np.uint8], camera: CameraInfo | CameraModel, pose: CameraPose,
             void_unknown: bool = True) -> tuple[NDArray[np.int8], NDArray[np.float32]]:
    grid, points = GroundOutputs(SPEC, "base_footprint").process(Header(), mask, ROAD_LUT, camera, pose,
                                                                 unknown_lut=VOID_LUT if void_unknown else None)
    assert grid is not None and points is not None
    return grid_of(grid), points_of(points)


def test_image_with_camera_info_gives_stamped_grid_and_points_in_grid_frame(ros_context: Context) -> None:
    h = Harness(ros_context, GRID, subscribe=())
    try:
        got = listen_ground(h, (*GROUND_OUTPUTS, "class_mask"))
        h.wait_connected()
        header = send_frame(h, camera_info)
        assert h.spin_until(lambda: all(len(v) == 1 for v in got.values())), h.node.ground_counts()
        grid_msg, cloud_msg, mask_msg = got["drivable_grid"][0], got["obstacle_points"][0], got["class_mask"][0]
        for msg in (grid_msg, cloud_msg):
            assert msg.header.stamp == header.stamp and msg.header.frame_id == "base_footprint"
        assert mask_msg.header == header  # image outputs keep the camera's frame
        info = grid_msg.info
        assert (info.width, info.height) == (100, 100) and info.resolution == pytest.approx(0.2)
        assert (info.origin.position.x, info.origin.position.y, info.origin.position.z) == (-10.0, -10.0, 0.0)
        assert info.origin.orientation.w == 1.0 and info.map_load_time == header.stamp
        grid = grid_of(grid_msg)
        assert set(np.unique(grid)) <= {-1, *range(101)}
        # The default camera_mount: 1.5 m up at the origin, looking along +x: nothing behind it is seen.
        xs = SPEC.cell_centers()[0]
        assert (grid[xs < 0] == -1).all()
        assert (grid == 0).sum() > 50 and (grid == 100).sum() > 10  # road ahead, something else too
        pose = CameraPose.from_body_rpy(0.0, 0.0, 1.5)
        want_grid, want_points = expected(mask_of(mask_msg), camera_info(header), pose)
        np.testing.assert_array_equal(grid, want_grid)
        points = points_of(cloud_msg)
        np.testing.assert_array_equal(points, want_points)
        assert len(points) > 10 and (points[:, 2] == 0).all() and (points[:, 0] > 0).all()
        assert (np.hypot(points[:, 0], points[:, 1]) <= 10.0 + 1e-4).all()
        assert h.node.ground_counts() == {"no_camera_model": 0, "no_pose": 0, "ground_error": 0,
                                          "mappings_built": 1}

        # camera_mount is tunable: a camera 0.5 m higher and tilted down gives another (rebuilt) grid.
        mount = [0.0, 0.0, 2.0, 0.0, 0.15, 0.0]
        assert h.node.set_parameters([Parameter("camera_mount", value=mount)])[0].successful
        header = send_frame(h, camera_info)
        assert h.spin_until(lambda: all(len(v) == 2 for v in got.values()))
        assert got["drivable_grid"][1].header.stamp == header.stamp
        want_grid, _ = expected(mask_of(got["class_mask"][1]), camera_info(header), CameraPose.from_body_rpy(*mount))
        np.testing.assert_array_equal(grid_of(got["drivable_grid"][1]), want_grid)
        assert not np.array_equal(want_grid, grid)
        assert h.node.ground_counts()["mappings_built"] == 2
    finally:
        h.close()


@pytest.mark.parametrize("grid_void", ["unknown", "obstacle"])
def test_intrinsics_parameter_replaces_camera_info_and_only_subscribed_outputs_are_made(
    ros_context: Context, grid_void: str
) -> None:
    h = Harness(ros_context, {**GRID, "camera_intrinsics": [300.0, 310.0, 150.0, 70.0], "grid_frame": "/base_link",
                              "output_resolution": "network", "grid_void": grid_void}, subscribe=())
    try:
        got = listen_ground(h, ("drivable_grid",))
        h.wait_connected()
        header = send_frame(h, None)
        assert h.spin_until(lambda: len(got["drivable_grid"]) == 1), h.node.ground_counts()
        msg = got["drivable_grid"][0]
        assert msg.header.stamp == header.stamp and msg.header.frame_id == "base_link"  # leading "/" dropped
        grid = grid_of(msg)
        assert (grid >= 0).sum() > 100
        # The mask is at network size (1024x512): the node scales the intrinsics of the 320x160 image to it.
        reference = h.node.segmenter.segment(street()).class_ids
        assert reference.shape == (512, 1024)
        camera = CameraModel.pinhole(WIDTH, HEIGHT, 300.0, 310.0, 150.0, 70.0)
        pose = CameraPose.from_body_rpy(0.0, 0.0, 1.5)
        np.testing.assert_array_equal(grid, expected(reference, camera, pose, grid_void == "unknown")[0])
        # the bonnet is void in this frame: as unknown it leaves cells unseen that void-as-obstacle would occupy
        other = expected(reference, camera, pose, grid_void != "unknown")[0]
        occupied_by_void = (other == 100) & (grid == -1) if grid_void == "unknown" else (grid == 100) & (other == -1)
        assert occupied_by_void.sum() > 20
        # Only the grid had a subscriber: no point cloud, no image output.
        assert h.node.published_outputs() == {"labels": 1, "drivable_grid": 1}
    finally:
        h.close()


def test_without_camera_info_or_intrinsics_no_grid_and_the_reason_is_counted(ros_context: Context) -> None:
    h = Harness(ros_context, GRID, subscribe=())
    try:
        got = listen_ground(h, (*GROUND_OUTPUTS, "class_mask"))
        diagnostics = h.listen("/diagnostics", DiagnosticArray)
        h.wait_connected()
        send_frame(h, None)
        assert h.spin_until(lambda: len(got["class_mask"]) == 1)  # the frame was segmented ...
        assert got["drivable_grid"] == [] and got["obstacle_points"] == []  # ... but has no ground outputs
        assert h.node.ground_counts()["no_camera_model"] == 1
        problem = h.node.stats().last_problem
        assert "/camera_info" in problem and "camera_intrinsics" in problem

        def summary() -> str:
            for msg in reversed(diagnostics):
                for status in msg.status:
                    for kv in status.values:
                        if kv.key == "ground outputs of /image":
                            return str(kv.value)
            return ""

        assert h.spin_until(lambda: "no camera model 1" in summary()), summary()
        # Once a CameraInfo arrives the grid follows.
        header = send_frame(h, camera_info)
        assert h.spin_until(lambda: len(got["drivable_grid"]) == 1 and len(got["obstacle_points"]) == 1)
        assert got["drivable_grid"][0].header.stamp == header.stamp
    finally:
        h.close()


def test_pose_from_the_tf_seam_and_a_missing_transform(ros_context: Context, monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    mount = CameraPose.from_body_rpy(0.3, -0.1, 1.2, pitch=0.1, yaw=0.05)
    calls: list[tuple[str, str, Time]] = []

    def lookup(target: str, source: str, stamp: Time) -> TransformStamped:
        calls.append((target, source, stamp))
        if len(calls) == 1:
            raise PoseUnavailableError(f"no transform from {source} to {target} yet")
        t = TransformStamped()
        t.header.frame_id, t.child_frame_id = target, source
        t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = mount.x, mount.y, mount.z
        qx, qy, qz, qw = mount.quaternion()
        t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z, t.transform.rotation.w = qx, qy, qz, qw
        return t

    source: PoseSource = TfPoseSource("base_footprint", lookup)
    monkeypatch.setattr(node_harness, "SegmentationNode", partial(SegmentationNode, pose_source=source))
    h = Harness(ros_context, GRID, subscribe=())
    try:
        got = listen_ground(h, ("drivable_grid", "class_mask"))
        h.wait_connected()
        first = send_frame(h, camera_info)
        assert h.spin_until(lambda: len(got["class_mask"]) == 1)
        assert got["drivable_grid"] == [] and h.node.ground_counts()["no_pose"] == 1
        assert "no transform" in h.node.stats().last_problem
        second = send_frame(h, camera_info)
        assert h.spin_until(lambda: len(got["drivable_grid"]) == 1)
        assert [(c[0], c[1]) for c in calls] == [("base_footprint", OPTICAL_FRAME)] * 2
        assert [c[2] for c in calls] == [first.stamp, second.stamp]  # looked up at each image's stamp
        msg = got["drivable_grid"][0]
        assert msg.header.stamp == second.stamp and msg.header.frame_id == "base_footprint"
        want, _ = expected(mask_of(got["class_mask"][1]), camera_info(second), mount)
        np.testing.assert_array_equal(grid_of(msg), want)
        # An image without frame_id cannot be placed by TF: counted as a ground error, the node goes on.
        send_frame(h, camera_info, frame_id="")
        assert h.node.ground_counts()["ground_error"] == 1 and "frame_id" in h.node.stats().last_problem
    finally:
        h.close()


@pytest.mark.skipif(importlib.util.find_spec("tf2_ros") is not None,
                    reason="tf2_ros is installed here; this checks the start-up error where it is missing")
def test_tf_pose_source_without_tf2_ros_fails_at_start(ros_context: Context) -> None:
    params = [Parameter("weights_dir", value=str(WEIGHTS_DIR)), Parameter("camera_pose_source", value="tf")]
    with pytest.raises(PoseSourceError) as err:
        SegmentationNode(context=ros_context, parameter_overrides=params)
    text = str(err.value)
    assert "tf2_ros is not installed" in text and "apt install" in text
    assert "camera_pose_source:=parameters" in text


@pytest.mark.skipif(importlib.util.find_spec("tf2_ros") is not None,
                    reason="tf2_ros is installed here; this checks the start-up error where it is missing")
def test_executable_exits_1_with_the_tf2_message(ros_env: int, capfd: pytest.CaptureFixture[str]) -> None:
    rc = main(["--ros-args", "-p", "camera_pose_source:=tf", "-p", f"weights_dir:={WEIGHTS_DIR}"])
    out, err = capfd.readouterr()
    assert rc == 1 and "cannot start" in out + err and "tf2_ros is not installed" in out + err


def test_camera_info_without_size_uses_the_image_size() -> None:
    info = camera_info(Header())
    info.width = info.height = 0
    model = camera_model_from_camera_info(info, (WIDTH, HEIGHT))
    assert (model.width, model.height) == (WIDTH, HEIGHT)
    assert model == camera_model_from_camera_info(camera_info(Header()))


# ---------------------------------------------------------------------------------------------- parameters (pure)


def test_grid_parameters_defaults_and_conventions() -> None:
    c = config_from_values({})
    assert (c.grid_frame, c.grid_resolution, c.grid_range, c.grid_min_pixels) == ("base_footprint", 0.1, 20.0, 3)
    assert c.camera_pose_source == "parameters" and c.camera_intrinsics == () and c.grid_void == "unknown"
    assert c.grid_spec == GridSpec.from_range(20.0, 0.1, min_pixels=3)
    assert (c.grid_spec.width, c.grid_spec.height) == (400, 400)
    # camera_mount is the body frame: the default camera looks along +x, level, 1.5 m above the ground.
    np.testing.assert_allclose(c.camera_pose.rotation_matrix()[:, 2], [1.0, 0.0, 0.0], atol=1e-12)  # optical z
    np.testing.assert_allclose(c.camera_pose.matrix()[:3, 3], [0.0, 0.0, 1.5])
    down = config_from_values({"camera_mount": [0.2, 0.0, 1.0, 0.0, math.radians(30.0), 0.0]}).camera_pose
    assert down.rotation_matrix()[2, 2] == pytest.approx(-0.5)  # pitch > 0 looks down
    assert "camera_mount" in TUNABLE and "grid_resolution" not in TUNABLE
    specs = {p.name: p for p in PARAMETERS}
    assert "pitch > 0 tilts the camera" in specs["camera_mount"].description
    assert all(specs[n].descriptor().read_only for n in ("grid_frame", "grid_range", "camera_intrinsics"))
    new = apply_updates(c, {"camera_mount": [0.0, 0.0, 2.0, 0.0, 0.1, 0.0]})
    assert new.camera_mount == (0.0, 0.0, 2.0, 0.0, 0.1, 0.0)
    with pytest.raises(ParameterError, match=r"z = -1\.0"):
        apply_updates(c, {"camera_mount": [0.0, 0.0, -1.0, 0.0, 0.0, 0.0]})


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"grid_frame": ""}, ["grid_frame", "base_footprint"]),
        ({"grid_resolution": 0.0}, ["grid_resolution", "[0.01, 10.0]"]),
        ({"grid_range": 400.0, "grid_resolution": 0.02}, ["grid_range=400.0", "coarser grid_resolution"]),
        ({"grid_min_pixels": 40}, ["grid_min_pixels=40", "1..32"]),
        ({"camera_pose_source": "gps"}, ["camera_pose_source='gps'", "parameters", "tf"]),
        ({"grid_void": "free"}, ["grid_void='free'", "unknown", "obstacle"]),
        ({"camera_mount": [0.0, 0.0, 1.5]}, ["camera_mount", "[x, y, z, roll, pitch, yaw]"]),
        ({"camera_mount": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]}, ["z = 0.0", "above the ground"]),
        ({"camera_mount": [0.0, 0.0, 1.5, 0.0, 15.0, 0.0]}, ["pitch = 15.0", "radians", "0.2618"]),
        ({"camera_intrinsics": [500.0, 500.0]}, ["camera_intrinsics", "[fx, fy, cx, cy]"]),
        ({"camera_intrinsics": [0.0, 500.0, 320.0, 240.0]}, ["fx and fy", "> 0"]),
        ({"camera_intrinsics": [500.0, math.nan, 320.0, 240.0]}, ["finite"]),
    ],
)
def test_bad_grid_parameters_name_the_value_and_the_fix(values: dict[str, object], words: list[str]) -> None:
    with pytest.raises(ParameterError) as err:
        config_from_values(values)
    for w in words:
        assert w in str(err.value)


def test_grid_parameters_at_start(ros_context: Context) -> None:
    base = [Parameter("weights_dir", value=str(WEIGHTS_DIR)), Parameter("preset", value="camvid")]
    with pytest.raises(ParameterError, match=r"1\.0, not 1"):  # integers are not doubles for rclpy
        SegmentationNode(context=ros_context, parameter_overrides=[
            *base, Parameter("camera_intrinsics", value=[500, 500, 320, 240])])
    node = SegmentationNode(context=ros_context, parameter_overrides=[
        *base, Parameter("camera_intrinsics", value=[500.0, 500.0, 320.0, 240.0])])
    try:
        assert node.config.camera_intrinsics == (500.0, 500.0, 320.0, 240.0)
        assert node.config.camera_mount == (0.0, 0.0, 1.5, 0.0, 0.0, 0.0)
    finally:
        node.destroy_node()
