"""What another participant on the ROS graph can send never stops, stalls or takes over the node.

Real rclpy nodes in a fresh Context: a second node sends type-99 parameter requests, decompression bombs, negative
and future stamps, CameraInfo of the wrong size or with absurd distortion, and frames before discovery completes;
the node counts each, and the other camera's frames are all answered.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from bombs import jpeg_bomb, png_bomb
from builtin_interfaces.msg import Time as TimeMsg
from nav_msgs.msg import OccupancyGrid
from node_harness import RELIABLE, Harness, textured
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterValue
from rcl_interfaces.srv import SetParameters, SetParametersAtomically
from rclpy.context import Context
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from espnet_ros.image_codec import encode_compressed, encode_image
from espnet_ros.recorder import SegmentationRecorder
from espnet_ros.spinning import CallbackErrors, spin_until_shutdown

GOOD = textured(90, 120)


def _bad_parameter_requests() -> list[tuple[type, object]]:
    bad = ParameterMsg(name="overlay_alpha", value=ParameterValue(type=99))
    return [(SetParameters, SetParameters.Request(parameters=[bad])),
            (SetParametersAtomically, SetParametersAtomically.Request(parameters=[bad]))]


def _send_bad_requests(h: Harness, node_name: str, errors: CallbackErrors) -> None:
    for service_type, request in _bad_parameter_requests():
        suffix = "set_parameters" if service_type is SetParameters else "set_parameters_atomically"
        client = h.helper.create_client(service_type, f"{node_name}/{suffix}")
        assert h.spin_until(lambda client=client: client.service_is_ready())
        before = errors.count
        client.call_async(request)  # rclpy raises inside the service: no answer comes
        assert h.spin_until(lambda before=before: errors.count > before), suffix
    assert errors.count == 2 and "99 is not a valid" in errors.last


def test_type_99_parameter_requests_neither_stop_the_node_nor_its_frames(ros_context: Context) -> None:
    h = Harness(ros_context, {"preset": "camvid"}, subscribe=("class_mask",))
    h.executor.remove_node(h.node)
    stop = threading.Event()
    spinner = threading.Thread(target=spin_until_shutdown, args=(h.node,),
                               kwargs={"until": stop.is_set, "errors": h.node.callback_errors})
    spinner.start()
    try:
        _send_bad_requests(h, h.node.get_fully_qualified_name(), h.node.callback_errors)
        assert spinner.is_alive()
        h.wait_connected(0)
        header = h.header()
        h.send(h.node.camera_topics_of(0).image, encode_image(GOOD, "bgr8", header))
        assert h.spin_until(lambda: len(h.on(0, "class_mask")) == 1)
        assert h.on(0, "class_mask")[0].header == header
    finally:
        stop.set()
        spinner.join(timeout=30)
        h.close()
    assert not spinner.is_alive()


@pytest.mark.parametrize("executable", ["segmentation_recorder", "image_player"])
def test_type_99_parameter_requests_do_not_stop_the_other_executables(ros_context: Context, tmp_path: Path,
                                                                     executable: str) -> None:
    import cv2
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from espnet_ros.image_player import ImagePlayer

    node: Node
    if executable == "image_player":
        cv2.imwrite(str(tmp_path / "frame.png"), GOOD)
        node = ImagePlayer(context=ros_context, parameter_overrides=[
            Parameter("paths", Parameter.Type.STRING_ARRAY, [str(tmp_path / "frame.png")]),
            Parameter("loop", value=True), Parameter("rate", value=5.0)])
    else:
        node = SegmentationRecorder(tmp_path, ["class_mask"], context=ros_context)
    errors = CallbackErrors()
    stop = threading.Event()
    spinner = threading.Thread(target=spin_until_shutdown, args=(node,),
                               kwargs={"until": stop.is_set, "errors": errors})
    spinner.start()
    helper = Node("attacker", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(helper)
    try:
        for service_type, request in _bad_parameter_requests():
            suffix = "set_parameters" if service_type is SetParameters else "set_parameters_atomically"
            client = helper.create_client(service_type, f"{node.get_fully_qualified_name()}/{suffix}")
            before = errors.count
            while not client.service_is_ready():
                executor.spin_once(timeout_sec=0.05)
            client.call_async(request)
            for _ in range(1200):
                if errors.count > before:
                    break
                executor.spin_once(timeout_sec=0.05)
            assert errors.count == before + 1
        assert spinner.is_alive()
    finally:
        stop.set()
        spinner.join(timeout=30)
        executor.shutdown()
        helper.destroy_node()
        node.destroy_node()


def _peak_rss_reset() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(key)


def test_decompression_bombs_cost_no_memory_and_not_the_other_cameras_frames(ros_context: Context) -> None:
    h = Harness(ros_context, {"preset": "camvid", "image_transport": "compressed", "cameras": ["a/image", "b/image"]},
                subscribe=("class_mask",))
    try:
        a, b = h.node.camera_topics_of(0), h.node.camera_topics_of(1)
        h.wait_connected(0)
        h.wait_connected(1)
        good = encode_compressed(GOOD, "jpeg")
        bombs = [CompressedImage(format="jpeg", data=jpeg_bomb()), CompressedImage(format="png", data=png_bomb())]
        sent_b = 0
        for cam, topics in ((0, a), (1, b)):  # warm up both cameras before measuring
            good.header = h.header()
            h.send(topics.image, good)
            assert h.spin_until(lambda cam=cam: len(h.on(cam, "class_mask")) == 1)
        sent_b = 1
        _peak_rss_reset()
        rss_before = _status_kb("VmRSS")
        for n, bomb in enumerate(bombs, start=1):
            bomb.header = h.header("cam_a")
            h.send(a.image, bomb)
            good.header = h.header("cam_b")
            h.send(b.image, good)
            sent_b += 1
            assert h.spin_until(lambda n=n, m=sent_b: h.node.stats(0).rejected == n and len(h.on(1, "class_mask")) == m)
        grown_mb = (_status_kb("VmHWM") - rss_before) / 1024
        assert grown_mb < 50, f"the bombs took the peak RSS {grown_mb:.0f} MB above where it was"
        sa, sb = h.node.stats(0), h.node.stats(1)
        assert sa.rejected == 2 and "declares 30000x30000" in sa.last_problem
        assert sb.processed == sent_b and sb.rejected == 0 and sa.internal_errors == sb.internal_errors == 0
    finally:
        h.close()


def test_a_frame_that_ages_while_it_is_decoded_is_dropped_not_answered_late(
    ros_context: Context, capfd: pytest.CaptureFixture[str]
) -> None:
    from rosgraph_msgs.msg import Clock

    # Simulated time stands still until the test moves it: the frame is fresh when the worker takes it, and the
    # clock jumps 100 s while the worker decodes a slow (legal: 8192x8192) JPEG.
    h = Harness(ros_context, {"preset": "camvid", "image_transport": "compressed", "use_sim_time": True,
                              "max_frame_age": 1.0}, subscribe=("class_mask",))
    try:
        clock = h.helper.create_publisher(Clock, "/clock", 10)
        h.wait_connected(0)
        assert h.spin_until(lambda: clock.get_subscription_count() > 0)
        slow = CompressedImage(header=_stamped(0), format="jpeg", data=jpeg_bomb(8192, 8192))
        h.send(h.node.camera_topics_of(0).image, slow)
        assert h.spin_until(lambda: (h.node.pending_frames() == 0 and not h.node.idle()) or h.handled(0) > 0)
        clock.publish(Clock(clock=TimeMsg(sec=100)))
        assert h.spin_until(lambda: h.handled(0) == 1)
        s = h.node.stats(0)
        assert s.dropped_stale == 1 and s.processed == 0 and h.on(0, "class_mask") == []
        err: list[str] = []  # the warning is logged just after the counter is updated: wait for it
        assert h.spin_until(lambda: bool(err.append(capfd.readouterr().err))
                            or "(it aged while it was decoded)" in "".join(err)), "".join(err)
    finally:
        h.close()


def _stamped(sec: int, nanosec: int = 0) -> Header:
    return Header(stamp=TimeMsg(sec=sec, nanosec=nanosec), frame_id="cam_a")


@pytest.mark.parametrize("max_frame_age", [0.0, 30.0])
def test_a_negative_stamp_on_one_camera_costs_no_other_cameras_frame(ros_context: Context,
                                                                     max_frame_age: float) -> None:
    h = Harness(ros_context, {"preset": "camvid", "cameras": ["a/image", "b/image"], "max_frame_age": max_frame_age},
                subscribe=("class_mask",))
    try:
        a, b = h.node.camera_topics_of(0), h.node.camera_topics_of(1)
        h.wait_connected(0)
        h.wait_connected(1)
        for n in range(1, 4):
            h.send(a.image, encode_image(GOOD, "bgr8", _stamped(-1, 5)))  # both in one batch where they meet
            h.send(b.image, encode_image(GOOD, "bgr8", h.header("cam_b")))
            assert h.spin_until(lambda n=n: len(h.on(1, "class_mask")) == n and h.handled(0) == n)
        sa, sb = h.node.stats(0), h.node.stats(1)
        assert sa.internal_errors == sb.internal_errors == 0
        assert sb.processed == 3
        if max_frame_age > 0:  # 1969 is stale
            assert sa.dropped_stale == 3 and sa.processed == 0
        else:  # no age check: answered, with its own stamp
            assert sa.processed == 3 and h.on(0, "class_mask")[-1].header.stamp == _stamped(-1, 5).stamp
    finally:
        h.close()


def test_a_frame_stamped_in_the_future_beyond_max_frame_age_is_dropped_as_stale(ros_context: Context) -> None:
    h = Harness(ros_context, {"preset": "camvid", "max_frame_age": 2.0}, subscribe=("class_mask",))
    try:
        topic = h.node.camera_topics_of(0).image
        h.wait_connected(0)
        h.send(topic, encode_image(GOOD, "bgr8", h.header(age=-60.0)))  # a minute ahead: clocks disagree
        assert h.spin_until(lambda: h.node.stats(0).dropped_stale == 1)
        h.send(topic, encode_image(GOOD, "bgr8", h.header(age=-0.5)))  # slightly ahead: within the tolerance
        assert h.spin_until(lambda: len(h.on(0, "class_mask")) == 1)
        assert "in the future" in h.node.stats(0).last_problem or h.node.stats(0).dropped_stale == 1
    finally:
        h.close()


def _camera_info(width: int, height: int, d: list[float]) -> CameraInfo:
    return CameraInfo(header=Header(frame_id="cam"), width=width, height=height, distortion_model="plumb_bob",
                      k=[100.0, 0.0, width / 2, 0.0, 100.0, height / 2, 0.0, 0.0, 1.0], d=d)


def test_camera_info_of_another_size_is_warned_once_and_absurd_distortion_is_one_ground_error(
    ros_context: Context, capfd: pytest.CaptureFixture[str]
) -> None:
    h = Harness(ros_context, {"preset": "camvid"}, subscribe=("class_mask",))
    try:
        topics = h.node.camera_topics_of(0)
        grids = h.listen(topics.output("drivable_grid"), OccupancyGrid)
        h.wait_connected(0)
        info_pub = h.helper.create_publisher(CameraInfo, topics.camera_info, RELIABLE)
        assert h.spin_until(lambda: info_pub.get_subscription_count() > 0)

        def frame_with(info: CameraInfo, n: int) -> None:
            info_pub.publish(info)
            h.spin_until(lambda: False, timeout=0.3)  # the CameraInfo first
            h.send(topics.image, encode_image(GOOD, "bgr8", h.header("cam")))
            assert h.spin_until(lambda: len(h.on(0, "class_mask")) == n)

        frame_with(_camera_info(640, 480, [0.0] * 5), 1)  # images are 120x90
        frame_with(_camera_info(640, 480, [0.0] * 5), 2)
        assert h.spin_until(lambda: len(grids) == 2)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            frame_with(_camera_info(120, 90, [float("nan"), 0.0, 0.0, 0.0, 0.0]), 3)
            frame_with(_camera_info(120, 90, [0.0, 0.0, 0.0, 0.0, 1e300]), 4)
        assert [w for w in caught if issubclass(w.category, RuntimeWarning)] == []
        counts = h.node.ground_counts(0)
        assert counts["ground_error"] == 2 and len(grids) == 2
        assert h.node.stats(0).internal_errors == 0
        err = capfd.readouterr().err
        assert err.count("describes 640x480 images") == 1
        assert "RuntimeWarning" not in err
    finally:
        h.close()


_EARLY_PUBLISHER = """
import sys, time
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
rclpy.init()
node = rclpy.create_node("early_camera")
pub = node.create_publisher(Image, sys.argv[1], QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
frame = Image(encoding="bgr8", width=4, height=2, step=12, data=bytes(24))
for _ in range(5):  # at once: before discovery has matched the two processes
    pub.publish(frame)
deadline = time.monotonic() + 60
while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
    rclpy.spin_once(node, timeout_sec=0.05)
time.sleep(0.5)
for _ in range(3):
    pub.publish(frame)
    time.sleep(0.2)
time.sleep(1.0)
node.destroy_node()
rclpy.shutdown()
"""


def test_frames_sent_before_the_first_that_arrived_are_counted(ros_context: Context) -> None:
    import subprocess
    import sys

    h = Harness(ros_context, {"preset": "camvid", "max_frame_age": 0.0}, subscribe=("class_mask",))
    try:
        topic = h.node.camera_topics_of(0).image
        proc = subprocess.Popen([sys.executable, "-c", _EARLY_PUBLISHER, topic])
        try:
            assert h.spin_until(lambda: h.node.stats(0).received + h.node.stats(0).missed_before_first == 8)
        finally:
            proc.wait(timeout=60)
        s = h.node.stats(0)
        assert s.missed_before_first >= 1, s  # sent before the processes matched: never arrived, but counted
        assert s.received + s.missed_before_first == 8
    finally:
        h.close()


def test_recorder_survives_negative_stamps_empty_and_short_step_images(ros_context: Context, tmp_path: Path) -> None:
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    recorder = SegmentationRecorder(tmp_path, ["class_mask"], context=ros_context)
    helper = Node("sender", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(recorder)
    executor.add_node(helper)
    try:
        pub = helper.create_publisher(Image, "segmentation/class_mask", RELIABLE)
        while pub.get_subscription_count() == 0:
            executor.spin_once(timeout_sec=0.05)
        ids = np.arange(12, dtype=np.uint8).reshape(3, 4)
        good = encode_image(ids, "mono8", _stamped(-1, 0))
        empty = Image(header=_stamped(5), encoding="mono8", width=0, height=0, step=0)
        short = Image(header=_stamped(6), encoding="mono8", width=4, height=3, step=2, data=bytes(6))
        for msg in (empty, short, good):
            pub.publish(msg)
        for _ in range(400):
            if recorder.latencies["class_mask"]:
                break
            executor.spin_once(timeout_sec=0.05)
        files = sorted(p.name for p in tmp_path.iterdir())
        assert files == ["class_mask_-1_000000000.png"], files
        import cv2
        saved = cv2.imread(str(tmp_path / files[0]), cv2.IMREAD_UNCHANGED)
        assert saved is not None and np.array_equal(saved, ids)
        assert recorder.rejected == 2
    finally:
        executor.shutdown()
        helper.destroy_node()
        recorder.destroy_node()


def test_frames_before_the_first_come_from_the_sequence_number_of_a_new_publisher() -> None:
    from espnet_ros.diagnostics import frames_before_first

    assert frames_before_first(None, 7, first_frame=True) == 6  # the camera's first frame was its publisher's 7th
    assert frames_before_first(None, 1, first_frame=True) == 0
    assert frames_before_first(40, 3, first_frame=False) == 2  # a restarted publisher
    assert frames_before_first(40, 41, first_frame=False) == 0  # the same publisher: a gap, not "before the first"
    assert frames_before_first(None, 500, first_frame=False) == 0  # back to one of several publishers: unknown
    assert frames_before_first(None, None, first_frame=True) == 0  # no sequence numbers
    assert frames_before_first(None, True, first_frame=True) == 0


def test_stamp_age_rule_is_symmetric_and_names_the_cause() -> None:
    from espnet_ros.segmentation_node import stamp_age_problem

    assert stamp_age_problem(0.5, 1.0) is None and stamp_age_problem(-0.5, 1.0) is None
    assert "old" in (stamp_age_problem(2.0, 1.0) or "")
    assert "in the future" in (stamp_age_problem(-2.0, 1.0) or "")
    assert stamp_age_problem(1e9, 0.0) is None and stamp_age_problem(-1e9, 0.0) is None  # 0: no check
