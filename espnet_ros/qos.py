"""Quality-of-service profiles of espnet_ros, chosen by name: the pure parser of the ``input_qos`` parameter.

The node's camera subscriptions use the QoS named by a short string so that it can be set from a YAML file or the
command line: ``sensor_data`` (REP-2003: best effort, volatile; the default, matching camera drivers), ``reliable``
(reliable, volatile; lossless when the publisher is reliable too, and it does not match a best-effort publisher) or
``best_effort``, each keep-last with depth 2 unless followed by ``:DEPTH`` (``reliable:1``; see ``_DEFAULT_DEPTH``).
Outputs are always reliable (:data:`OUTPUT_QOS`) and label metadata is latched (:data:`LATCHED_QOS`, transient
local), so a subscriber that joins late still gets it.
"""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

__all__ = ["INPUT_QOS_CHOICES", "LATCHED_QOS", "OUTPUT_QOS", "QosError", "parse_qos"]

INPUT_QOS_CHOICES: tuple[str, ...] = ("sensor_data", "reliable", "best_effort")
"""Names :func:`parse_qos` accepts (each may be followed by ``:DEPTH``)."""

_DEFAULT_DEPTH = 2
"""Input queue depth when the QoS string names none. The node only ever segments the newest frame of a camera, so a
deep input queue only makes its executor copy frames that a newer one then supersedes, on the cores that inference
needs (docs/performance.md, "Input queue depth"). Not 1: two frames arriving during one forward pass would then
replace one in the middleware's queue, uncounted; with 2 the node drops the older one itself and counts it as
superseded."""
_MAX_DEPTH = 1000

OUTPUT_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=5,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
"""QoS of every image output: reliable, keep last 5, volatile (best-effort subscribers match it too)."""

LATCHED_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
"""QoS of the label metadata: reliable, transient local, depth 1 (a late subscriber gets the last message)."""


class QosError(ValueError):
    """A QoS string that :func:`parse_qos` does not understand."""


def parse_qos(text: str) -> QoSProfile:
    """Turn ``sensor_data``, ``reliable`` or ``best_effort`` (optionally ``:DEPTH``, 1..1000) into a QoS profile.

    All profiles are keep-last and volatile; the depth defaults to 2. Case and surrounding spaces are ignored.

    Raises:
        QosError: naming the bad value and listing the accepted forms.
    """
    raw = text.strip().lower()
    name, sep, depth_text = raw.partition(":")
    name = name.strip().replace("-", "_")
    expected = (
        f"expected one of {', '.join(INPUT_QOS_CHOICES)}, optionally followed by ':DEPTH' with DEPTH in "
        f"1..{_MAX_DEPTH} (e.g. 'sensor_data' or 'reliable:1')"
    )
    if name not in INPUT_QOS_CHOICES:
        raise QosError(f"unknown QoS {text!r}; {expected}")
    depth = _DEFAULT_DEPTH
    if sep:
        try:
            depth = int(depth_text.strip())
        except ValueError:
            raise QosError(f"QoS {text!r} has a depth that is not an integer; {expected}") from None
        if not 1 <= depth <= _MAX_DEPTH:
            raise QosError(f"QoS {text!r} has depth {depth}, out of range; {expected}")
    reliability = ReliabilityPolicy.RELIABLE if name == "reliable" else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=reliability,
        durability=DurabilityPolicy.VOLATILE,
    )
