"""Health of the segmentation node: per-camera counters, rates and latency, their status levels, /diagnostics.

:class:`RateMeter` and :class:`LatencyWindow` are bounded, pure and driven by explicit timestamps (tests feed them
numbers). :class:`CameraStats` holds one camera's counters (the node guards it with its lock);
:meth:`CameraStats.snapshot` freezes it into a :class:`CameraSnapshot`. :func:`camera_level` decides OK / WARN /
ERROR from two consecutive snapshots (a camera that stalls, or whose every frame in the last period was rejected,
stale or failed to publish), and :func:`build_diagnostic_array` turns snapshots into the
``diagnostic_msgs/DiagnosticArray`` the node publishes on ``/diagnostics`` once a second (what
``rqt_robot_monitor`` and the diagnostic aggregator read). diagnostic_updater is not on PyPI, hence this module.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from espnet_ros.transport import profile_hint

__all__ = [
    "ERROR",
    "OK",
    "WARN",
    "CameraSnapshot",
    "CameraStats",
    "DiagKey",
    "LatencyWindow",
    "RateMeter",
    "build_diagnostic_array",
    "camera_level",
    "fmt_ms",
    "frames_before_first",
    "percentile",
    "sequence_gap",
]

OK, WARN, ERROR = 0, 1, 2
"""Status levels (the values of ``DiagnosticStatus.OK/WARN/ERROR``)."""

_COUNTERS = (
    "received", "processed", "published", "dropped_superseded", "dropped_late", "dropped_stale", "rejected",
    "publish_errors", "internal_errors", "skipped_no_subscribers", "missed_upstream", "lost_in_transport",
    "missed_before_first",
)


class RateMeter:
    """Events per second over the last ``window`` seconds, from at most ``max_events`` remembered timestamps."""

    def __init__(self, window: float = 5.0, max_events: int = 2000) -> None:
        if window <= 0 or max_events < 2:
            raise ValueError("RateMeter needs window > 0 and max_events >= 2")
        self.window = float(window)
        self._times: deque[float] = deque(maxlen=max_events)

    def add(self, t: float) -> None:
        """Record one event at monotonic time ``t`` (seconds)."""
        self._times.append(t)

    def last(self, n: int) -> list[float]:
        """The last ``n`` remembered timestamps (fewer if fewer are remembered), oldest first."""
        return list(itertools.islice(reversed(self._times), n))[::-1]

    def rate(self, now: float) -> float:
        """Events per second among those within ``window`` of ``now`` (0 with fewer than two such events)."""
        while self._times and now - self._times[0] > self.window:
            self._times.popleft()
        n = len(self._times)
        if n < 2:
            return 0.0
        span = max(self._times[-1] - self._times[0], now - self._times[0])
        return (n - 1) / span if span > 0 else 0.0

    def __len__(self) -> int:
        return len(self._times)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values`` by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


class LatencyWindow:
    """The last ``max_samples`` latencies (seconds) and their p50 / p95."""

    def __init__(self, max_samples: int = 300) -> None:
        self._samples: deque[float] = deque(maxlen=max_samples)

    def add(self, seconds: float) -> None:
        """Record one latency."""
        self._samples.append(float(seconds))

    def p50(self) -> float:
        """Median latency in seconds (NaN when empty)."""
        return percentile(list(self._samples), 50)

    def p95(self) -> float:
        """95th percentile latency in seconds (NaN when empty)."""
        return percentile(list(self._samples), 95)

    def __len__(self) -> int:
        return len(self._samples)


class DiagKey:
    """The keys of the values in the node's ``/diagnostics`` statuses, defined once for the node and its readers.

    The strings are what ``rqt_robot_monitor`` shows; tools (``espnet-ros bench``) look values up by these names,
    never by a copy of the string.
    """

    INPUT_RATE = "input rate (Hz)"
    OUTPUT_RATE = "output rate (Hz)"
    LATENCY_P50 = "latency p50 (ms)"
    LATENCY_P95 = "latency p95 (ms)"
    QUEUE_WAIT_P50 = "queue wait p50 (ms)"
    RECEIVED = "frames received"
    PROCESSED = "frames processed"
    PUBLISHED = "frames published"
    DROPPED_SUPERSEDED = "frames dropped (superseded)"
    DROPPED_LATE = "frames dropped (late)"
    DROPPED_STALE = "frames dropped (stale)"
    REJECTED = "frames rejected (malformed)"
    PUBLISH_ERRORS = "publish errors"
    INTERNAL_ERRORS = "internal errors"
    SKIPPED_NO_SUBSCRIBERS = "frames skipped (no subscribers)"
    MISSED_UPSTREAM = "frames missed upstream (sequence gaps)"
    LOST_IN_TRANSPORT = "frames lost in transport"
    MISSED_BEFORE_FIRST = "frames sent before the first received"
    SECONDS_SINCE_INPUT = "seconds since last input"
    LAST_PROBLEM = "last problem"
    SEGMENTATION_P50 = "segmentation time p50 (ms)"
    SEGMENTATION_P95 = "segmentation time p95 (ms)"
    CALLBACK_ERRORS = "callback errors survived"
    LAST_CALLBACK_ERROR = "last callback error"
    LIFECYCLE_STATE = "lifecycle state"


@dataclass(frozen=True)
class CameraSnapshot:
    """One camera's counters and rates at one moment (see :class:`CameraStats` for the counters' meaning)."""

    topic: str
    received: int
    processed: int
    published: int
    dropped_superseded: int
    dropped_late: int
    dropped_stale: int
    rejected: int
    publish_errors: int
    internal_errors: int
    skipped_no_subscribers: int
    missed_upstream: int
    lost_in_transport: int
    missed_before_first: int
    input_hz: float
    output_hz: float
    latency_p50: float
    latency_p95: float
    queue_wait_p50: float
    seconds_since_input: float | None
    last_problem: str


@dataclass
class CameraStats:
    """Mutable counters of one camera (guarded by the node's lock).

    Attributes:
        received: frames that arrived (callback).
        processed: frames segmented.
        published: frames for which at least one output was published.
        dropped_superseded: frames replaced in the one-frame slot by a newer one before the worker took them.
        dropped_late: frames that waited for the busy worker longer than ``max_queue_delay`` while a newer frame
            of their camera was due (see :mod:`espnet_ros.scheduling`).
        dropped_stale: frames older than ``max_frame_age`` when the worker took them.
        rejected: malformed frames (bad encoding, size, step, data length, corrupted compressed bytes, ...).
        publish_errors: ``publish()`` calls that raised.
        internal_errors: unexpected exceptions while handling a frame (a bug; logged with the traceback).
        skipped_no_subscribers: frames not segmented because no output of this camera had a subscriber.
        missed_upstream: frames the camera published that never reached the node's callback, counted from gaps in
            the publisher's sequence numbers while the topic has one publisher: the middleware's keep-last input
            queue (``input_qos`` depth) replaced them while the node was busy, or they were lost in transport.
            Stays 0 where the middleware reports no sequence numbers.
        missed_before_first: frames a publisher sent before the first of its frames that reached the node (the
            sequence number of that first frame minus one, counted for the camera's first publisher and for every
            publisher that restarts its count while it is the only one): frames sent while the middleware was
            still matching the two ends. For a publisher that was already running when the node started it also
            counts what it sent before the node subscribed. Stays 0 where the middleware reports no sequence
            numbers.
        lost_in_transport: frames the middleware reports as lost on the way (the subscription's message-lost
            event), a part of ``missed_upstream``; for camera-sized images between processes this is what a
            missing or too small shared-memory segment causes.
        last_sequence: the publisher's sequence number of the last frame received (``None``: none yet, or the
            count restarted).
    """

    topic: str
    received: int = 0
    processed: int = 0
    published: int = 0
    dropped_superseded: int = 0
    dropped_late: int = 0
    dropped_stale: int = 0
    rejected: int = 0
    publish_errors: int = 0
    internal_errors: int = 0
    skipped_no_subscribers: int = 0
    missed_upstream: int = 0
    lost_in_transport: int = 0
    missed_before_first: int = 0
    last_sequence: int | None = None
    last_problem: str = ""
    last_input: float | None = None
    input_rate: RateMeter = field(default_factory=RateMeter)
    output_rate: RateMeter = field(default_factory=RateMeter)
    latency: LatencyWindow = field(default_factory=LatencyWindow)
    queue_wait: LatencyWindow = field(default_factory=LatencyWindow)

    def snapshot(self, now: float) -> CameraSnapshot:
        """Freeze the counters; ``now`` is the monotonic time used for rates and the time since the last input."""
        return CameraSnapshot(
            topic=self.topic,
            **{name: getattr(self, name) for name in _COUNTERS},
            input_hz=self.input_rate.rate(now),
            output_hz=self.output_rate.rate(now),
            latency_p50=self.latency.p50(),
            latency_p95=self.latency.p95(),
            queue_wait_p50=self.queue_wait.p50(),
            seconds_since_input=None if self.last_input is None else now - self.last_input,
            last_problem=self.last_problem,
        )


def sequence_gap(last: int | None, sequence: object) -> tuple[int, int | None]:
    """Frames missed between two frames of one publisher: ``(missed, new_last)``.

    ``last`` is the publisher's sequence number of the previous frame (``None`` if there is none to compare with),
    ``sequence`` the new frame's (``MessageInfo['publication_sequence_number']``). A sequence number that is not a
    positive integer (the middleware does not report one) restarts the count (``(0, None)``); one that does not
    increase means a restarted or different publisher, so it starts a new count without counting anything.
    """
    if isinstance(sequence, bool) or not isinstance(sequence, int) or sequence <= 0:
        return 0, None
    if last is None or sequence <= last:
        return 0, sequence
    return sequence - last - 1, sequence


def frames_before_first(last: int | None, sequence: object, first_frame: bool) -> int:
    """Frames a publisher sent before the first of its frames that arrived (``missed_before_first``).

    ``sequence`` is the arriving frame's publisher sequence number (``None`` or not positive: unknown, or several
    publishers), ``last`` the previous frame's, ``first_frame`` whether it is the camera's first frame. A new
    publisher is the camera's first one, or one whose count restarted (``sequence <= last``); its sequence
    numbers start at 1, so ``sequence - 1`` of its frames never arrived. 0 for every other frame.
    """
    if isinstance(sequence, bool) or not isinstance(sequence, int) or sequence <= 0:
        return 0
    if first_frame or (last is not None and sequence <= last):
        return sequence - 1
    return 0


def camera_level(
    current: CameraSnapshot, previous: CameraSnapshot | None, stall_timeout: float
) -> tuple[int, str]:
    """Decide a camera's level and message from its snapshot now and one period earlier.

    ERROR: every frame taken in the period was rejected as malformed. WARN: no frame yet, no frame for
    ``stall_timeout`` seconds (stalled), every frame in the period was stale, publishing failed, some frames were
    rejected, or the middleware lost frames in transport. OK otherwise (frames the node drops on purpose, and
    frames its input queue replaced while it was busy, are normal under load).
    """
    def delta(name: str) -> int:
        return int(getattr(current, name)) - (int(getattr(previous, name)) if previous is not None else 0)

    taken = delta("processed") + delta("rejected") + delta("dropped_stale") + delta("internal_errors")
    if current.seconds_since_input is None:
        return WARN, (
            f"no image received yet on {current.topic}: check the topic name and input_qos; {profile_hint()}"
        )
    if delta("rejected") > 0 and delta("rejected") == taken:
        return ERROR, f"every frame rejected ({delta('rejected')} in the last period): {current.last_problem}"
    if current.seconds_since_input > stall_timeout:
        return WARN, f"stalled: no image for {current.seconds_since_input:.1f} s on {current.topic}"
    if delta("dropped_stale") > 0 and delta("dropped_stale") == taken:
        return WARN, (
            "every frame dropped as stale (header stamp older than max_frame_age): check the camera's clock, "
            "use_sim_time, or raise max_frame_age"
        )
    if delta("internal_errors") > 0:
        return WARN, f"internal errors while processing frames: {current.last_problem}"
    if delta("publish_errors") > 0:
        return WARN, f"{delta('publish_errors')} publish() calls failed in the last period"
    if delta("rejected") > 0:
        return WARN, f"some frames rejected: {current.last_problem}"
    if delta("lost_in_transport") > 0:
        return WARN, (
            f"{delta('lost_in_transport')} frames lost in transport in the last period: {profile_hint()}; over a "
            "network use a reliable camera and input_qos reliable"
        )
    return OK, "ok"


def _fmt(value: float, unit_scale: float = 1.0, digits: int = 1) -> str:
    return "n/a" if math.isnan(value) else f"{value * unit_scale:.{digits}f}"


def fmt_ms(seconds: float) -> str:
    """``seconds`` as milliseconds with one decimal for a diagnostics value (``n/a`` for NaN)."""
    return _fmt(seconds, 1000.0)


def _values(pairs: Iterable[tuple[str, object]]) -> list[KeyValue]:
    return [KeyValue(key=k, value=str(v)) for k, v in pairs]


def build_diagnostic_array(
    stamp: Time,
    node_name: str,
    cameras: Sequence[tuple[CameraSnapshot, int, str]],
    summary: Mapping[str, object],
) -> DiagnosticArray:
    """Build the ``DiagnosticArray``: one status per camera (with its level and message) and one for the node.

    The node's status takes the worst camera level and carries ``summary`` (device, preset, batch counts ...).
    """
    msg = DiagnosticArray()
    msg.header.stamp = stamp
    statuses = []
    for snap, level, message in cameras:
        st = DiagnosticStatus()
        st.level = bytes([level])
        st.name = f"{node_name}: camera {snap.topic}"
        st.hardware_id = snap.topic
        st.message = message
        st.values = _values([
            (DiagKey.INPUT_RATE, _fmt(snap.input_hz)),
            (DiagKey.OUTPUT_RATE, _fmt(snap.output_hz)),
            (DiagKey.LATENCY_P50, fmt_ms(snap.latency_p50)),
            (DiagKey.LATENCY_P95, fmt_ms(snap.latency_p95)),
            (DiagKey.QUEUE_WAIT_P50, fmt_ms(snap.queue_wait_p50)),
            (DiagKey.RECEIVED, snap.received),
            (DiagKey.PROCESSED, snap.processed),
            (DiagKey.PUBLISHED, snap.published),
            (DiagKey.DROPPED_SUPERSEDED, snap.dropped_superseded),
            (DiagKey.DROPPED_LATE, snap.dropped_late),
            (DiagKey.DROPPED_STALE, snap.dropped_stale),
            (DiagKey.REJECTED, snap.rejected),
            (DiagKey.PUBLISH_ERRORS, snap.publish_errors),
            (DiagKey.INTERNAL_ERRORS, snap.internal_errors),
            (DiagKey.SKIPPED_NO_SUBSCRIBERS, snap.skipped_no_subscribers),
            (DiagKey.MISSED_UPSTREAM, snap.missed_upstream),
            (DiagKey.LOST_IN_TRANSPORT, snap.lost_in_transport),
            (DiagKey.MISSED_BEFORE_FIRST, snap.missed_before_first),
            (DiagKey.SECONDS_SINCE_INPUT, "never" if snap.seconds_since_input is None
             else f"{snap.seconds_since_input:.2f}"),
            (DiagKey.LAST_PROBLEM, snap.last_problem or "none"),
        ])
        statuses.append(st)
    node_status = DiagnosticStatus()
    worst = max((lvl for _, lvl, _ in cameras), default=OK)
    node_status.level = bytes([worst])
    node_status.name = f"{node_name}: segmentation"
    node_status.hardware_id = str(summary.get("device", ""))
    node_status.message = {OK: "ok", WARN: "a camera needs attention", ERROR: "a camera is failing"}[worst]
    node_status.values = _values(summary.items())
    msg.status = [node_status, *statuses]
    return msg
