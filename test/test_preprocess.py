"""Tests of espnet_ros.core.preprocess and the ESPNet-C upsampling: one recipe per device, and every path calls it.

The CPU function and its torch counterpart are checked against the upstream-order reference
(:meth:`Preprocessing.apply_numpy`: map first, then resize) on real frames at the network size, twice it and another
size, and against each other bit for bit where the arithmetic is the same (frames of the network size and of twice
it). The Segmenter, the CUDA pipeline's logic (run on the CPU) and the compiled preprocessing must give exactly the
function's values.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from numpy.typing import NDArray

from espnet_ros.core.accel import EagerBackend, FusedESPNet
from espnet_ros.core.baseline import BaselinePipeline
from espnet_ros.core.gpu import GpuPipeline
from espnet_ros.core.model import upsample_logits
from espnet_ros.core.preprocess import preprocess_into, preprocess_tensors
from espnet_ros.core.segmenter import Segmenter
from espnet_ros.core.weights import build_model, get_preset

NETWORK = (128, 64)  # (width, height): small, so that every check takes milliseconds
SIZES = {"network": NETWORK, "twice": (256, 128), "other": (301, 173)}


@pytest.fixture(scope="module")
def frame(samples_dir: Path) -> NDArray[np.uint8]:
    """A real street frame (BGR), 512x256, from the upstream samples."""
    img = cv2.imread(str(sorted(samples_dir.glob("*.png"))[0]))
    return np.ascontiguousarray(cv2.resize(img, (512, 256), interpolation=cv2.INTER_AREA), np.uint8)


def _sized(frame: NDArray[np.uint8], size: tuple[int, int]) -> NDArray[np.uint8]:
    return np.ascontiguousarray(cv2.resize(frame, size, interpolation=cv2.INTER_AREA), np.uint8)


def _affine() -> tuple[torch.Tensor, torch.Tensor]:
    gain, offset = get_preset("cityscapes").preprocessing.affine()
    return torch.from_numpy(gain), torch.from_numpy(offset)


def _cpu(image: NDArray[np.uint8], order: str) -> torch.Tensor:
    """The CPU function's ``(h, w, 3)`` output."""
    gain, offset = _affine()
    out = torch.empty((NETWORK[1], NETWORK[0], 3), dtype=torch.float32)
    preprocess_into(image, order, gain, offset, out)
    return out


def _torch(image: NDArray[np.uint8], order: str) -> torch.Tensor:
    """The torch counterpart's output for one frame, as ``(h, w, 3)``."""
    gain, offset = _affine()
    x = preprocess_tensors([torch.from_numpy(image)], [order], NETWORK, gain.view(1, 3, 1, 1),
                           offset.view(1, 3, 1, 1))
    return x[0].permute(1, 2, 0)


@pytest.mark.parametrize("size", list(SIZES))
def test_both_functions_follow_the_upstream_order_reference(frame: NDArray[np.uint8], size: str) -> None:
    image = _sized(frame, SIZES[size])
    want = torch.from_numpy(get_preset("cityscapes").preprocessing.apply_numpy(image, NETWORK)).permute(1, 2, 0)
    rgb = np.ascontiguousarray(image[:, :, ::-1])
    for got in (_cpu(image, "bgr"), _cpu(rgb, "rgb"), _torch(image, "bgr"), _torch(rgb, "rgb")):
        assert got.shape == want.shape and got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=0, atol=2e-6)  # float32 rounding of another order only


@pytest.mark.parametrize("size", ["network", "twice"])
def test_the_torch_counterpart_equals_the_cpu_function_bit_for_bit(frame: NDArray[np.uint8], size: str) -> None:
    image = _sized(frame, SIZES[size])
    for order, img in (("bgr", image), ("rgb", np.ascontiguousarray(image[:, :, ::-1]))):
        assert torch.equal(_torch(img, order), _cpu(image if order == "bgr" else img, order))


def test_every_path_calls_the_one_function(weights_dir: Path, frame: NDArray[np.uint8]) -> None:
    """The Segmenter's batch (frames of every size, both orders) and the CUDA pipeline's logic run on the CPU."""
    seg = Segmenter("cityscapes", weights_dir=weights_dir, backend="eager", network_size=NETWORK)
    images = [_sized(frame, s) for s in SIZES.values()]
    orders = ["bgr", "rgb", "bgr"]
    batch = seg.preprocess(images, orders)  # type: ignore[arg-type]
    assert batch.shape == (3, 3, NETWORK[1], NETWORK[0]) and batch.is_contiguous(memory_format=torch.channels_last)
    for i, (img, order) in enumerate(zip(images, orders, strict=True)):
        assert torch.equal(batch[i].permute(1, 2, 0), _cpu(img, order))
    gpu = GpuPipeline(seg.model, seg.preset, NETWORK, torch.device("cpu"), half=False, compile=False)
    x = gpu.preprocess([torch.from_numpy(im) for im in images], orders)
    for i, (img, order) in enumerate(zip(images, orders, strict=True)):
        assert torch.equal(x[i].permute(1, 2, 0), _torch(img, order))


def test_every_path_upsamples_espnet_c_logits_with_the_one_helper(weights_dir: Path) -> None:
    """ESPNet-C predicts at 1/8: the reference, the eager backend and the CUDA pipeline's logic upsample alike (bit
    for bit); the fused network within float rounding of its own folded arithmetic."""
    p = get_preset("cityscapes-c-p2q8")
    model = build_model(p, weights_dir)
    g = torch.Generator().manual_seed(7)
    x = torch.rand(1, 3, NETWORK[1], NETWORK[0], generator=g) * 0.02 - 0.01
    with torch.inference_mode():
        want = upsample_logits(model(x), p.output_stride)
        assert want.shape == (1, 20, NETWORK[1], NETWORK[0])
        assert torch.equal(EagerBackend(model, p.output_stride).logits(x), want)
        assert torch.equal(BaselinePipeline(p, model=model, network_size=NETWORK).logits(x), want)
        fused = FusedESPNet(model).logits(x.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(fused, want, atol=1e-3, rtol=1e-4)
