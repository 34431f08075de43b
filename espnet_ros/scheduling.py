"""Which waiting frames the segmentation node's worker takes: the freshness rule behind ``max_queue_delay``.

Each camera has a one-frame slot (latest frame wins). When the worker is busy, the frame in a slot waits; if the
worker then took it, that wait would be added to the answer's latency (on average half a forward pass when frames
come about as fast as the node segments them). :func:`frame_is_late` decides instead that such a frame is
*late* — dropped so that the worker takes the camera's next frame the moment it arrives — but only when doing so
costs nothing but throughput: the camera streams (the median gap between its last arrivals, :func:`frame_period`,
says a newer frame is due within one period of this one's arrival), the camera was not skipped for lateness the
previous time (so no camera starves, e.g. the second of two synchronised cameras), the frame arrived while the worker
was busy (one that arrived while it was idle waited for the executor alone, and dropping it would leave the camera
unanswered until its next frame: never, after a stream's last frame), and the wait exceeds ``max_queue_delay``
(negative: never). Pure and driven by explicit numbers, so tests feed it values.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

__all__ = ["DEFAULT_MAX_QUEUE_DELAY", "frame_is_late", "frame_period"]

DEFAULT_MAX_QUEUE_DELAY = 0.02
"""The node's default ``max_queue_delay`` (s): longer than a GPU batch takes, far shorter than a CPU frame."""


def frame_period(arrivals: Sequence[float]) -> float | None:
    """A camera's frame period: the median gap between its last arrivals (seconds), or ``None`` with fewer than 3."""
    if len(arrivals) < 3:
        return None
    gaps = sorted(b - a for a, b in itertools.pairwise(arrivals))
    return gaps[len(gaps) // 2]


def frame_is_late(waited: float, max_queue_delay: float, period: float | None, skipped_last_time: bool, *,
                  arrived_while_busy: bool) -> bool:
    """Whether the worker should drop a frame that waited ``waited`` seconds in its slot.

    Args:
        waited: seconds from the frame's arrival (as received by the middleware) to now.
        max_queue_delay: the node's parameter; negative disables the rule.
        period: the camera's frame period from :func:`frame_period` (``None``: not known, not streaming).
        skipped_last_time: the camera's previous frame taken from its slot was dropped as late.
        arrived_while_busy: the worker was busy when the frame arrived (it finished a batch after the arrival).

    Returns:
        ``True`` to drop the frame (a newer one of a streaming camera is due), ``False`` to process it.
    """
    if max_queue_delay < 0 or skipped_last_time or not arrived_while_busy or not waited > max_queue_delay:
        return False
    if period is None or not (period > 0 and math.isfinite(period)):
        return False  # a single image or a burst: nothing newer is known to be coming
    return waited < period  # a newer frame is due within one period of this one's arrival
