"""Every difference between the supported rclpy versions, in one place.

espnet_ros is tested on ROS 2 Jazzy (rclpy 7.1, the LTS release and the default) and Kilted (rclpy 9.1); the code
paths for Humble (rclpy 3.3) are kept but not tested. The rest of the package imports what differs from here:

- ``RCLError`` / ``InvalidHandle``: what ``publish()`` and friends raise when the middleware refuses or a handle is
  gone. ``RCLError`` is reached through rclpy's implementation singleton, not the private extension module.
- ``MESSAGE_INFO_CALLBACKS``: rclpy passes ``MessageInfo`` to two-argument subscription callbacks (Iron and newer).
- ``EVENTS``: the QoS event module (``rclpy.event_handler`` since Iron, ``rclpy.qos_event`` on Humble).
- Types: rclpy 9.1 makes ``Parameter`` and ``Subscription`` generic, rclpy 7.1 does not, so annotations use the bare
  names (mypy passes on both).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from rclpy.exceptions import InvalidHandle
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.subscription import Subscription

__all__ = ["EVENTS", "MESSAGE_INFO_CALLBACKS", "PUBLISH_ERRORS", "InvalidHandle", "RCLError"]

RCLError: type[Exception] = rclpy_implementation.RCLError
"""The middleware's error (a refused publish, a failed wait); the same class on every distribution."""

PUBLISH_ERRORS: tuple[type[Exception], ...] = (RCLError, InvalidHandle)
"""What a publish may raise under overload or during shutdown; the caller counts it and goes on."""

MESSAGE_INFO_CALLBACKS: bool = hasattr(Subscription, "CallbackType")
"""True where rclpy passes ``MessageInfo`` (reception time, sequence numbers) to two-argument callbacks."""

EVENTS: Any = importlib.import_module(
    "rclpy.event_handler" if importlib.util.find_spec("rclpy.event_handler") is not None else "rclpy.qos_event")
"""The QoS event module: ``SubscriptionEventCallbacks``, ``UnsupportedEventTypeError``."""
