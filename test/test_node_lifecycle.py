"""The segmentation node as a managed lifecycle node, driven through its real lifecycle services from another node.

A ``manager`` node calls ``<node>/change_state`` and ``<node>/get_state`` (what ``ros2 lifecycle set`` and Nav2's
lifecycle manager call), records ``<node>/transition_event`` and plays the camera. The CamVid preset and small
frames keep each transition quick; the node's compiled backend comes from the shared cache.
"""

from __future__ import annotations

import gc
import time
import weakref
from pathlib import Path
from typing import Any

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import State, Transition, TransitionEvent
from lifecycle_msgs.srv import ChangeState, GetState
from node_harness import RELIABLE, TIMEOUT, WEIGHTS_DIR, textured
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from espnet_ros.image_codec import encode_image
from espnet_ros.parameters import ParameterError, parse_frame_sizes
from espnet_ros.segmentation_node import NODE_NAME, NotConfiguredError, SegmentationNode

BASE = {"device": "cpu", "num_threads": 1, "weights_dir": str(WEIGHTS_DIR), "input_qos": "reliable:10",
        "max_frame_age": 30.0, "max_queue_delay": -1.0, "preset": "camvid"}


class Manager:
    """The node under test (``autostart`` false) and a manager node that drives it through its services."""

    def __init__(self, context: Context, overrides: dict[str, Any] | None = None) -> None:
        params = {**BASE, "autostart": False, **(overrides or {})}
        self.node = SegmentationNode(context=context,
                                     parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        self.helper = Node("manager", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.helper)
        base = f"/{NODE_NAME}"
        self.change = self.helper.create_client(ChangeState, f"{base}/change_state")
        self.get = self.helper.create_client(GetState, f"{base}/get_state")
        self.events: list[TransitionEvent] = []
        self.helper.create_subscription(TransitionEvent, f"{base}/transition_event", self.events.append, 10)
        self.masks: list[Image] = []
        self.helper.create_subscription(Image, "/segmentation/class_mask", self.masks.append, RELIABLE)
        self.image = self.helper.create_publisher(Image, "/image", RELIABLE)
        assert self.spin_until(lambda: self.change.service_is_ready() and self.get.service_is_ready()
                               and self.helper.count_publishers(f"{base}/transition_event") > 0)

    def spin_until(self, predicate: Any, timeout: float = TIMEOUT) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                return bool(predicate())
            self.executor.spin_once(timeout_sec=0.05)
        return True

    def call(self, client: Any, request: Any) -> Any:
        future = client.call_async(request)
        assert self.spin_until(future.done), "no service response"
        return future.result()

    def transition(self, transition_id: int) -> bool:
        """Request a transition through ``change_state``; return its ``success``."""
        return bool(self.call(self.change, ChangeState.Request(transition=Transition(id=transition_id))).success)

    def state(self) -> int:
        """The node's state id from ``get_state``."""
        return int(self.call(self.get, GetState.Request()).current_state.id)

    def labels_of_events(self) -> list[tuple[str, str]]:
        return [(e.start_state.label, e.goal_state.label) for e in self.events]

    def send_frame(self, frame_id: str) -> Header:
        stamp = self.node.get_clock().now().to_msg()
        header = Header(stamp=stamp, frame_id=frame_id)
        self.image.publish(encode_image(textured(96, 128), "bgr8", header))
        return header

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.helper.destroy_node()


def test_every_transition_through_the_lifecycle_services(ros_context: Context) -> None:
    m = Manager(ros_context)
    try:
        # unconfigured: nothing built, nothing published or subscribed
        assert m.state() == State.PRIMARY_STATE_UNCONFIGURED and m.node.lifecycle_state == "unconfigured"
        assert m.node.worker_thread is None
        with pytest.raises(NotConfiguredError, match="configure"):
            m.node.segmenter  # noqa: B018
        assert m.node.count_publishers("/segmentation/class_mask") == 0

        # configure: the Segmenter, the worker thread, the publishers and diagnostics; no subscription yet
        diagnostics: list[DiagnosticArray] = []
        m.helper.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
        assert m.transition(Transition.TRANSITION_CONFIGURE)
        assert m.state() == State.PRIMARY_STATE_INACTIVE
        worker = m.node.worker_thread
        assert worker is not None and worker.is_alive()
        segmenter = weakref.ref(m.node.segmenter)
        assert m.node.config.preset == "camvid"
        assert m.spin_until(lambda: m.node.count_subscribers("/segmentation/class_mask") > 0)
        assert m.node.count_subscribers("/image") == 0 and m.image.get_subscription_count() == 0
        assert m.spin_until(lambda: any(_summary(d).get("lifecycle state") == "inactive" for d in diagnostics))

        # activate: frames answered with their header
        assert m.transition(Transition.TRANSITION_ACTIVATE)
        assert m.state() == State.PRIMARY_STATE_ACTIVE
        assert m.spin_until(lambda: m.image.get_subscription_count() > 0)
        header = m.send_frame("first")
        assert m.spin_until(lambda: len(m.masks) == 1)
        assert m.masks[0].header == header and (m.masks[0].width, m.masks[0].height) == (128, 96)

        # deactivate: unsubscribed, configuration kept; a frame sent now reaches nobody
        assert m.transition(Transition.TRANSITION_DEACTIVATE)
        assert m.state() == State.PRIMARY_STATE_INACTIVE
        assert m.spin_until(lambda: m.image.get_subscription_count() == 0)
        received = m.node.stats().received
        m.send_frame("while inactive")
        m.spin_until(lambda: False, timeout=1.0)
        assert len(m.masks) == 1 and m.node.stats().received == received and m.node.pending_frames() == 0
        assert m.node.worker_thread is worker and worker.is_alive() and segmenter() is not None

        # activate again: answered again, by the same Segmenter
        assert m.transition(Transition.TRANSITION_ACTIVATE)
        assert m.spin_until(lambda: m.image.get_subscription_count() > 0)
        header = m.send_frame("second")
        assert m.spin_until(lambda: len(m.masks) == 2)
        assert m.masks[1].header == header and segmenter() is m.node.segmenter

        # cleanup (from inactive): the worker thread, the Segmenter and the publishers are gone
        assert m.transition(Transition.TRANSITION_DEACTIVATE)
        assert m.transition(Transition.TRANSITION_CLEANUP)
        assert m.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert not worker.is_alive() and m.node.worker_thread is None
        gc.collect()
        assert segmenter() is None, "the Segmenter is still referenced after cleanup"
        assert m.spin_until(lambda: m.helper.count_publishers("/segmentation/class_mask") == 0)
        with pytest.raises(NotConfiguredError):
            m.node.segmenter  # noqa: B018

        # configure again, then shut down from inactive
        assert m.transition(Transition.TRANSITION_CONFIGURE)
        worker = m.node.worker_thread
        assert worker is not None and worker.is_alive()
        assert m.transition(Transition.TRANSITION_INACTIVE_SHUTDOWN)
        assert m.state() == State.PRIMARY_STATE_FINALIZED
        assert not worker.is_alive() and m.node.worker_thread is None

        expected = [
            ("unconfigured", "configuring"), ("configuring", "inactive"),
            ("inactive", "activating"), ("activating", "active"),
            ("active", "deactivating"), ("deactivating", "inactive"),
            ("inactive", "activating"), ("activating", "active"),
            ("active", "deactivating"), ("deactivating", "inactive"),
            ("inactive", "cleaningup"), ("cleaningup", "unconfigured"),
            ("unconfigured", "configuring"), ("configuring", "inactive"),
            ("inactive", "shuttingdown"), ("shuttingdown", "finalized"),
        ]
        assert m.spin_until(lambda: len(m.events) >= len(expected))
        assert m.labels_of_events() == expected
    finally:
        m.close()


def test_shutdown_from_active_releases_everything(ros_context: Context) -> None:
    m = Manager(ros_context)
    try:
        assert m.transition(Transition.TRANSITION_CONFIGURE) and m.transition(Transition.TRANSITION_ACTIVATE)
        worker = m.node.worker_thread
        assert worker is not None
        segmenter = weakref.ref(m.node.segmenter)
        assert m.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN)
        assert m.state() == State.PRIMARY_STATE_FINALIZED
        assert not worker.is_alive()
        gc.collect()
        assert segmenter() is None
        assert m.spin_until(lambda: m.image.get_subscription_count() == 0)
    finally:
        m.close()


def test_a_failed_configure_ends_in_error_processing_not_a_dead_node(
    ros_context: Context, tmp_path: Path
) -> None:
    m = Manager(ros_context, {"weights_dir": str(tmp_path)})  # no weights there
    try:
        assert not m.transition(Transition.TRANSITION_CONFIGURE)
        assert m.state() == State.PRIMARY_STATE_UNCONFIGURED  # error processing released it: configure can be retried
        assert m.node.worker_thread is None
        assert m.spin_until(lambda: len(m.events) >= 3)
        assert m.labels_of_events() == [("unconfigured", "configuring"), ("configuring", "errorprocessing"),
                                        ("errorprocessing", "unconfigured")]
        assert m.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
        assert m.state() == State.PRIMARY_STATE_FINALIZED
    finally:
        m.close()


def test_autostart_configures_and_activates_in_the_constructor(ros_context: Context) -> None:
    node = SegmentationNode(context=ros_context,
                            parameter_overrides=[Parameter(k, value=v) for k, v in BASE.items()])
    try:
        assert node.autostart and node.lifecycle_state == "active"
        assert node.count_subscribers("/image") == 1
    finally:
        node.destroy_node()


def _summary(msg: DiagnosticArray) -> dict[str, str]:
    for status in msg.status:
        values = {kv.key: kv.value for kv in status.values}
        if "lifecycle state" in values:
            return values
    return {}



def test_warmup_sizes_are_parsed_and_checked() -> None:
    assert parse_frame_sizes("") == ()
    assert parse_frame_sizes("2048x1024, 640X480 481x241") == ((2048, 1024), (640, 480), (481, 241))
    for bad in ("640", "640x", "0x480", "640x480x3", "big"):
        with pytest.raises(ParameterError, match="warmup_sizes"):
            parse_frame_sizes(bad)


def test_warmup_frames_run_on_the_worker_thread_at_configure(
    ros_context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from espnet_ros import segmentation_node
    from espnet_ros.core.segmenter import Segmenter

    seen: list[tuple[tuple[int, ...], threading.Thread]] = []

    class Recording(Segmenter):
        def segment_batch(self, images: Any, **kwargs: Any) -> Any:
            seen.extend((tuple(im.shape), threading.current_thread()) for im in images)
            return super().segment_batch(images, **kwargs)

    monkeypatch.setattr(segmentation_node, "Segmenter", Recording)
    m = Manager(ros_context, {"warmup_sizes": "128x96, 64x48"})
    try:
        assert seen == []
        assert m.transition(Transition.TRANSITION_CONFIGURE)
        assert [shape for shape, _ in seen] == [(96, 128, 3)] * 2 + [(48, 64, 3)] * 2
        assert {thread for _, thread in seen} == {m.node.worker_thread}
        assert sum(m.node.segmenter.forward_batch_sizes.values()) == 0  # diagnostics count camera frames only
    finally:
        m.close()


def test_an_unusable_warmup_size_fails_the_autostart_like_any_parameter(ros_context: Context) -> None:
    params = {**BASE, "warmup_sizes": "640 by 480"}
    with pytest.raises(ParameterError, match="warmup_sizes"):
        SegmentationNode(context=ros_context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
