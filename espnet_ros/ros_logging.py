"""Python ``logging`` of the ``espnet_ros`` package routed to a ROS logger.

The core (:mod:`espnet_ros.core`) logs with ``logging.getLogger(__name__)`` and never imports rclpy. An executable
that runs a node calls :func:`bridge_logging` once: every record of the ``espnet_ros.*`` loggers then goes to the
node's rclpy logger at the same severity (DEBUG, INFO, WARNING, ERROR, CRITICAL -> DEBUG, INFO, WARN, ERROR, FATAL),
so it reaches the console, ``launch``'s log and ``/rosout`` like the node's own lines. The ``espnet_ros`` logger's
level follows the ROS logger's (``--ros-args --log-level``) so that filtered records cost nothing.
"""

from __future__ import annotations

import logging

from rclpy.impl.rcutils_logger import RcutilsLogger

__all__ = ["RosLogHandler", "bridge_logging", "unbridge_logging"]

_PACKAGE_LOGGER = "espnet_ros"


class RosLogHandler(logging.Handler):
    """Hands each ``logging`` record to an rclpy logger at the matching severity (same numbers: 10, 20, ... 50)."""

    def __init__(self, ros_logger: RcutilsLogger) -> None:
        super().__init__()
        self.ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        """Log the formatted record (with a traceback if it has one) on the ROS logger.

        One call site per severity: rclpy refuses a call site whose severity changes between calls.
        """
        try:
            text = self.format(record)
            level = record.levelno
            if level >= logging.CRITICAL:
                self.ros_logger.fatal(text)
            elif level >= logging.ERROR:
                self.ros_logger.error(text)
            elif level >= logging.WARNING:
                self.ros_logger.warning(text)
            elif level >= logging.INFO:
                self.ros_logger.info(text)
            else:
                self.ros_logger.debug(text)
        except Exception:  # a logging handler must never raise into the code that logs
            self.handleError(record)


def bridge_logging(ros_logger: RcutilsLogger) -> RosLogHandler:
    """Route the ``espnet_ros.*`` Python loggers to ``ros_logger`` (replacing an earlier bridge); returns the handler.

    The package logger stops propagating to the root logger, so a record is printed once, by ROS.
    """
    unbridge_logging()
    handler = RosLogHandler(ros_logger)
    package = logging.getLogger(_PACKAGE_LOGGER)
    package.addHandler(handler)
    package.setLevel(max(logging.DEBUG, int(ros_logger.get_effective_level())))
    package.propagate = False
    return handler


def unbridge_logging(handler: RosLogHandler | None = None) -> None:
    """Remove ``handler`` (default: any bridge): ``espnet_ros.*`` records go to the root logger's handlers again.

    A handler that is no longer installed (another node bridged since) is left alone.
    """
    package = logging.getLogger(_PACKAGE_LOGGER)
    installed = [h for h in package.handlers if isinstance(h, RosLogHandler)]
    if handler is not None and handler not in installed:
        return
    for h in installed:
        package.removeHandler(h)
    package.setLevel(logging.NOTSET)
    package.propagate = True
