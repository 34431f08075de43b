"""Process-wide heap settings for inference outside the main thread (glibc ``mallopt``).

Every CPU forward pass allocates and frees the same tens of megabytes of activations. In the main thread glibc
keeps such blocks and hands them out again; in any other thread (the node's worker) the default settings give each
large block its own ``mmap`` and return it on ``free``, so every frame pays for tens of thousands of page faults (the
kernel zeroing every fresh page; docs/performance.md, "Heap"). The fix is three ``mallopt`` calls: one
malloc arena for every thread, blocks up to 32 MiB from the heap instead of ``mmap``, and no trimming of freed heap
memory, so the process's memory stays at its working set (flat, not growing) and is reused frame after frame.

It changes the whole process, so only programs that own their process call it (the node's ``main``), as early as
possible: the arena limit only holds when it is set before other threads first allocate. It is a no-op (returning
``False``) where the C library has no ``mallopt`` (musl, macOS) and when ``ESPNET_ROS_MALLOC_TUNING=0``.
:func:`release_freed_memory` is the way back: it returns what is free to the system once a model is released (the
node's lifecycle cleanup).
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys

__all__ = ["MALLOC_TUNING_ENV", "release_freed_memory", "retain_freed_memory"]

MALLOC_TUNING_ENV = "ESPNET_ROS_MALLOC_TUNING"
"""Set to ``0`` to leave the C library's heap settings alone."""

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's upper limit for M_MMAP_THRESHOLD on 64-bit systems
_TRIM_THRESHOLD = 1 << 30


def retain_freed_memory() -> bool:
    """Keep freed heap blocks in the process for reuse (glibc); ``True`` when every setting was accepted.

    Sets ``M_ARENA_MAX=1``, ``M_MMAP_THRESHOLD=32 MiB`` and ``M_TRIM_THRESHOLD=1 GiB``. Call it once, before the
    program starts threads. Returns ``False`` without changing anything when ``ESPNET_ROS_MALLOC_TUNING=0`` or the C
    library has no ``mallopt``.
    """
    if os.environ.get(MALLOC_TUNING_ENV, "1").strip() == "0":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    results = [mallopt(_M_ARENA_MAX, 1), mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD),
               mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)]
    return all(r == 1 for r in results)


def release_freed_memory() -> bool:
    """Give memory that nothing uses any more back to the system (after a node releases its Segmenter).

    Collects garbage, empties the CUDA caching allocator where CUDA was used, and asks glibc to return the free parts
    of its heap (``malloc_trim``, which also undoes the retention of :func:`retain_freed_memory` for what is free).
    Returns ``True`` when the C library returned memory; ``False`` where it has no ``malloc_trim`` or had none.
    """
    gc.collect()
    torch = sys.modules.get("torch")  # not imported here: retain_freed_memory must run before torch allocates
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    try:
        malloc_trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    malloc_trim.argtypes = [ctypes.c_size_t]
    malloc_trim.restype = ctypes.c_int
    return bool(malloc_trim(0))
