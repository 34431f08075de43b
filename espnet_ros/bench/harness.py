"""The timing harness of ``espnet-ros bench``: frames to measure, interleaved timing, quantiles, the CPU's name.

Functions under test are timed round-robin (the order reversed every other round) so that a busy or drifting
machine slows every contender alike; results are medians and quantiles in milliseconds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from espnet_ros.core.errors import EspnetRosError

__all__ = ["U8", "BenchError", "Progress"]

U8 = npt.NDArray[np.uint8]
Progress = Callable[[str], None]


class BenchError(EspnetRosError):
    """The benchmark cannot run as asked (bad option, missing input, a ROS process that died)."""



def _pct(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values, np.float64), q * 100.0))


def _med(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise BenchError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 1920x1080") from None
    if w <= 0 or h <= 0:
        raise BenchError(f"--size {text!r}: width and height must be positive")
    return w, h


def _load_frames(paths: Sequence[str] | None, size: tuple[int, int] | None) -> list[tuple[str, U8]]:
    """``(name, (H, W, 3) uint8 BGR)`` for the given images (default: the sample frames), resized to ``size``."""
    from espnet_ros.core.frames import FrameSource, samples_dir

    frames = []
    for f in FrameSource(list(paths) if paths else [samples_dir()]):
        img = f.image
        if size is not None and (img.shape[1], img.shape[0]) != size:
            shrink = size[0] * size[1] < img.shape[0] * img.shape[1]
            img = np.asarray(cv2.resize(img, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR),
                             np.uint8)
        frames.append((f.stem, np.ascontiguousarray(img, dtype=np.uint8)))
        if len(frames) >= 64:
            break
    if not frames:
        raise BenchError("no frames to benchmark; pass --images")
    return frames


def _bind(fn: Callable[[U8], object], img: U8) -> Callable[[], object]:
    return lambda: fn(img)


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000.0


def _interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int, desc: str, quiet: bool
) -> dict[str, list[float]]:
    """Time every function ``repeats`` times, round-robin (order reversed every other round); ms per call."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    with tqdm(total=repeats * len(names), desc=desc, unit="run", disable=quiet, leave=False) as bar:
        for r in range(repeats):
            for name in names if r % 2 == 0 else reversed(names):
                times[name].append(_timed(fns[name]))
                bar.update(1)
    return times


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()
