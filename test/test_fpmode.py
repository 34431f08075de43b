"""Tests of espnet_ros.core.fpmode and the subnormal weights: denormals are flushed in the calling thread *and* its
OpenMP team while the network runs, restored after, and no label changes.

A subnormal result is observed directly: ``1e-30 * 1e-10`` is ``1e-40`` (subnormal) with IEEE arithmetic and ``0``
with FTZ. A tensor of 2^20 elements is split by torch across its threads, so an all-zero product means every team
thread had the mode set, an all-non-zero one that none had.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from numpy.typing import NDArray

from espnet_ros.core import fpmode
from espnet_ros.core.accel import FusedESPNet, flush_subnormals
from espnet_ros.core.fpmode import denormals_flushed, team_support
from espnet_ros.core.segmenter import Segmenter
from espnet_ros.core.weights import build_model, get_preset

_N = 1 << 20


@pytest.fixture
def two_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _supported() -> bool:
    supported, _ = team_support()
    return supported


needs_ftz = pytest.mark.skipif(not _supported(), reason="this CPU / torch build has no flush-to-zero mode")


def _products() -> torch.Tensor:
    """``1e-30 * 1e-10`` over 2^20 elements, computed in parallel by torch's OpenMP team."""
    return torch.full((_N,), 1e-30, dtype=torch.float32) * torch.full((_N,), 1e-10, dtype=torch.float32)


def _zero_fraction() -> float:
    return float((_products() == 0).float().mean())


@needs_ftz
def test_flushed_in_the_calling_thread_and_its_team_and_restored_after(two_threads: None) -> None:
    assert team_support() == (True, True), "torch's libgomp should be reachable on Linux"
    assert _zero_fraction() == 0.0  # IEEE: 1e-40 is representable as a subnormal
    with denormals_flushed():
        assert _zero_fraction() == 1.0  # every team thread flushed, not just this one
    assert _zero_fraction() == 0.0  # restored in every thread


@needs_ftz
def test_nested_blocks_restore_once_and_disabled_blocks_change_nothing(
    two_threads: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with denormals_flushed():
        with denormals_flushed():
            assert _zero_fraction() == 1.0
        assert _zero_fraction() == 1.0  # the inner block did not restore
    assert _zero_fraction() == 0.0
    with denormals_flushed(enabled=False):
        assert _zero_fraction() == 0.0
    monkeypatch.setenv(fpmode.FLUSH_DENORMALS_ENV, "0")
    with denormals_flushed():
        assert _zero_fraction() == 0.0


@needs_ftz
def test_other_threads_keep_ieee_arithmetic(two_threads: None) -> None:
    seen: list[float] = []
    inside = threading.Event()
    done = threading.Event()

    def other() -> None:
        inside.wait(10)
        seen.append(float((torch.tensor([1e-30]) * torch.tensor([1e-10])).item()))
        done.set()

    t = threading.Thread(target=other)
    t.start()
    with denormals_flushed():
        inside.set()
        assert done.wait(10)
    t.join()
    assert seen and seen[0] != 0.0


def test_flush_subnormals_finds_them_from_the_bits() -> None:
    m = torch.nn.Conv2d(1, 4, 1)
    with torch.no_grad():
        # subnormal, smallest normal, negative subnormal, zero
        m.weight.copy_(torch.tensor([1e-40, 1.1754944e-38, -3e-39, 0.0]).view(4, 1, 1, 1))
    assert (m.weight.view(torch.int32) & 0x7F800000 == 0).sum() == 3  # really stored as subnormals (and a zero)
    assert flush_subnormals(m) == 2
    assert m.weight.flatten().tolist()[1:] == [pytest.approx(1.1754944e-38), 0.0, 0.0]
    assert m.weight.flatten().tolist()[0] == 0.0


def test_the_fused_graph_has_no_subnormal_weights(weights_dir: Path) -> None:
    model = build_model(get_preset("cityscapes"), weights_dir)
    raw = sum(int(((p.view(torch.int32) & 0x7F800000) == 0).sum() - (p == 0).sum())
              for p in model.state_dict().values() if p.dtype == torch.float32)
    assert raw > 10_000  # the upstream weights hold thousands (5 % of them)
    fused = FusedESPNet(model)
    assert fused.flushed_subnormals > 1_000
    for t in [*fused.parameters(), *fused.buffers()]:
        if t.dtype == torch.float32:
            bits = t.view(torch.int32)
            assert int((((bits & 0x7F800000) == 0) & ((bits & 0x007FFFFF) != 0)).sum()) == 0


@pytest.mark.parametrize("preset", ["cityscapes", "camvid"])
def test_flushing_changes_no_label(weights_dir: Path, samples_dir: Path, preset: str) -> None:
    frames: list[NDArray[np.uint8]] = [cv2.imread(str(f)) for f in sorted(samples_dir.glob("*.png"))]
    if preset == "camvid":
        frames = [np.ascontiguousarray(cv2.resize(f, (480, 360), interpolation=cv2.INTER_AREA)) for f in frames]
    seg = Segmenter(preset, weights_dir=weights_dir, backend="fused")
    assert seg.flush_denormals
    for frame in frames:
        flushed = seg.segment(frame).class_ids
        seg.flush_denormals = False
        ieee = seg.segment(frame).class_ids
        seg.flush_denormals = True
        np.testing.assert_array_equal(flushed, ieee)


def test_the_reference_backend_keeps_ieee_arithmetic(weights_dir: Path) -> None:
    assert not Segmenter("cityscapes", weights_dir=weights_dir, backend="eager").flush_denormals
    assert not Segmenter("cityscapes", weights_dir=weights_dir, backend="fused", flush_denormals=False).flush_denormals
