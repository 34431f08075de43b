"""Overload and stale frames: latest frame wins, stale frames are dropped, nothing queues without bound."""

from __future__ import annotations

from node_harness import Harness, textured
from rclpy.context import Context
from rclpy.parameter import Parameter

from espnet_ros.image_codec import encode_image


def test_frames_faster_than_inference_keep_only_the_latest(ros_context: Context) -> None:
    cams = ["/a/image", "/b/image"]
    h = Harness(ros_context, {"preset": "camvid", "cameras": cams}, subscribe=("class_mask",))
    try:
        h.wait_connected(0)
        h.wait_connected(1)
        frame = textured(360, 480)
        msgs = {cam: encode_image(frame, "bgr8") for cam in cams}
        sent = 120
        last_stamps = {}
        max_seen_pending = 0
        for _ in range(sent):
            for cam in cams:
                header = h.header(frame_id=cam)
                msgs[cam].header = header
                h.send(cam, msgs[cam])
                last_stamps[cam] = (header.stamp.sec, header.stamp.nanosec)
            for _ in range(4):  # deliver what arrived, without waiting for the worker
                h.executor.spin_once(timeout_sec=0)
            max_seen_pending = max(max_seen_pending, h.node.pending_frames())
        # The last frame of each camera is never superseded, so it is always answered.
        assert h.spin_until(lambda: all(
            (h.on(i, "class_mask") and (h.on(i, "class_mask")[-1].header.stamp.sec,
                                        h.on(i, "class_mask")[-1].header.stamp.nanosec) == last_stamps[cam])
            for i, cam in enumerate(cams)
        ) and h.node.idle())
        for i in range(len(cams)):
            s = h.node.stats(i)
            assert 0 < s.received <= sent
            assert s.processed + s.dropped_superseded + s.dropped_stale + s.rejected == s.received, s
            assert s.processed == len(h.on(i, "class_mask"))
            assert s.dropped_superseded > s.received // 2, s  # most frames were replaced by newer ones
            stamps = [(m.header.stamp.sec, m.header.stamp.nanosec) for m in h.on(i, "class_mask")]
            assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)  # in order, none twice
        assert max_seen_pending <= len(cams) and h.node.max_pending_frames <= len(cams)
        assert h.node.pending_frames() == 0
    finally:
        h.close()


def test_stale_frames_are_dropped_unless_the_check_is_off(ros_context: Context) -> None:
    h = Harness(ros_context, {"preset": "camvid", "max_frame_age": 1.0}, subscribe=("class_mask",))
    try:
        h.wait_connected()
        frame = textured(90, 120)
        for n in (1, 2, 3):
            h.send("/image", encode_image(frame, "bgr8", h.header(age=5.0)))
            assert h.spin_until(lambda n=n: h.node.stats().dropped_stale == n)
        assert h.on(0, "class_mask") == [] and h.node.stats().processed == 0
        header = h.header()
        h.send("/image", encode_image(frame, "bgr8", header))
        assert h.spin_until(lambda: len(h.on(0, "class_mask")) == 1)
        assert h.on(0, "class_mask")[0].header == header
        assert h.node.set_parameters([Parameter("max_frame_age", value=0.0)])[0].successful
        old = h.header(age=3600.0)
        h.send("/image", encode_image(frame, "bgr8", old))
        assert h.spin_until(lambda: len(h.on(0, "class_mask")) == 2)
        assert h.on(0, "class_mask")[1].header == old and h.node.stats().dropped_stale == 3
    finally:
        h.close()
