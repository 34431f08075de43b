"""Spinning a node until its context is shut down: no callback ends the process, the shutdown race is handled, and
the executables stop cleanly on SIGINT and SIGTERM (one, two or three Ctrl-C, launch's SIGINT then SIGTERM).

:class:`GuardedExecutor` is a single-threaded executor whose callbacks (subscriptions, services, timers, rclpy's own
parameter services included) cannot end the process: an exception one of them raises is counted in
:class:`CallbackErrors`, logged (throttled, with its traceback) and the executor goes on. Any participant on the ROS
graph can send a request that makes rclpy raise inside its own service callback (a ``SetParameters`` request whose
``ParameterValue.type`` is not a parameter type raises ``ValueError`` in ``rclpy.parameter``); without the guard that
exception leaves ``spin()`` and stops the node. :func:`spin_until_shutdown` spins with it until the context is shut
down, or until a condition holds. :class:`StopSignals` makes every signal after the first one a no-op.
"""

from __future__ import annotations

import signal
import threading
import traceback
from collections.abc import Callable
from types import FrameType

from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.rcutils_logger import RcutilsLogger
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions, get_current_signal_handlers_options, uninstall_signal_handlers

from espnet_ros.ros_compat import RCLError

__all__ = ["CallbackErrors", "GuardedExecutor", "StopSignals", "spin_until_shutdown"]

_LOG_PERIOD_S = 5.0


class CallbackErrors:
    """Exceptions raised by executor callbacks and survived: how many, and the last one (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._last = ""

    def record(self, exc: BaseException) -> None:
        """Count ``exc`` and remember it as the last one."""
        with self._lock:
            self._count += 1
            self._last = f"{type(exc).__name__}: {exc}"

    @property
    def count(self) -> int:
        """Exceptions recorded so far."""
        with self._lock:
            return self._count

    @property
    def last(self) -> str:
        """``"<type>: <message>"`` of the last exception recorded (empty if none)."""
        with self._lock:
            return self._last


class GuardedExecutor(SingleThreadedExecutor):
    """A :class:`~rclpy.executors.SingleThreadedExecutor` whose callbacks cannot end the process.

    :meth:`spin_once` runs one callback; an ``Exception`` it raises while the context is valid is recorded in
    :attr:`errors` and logged on ``logger`` (at most once per 5 s, with the traceback) instead of propagating.
    ``KeyboardInterrupt``, ``ExternalShutdownException`` and errors after the context was shut down still propagate
    (they mean: stop). Drive it with :meth:`spin_while` (``spin()`` and ``spin_until_future_complete()`` of the base
    class bypass the guard in some rclpy versions).
    """

    def __init__(self, logger: RcutilsLogger, *, context: Context | None = None,
                 errors: CallbackErrors | None = None) -> None:
        super().__init__(context=context)
        self.errors = errors if errors is not None else CallbackErrors()
        self._logger = logger

    def spin_once(self, timeout_sec: float | None = None) -> None:
        """Wait up to ``timeout_sec`` for one ready callback and run it; its exception is counted, not raised."""
        try:
            super().spin_once(timeout_sec=timeout_sec)
        except (KeyboardInterrupt, ExternalShutdownException):
            raise
        except Exception as exc:
            if not self.context.ok():
                raise  # shutting down: the caller decides (spin_until_shutdown treats it as a stop)
            self.errors.record(exc)
            self._logger.error(
                f"a callback raised {type(exc).__name__}: {exc} ({self.errors.count} so far); the node goes on. "
                f"If a participant sent a malformed request, find it with `ros2 node list`.\n"
                f"{traceback.format_exc()}",
                throttle_duration_sec=_LOG_PERIOD_S,
            )

    def spin_while(self, running: Callable[[], bool], timeout_sec: float = 0.1) -> None:
        """Spin while the context is valid and ``running()`` holds."""
        while self.context.ok() and running():
            self.spin_once(timeout_sec=timeout_sec)


def spin_until_shutdown(node: Node, spin: Callable[[Node], object] | None = None, *,
                        until: Callable[[], bool] | None = None, errors: CallbackErrors | None = None) -> None:
    """Spin ``node`` until its context is shut down (Ctrl-C, a signal from launch, ``rclpy.shutdown()``).

    By default the node spins on a :class:`GuardedExecutor` (callback exceptions are counted in ``errors`` and
    logged, never fatal) until the context is shut down or ``until()`` holds; ``spin`` replaces that loop with one
    call of ``spin(node)``. A shutdown that lands between the executor's check of the context and its next wait
    makes rclpy raise ``RCLError`` ("the given context is not valid ... rcl_shutdown() was called") instead of
    returning: that is a normal stop, not a failure. Any other error outside a callback, and an ``RCLError`` while
    the context is still valid, propagates.
    """
    executor: GuardedExecutor | None = None
    if spin is None:
        executor = GuardedExecutor(node.get_logger(), context=node.context, errors=errors)
        executor.add_node(node)
        guarded = executor

        def spin(_: Node) -> None:
            guarded.spin_while(lambda: until is None or not until())

    try:
        spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        return
    except RCLError:
        if node.context.ok():
            raise
    finally:
        if executor is not None:
            executor.remove_node(node)
            executor.shutdown(timeout_sec=1.0)


class StopSignals:
    """SIGINT and SIGTERM stop the process once; later ones are ignored while it cleans up.

    Create it before ``rclpy.init()``: rclpy's own handlers (installed by ``init``) shut the context down and then
    call the Python handler that was in place, this one. The first signal raises ``KeyboardInterrupt`` in the main
    thread, which also interrupts a blocking wait during start-up; every later signal is ignored, so a second Ctrl-C
    (a terminal signals the whole process group, then ``ros2 launch`` signals its processes again) or launch's SIGTERM
    cannot raise inside ``destroy_node()`` and turn a clean stop into a traceback and a signal exit code. Call
    :meth:`cleaning_up` before cleaning up (a stop that no signal caused), and :meth:`exiting` after
    ``rclpy.try_shutdown()``: when the interpreter exits it puts back the default action of a signal that has a
    Python handler, and a late Ctrl-C would kill the exiting process (exit code -2); an ignored signal stays ignored.

    The first signal (and :meth:`cleaning_up`) also takes rclpy's own handlers out and stops rclpy's signal thread.
    That thread wakes every executor's guard condition on each signal, and ``rclpy.try_shutdown()`` leaves it
    running: a signal during clean-up made it trigger the guard condition that the executor's ``shutdown()`` was
    destroying at that moment, and the process crashed (exit code -11) or hung (docs/launch.md, "Stopping").
    """

    def __init__(self) -> None:
        self.received: list[int] = []
        """Signal numbers received, in order."""
        self._stopping = False
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        if not self._stopping:
            self._stopping = True
            _stop_rclpy_signal_handling()
            raise KeyboardInterrupt

    def cleaning_up(self) -> None:
        """From now on every SIGINT and SIGTERM is ignored (the process is already on its way out)."""
        self._stopping = True
        _stop_rclpy_signal_handling()

    def exiting(self) -> None:
        """Ignore SIGINT and SIGTERM for the rest of the process's life (call once ROS is shut down)."""
        self._stopping = True
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)


def _stop_rclpy_signal_handling() -> None:
    """Put back the handlers rclpy chained in front of ours and join rclpy's signal thread (no-op if not installed).

    Called in the main thread, from a Python signal handler (which runs between two bytecodes) or before clean-up,
    so no middleware lock is held here that the signal thread could be waiting for while it is joined.
    """
    if get_current_signal_handlers_options() != SignalHandlerOptions.NO:
        uninstall_signal_handlers()
