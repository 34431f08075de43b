"""Overload, late and stale frames: latest frame wins, frames that waited for the busy worker are dropped as late
while a newer one is due, stale frames are dropped, nothing queues without bound."""

from __future__ import annotations

import time
from typing import Any

from node_harness import Harness, textured
from rclpy.context import Context
from rclpy.parameter import Parameter

from espnet_ros.diagnostics import CameraSnapshot
from espnet_ros.image_codec import encode_image


def _accounted(s: CameraSnapshot) -> bool:
    """Every received frame was processed or dropped (superseded, late, stale) or rejected."""
    return s.processed + s.dropped_superseded + s.dropped_late + s.dropped_stale + s.rejected == s.received


def _in_order_once(masks: list[Any]) -> bool:
    """The answers' stamps are in order and none comes twice."""
    stamps = [(m.header.stamp.sec, m.header.stamp.nanosec) for m in masks]
    return stamps == sorted(stamps) and len(set(stamps)) == len(stamps)


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
            assert _accounted(s), s
            assert s.processed == len(h.on(i, "class_mask"))
            assert s.dropped_superseded > s.received // 2, s  # most frames were replaced by newer ones
            assert _in_order_once(h.on(i, "class_mask"))
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


def _stream(h: Harness, frame: object, rate: float, seconds: float) -> None:
    """Publish ``frame`` on /image at ``rate`` Hz for ``seconds``, spinning the executor between frames."""
    period = 1.0 / rate
    t0 = time.monotonic()
    for i in range(int(rate * seconds)):
        while time.monotonic() < t0 + i * period:
            h.executor.spin_once(timeout_sec=0.002)
        h.send("/image", encode_image(frame, "bgr8", h.header()))
    assert h.spin_until(lambda: h.node.idle() and h.node.pending_frames() == 0)


def test_frames_that_waited_for_the_busy_worker_are_dropped_as_late(ros_context: Context) -> None:
    # CamVid at 480x360 on one thread takes longer than the 20 ms between frames, so frames wait for the worker.
    # The eager backend releases the GIL between operations, so this process's publisher keeps its schedule (the
    # compiled one holds it for a whole pass, which would turn the stream into bursts, which are never late).
    h = Harness(ros_context, {"preset": "camvid", "max_queue_delay": 0.0, "backend": "fused"},
                subscribe=("class_mask",))
    try:
        h.wait_connected()
        frame = textured(360, 480)
        _stream(h, frame, rate=50.0, seconds=1.5)
        s = h.node.stats()
        assert _accounted(s), s
        assert s.dropped_late > 0 and s.processed > 0, s
        # Every processed frame is answered (the last answer may still be on its way when the node is idle).
        assert h.spin_until(lambda: len(h.on(0, "class_mask")) == s.processed), (s, len(h.on(0, "class_mask")))
        assert _in_order_once(h.on(0, "class_mask"))

        # The rule off: the latest frame is taken however long it waited, nothing is late.
        assert h.node.set_parameters([Parameter("max_queue_delay", value=-1.0)])[0].successful
        late_before = s.dropped_late
        _stream(h, frame, rate=50.0, seconds=1.0)
        s = h.node.stats()
        assert s.dropped_late == late_before, s
        assert _accounted(s), s
    finally:
        h.close()


def test_a_single_frame_sent_while_the_worker_is_busy_is_still_answered(ros_context: Context) -> None:
    h = Harness(ros_context, {"preset": "camvid", "max_queue_delay": 0.0}, subscribe=("class_mask",))
    try:
        h.wait_connected()
        # Two frames back to back: the second waits for the first, but no newer frame is due (no stream).
        first, second = h.header(), h.header()
        h.send("/image", encode_image(textured(360, 480), "bgr8", first))
        h.send("/image", encode_image(textured(360, 480), "bgr8", second))
        assert h.spin_until(lambda: bool(h.on(0, "class_mask")) and h.on(0, "class_mask")[-1].header == second)
        assert h.node.stats().dropped_late == 0
    finally:
        h.close()


def test_a_frame_waits_from_its_reception_time_not_from_its_callback(ros_context: Context) -> None:
    h = Harness(ros_context, {"preset": "camvid"}, subscribe=())  # no subscriber: frames are taken, then skipped
    try:
        cam = h.node._cameras[0]
        msg = encode_image(textured(36, 48), "bgr8", h.header())
        for n, (received_ns, expect_wait) in enumerate([
            (time.time_ns() - 80_000_000, 0.08),  # received 80 ms before the callback ran
            (time.time_ns() + 5_000_000_000, 0.0),  # "received" in the future: a clock step, ignored
            (1, 0.0),  # decades ago: ignored
            (0, 0.0),  # no reception time from the middleware
        ], start=1):
            h.node._on_frame(cam, msg, {"received_timestamp": received_ns})
            assert h.spin_until(lambda n=n: h.node.stats().skipped_no_subscribers == n)
            with h.node._lock:
                waited = cam.stats.queue_wait._samples[-1]  # arrival → taken by the worker
            assert expect_wait <= waited < expect_wait + 0.05, (received_ns, waited)
    finally:
        h.close()


def test_a_frame_delayed_by_the_executor_is_not_late_when_the_worker_was_idle(ros_context: Context) -> None:
    # A streaming camera's last frame, received while the worker was idle but handed over late by a busy executor,
    # waited for no worker: it is answered (dropping it would leave the camera unanswered, no newer frame comes).
    h = Harness(ros_context, {"preset": "camvid", "max_queue_delay": 0.02}, subscribe=("class_mask",))
    try:
        h.wait_connected()
        cam = h.node._cameras[0]
        frame = textured(36, 48)
        for n in range(1, 5):  # a camera at about 5 Hz, every frame answered before the next
            h.node._on_frame(cam, encode_image(frame, "bgr8", h.header()), {"received_timestamp": time.time_ns()})
            assert h.spin_until(lambda n=n: len(h.on(0, "class_mask")) == n)
            time.sleep(0.2)
        assert h.spin_until(h.node.idle)
        last = h.header()
        h.node._on_frame(cam, encode_image(frame, "bgr8", last), {"received_timestamp": time.time_ns() - 60_000_000})
        assert h.spin_until(lambda: len(h.on(0, "class_mask")) == 5)
        assert h.on(0, "class_mask")[-1].header == last
        s = h.node.stats()
        assert s.dropped_late == 0 and s.processed == 5, s
    finally:
        h.close()
