"""Fast exact CPU inference: an inference-only rewrite of ESPNet, its compiled and exported forms, and their cache.

:class:`FusedESPNet` computes the same function as :class:`~espnet_ros.core.model.ESPNet` /
:class:`~espnet_ros.core.model.ESPNetC` with less memory traffic: batch norms folded into the convolutions that
feed them (or into one per-channel multiply-add where a concat or a residual sits between), the input pooling
shared between the two projections, and the last 2x2 transposed convolution rewritten as a 1x1 convolution whose
four sub-pixel class maps are reduced to class ids *before* they are interleaved, strip by strip so that its scores
stay in the cache (no full-resolution logits are written, and no ``argmax`` over a strided axis is needed). It runs
channels-last and returns ``uint8`` class ids. Its labels equal the reference network's up to floating-point rounding
(the tests pin agreement on real frames).

A :class:`Backend` runs it: ``eager`` (the reference network as written, NCHW), ``fused`` (:class:`FusedESPNet` in
eager PyTorch), ``compiled`` (AOTInductor: the fused graph exported, compiled to a shared library with frozen,
pre-packed weights) and ``onnxruntime`` (the fused graph exported to ONNX). The last two build an artifact once and
keep it in a cache directory (``$ESPNET_ROS_CACHE_DIR``, default ``~/.cache/espnet_ros/compiled``) under a name
derived from everything that could make it stale: preset name and weights sha256, network size, this module's
graph version, the torch / onnxruntime versions and the CPU's vector ISA. Artifacts are written atomically, built
under a file lock, hashed, and on every load checked against the eager fused graph on a probe input; a corrupt
or wrong artifact is deleted and rebuilt, never used. A build that fails (the compiler, or a fresh artifact that
crashes or fails its trial, load or check) is recorded beside it (``<name>.failed.json``); ``auto`` then takes
``fused`` at once on later starts instead of compiling again, while a backend asked for by name always builds
again. :func:`resolve_backend` picks ``auto``: the fastest exact path measured on the CPU (see
docs/performance.md).
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import itertools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from espnet_ros.core.errors import EspnetRosError
from espnet_ros.core.model import ESPNet, ESPNetC, _ESPDown, _ESPPyramid
from espnet_ros.core.weights import WeightsPreset

__all__ = [
    "ACCEL_VERSION",
    "BACKENDS",
    "BACKEND_ENV",
    "CACHE_DIR_ENV",
    "DEFAULT_CACHE_DIR",
    "DEFAULT_CPU_BACKEND",
    "ArtifactCache",
    "ArtifactKey",
    "Backend",
    "BackendError",
    "BackendName",
    "CompiledBackend",
    "CompiledPreprocess",
    "EagerBackend",
    "FusedBackend",
    "FusedESPNet",
    "OnnxRuntimeBackend",
    "block_sums_probe",
    "cache_dir",
    "compiler_available",
    "flush_subnormals",
    "half_preprocess_reference",
    "make_backend",
    "onnxruntime_available",
    "resolve_backend",
]

_log = logging.getLogger(__name__)

T = TypeVar("T")
M = TypeVar("M", bound=nn.Module)

ACCEL_VERSION = 7
"""Version of the fused graph; part of every cache key (bump it whenever :class:`FusedESPNet` computes differently)."""

_STRIP_BYTES = 4 << 20
"""Budget for one strip of the last layer's scores in :meth:`FusedESPNet.forward` (fits a core's share of cache)."""

CACHE_DIR_ENV = "ESPNET_ROS_CACHE_DIR"
BACKEND_ENV = "ESPNET_ROS_BACKEND"
DEFAULT_CACHE_DIR = Path("~/.cache/espnet_ros/compiled")

BackendName = Literal["auto", "eager", "fused", "compiled", "onnxruntime"]
BACKENDS: tuple[str, ...] = ("auto", "eager", "fused", "compiled", "onnxruntime")

DEFAULT_CPU_BACKEND: BackendName = "compiled"
"""What ``auto`` means on the CPU (when a C++ compiler is present; else ``fused``): the fastest exact path measured."""

_PROBE_AGREEMENT = 0.999
_LEVEL1 = 16  # channels of ESPNet's level-1 features


class BackendError(EspnetRosError):
    """An inference backend is unknown, unavailable here, or its compiled artifact cannot be built or loaded."""


# --------------------------------------------------------------------------------------------- the fused network


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """``(scale, shift)`` of an eval-mode batch norm, computed in float64 for the folding."""
    assert bn.running_var is not None and bn.running_mean is not None
    var = bn.running_var.double()
    scale = bn.weight.double() / torch.sqrt(var + bn.eps)
    shift = bn.bias.double() - bn.running_mean.double() * scale
    return scale, shift


def _fold_conv(conv: nn.Module, bn: nn.Module) -> nn.Conv2d:
    """``bn(conv(x))`` as one convolution with a bias."""
    assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
    scale, shift = _bn_affine(bn)
    out = copy.deepcopy(conv)
    out.weight = nn.Parameter((conv.weight.double() * scale.view(-1, 1, 1, 1)).float(), requires_grad=False)
    out.bias = nn.Parameter(shift.float(), requires_grad=False)
    return out


def _plain_conv(conv: nn.Module) -> nn.Conv2d:
    assert isinstance(conv, nn.Conv2d)
    return copy.deepcopy(conv)


def _channels_last(module: M) -> M:
    return module.to(memory_format=torch.channels_last)  # type: ignore[call-overload, no-any-return]


def _sub(module: nn.Module, *names: str) -> nn.Module:
    """``module.a.b...`` typed as a module (submodule lookup by attribute names)."""
    for name in names:
        child = getattr(module, name) if not name.isdigit() else module[int(name)]  # type: ignore[index]
        assert isinstance(child, nn.Module), f"{name} is not a module"
        module = child
    return module


class _Affine(nn.Module):
    """A folded eval-mode batch norm (one per-channel multiply-add), optionally followed by PReLU."""

    scale: Tensor
    shift: Tensor
    slope: Tensor | None

    def __init__(self, bn: nn.Module, act: nn.Module | None, channels: slice = slice(None)) -> None:
        super().__init__()
        assert isinstance(bn, nn.BatchNorm2d) and (act is None or isinstance(act, nn.PReLU))
        scale, shift = _bn_affine(bn)
        self.register_buffer("scale", scale[channels].float().view(1, -1, 1, 1))
        self.register_buffer("shift", shift[channels].float().view(1, -1, 1, 1))
        self.register_buffer("slope", act.weight.detach()[channels].clone() if act is not None else None)

    def forward(self, x: Tensor) -> Tensor:
        y = torch.addcmul(self.shift, x, self.scale)
        return F.prelu(y, self.slope) if self.slope is not None else y


class _SplitAffine(nn.Module):
    """A folded batch norm (+ PReLU) over a channel concat, applied to the parts separately (no concat written)."""

    def __init__(self, bn: nn.Module, act: nn.Module | None, sizes: Sequence[int]) -> None:
        super().__init__()
        bounds = [0, *itertools.accumulate(sizes)]
        self.parts = nn.ModuleList([_Affine(bn, act, slice(a, b)) for a, b in itertools.pairwise(bounds)])

    def forward(self, parts: list[Tensor]) -> list[Tensor]:
        return [f(p) for f, p in zip(self.parts, parts, strict=True)]


class _SplitConv(nn.Module):
    """A convolution over a channel concat as a sum of convolutions over the parts (no concat written)."""

    def __init__(self, conv: nn.Module, sizes: Sequence[int]) -> None:
        super().__init__()
        assert isinstance(conv, nn.Conv2d) and sum(sizes) == conv.in_channels
        convs = []
        start = 0
        for i, n in enumerate(sizes):
            c = copy.deepcopy(conv)
            c.in_channels = n
            c.weight = nn.Parameter(conv.weight.detach()[:, start:start + n].clone(), requires_grad=False)
            if i > 0 or conv.bias is None:
                c.register_parameter("bias", None)
            convs.append(c)
            start += n
        self.convs = nn.ModuleList(convs)

    def forward(self, parts: list[Tensor]) -> Tensor:
        y: Tensor = self.convs[0](parts[0])
        for conv, p in zip(self.convs[1:], parts[1:], strict=True):
            y = y + conv(p)
        return y


def _split(conv: nn.Conv2d, sizes: Sequence[int] | None) -> nn.Module:
    return conv if sizes is None else _SplitConv(conv, sizes)


def _call(module: nn.Module, x: Tensor | list[Tensor]) -> Tensor:
    """Run a plain conv on a tensor, a split conv on parts."""
    out: Tensor = module(x) if isinstance(module, _SplitConv) else module(x if isinstance(x, Tensor) else x[0])
    return out


class _ConvPReLU(nn.Module):
    """A convolution with its batch norm folded in, then PReLU."""

    slope: Tensor

    def __init__(self, cbr: nn.Module, in_sizes: Sequence[int] | None = None) -> None:
        super().__init__()
        self.conv = _split(_fold_conv(_sub(cbr, "conv"), _sub(cbr, "bn")), in_sizes)
        act = _sub(cbr, "act")
        assert isinstance(act, nn.PReLU)
        self.register_buffer("slope", act.weight.detach().clone())

    def forward(self, x: Tensor | list[Tensor]) -> Tensor:
        return F.prelu(_call(self.conv, x), self.slope)


def _unfused(t: Tensor) -> Tensor:
    """``t`` itself; while compiling, through an exact no-op (two negations) that Inductor fuses into the next kernel.

    Inductor rewrites ``conv(x) + other`` as a convolution with a sum post-op. In an ESP module every partial sum of
    the pyramid is also a part of the concat, so that rewrite computes each sum out of place and then copies all of
    them into the concat (4 copies per module). Seen through this no-op, the convolutions stay plain and the sums,
    the concat, the residual and the closing batch norm + PReLU become one kernel: 93.6 -> 86.8 ms per Cityscapes
    pass (docs/performance.md), the same values bit for bit (negation is exact). Eager runs skip it.
    """
    return torch.neg(torch.neg(t)) if torch.compiler.is_compiling() else t


class _FusedESP(nn.Module):
    """An ESP module (strided or not, residual or not) with its closing batch norm as one multiply-add.

    The closing batch norm + PReLU runs on each of the five parts (and its slice of the residual) before they are
    concatenated: the same per-element operations, so the same values, but compiled the concat is written once, as
    the module's output, instead of once before and once after the batch norm (docs/performance.md, eighth
    session).
    """

    def __init__(self, esp: nn.Module, in_sizes: Sequence[int] | None = None) -> None:
        super().__init__()
        assert isinstance(esp, _ESPPyramid)
        self.c1 = _split(_plain_conv(_sub(esp, "c1", "conv")), in_sizes)
        self.d1 = _plain_conv(_sub(esp, "d1", "conv"))
        self.d2 = _plain_conv(_sub(esp, "d2", "conv"))
        self.d4 = _plain_conv(_sub(esp, "d4", "conv"))
        self.d8 = _plain_conv(_sub(esp, "d8", "conv"))
        self.d16 = _plain_conv(_sub(esp, "d16", "conv"))
        self.residual = bool(getattr(esp, "add", False))
        self.sizes = [self.d1.out_channels] + [self.d2.out_channels] * 4
        if isinstance(esp, _ESPDown):
            self.post = _SplitAffine(esp.bn, esp.act, self.sizes)
        else:
            self.post = _SplitAffine(_sub(esp, "bn", "bn"), _sub(esp, "bn", "act"), self.sizes)

    def forward(self, x: Tensor | list[Tensor]) -> Tensor:
        r = _call(self.c1, x)
        a1 = _unfused(self.d2(r))
        a2 = a1 + _unfused(self.d4(r))
        a3 = a2 + _unfused(self.d8(r))
        a4 = a3 + _unfused(self.d16(r))
        parts = [self.d1(r), a1, a2, a3, a4]
        if self.residual:
            assert isinstance(x, Tensor)
            parts = [xi + p for xi, p in zip(torch.split(x, self.sizes, 1), parts, strict=True)]
        return torch.cat(self.post(parts), 1)


def _conv_transpose(ct: nn.Module, bn: nn.Module | None = None) -> nn.ConvTranspose2d:
    """A copy of a 2x2 stride-2 transposed convolution, with a following batch norm folded in."""
    assert isinstance(ct, nn.ConvTranspose2d)
    out = copy.deepcopy(ct)
    if bn is not None:
        assert isinstance(bn, nn.BatchNorm2d)
        scale, shift = _bn_affine(bn)
        w = ct.weight.detach().double() * scale.view(1, -1, 1, 1)  # weight is (in, out, kh, kw)
        out.weight = nn.Parameter(w.float(), requires_grad=False)
        out.bias = nn.Parameter(shift.float(), requires_grad=False)
    return out


def _subpixel_conv(ct: nn.Module) -> nn.Conv2d:
    """A 2x2 stride-2 transposed convolution as a 1x1 convolution with 4 x out channels, sub-pixel major.

    Output channel ``(2 * di + dj) * C + o`` of the result at ``(i, j)`` is output channel ``o`` of ``ct`` at
    ``(2i + di, 2j + dj)``.
    """
    assert isinstance(ct, nn.ConvTranspose2d) and tuple(ct.kernel_size) == (2, 2) and tuple(ct.stride) == (2, 2)
    w = ct.weight.detach()  # (in, out, 2, 2)
    cin, cout = int(w.shape[0]), int(w.shape[1])
    out = nn.Conv2d(cin, 4 * cout, 1, bias=False)
    out.weight.data = w.permute(2, 3, 1, 0).reshape(4 * cout, cin, 1, 1).clone()
    return out


class _FusedEncoder(nn.Module):
    """ESPNet-C's feature extractor with folded batch norms, shared input pooling and no concats written.

    Each concat followed by a batch norm and PReLU (``b1``, ``b2``, ``b3``) is kept as its list of parts, each part
    normalised on its own, and the convolutions that read the concat are split by input channels and summed.
    """

    def __init__(self, enc: ESPNetC) -> None:
        super().__init__()
        s1, s2, s3 = (_LEVEL1, 3), (64, 64, 3), (128, 128)
        self.level1 = _ConvPReLU(enc.level1)
        self.b1 = _SplitAffine(enc.b1.bn, enc.b1.act, s1)
        self.level2_0 = _FusedESP(enc.level2_0, s1)
        self.level2 = nn.ModuleList([_FusedESP(m) for m in enc.level2])
        self.b2 = _SplitAffine(enc.b2.bn, enc.b2.act, s2)
        self.level3_0 = _FusedESP(enc.level3_0, s2)
        self.level3 = nn.ModuleList([_FusedESP(m) for m in enc.level3])
        self.b3 = _SplitAffine(enc.b3.bn, enc.b3.act, s3)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor], list[Tensor]]:
        """``(level1, level1_cat parts, level2_cat parts, level3_cat parts)``."""
        p1 = F.avg_pool2d(x, 3, 2, 1)  # the upstream InputProjection(1); InputProjection(2) pools it once more
        p2 = F.avg_pool2d(p1, 3, 2, 1)
        out0 = self.level1(x)
        out0_cat = self.b1([out0, p1])
        out1_0 = self.level2_0(out0_cat)
        out1 = out1_0
        for layer in self.level2:
            out1 = layer(out1)
        out1_cat = self.b2([out1, out1_0, p2])
        out2_0 = self.level3_0(out1_cat)
        out2 = out2_0
        for layer in self.level3:
            out2 = layer(out2)
        out2_cat = self.b3([out2_0, out2])
        return out0, out0_cat, out1_cat, out2_cat


def flush_subnormals(module: nn.Module) -> int:
    """Set every subnormal value (``0 < |x| < 1.18e-38``) of ``module``'s float parameters and buffers to 0.

    Returns how many were set. 5 % of the upstream ESPNet weights are subnormal (channels that training decayed to
    nothing); on Intel CPUs every multiply with a subnormal operand takes a microcode assist, which made the
    network 5-6x slower there (docs/performance.md). What they contribute to any sum is below 1e-36 times an
    activation, far under float32's resolution of the logits, so the labels do not change (tests pin that).
    """
    count = 0
    with torch.no_grad():
        for t in itertools.chain(module.parameters(), module.buffers()):
            if t.dtype != torch.float32:
                continue
            # from the bits, so that a thread running with denormals-are-zero (which compares them equal to 0)
            # finds them too: exponent field 0, mantissa not 0
            bits = t.view(torch.int32)
            sub = ((bits & 0x7F800000) == 0) & ((bits & 0x007FFFFF) != 0)
            count += int(sub.sum())
            t.masked_fill_(sub, 0.0)
    return count


class FusedESPNet(nn.Module):
    """Inference-only ESPNet / ESPNet-C with folded batch norms; ``forward`` returns ``(N, h, w) uint8`` class ids.

    Built from a loaded reference network (:class:`~espnet_ros.core.model.ESPNet` or
    :class:`~espnet_ros.core.model.ESPNetC`, Mehta et al., ECCV 2018), whose weights it copies. Inputs are the
    preprocessed ``(N, 3, h, w) float32`` batch, best channels-last; :meth:`logits` returns the class scores at the
    input resolution (ESPNet-C's upsampled x8 bilinearly, as upstream does before its argmax).
    """

    up_l2_slope: Tensor

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        with torch.no_grad():
            if isinstance(model, ESPNet):
                enc = model.encoder
                self.stride = 1
                self.skip_after_concat = model.decoder_variant == "camvid"
                self.classes = int(model.classifier.weight.shape[1])
                c = self.classes
                self.encoder = _FusedEncoder(enc)
                self.head = _SplitConv(_fold_conv(enc.classifier.conv, model.br), (128, 128))
                self.up_l3 = _conv_transpose(_sub(model, "up_l3", "0"))
                self.level3_C = _SplitConv(_plain_conv(_sub(model, "level3_C", "conv")), (64, 64, 3))
                self.combine_in = _SplitAffine(_sub(model, "combine_l2_l3", "0", "bn"),
                                               _sub(model, "combine_l2_l3", "0", "act"), (c, c))
                self.combine = _FusedESP(_sub(model, "combine_l2_l3", "1"), (c, c))
                self.up_l2 = _conv_transpose(_sub(model, "up_l2", "0"), _sub(model, "up_l2", "1", "bn"))
                act = _sub(model, "up_l2", "1", "act")
                assert isinstance(act, nn.PReLU)
                self.register_buffer("up_l2_slope", act.weight.detach().clone())
                self.conv = _ConvPReLU(model.conv, (c, _LEVEL1, 3) if self.skip_after_concat else (c, _LEVEL1))
                self.classifier = _subpixel_conv(model.classifier)
            elif isinstance(model, ESPNetC):
                self.stride = 8
                self.skip_after_concat = False
                self.classes = int(model.classifier.conv.weight.shape[0])
                self.encoder = _FusedEncoder(model)
                self.head = _SplitConv(_plain_conv(model.classifier.conv), (128, 128))
            else:
                raise TypeError(f"FusedESPNet needs an ESPNet or ESPNetC, got {type(model).__name__}")
        for p in self.parameters():
            p.requires_grad_(False)
        self.flushed_subnormals = flush_subnormals(self)
        self.eval()

    def _classifier_input(self, x: Tensor) -> Tensor:
        """ESPNet: the last 1x1 convolution's input, ``(N, C_in, h/2, w/2)``."""
        out0, out0_cat, out1_cat, out2_cat = self.encoder(x)
        l3 = self.up_l3(self.head(out2_cat))
        c = self.combine(self.combine_in([self.level3_C(out1_cat), l3]))
        l2 = F.prelu(self.up_l2(c), self.up_l2_slope)
        skip = out0_cat if self.skip_after_concat else [out0]
        out: Tensor = self.conv([l2, *skip])
        return out

    def _subpixel_logits(self, x: Tensor) -> Tensor:
        """ESPNet: ``(N, 4C, h/2, w/2)`` scores, channel ``k * C + o`` for sub-pixel ``k = 2 * di + dj``."""
        out: Tensor = self.classifier(self._classifier_input(x))
        return out

    def _strip_rows(self, width: int) -> int:
        """Rows of the half-resolution map per classifier strip: its ``4C`` scores stay within ~4 MiB (cache)."""
        row_bytes = width * 4 * self.classes * 4
        return max(1, _STRIP_BYTES // row_bytes)

    def logits(self, x: Tensor) -> Tensor:
        """Class scores ``(N, C, h, w) float32`` at the input resolution."""
        if self.stride != 1:
            y: Tensor = self.head(self.encoder(x)[3])
            return F.interpolate(y, scale_factor=self.stride, mode="bilinear", align_corners=False)
        y = self._subpixel_logits(x)
        n, _, h, w = y.shape
        y = y.permute(0, 2, 3, 1).reshape(n, h, w, 2, 2, self.classes)
        return y.permute(0, 5, 1, 3, 2, 4).reshape(n, self.classes, 2 * h, 2 * w)

    def forward(self, x: Tensor) -> Tensor:
        """Class ids ``(N, h, w) uint8`` at the input resolution (first maximum wins)."""
        if self.stride != 1:
            return self.logits(x).max(1)[1].to(torch.uint8)
        if torch.jit.is_tracing():  # the ONNX export: sizes are traced values; one map, the same labels
            ids = self._subpixel_ids(self._subpixel_logits(x))
            n, h, w, _ = ids.shape
            return ids.view(n, h, w, 2, 2).permute(0, 1, 3, 2, 4).reshape(n, 2 * h, 2 * w)
        # The last 1x1 convolution writes 4C scores per half-resolution pixel (42 MB for Cityscapes at 1024x512)
        # that the max reads once: run both strip by strip, so that the scores stay in the cache.
        z = self._classifier_input(x)
        h, w = int(z.shape[2]), int(z.shape[3])
        rows = self._strip_rows(w)
        parts = [self._strip_ids(z[:, :, top:top + rows]) for top in range(0, h, rows)]
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)

    def _strip_ids(self, z: Tensor) -> Tensor:
        """Class ids ``(N, 2r, 2w) uint8`` of the output rows below a strip ``(N, C_in, r, w)`` of the last input.

        The last 1x1 convolution runs as one matrix product that writes its scores plane by plane,
        ``(N, 4C, r * w)``, so that the max over the C classes of a sub-pixel reads whole planes, vectorised across
        pixels, instead of C neighbouring values per pixel (the channels-last scores a convolution writes). Each
        score is the same dot product over the same ``C_in`` inputs (tests pin equal labels).
        """
        n, cin, r, w = z.shape
        pixels = z.permute(0, 2, 3, 1).reshape(n, r * w, cin)  # a view for channels-last z
        weight = self.classifier.weight.view(4 * self.classes, cin)
        scores = torch.matmul(weight, pixels.transpose(1, 2)).view(n, 4, self.classes, r * w)
        ids = scores.max(2)[1].to(torch.uint8)  # (N, 4, r * w), sub-pixel k = 2 * di + dj
        return ids.view(n, 2, 2, r, w).permute(0, 3, 1, 4, 2).reshape(n, 2 * r, 2 * w)

    def _subpixel_ids(self, y: Tensor) -> Tensor:
        """``(N, h, w, 4) uint8``: the class of each sub-pixel from ``(N, 4C, h, w)`` scores (first maximum wins)."""
        n, _, h, w = y.shape
        return y.permute(0, 2, 3, 1).reshape(n, h, w, 4, self.classes).max(-1)[1].to(torch.uint8)


# ------------------------------------------------------------------------------------------------------- backends


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
            y = F.interpolate(y, scale_factor=self.output_stride, mode="bilinear", align_corners=False)
        return y

    def labels(self, x: Tensor) -> Tensor:
        return self.logits(x).max(1)[1].to(torch.uint8)


class FusedBackend(Backend):
    """:class:`FusedESPNet` in eager PyTorch, channels-last (no build step, no cache)."""

    name = "fused"

    def __init__(self, fused: FusedESPNet) -> None:
        self.fused = _channels_last(fused)

    def labels(self, x: Tensor) -> Tensor:
        return self.fused(x.contiguous(memory_format=torch.channels_last))

    def logits(self, x: Tensor) -> Tensor:
        return self.fused.logits(x.contiguous(memory_format=torch.channels_last))


def cache_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The artifact cache: ``explicit``, else ``$ESPNET_ROS_CACHE_DIR``, else ``~/.cache/espnet_ros/compiled``."""
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser()
    env = os.environ.get(CACHE_DIR_ENV, "")
    return Path(env).expanduser() if env else DEFAULT_CACHE_DIR.expanduser()


def _cpu_isa() -> str:
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return "unknown"


def _onnxruntime_version() -> str:
    try:
        import onnxruntime
    except ImportError:
        return ""
    return str(onnxruntime.__version__)


@dataclass(frozen=True)
class ArtifactKey:
    """Everything a compiled or exported artifact depends on; its digest names the file.

    Changing any field (another preset or weights file, network size, graph version, torch or onnxruntime version,
    CPU vector ISA) gives another name, so a stale artifact is never picked up.
    """

    kind: str
    preset: str
    weights_sha256: str
    network_size: tuple[int, int]
    batch: str
    accel_version: int
    torch_version: str
    runtime_version: str
    cpu_isa: str

    @classmethod
    def for_preset(cls, kind: str, preset: WeightsPreset, network_size: tuple[int, int]) -> ArtifactKey:
        """The key of ``kind`` (``aoti``, ``onnx``, ``prep-bgr``, ``prep-rgb``) for ``preset`` at ``network_size``."""
        return cls(
            kind=kind, preset=preset.name, weights_sha256=preset.sha256, network_size=tuple(network_size),  # type: ignore[arg-type]
            batch="dynamic" if kind == "onnx" else "1", accel_version=ACCEL_VERSION, torch_version=torch.__version__,
            runtime_version=_onnxruntime_version() if kind == "onnx" else "", cpu_isa=_cpu_isa(),
        )

    def fields(self) -> dict[str, Any]:
        """The key as a JSON-able dict."""
        d = asdict(self)
        d["network_size"] = list(self.network_size)
        return d

    def digest(self) -> str:
        """Full sha256 of the canonical JSON of the key."""
        return hashlib.sha256(json.dumps(self.fields(), sort_keys=True).encode()).hexdigest()

    def stem(self) -> str:
        """File stem: ``<kind>-<preset>-<w>x<h>-<first 16 hex digits of the digest>``."""
        w, h = self.network_size
        return f"{self.kind}-{self.preset}-{w}x{h}-{self.digest()[:16]}"




def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def trial_in_subprocess(code: str, *args: str, timeout: float = 300.0) -> str | None:
    """Run ``python -c code args...`` and return ``None`` if it exits 0, else what went wrong, in words.

    Native code (a compiled package's shared library, its loader) can crash the process that loads it. A freshly
    built artifact is therefore opened first by a throw-away interpreter: a crash there (a signal such as SIGSEGV) is
    reported as an error instead of taking the node down.
    """
    try:
        proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        return f"did not load within {timeout:.0f} s in a separate process"
    if proc.returncode == 0:
        return None
    last = (proc.stderr.strip().splitlines() or [""])[-1][:300]
    if proc.returncode < 0:
        try:
            sig = signal.Signals(-proc.returncode).name
        except ValueError:
            sig = f"signal {-proc.returncode}"
        return f"crashed the separate process that loaded it ({sig})" + (f": {last}" if last else "")
    return f"failed to load in a separate process (exit {proc.returncode})" + (f": {last}" if last else "")


class ArtifactCache:
    """A folder of built artifacts, each with a JSON sidecar holding its key and sha256.

    :meth:`load_or_build` loads a verified artifact or builds it under a file lock (so two processes starting at
    once build it once), writing it atomically (temporary file in the same folder, then rename; the sidecar is
    renamed last and marks the artifact complete). Loading checks the sidecar's key, the file's hash and finally
    the caller's ``check`` on the loaded object; any failure deletes the artifact and rebuilds it.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def paths(self, key: ArtifactKey, suffix: str) -> tuple[Path, Path]:
        """``(artifact, sidecar)`` paths of ``key``."""
        stem = key.stem()
        return self.root / f"{stem}{suffix}", self.root / f"{stem}.json"

    def failure_path(self, key: ArtifactKey) -> Path:
        """Where a failed build of ``key`` is recorded (see :meth:`load_or_build`'s ``retry_failed``)."""
        return self.root / f"{key.stem()}.failed.json"

    def recorded_failure(self, key: ArtifactKey) -> str | None:
        """Why the last build of ``key`` here failed, with when and where it is recorded; ``None`` if it did not."""
        record = self.failure_path(key)
        try:
            meta = json.loads(record.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("key") != key.fields():
            return None
        return f"{meta.get('reason', 'unknown reason')} (recorded {meta.get('when', '?')} in {record}; delete it to " \
               "try again)"

    def _record_failure(self, key: ArtifactKey, reason: str) -> None:
        record = self.failure_path(key)
        meta = {"key": key.fields(), "reason": reason, "when": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        with contextlib.suppress(OSError):  # the failure itself is raised either way
            tmp = record.with_name(f".{record.name}.tmp")
            tmp.write_text(json.dumps(meta, indent=1, sort_keys=True))
            os.replace(tmp, record)

    @contextlib.contextmanager
    def _lock(self, key: ArtifactKey) -> Iterator[None]:
        lock_path = self.root / f"{key.stem()}.lock"
        with lock_path.open("a") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _valid_sidecar(self, key: ArtifactKey, artifact: Path, sidecar: Path, trialled: bool = False) -> str | None:
        """``None`` if ``artifact`` is complete and matches ``key`` (and passed its load trial if ``trialled``)."""
        if not artifact.is_file() or not sidecar.is_file():
            return "not built yet"
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, ValueError) as exc:
            return f"unreadable sidecar {sidecar.name} ({exc})"
        if not isinstance(meta, dict) or meta.get("key") != key.fields():
            return f"sidecar {sidecar.name} describes another build"
        if meta.get("sha256") != _file_sha256(artifact):
            return f"{artifact.name} does not match its recorded sha256 (truncated or modified)"
        if trialled and meta.get("load_trial") != "passed":
            return f"{artifact.name} was never loaded in a separate process first (built by an older espnet_ros)"
        return None

    @staticmethod
    def _remove(*paths: Path) -> None:
        for p in paths:
            with contextlib.suppress(FileNotFoundError):
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink()

    def _prune_older(self, key: ArtifactKey, suffix: str) -> None:
        """Delete artifacts of the same kind, preset and size built by an older graph version (never used again)."""
        w, h = key.network_size
        for sidecar in self.root.glob(f"{key.kind}-{key.preset}-{w}x{h}-*.json"):
            try:
                old = json.loads(sidecar.read_text()).get("key", {})
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(old, dict) and isinstance(old.get("accel_version"), int) \
                    and old["accel_version"] < key.accel_version:
                _log.info("removing %s (graph version %d < %d)", sidecar.with_suffix(suffix).name,
                          old["accel_version"], key.accel_version)
                self._remove(sidecar.with_suffix(suffix), sidecar, sidecar.with_suffix(".lock"))

    def load_or_build(
        self,
        key: ArtifactKey,
        suffix: str,
        build: Callable[[Path], None],
        load: Callable[[Path], T],
        check: Callable[[T], str | None],
        trial: Callable[[Path], str | None] | None = None,
        *,
        retry_failed: bool = True,
    ) -> T:
        """Return the loaded artifact of ``key``, building it with ``build(path)`` first if needed.

        ``load(path)`` opens it; ``check(obj)`` returns ``None`` if it computes the right thing, else a reason.
        ``trial(path)``, if given, opens a freshly built artifact somewhere it cannot hurt this process (see
        :func:`trial_in_subprocess`) and returns ``None`` or why it failed; only an artifact that passed it is put in
        place, and the sidecar records that (artifacts without that record are rebuilt).

        A build that fails (``build`` raises, or the fresh artifact fails its trial, load or check) is recorded next
        to where the artifact would be (:meth:`failure_path`, with the reason and the time). With
        ``retry_failed=False`` a recorded failure of the same key is raised again at once instead of building again
        (a build can take minutes and fail the same way on every start); a later successful build clears it.

        Raises:
            BackendError: the folder is not writable, a build fails, or (``retry_failed=False``) one failed before.
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendError(f"cannot create the cache directory {self.root} ({exc}); set {CACHE_DIR_ENV} to a "
                               "writable folder") from exc
        artifact, sidecar = self.paths(key, suffix)
        with self._lock(key):
            if not retry_failed and (failed := self.recorded_failure(key)) is not None:
                raise BackendError(f"building {artifact.name} failed here before: {failed}")
            try:
                obj = self._load_or_build(key, artifact, sidecar, suffix, build, load, check, trial)
            except BackendError as exc:
                self._record_failure(key, str(exc))
                raise
            self._remove(self.failure_path(key))
            return obj

    def _load_or_build(
        self,
        key: ArtifactKey,
        artifact: Path,
        sidecar: Path,
        suffix: str,
        build: Callable[[Path], None],
        load: Callable[[Path], T],
        check: Callable[[T], str | None],
        trial: Callable[[Path], str | None] | None,
    ) -> T:
        """:meth:`load_or_build` under the lock; any failure of a fresh build is a :class:`BackendError`."""
        why = self._valid_sidecar(key, artifact, sidecar, trialled=trial is not None)
        if why is None:
            try:
                obj = load(artifact)
                why = check(obj)
            except Exception as exc:  # a damaged artifact can fail in any way inside torch / onnxruntime
                why = f"cannot load it ({type(exc).__name__}: {exc})"
            if why is None:
                _log.info("using cached %s", artifact)
                return obj
            _log.warning("cached artifact %s is unusable: %s; rebuilding it", artifact, why)
            self._remove(artifact, sidecar)
        elif why != "not built yet":
            _log.warning("cached artifact %s is unusable: %s; rebuilding it", artifact, why)
            self._remove(artifact, sidecar)
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{key.stem()}-", dir=self.root))
        try:
            tmp_artifact = tmp_dir / artifact.name
            t0 = time.monotonic()
            try:
                build(tmp_artifact)
            except Exception as exc:  # a compiler can fail in many ways (lowering, C++ compiler, linker)
                raise BackendError(f"building {artifact.name} failed ({type(exc).__name__}: "
                                   f"{str(exc).strip()[:300]}); torch {torch.__version__}: please report this; "
                                   "use backend 'fused' meanwhile") from exc
            meta: dict[str, Any] = {"key": key.fields(), "sha256": _file_sha256(tmp_artifact),
                                    "built_s": round(time.monotonic() - t0, 1)}
            if trial is not None:
                failed = trial(tmp_artifact)
                if failed is not None:
                    raise BackendError(f"freshly built {artifact.name} {failed}; torch {torch.__version__}: "
                                       "please report this; use backend 'fused' meanwhile")
                meta["load_trial"] = "passed"
            tmp_sidecar = tmp_dir / sidecar.name
            tmp_sidecar.write_text(json.dumps(meta, indent=1, sort_keys=True))
            os.replace(tmp_artifact, artifact)
            os.replace(tmp_sidecar, sidecar)
        finally:
            self._remove(tmp_dir)
        _log.info("built %s in %.1f s", artifact, meta["built_s"])
        self._prune_older(key, suffix)
        try:
            obj = load(artifact)
        except Exception as exc:
            self._remove(artifact, sidecar)
            raise BackendError(f"freshly built {artifact} cannot be loaded: {exc}") from exc
        why = check(obj)
        if why is not None:
            self._remove(artifact, sidecar)
            raise BackendError(f"freshly built {artifact} computes wrong labels ({why}); please report this with "
                               f"your torch version ({torch.__version__}); use backend 'fused' meanwhile")
        return obj


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


def onnxruntime_available() -> bool:
    """Whether ``onnxruntime`` can be imported."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


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
        self.fused = _channels_last(fused)
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
                         "through OpenCV and torch instead (the same values, about 3 ms slower at 2048x1024)", exc)

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


class _HalfPreprocess(nn.Module):
    """A frame of exactly twice the network size → the network input: ``(1, 2h, 2w, 3) uint8`` → ``(1, h, w, 3)``.

    What :class:`~espnet_ros.core.segmenter.Segmenter` computes in OpenCV and torch for such a frame, as one graph:
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


def half_preprocess_reference(frame: Tensor, gain: Tensor, offset: Tensor, rgb: bool) -> Tensor:
    """:class:`_HalfPreprocess` as the eager path computes it: float32 2x2 means, then ``torch.addcmul``."""
    n, h, w = int(frame.shape[0]), int(frame.shape[1]) // 2, int(frame.shape[2]) // 2
    x = frame.view(n, h, 2, w, 2, 3)
    if rgb:
        x = x.flip(-1)
    x = x.to(torch.float32)
    mean = ((x[:, :, 0, :, 0] + x[:, :, 0, :, 1]) + (x[:, :, 1, :, 0] + x[:, :, 1, :, 1])) * 0.25
    return torch.addcmul(offset.reshape(3), mean, gain.reshape(3))


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
    to give the eager path's values bit for bit on :func:`block_sums_probe`. About 1.5 ms instead of 4–6 ms for a
    2048x1024 frame on two cores: one pass over the frame in place of strips of OpenCV and torch calls.

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
            want = half_preprocess_reference(probe, gain, offset, rgb)

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
        x = torch.from_numpy(np.ascontiguousarray(frame)).unsqueeze(0)  # the package assumes C order
        return self._call(self._runners[order], x)[0]


class OnnxRuntimeBackend(Backend):
    """:class:`FusedESPNet` exported to ONNX (cached on disk) and run by ONNX Runtime's CPU provider.

    Graph optimisations at ``ORT_ENABLE_EXTENDED``; intra-op threads follow ``torch.get_num_threads()``.
    ``logits`` runs the eager fused graph.
    """

    name = "onnxruntime"

    def __init__(self, fused: FusedESPNet, preset: WeightsPreset, network_size: tuple[int, int],
                 cache: ArtifactCache, num_threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendError("backend 'onnxruntime' needs the onnxruntime package (pip install onnxruntime); "
                               "or use backend 'fused'") from exc
        self.fused = _channels_last(fused)
        self.key = ArtifactKey.for_preset("onnx", preset, network_size)
        threads = int(num_threads or torch.get_num_threads())
        probe = _probe(network_size)
        with torch.inference_mode():
            want = self.fused(probe)

        def build(path: Path) -> None:
            _log.info("exporting the %s network for %dx%d to ONNX (once; cached in %s)",
                      preset.name, network_size[0], network_size[1], cache.root)
            with torch.no_grad(), warnings.catch_warnings():
                # the TorchScript exporter needs no onnxscript; its deprecation notice is not the user's concern
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.onnx.export(_LabelsModule(self.fused).eval(), (probe.contiguous(),), str(path),
                                  input_names=["x"], output_names=["labels"], opset_version=17,
                                  dynamic_axes={"x": {0: "batch"}, "labels": {0: "batch"}}, dynamo=False)

        def load(path: Path) -> Any:
            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            so.log_severity_level = 3
            return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

        def check(session: Any) -> str | None:
            return _agreement_problem(self._run(session, probe), want)

        self._session = cache.load_or_build(self.key, ".onnx", build, load, check)

    @staticmethod
    def _run(session: Any, x: Tensor) -> Tensor:
        out = session.run(None, {"x": x.contiguous().numpy()})[0]
        return torch.from_numpy(out)

    def labels(self, x: Tensor) -> Tensor:
        return self._run(self._session, x)

    def logits(self, x: Tensor) -> Tensor:
        return self.fused.logits(x.contiguous(memory_format=torch.channels_last))


def _check_name(backend: str, what: str) -> str:
    name = backend.strip().lower()
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}{what}; expected one of {', '.join(BACKENDS)}")
    return name


def resolve_backend(backend: str, device: torch.device) -> str:
    """Turn ``auto`` into a concrete backend for ``device``.

    On the CPU ``auto`` is ``$ESPNET_ROS_BACKEND`` when set, else :data:`DEFAULT_CPU_BACKEND` (``compiled``) when a
    C++ compiler is present and ``fused`` (logged) when not. On CUDA it is ``eager`` (the Segmenter then runs its
    GPU pipeline). Raises :class:`BackendError` for unknown names and CPU-only backends on another device.
    """
    name = _check_name(backend, "")
    if name == "auto":
        if device.type != "cpu":
            return "eager"
        env = os.environ.get(BACKEND_ENV, "")
        if env.strip():
            name = _check_name(env, f" in ${BACKEND_ENV}")
            if name != "auto":
                return name
        if DEFAULT_CPU_BACKEND == "compiled" and not compiler_available():
            _log.info("backend auto: no C++ compiler for AOTInductor, using 'fused' (eager, about 20%% slower)")
            return "fused"
        return DEFAULT_CPU_BACKEND
    if device.type != "cpu" and name != "eager":
        raise BackendError(f"backend {name!r} runs on the CPU only; on {device} use 'auto' or 'eager'")
    return name


def make_backend(
    backend: str,
    model: nn.Module,
    preset: WeightsPreset,
    network_size: tuple[int, int],
    *,
    device: torch.device | None = None,
    cache: str | os.PathLike[str] | None = None,
    num_threads: int | None = None,
) -> Backend:
    """Build the backend called ``backend`` (``auto`` resolved for ``device``) around a loaded reference ``model``.

    Raises:
        BackendError: unknown name, a missing prerequisite (compiler, onnxruntime) or an artifact that fails.
    """
    dev = device or torch.device("cpu")
    name = resolve_backend(backend, dev)
    if name == "eager":
        return EagerBackend(model, preset.output_stride)
    fused = FusedESPNet(model)
    if name == "fused":
        return FusedBackend(fused)
    store = ArtifactCache(cache_dir(cache))
    if name == "compiled":
        # asked for by name (argument or environment): build again even if it failed here before, and raise
        by_name = _check_name(backend, "") != "auto" or bool(os.environ.get(BACKEND_ENV, "").strip())
        try:
            return CompiledBackend(fused, preset, network_size, store, retry_failed=by_name)
        except BackendError as exc:
            if by_name:
                raise  # the caller wants to know
            _log.warning("backend auto: the compiled backend is unusable here (%s); using 'fused' (eager, about "
                         "20%% slower)", exc)
            return FusedBackend(fused)
    return OnnxRuntimeBackend(fused, preset, network_size, store, num_threads)
