"""The freshness rule behind max_queue_delay: which waiting frames the worker drops as late."""

from __future__ import annotations

import math

import pytest

from espnet_ros.scheduling import DEFAULT_MAX_QUEUE_DELAY, frame_is_late, frame_period


@pytest.mark.parametrize(
    ("waited", "delay", "period", "skipped", "late"),
    [
        (0.050, 0.02, 0.1, False, True),     # waited 50 ms of a 100 ms period: the next frame is 50 ms away
        (0.015, 0.02, 0.1, False, False),    # within max_queue_delay: take it
        (0.020, 0.02, 0.1, False, False),    # exactly the bound: take it
        (0.050, 0.02, 0.1, True, False),     # skipped last time: never twice in a row
        (0.050, -1.0, 0.1, False, False),    # negative: the rule is off
        (0.050, 0.0, 0.1, False, True),      # zero: any wait for a busy worker is too long
        (0.050, 0.02, None, False, False),   # not streaming (a single image): nothing newer is coming
        (0.150, 0.02, 0.1, False, False),    # waited longer than a period: the stream stopped, keep the last frame
        (0.050, 0.02, 0.0, False, False),
        (0.050, 0.02, math.nan, False, False),
        (0.050, 0.02, math.inf, False, False),
        (0.010, 0.005, 1 / 30, False, True),  # 30 Hz camera, 5 ms bound
    ],
)
def test_frame_is_late(waited: float, delay: float, period: float | None, skipped: bool, late: bool) -> None:
    assert frame_is_late(waited, delay, period, skipped, arrived_while_busy=True) is late


def test_frame_period_is_the_median_gap_of_three_or_more_arrivals() -> None:
    assert frame_period([]) is None and frame_period([1.0, 1.1]) is None  # a pair is a burst, not a stream
    assert frame_period([1.0, 1.1, 1.2]) == pytest.approx(0.1)
    assert frame_period([0.0, 0.1, 0.2, 0.3, 2.0]) == pytest.approx(0.1)  # one long gap does not move it
    assert frame_period([0.0, 0.001, 0.002]) == pytest.approx(0.001)  # a burst: anything that waited is kept


def test_default_bound_sits_between_a_gpu_batch_and_a_cpu_frame() -> None:
    assert 0.005 < DEFAULT_MAX_QUEUE_DELAY < 0.05
