"""The CUDA fast path's logic, run where it can run here: on the CPU (graph keys, plan cache, fp32 and fp16 agreement).

The same :class:`GpuPipeline` code runs on a GPU with CUDA graphs; on this machine it runs eagerly on the CPU.
Tests that need a real GPU skip with a reason when none is visible.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from espnet_ros.core.gpu import GpuPipeline, GraphKey
from espnet_ros.core.segmenter import DeviceError, Segmenter, resolve_device

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WEIGHTS = Path(os.environ.get("ESPNET_ROS_WEIGHTS_DIR", SHARED / "espnet" / "weights"))
SAMPLES = Path(os.environ.get("ESPNET_ROS_SAMPLES_DIR", SHARED / "espnet" / "samples"))


@pytest.fixture(scope="module")
def camvid() -> Segmenter:
    return Segmenter("camvid", weights_dir=WEIGHTS)


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    img = cv2.imread(str(SAMPLES / "frankfurt_000000_000294_leftImg8bit.png"))
    assert img is not None
    return img


def _pipeline(seg: Segmenter, **kw: object) -> GpuPipeline:
    return GpuPipeline(seg.model, seg.preset, seg.input_size, torch.device("cpu"), **kw)  # type: ignore[arg-type]


def test_graph_key_separates_everything_a_graph_depends_on(camvid: Segmenter) -> None:
    p = _pipeline(camvid)
    base = p.key([(360, 480)], ["bgr"], [(480, 360)], False)
    assert base == p.key([(360, 480)], ["bgr"], [(480, 360)], False)
    variants = [
        p.key([(360, 480), (360, 480)], ["bgr", "bgr"], [(480, 360)] * 2, False),
        p.key([(720, 960)], ["bgr"], [(480, 360)], False),
        p.key([(360, 480)], ["rgb"], [(480, 360)], False),
        p.key([(360, 480)], ["bgr"], [(240, 180)], False),
        p.key([(360, 480)], ["bgr"], [(480, 360)], True),
        _pipeline(camvid, half=True).key([(360, 480)], ["bgr"], [(480, 360)], False),
    ]
    assert all(v != base for v in variants)
    assert len(set(variants)) == len(variants)
    assert isinstance(base, GraphKey) and base.device == "cpu"


def test_plan_cache_is_bounded_lru(camvid: Segmenter) -> None:
    p = _pipeline(camvid, max_graphs=2)
    small = [np.zeros((h, 64, 3), np.uint8) for h in (40, 48, 56)]
    for im in small:
        p.run([im], ["bgr"], [(64, im.shape[0])])
    assert len(p.cached_keys) == 2
    assert [k.frame_shapes for k in p.cached_keys] == [((48, 64),), ((56, 64),)]
    p.run([small[1]], ["bgr"], [(64, 48)])  # reuse moves it to the back
    assert [k.frame_shapes for k in p.cached_keys] == [((56, 64),), ((48, 64),)]


def test_graphs_need_cuda(camvid: Segmenter) -> None:
    with pytest.raises(ValueError, match="CUDA device"):
        _pipeline(camvid, graphs=True)
    with pytest.raises(ValueError, match="max_graphs"):
        _pipeline(camvid, max_graphs=0)


def test_fp32_pipeline_equals_segmenter(camvid: Segmenter, frame: np.ndarray) -> None:
    small = cv2.resize(frame, (640, 320), interpolation=cv2.INTER_AREA)
    rgb = np.ascontiguousarray(small[:, :, ::-1])
    p = _pipeline(camvid, half=False, channels_last=False)
    outs = p.run([small, rgb], ["bgr", "rgb"], [(640, 320), (480, 360)], confidence=True)
    ref_in = camvid.segment(small, confidence=True)
    ref_net = camvid.segment(small, confidence=True, output_size="network")
    assert np.array_equal(outs[0].class_ids, ref_in.class_ids)
    assert outs[0].confidence is not None and ref_in.confidence is not None
    assert np.abs(outs[0].confidence.astype(int) - ref_in.confidence).max() <= 1
    assert np.array_equal(outs[1].class_ids, ref_net.class_ids)


def test_compiled_network_gives_the_same_labels(camvid: Segmenter, frame: np.ndarray) -> None:
    # the 'eager' backend traces the network with TorchDynamo as Inductor would, without a C compiler or Triton
    small = cv2.resize(frame, (480, 360), interpolation=cv2.INTER_AREA)
    p = _pipeline(camvid, half=False, channels_last=False, compile=True, compile_backend="eager")
    assert p.compiled and p.network is not p._net
    out = p.run([small], ["bgr"], [(480, 360)])[0]
    assert p.compiled
    assert np.array_equal(out.class_ids, camvid.segment(small).class_ids)


def test_a_failing_compiler_falls_back_to_the_uncompiled_network(
    camvid: Segmenter, frame: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> object:
        raise RuntimeError("no C compiler on this robot")

    small = cv2.resize(frame, (480, 360), interpolation=cv2.INTER_AREA)
    p = _pipeline(camvid, half=False, channels_last=False, compile=True, compile_backend=broken)
    with caplog.at_level("WARNING", logger="espnet_ros.core.gpu"):
        out = p.run([small], ["bgr"], [(480, 360)])[0]
    assert not p.compiled and p.network is p._net
    assert "torch.compile of the network failed" in caplog.text and "no C compiler" in caplog.text
    assert np.array_equal(out.class_ids, camvid.segment(small).class_ids)
    again = p.run([small], ["bgr"], [(480, 360)])[0]  # later frames go straight to the uncompiled network
    assert np.array_equal(again.class_ids, out.class_ids)


def test_compile_is_off_by_default_on_the_cpu(camvid: Segmenter) -> None:
    assert not _pipeline(camvid).compiled


def test_half_precision_agrees_with_fp32(frame: np.ndarray) -> None:
    seg = Segmenter("cityscapes", weights_dir=WEIGHTS)
    ref = seg.segment(frame)
    p = _pipeline(seg, half=True, channels_last=True)
    out = p.run([frame], ["bgr"], [(frame.shape[1], frame.shape[0])])[0]
    agreement = float((out.class_ids == ref.class_ids).mean())
    assert agreement >= 0.999, agreement


def test_device_choice_without_gpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the no-GPU behaviour cannot be checked here")
    assert resolve_device("auto") == torch.device("cpu")
    for bad in ("cuda", "cuda:0", "cuda:3"):
        with pytest.raises(DeviceError, match="use device 'cpu' or 'auto'"):
            resolve_device(bad)
    with pytest.raises(DeviceError, match="expected auto, cpu, cuda or cuda:N"):
        resolve_device("tpu")
    with pytest.raises(DeviceError):
        Segmenter("camvid", weights_dir=WEIGHTS, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none visible on this machine)")
def test_cuda_graph_replay_matches_eager(frame: np.ndarray) -> None:  # pragma: no cover - GPU only
    seg = Segmenter("cityscapes", weights_dir=WEIGHTS)
    p = GpuPipeline(seg.model, seg.preset, seg.input_size, torch.device("cuda"))
    ref = seg.segment(frame)
    for _ in range(3):
        out = p.run([frame], ["bgr"], [(frame.shape[1], frame.shape[0])])[0]
    assert p.captures == 1 and p.replays == 3
    assert float((out.class_ids == ref.class_ids).mean()) >= 0.999
