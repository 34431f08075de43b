"""The CPU backends that run the network on a preprocessed batch: eager, fused and compiled.

``eager`` is the reference network as written (NCHW), ``fused`` :class:`~espnet_ros.core.accel.fused.FusedESPNet`
in eager PyTorch, ``compiled`` the fused graph exported and compiled ahead of time by AOTInductor (a shared library
with frozen, pre-packed weights), kept in the :mod:`~espnet_ros.core.accel.cache` and checked against the eager
fused graph on a probe input every time it is loaded. Why these three and no others: docs/performance.md.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from espnet_ros.core.accel.cache import ArtifactCache, ArtifactKey, trial_in_subprocess
from espnet_ros.core.accel.fused import FusedESPNet, channels_last
from espnet_ros.core.accel.preprocess import CompiledPreprocess
from espnet_ros.core.errors import BackendError
from espnet_ros.core.model import upsample_logits
from espnet_ros.core.weights import WeightsPreset

__all__ = [
    "Backend",
    "CompiledBackend",
    "EagerBackend",
    "FusedBackend",
    "compiler_available",
]

_log = logging.getLogger(__name__)

_PROBE_AGREEMENT = 0.999


class Backend:
    """Runs the network on a preprocessed ``(N, 3, h, w) float32`` batch on the CPU.

    ``labels`` returns ``(N, h, w) uint8`` class ids, ``logits`` ``(N, C, h, w) float32`` scores, both at the
    network input resolution. ``channels_last`` says which memory format the input is best given in.
    """

    name: str = "base"
    channels_last: bool = True
    preprocess_half: CompiledPreprocess | None = None
    """Set by backends that also compiled the preprocessing of frames twice the network size (see that class)."""

    def labels(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def logits(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def describe(self) -> str:
        """One line for logs: the backend and what it runs."""
        return self.name


class EagerBackend(Backend):
    """The reference network as written: eager fp32, NCHW, ``max(1)`` over the logits."""

    name = "eager"
    channels_last = False

    def __init__(self, model: nn.Module, output_stride: int) -> None:
        self.model = model
        self.output_stride = output_stride

    def logits(self, x: Tensor) -> Tensor:
        y = self.model(x.contiguous())
        if self.output_stride != 1:
            y = upsample_logits(y, self.output_stride)
        return y

    def labels(self, x: Tensor) -> Tensor:
        return self.logits(x).max(1)[1].to(torch.uint8)


class FusedBackend(Backend):
    """:class:`FusedESPNet` in eager PyTorch, channels-last (no build step, no cache)."""

    name = "fused"

    def __init__(self, fused: FusedESPNet) -> None:
        self.fused = channels_last(fused)

    def labels(self, x: Tensor) -> Tensor:
        return self.fused(x.contiguous(memory_format=torch.channels_last))

    def logits(self, x: Tensor) -> Tensor:
        return self.fused.logits(x.contiguous(memory_format=torch.channels_last))

def _probe(network_size: tuple[int, int]) -> Tensor:
    """A deterministic probe batch (2 images) in the network's input range, channels-last."""
    w, h = network_size
    g = torch.Generator().manual_seed(20180908)
    x = torch.rand(2, 3, h, w, generator=g) * 0.02 - 0.01
    return x.contiguous(memory_format=torch.channels_last)


def _agreement_problem(got: Tensor, want: Tensor) -> str | None:
    if tuple(got.shape) != tuple(want.shape) or got.dtype != want.dtype:
        return f"output {tuple(got.shape)} {got.dtype}, expected {tuple(want.shape)} {want.dtype}"
    agree = float((got == want).float().mean())
    if agree < _PROBE_AGREEMENT:
        return f"labels agree with the eager graph on {agree:.4%} of probe pixels, expected >= {_PROBE_AGREEMENT:.1%}"
    return None


class _LabelsModule(nn.Module):
    def __init__(self, fused: FusedESPNet) -> None:
        super().__init__()
        self.fused = fused

    def forward(self, x: Tensor) -> Tensor:
        return self.fused(x)


def compiler_available() -> bool:
    """Whether a C++ compiler for AOTInductor is on the PATH (``$CXX``, ``c++``, ``g++`` or ``clang++``)."""
    candidates = [os.environ.get("CXX", ""), "c++", "g++", "clang++"]
    return any(c and shutil.which(c) for c in candidates)


# Loads an AOTInductor package and runs it once on a zero frame (argv: package, network width, height).
_AOTI_TRIAL = """
import sys
import torch
runner = torch._inductor.aoti_load_package(sys.argv[1])
w, h = int(sys.argv[2]), int(sys.argv[3])
with torch.inference_mode():
    runner(torch.zeros(1, 3, h, w).contiguous(memory_format=torch.channels_last))
"""


class CompiledBackend(Backend):
    """:class:`FusedESPNet` compiled ahead of time by AOTInductor (frozen, pre-packed weights), cached on disk.

    The first start for a (preset, network size, software) builds the package (about half a minute on two cores,
    then ~15 s for :class:`CompiledPreprocess`);
    later starts load it in milliseconds. ``logits`` (needed only for confidence maps) runs the eager fused graph.
    """

    name = "compiled"

    def __init__(self, fused: FusedESPNet, preset: WeightsPreset, network_size: tuple[int, int],
                 cache: ArtifactCache, *, retry_failed: bool = True) -> None:
        if not compiler_available():
            raise BackendError("backend 'compiled' needs a C++ compiler (g++ or clang++) for AOTInductor; install "
                               "one (apt install g++) or use backend 'fused'")
        self.fused = channels_last(fused)
        self.key = ArtifactKey.for_preset("aoti", preset, network_size)
        probe = _probe(network_size)
        with torch.inference_mode():
            want = self.fused(probe)

        def build(path: Path) -> None:
            _log.info("compiling the %s network for %dx%d with AOTInductor (once; cached in %s)",
                      preset.name, network_size[0], network_size[1], cache.root)
            with torch.no_grad():
                ep = torch.export.export(_LabelsModule(self.fused).eval(), (probe[:1],))
                torch._inductor.aoti_compile_and_package(ep, package_path=str(path),
                                                         inductor_configs={"freezing": True})

        def load(path: Path) -> Callable[[Tensor], Tensor]:
            return torch._inductor.aoti_load_package(str(path))  # type: ignore[no-any-return]

        def check(runner: Callable[[Tensor], Tensor]) -> str | None:
            with torch.inference_mode():
                got = torch.cat([self._call(runner, probe[i:i + 1]) for i in range(int(probe.shape[0]))])
                return _agreement_problem(got, want)

        def trial(path: Path) -> str | None:
            return trial_in_subprocess(_AOTI_TRIAL, str(path), str(network_size[0]), str(network_size[1]))

        self._runner = cache.load_or_build(self.key, ".pt2", build, load, check, trial, retry_failed=retry_failed)
        try:
            self.preprocess_half = CompiledPreprocess(preset, network_size, cache, retry_failed=retry_failed)
        except BackendError as exc:
            _log.warning("the compiled preprocessing is unusable here (%s); frames of twice the network size go "
                         "through OpenCV and torch instead (the same values, slower)", exc)

    @staticmethod
    def _call(runner: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        out: Any = runner(x.contiguous(memory_format=torch.channels_last))
        return out[0] if isinstance(out, list | tuple) else out

    def labels(self, x: Tensor) -> Tensor:
        if x.shape[0] == 1:
            return self._call(self._runner, x)
        return torch.cat([self._call(self._runner, x[i:i + 1]) for i in range(int(x.shape[0]))])

    def logits(self, x: Tensor) -> Tensor:
        return self.fused.logits(x.contiguous(memory_format=torch.channels_last))
