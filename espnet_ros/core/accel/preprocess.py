"""The compiled preprocessing of frames exactly twice the network size (one AOTInductor package per channel order).

For such a frame the weights' recipe (bilinear resize by a factor of 2, then the per-channel affine map) is a 2x2
block mean through the map; :class:`CompiledPreprocess` runs it as one pass over the frame, bit for bit the values
of :func:`~espnet_ros.core.preprocess.preprocess_into`, checked on every load on every possible block sum
(:func:`block_sums_probe`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from espnet_ros.core.accel.cache import ArtifactCache, ArtifactKey, trial_in_subprocess
from espnet_ros.core.preprocess import frame_tensor, preprocess_into
from espnet_ros.core.weights import WeightsPreset

__all__ = ["CompiledPreprocess", "block_sums_probe"]

_log = logging.getLogger(__name__)


class _HalfPreprocess(nn.Module):
    """A frame of exactly twice the network size → the network input: ``(1, 2h, 2w, 3) uint8`` → ``(1, h, w, 3)``.

    What :func:`~espnet_ros.core.preprocess.preprocess_into` computes for such a frame, as one graph:
    each value is the mean of a 2x2 block (OpenCV's bilinear resize by a factor of 2, a multiple of 1/4 and exact)
    through the per-channel map ``offset + mean * gain`` (BGR out; ``rgb`` frames are flipped first). The eager
    path rounds that map once (``torch.addcmul`` is a fused multiply-add on the CPU); compiled code multiplies and
    adds separately, so the map runs in float64, where ``offset + sum * (gain / 4)`` is exact for the presets'
    magnitudes (the exact result spans at most 34 significant bits, 2^-5 down to 2^-39), and is rounded once to
    float32: the same value bit for bit. :class:`CompiledPreprocess` checks that on every possible block sum.
    """

    quarter_gain: Tensor
    offset: Tensor

    def __init__(self, gain: Tensor, offset: Tensor, rgb: bool) -> None:
        super().__init__()
        self.rgb = rgb
        self.register_buffer("quarter_gain", gain.to(torch.float64).reshape(3) * 0.25)
        self.register_buffer("offset", offset.to(torch.float64).reshape(3))

    def forward(self, frame: Tensor) -> Tensor:
        n, h, w = int(frame.shape[0]), int(frame.shape[1]) // 2, int(frame.shape[2]) // 2
        x = frame.view(n, h, 2, w, 2, 3)
        if self.rgb:
            x = x.flip(-1)
        x = x.to(torch.int16)
        sums = (x[:, :, 0, :, 0] + x[:, :, 0, :, 1]) + (x[:, :, 1, :, 0] + x[:, :, 1, :, 1])
        return (self.offset + sums.to(torch.float64) * self.quarter_gain).to(torch.float32)


def block_sums_probe(network_size: tuple[int, int]) -> Tensor:
    """A ``(1, 2h, 2w, 3) uint8`` frame whose 2x2 blocks take every sum 0..1020 in every channel.

    The sums run along the blocks in row order, shifted by a third of the range per channel (so a swapped channel
    shows); a network of at least 1021 input pixels gets all of them.
    """
    w, h = network_size
    sums = (torch.arange(h * w).view(h, w, 1) + torch.tensor([0, 340, 680])) % 1021
    parts, rest = [], sums
    for _ in range(3):
        part = rest.clamp(max=255)
        parts.append(part)
        rest = rest - part
    parts.append(rest)  # what is left of at most 1020 after three 255s
    blocks = torch.stack(parts, dim=2).view(h, w, 2, 2, 3)  # (row, col, dy, dx, channel)
    return blocks.permute(0, 2, 1, 3, 4).reshape(1, 2 * h, 2 * w, 3).to(torch.uint8).contiguous()


# Loads a preprocessing package and runs it once on a zero frame (argv: package, network width, height).
_PREPROCESS_TRIAL = """
import sys
import torch
runner = torch._inductor.aoti_load_package(sys.argv[1])
w, h = int(sys.argv[2]), int(sys.argv[3])
with torch.inference_mode():
    runner(torch.zeros(1, 2 * h, 2 * w, 3, dtype=torch.uint8))
"""


class CompiledPreprocess:
    """The preprocessing of frames exactly twice the network size, compiled by AOTInductor and cached.

    One package per channel order (``bgr``, ``rgb``), keyed like the network's (kinds ``prep-bgr`` / ``prep-rgb``);
    each is built once (seconds), loaded in a separate process before it is put in place, and on every load checked
    to give :func:`~espnet_ros.core.preprocess.preprocess_into`'s values bit for bit on :func:`block_sums_probe`. One
    pass over the frame in place of strips of OpenCV and torch calls, each a round of the thread pools: it pays on a
    busy CPU (docs/performance.md, "Decisions").

    Raises:
        BackendError: a package cannot be built, loaded or does not give the eager values.
    """

    def __init__(self, preset: WeightsPreset, network_size: tuple[int, int], cache: ArtifactCache, *,
                 retry_failed: bool = True) -> None:
        gain_np, offset_np = preset.preprocessing.affine()
        gain, offset = torch.from_numpy(gain_np), torch.from_numpy(offset_np)
        self.network_size = (int(network_size[0]), int(network_size[1]))
        w, h = self.network_size
        probe = block_sums_probe(self.network_size)
        self._runners: dict[str, Callable[[Tensor], Any]] = {}
        for order in ("bgr", "rgb"):
            rgb = order == "rgb"
            module = _HalfPreprocess(gain, offset, rgb).eval()
            want = torch.empty((1, h, w, 3), dtype=torch.float32)
            preprocess_into(probe[0].numpy(), order, gain, offset, want[0])  # the one CPU function

            def build(path: Path, module: nn.Module = module, order: str = order) -> None:
                _log.info("compiling the %s preprocessing of %dx%d %s frames with AOTInductor (once; cached in %s)",
                          preset.name, 2 * w, 2 * h, order, cache.root)
                with torch.no_grad():
                    ep = torch.export.export(module, (torch.zeros(1, 2 * h, 2 * w, 3, dtype=torch.uint8),))
                    torch._inductor.aoti_compile_and_package(ep, package_path=str(path),
                                                             inductor_configs={"freezing": True})

            def load(path: Path) -> Callable[[Tensor], Any]:
                return torch._inductor.aoti_load_package(str(path))  # type: ignore[no-any-return]

            def check(runner: Callable[[Tensor], Any], want: Tensor = want) -> str | None:
                with torch.inference_mode():
                    got = self._call(runner, probe)
                if tuple(got.shape) != tuple(want.shape) or got.dtype != want.dtype:
                    return f"output {tuple(got.shape)} {got.dtype}, expected {tuple(want.shape)} {want.dtype}"
                differ = int((got != want).sum())
                return None if differ == 0 else f"{differ} of {got.numel()} probe values differ from the eager path"

            def trial(path: Path) -> str | None:
                return trial_in_subprocess(_PREPROCESS_TRIAL, str(path), str(w), str(h))

            key = ArtifactKey.for_preset(f"prep-{order}", preset, self.network_size)
            self._runners[order] = cache.load_or_build(key, ".pt2", build, load, check, trial,
                                                       retry_failed=retry_failed)

    @staticmethod
    def _call(runner: Callable[[Tensor], Any], frame: Tensor) -> Tensor:
        out: Any = runner(frame)
        return out[0] if isinstance(out, list | tuple) else out  # type: ignore[no-any-return]

    def __call__(self, frame: npt.NDArray[np.uint8], order: str) -> Tensor:
        """``(2h, 2w, 3) uint8`` frame in ``order`` → ``(h, w, 3) float32`` network input (BGR)."""
        w, h = self.network_size
        if frame.shape != (2 * h, 2 * w, 3) or frame.dtype != np.uint8:
            raise ValueError(f"expected a ({2 * h}, {2 * w}, 3) uint8 frame, got {frame.shape} {frame.dtype}")
        x = frame_tensor(np.ascontiguousarray(frame)).unsqueeze(0)  # the package assumes C order
        return self._call(self._runners[order], x)[0]
