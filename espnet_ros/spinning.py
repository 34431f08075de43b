"""Spinning a node until its context is shut down, with the shutdown race of rclpy's executors handled."""

from __future__ import annotations

from collections.abc import Callable

import rclpy
from rclpy._rclpy_pybind11 import RCLError
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

__all__ = ["spin_until_shutdown"]


def spin_until_shutdown(node: Node, spin: Callable[[Node], object] = rclpy.spin) -> None:
    """``spin(node)`` until the node's context is shut down (Ctrl-C, a signal from launch, ``rclpy.shutdown()``).

    A shutdown that lands between the executor's check of the context and its next wait makes rclpy raise
    ``RCLError`` ("the given context is not valid ... rcl_shutdown() was called") instead of returning: that is a
    normal stop, not a failure (seen as exit code 1 in about one of four stops under load before this). Any other
    error, and an ``RCLError`` while the context is still valid, propagates.
    """
    try:
        spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        return
    except RCLError:
        if node.context.ok():
            raise
