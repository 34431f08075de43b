"""Denormals flushed to zero while the network runs: in the calling thread and in its OpenMP team, restored after.

Why: on Intel CPUs an arithmetic operation with a subnormal operand or result (``0 < |x| < 1.18e-38``) takes a
microcode assist that costs on the order of a hundred cycles. ESPNet's upstream weights hold thousands of subnormal
values (:func:`espnet_ros.core.accel.flush_subnormals` zeroes those in the fused graph), and its activations still
produce subnormals on the way; with the x86 ``FTZ`` (flush to zero) and ``DAZ`` (denormals are zero) bits set, the
compiled network runs about a fifth faster on such a CPU (docs/performance.md, "Subnormal numbers"). Values that
small are far below float32's resolution of any logit, so no label changes (the tests pin it); AMD CPUs handle
subnormals without the assist and gain nothing.

How: those bits live in each thread's ``MXCSR`` register, and the network runs on the calling thread *and* the
OpenMP threads that torch, oneDNN and the compiled kernels share (one team per calling thread, in torch's
``libgomp``). :func:`denormals_flushed` enters an OpenMP parallel region of the team's size through ``libgomp``'s
``GOMP_parallel``, in which every team thread runs libm's ``fesetenv`` on the calling thread's own environment with
the bits set (``torch.set_flush_denormal``); on exit it installs the calling thread's saved environment in all of
them the same way (team threads start with the environment of the thread that created them, so that is what they
had). No Python runs in the team threads, so nothing there waits for the GIL; a call costs microseconds. Code
outside the ``with`` block (the upstream baseline in the bench, the user's own numerics) keeps IEEE behaviour. Where
a part is missing (no ``libgomp`` loaded, no ``libm``, a CPU without the bits), it does what it can: the calling
thread only, or nothing. ``ESPNET_ROS_FLUSH_DENORMALS=0`` turns it off.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import torch

__all__ = ["FLUSH_DENORMALS_ENV", "denormals_flushed", "flush_denormals_enabled", "team_support"]

_log = logging.getLogger(__name__)

FLUSH_DENORMALS_ENV = "ESPNET_ROS_FLUSH_DENORMALS"

_FENV_BYTES = 64  # larger than glibc's fenv_t on every architecture (32 bytes on x86-64, 8 on aarch64)


def flush_denormals_enabled() -> bool:
    """False when ``$ESPNET_ROS_FLUSH_DENORMALS`` is ``0`` / ``false`` / ``no`` / ``off``."""
    return os.environ.get(FLUSH_DENORMALS_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _loaded_libgomp() -> str | None:
    """Path of the ``libgomp`` this process has loaded (torch's own copy), or None."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.rstrip("\n").split(maxsplit=5)[-1]
                if Path(path).name.startswith("libgomp"):
                    return path
    except OSError:
        return None
    return None


class _Switch:
    """Saves, sets and restores the floating-point environment of the calling thread and its OpenMP team.

    The team is reached without Python: ``GOMP_parallel`` is given libm's ``fesetenv`` itself as the function every
    team thread runs, with a prepared environment as its argument (``int fesetenv(const fenv_t *)`` called as
    ``void (*)(void *)``: same argument register, the result ignored). So no team thread needs the GIL, which the
    node's executor thread may hold at that moment.
    """

    def __init__(self) -> None:
        name = ctypes.util.find_library("m")
        self.libm: ctypes.CDLL | None = ctypes.CDLL(name) if name else None
        # probe: does this CPU and torch build have the bits? (restores the probing thread's environment after)
        self.supported = False
        if self.libm is not None:
            buf = ctypes.create_string_buffer(_FENV_BYTES)
            if self.libm.fegetenv(buf) == 0:
                self.supported = bool(torch.set_flush_denormal(True))
                self.libm.fesetenv(buf)
        self.gomp_parallel: ctypes._NamedFuncPointer | None = None
        self.fesetenv_ptr = ctypes.c_void_p(None)
        path = _loaded_libgomp() if self.supported else None
        if path is not None and self.libm is not None:
            try:
                fn = ctypes.CDLL(path).GOMP_parallel
            except (OSError, AttributeError):
                fn = None
            if fn is not None:
                fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
                fn.restype = None
                self.gomp_parallel = fn
                self.fesetenv_ptr = ctypes.cast(self.libm.fesetenv, ctypes.c_void_p)

    def _all(self, env: ctypes.Array[ctypes.c_char]) -> None:
        """Install ``env`` in this thread and, when reachable, every thread of its OpenMP team."""
        assert self.libm is not None
        if self.gomp_parallel is not None:
            self.gomp_parallel(self.fesetenv_ptr, ctypes.cast(env, ctypes.c_void_p),
                               max(1, torch.get_num_threads()), 0)
        else:
            self.libm.fesetenv(env)

    def enter(self) -> ctypes.Array[ctypes.c_char] | None:
        """Set FTZ/DAZ in this thread and its team; return the environment to restore (None: nothing was done)."""
        assert self.libm is not None
        saved = ctypes.create_string_buffer(_FENV_BYTES)
        if self.libm.fegetenv(saved) != 0:
            return None
        torch.set_flush_denormal(True)
        flushed = ctypes.create_string_buffer(_FENV_BYTES)
        self.libm.fegetenv(flushed)
        self._all(flushed)
        return saved

    def leave(self, saved: ctypes.Array[ctypes.c_char]) -> None:
        """Restore the calling thread's environment from before :meth:`enter`, in it and in its team."""
        self._all(saved)


_switch: _Switch | None = None
_switch_lock = threading.Lock()
_depth = threading.local()


def _get_switch() -> _Switch:
    global _switch
    if _switch is not None:  # every forward pass comes here; the lock is only for the first
        return _switch
    with _switch_lock:
        if _switch is None:
            _switch = _Switch()
            _log.debug("denormals flushed while the network runs: supported=%s, OpenMP team=%s",
                       _switch.supported, _switch.gomp_parallel is not None)
        return _switch


def team_support() -> tuple[bool, bool]:
    """``(supported, whole_team)``: whether this CPU has FTZ/DAZ, and whether the OpenMP team can be reached."""
    sw = _get_switch()
    return sw.supported, sw.gomp_parallel is not None


@contextlib.contextmanager
def denormals_flushed(enabled: bool = True) -> Iterator[None]:
    """Run the block with FTZ/DAZ set in the calling thread and its OpenMP team; restore both afterwards.

    Nested blocks in one thread set and restore once (the outermost). With ``enabled=False``, without support, or
    with ``$ESPNET_ROS_FLUSH_DENORMALS=0``, the block runs unchanged.
    """
    if not enabled or not flush_denormals_enabled():
        yield
        return
    sw = _get_switch()
    if not sw.supported:
        yield
        return
    depth = getattr(_depth, "value", 0)
    _depth.value = depth + 1
    saved = sw.enter() if depth == 0 else None
    try:
        yield
    finally:
        _depth.value = depth
        if saved is not None:
            sw.leave(saved)
