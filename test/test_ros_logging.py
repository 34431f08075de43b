"""espnet_ros.ros_logging: core Python log lines reach the node's ROS logger (and /rosout) at their level."""

from __future__ import annotations

import logging
import time

from rcl_interfaces.msg import Log
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from espnet_ros.ros_logging import RosLogHandler, bridge_logging, unbridge_logging


def _level(value: int | bytes) -> int:
    """rcl_interfaces/Log levels are ``byte``: bytes in Python."""
    return value if isinstance(value, int) else int.from_bytes(value, "little")


def test_core_log_lines_reach_rosout_with_their_level(ros_context: Context) -> None:
    node = Node("bridged", namespace="/front", context=ros_context)
    listener = Node("rosout_listener", context=ros_context)
    got: list[Log] = []
    listener.create_subscription(Log, "/rosout", got.append, QoSProfile(depth=50,
                                                                        reliability=ReliabilityPolicy.RELIABLE))
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(listener)
    handler = bridge_logging(node.get_logger())
    try:
        deadline = time.monotonic() + 10.0
        while listener.count_publishers("/rosout") < 2 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        core = logging.getLogger("espnet_ros.core.accel")
        core.debug("below the node's level")
        core.info("compiling the %s network (once; cached in %s)", "camvid", "/cache")
        core.warning("cached artifact unusable")
        logging.getLogger("espnet_ros.core.segmenter").error("a failure")
        logging.getLogger("somebody_else").warning("not ours")
        mine = lambda: [m for m in got if m.name == "front.bridged"]  # noqa: E731
        while len(mine()) < 3 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        assert [(_level(m.level), m.msg) for m in mine()] == [
            (_level(Log.INFO), "compiling the camvid network (once; cached in /cache)"),
            (_level(Log.WARN), "cached artifact unusable"),
            (_level(Log.ERROR), "a failure"),
        ]
    finally:
        unbridge_logging(handler)
        executor.shutdown()
        listener.destroy_node()
        node.destroy_node()
    package = logging.getLogger("espnet_ros")
    assert package.propagate and not [h for h in package.handlers if isinstance(h, RosLogHandler)]


def test_a_later_bridge_replaces_the_earlier_one_and_survives_its_removal(ros_context: Context) -> None:
    first, second = Node("first", context=ros_context), Node("second", context=ros_context)
    try:
        old = bridge_logging(first.get_logger())
        new = bridge_logging(second.get_logger())
        unbridge_logging(old)  # the first node is destroyed after the second one bridged: the bridge stays
        assert [h for h in logging.getLogger("espnet_ros").handlers if isinstance(h, RosLogHandler)] == [new]
        unbridge_logging(new)
        assert not logging.getLogger("espnet_ros").handlers
    finally:
        first.destroy_node()
        second.destroy_node()
