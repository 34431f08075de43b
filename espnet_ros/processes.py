"""Stopping a child process (a node started by a tool or a test) within a bounded time, the way a terminal does.

A node is stopped with SIGINT (Ctrl-C) and given ``timeout`` seconds to exit. A process still running then is killed
with SIGKILL and the kill is reported: Fast DDS 2.14 (ROS 2 Jazzy) was seen, about once in 20 stops, spinning in
``rmw_destroy_node`` at high CPU, deaf to SIGINT and SIGTERM, so a tool or test that only signals and waits would
hang with it.
"""

from __future__ import annotations

import logging
import signal
import subprocess
from dataclasses import dataclass

__all__ = ["STOP_TIMEOUT_S", "StopResult", "stop_process"]

STOP_TIMEOUT_S = 20.0
"""Seconds a process gets to exit after SIGINT before it is killed (a clean stop takes a few seconds)."""

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StopResult:
    """How a process ended: its exit code (negative: the signal), its remaining output, whether it was killed."""

    returncode: int
    output: str
    killed: bool


def stop_process(
    proc: subprocess.Popen[str], timeout: float = STOP_TIMEOUT_S, sig: int = signal.SIGINT
) -> StopResult:
    """Send ``sig`` (unless the process has exited), wait ``timeout`` s, then SIGKILL it and say so.

    The output is what the process wrote to a ``stdout`` pipe (empty without one); when it was killed, a line saying
    so is appended to it and logged as a warning.
    """
    if proc.poll() is None:
        proc.send_signal(sig)
    killed = False
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        killed = True
    output = out or ""
    if killed:
        note = (f"process {proc.pid} did not exit within {timeout:.0f} s of signal {sig} and was killed (SIGKILL); "
                "a known cause is Fast DDS 2.14 hanging in rmw_destroy_node")
        _log.warning(note)
        output += f"\n[{note}]\n"
    return StopResult(int(proc.returncode), output, killed)
