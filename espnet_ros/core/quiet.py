"""Keeping native libraries' messages (libpng, libjpeg, FFmpeg) off the terminal while a file is decoded.

C libraries under OpenCV write warnings straight to file descriptor 2, before the caller can say which input was
bad in its own words. :func:`native_stderr_captured` points descriptor 2 at a temporary file for the duration of a
``with`` block and hands back what was written there. It redirects the whole process, so it is for single-threaded
command-line tools, never for a node (its other threads log to stderr too).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["CapturedText", "native_stderr_captured"]


class CapturedText:
    """What native code wrote to stderr inside :func:`native_stderr_captured` (filled when the block ends)."""

    def __init__(self) -> None:
        self.text = ""

    def first_line(self) -> str:
        """The first non-empty line written, or ``""``."""
        return next((line.strip() for line in self.text.splitlines() if line.strip()), "")


@contextmanager
def native_stderr_captured() -> Iterator[CapturedText]:
    """Capture what is written to file descriptor 2 inside the block (Python's own ``sys.stderr`` is flushed first)."""
    captured = CapturedText()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.text = sink.read(65536).decode("utf-8", "replace")
