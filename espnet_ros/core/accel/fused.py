"""The fused inference network: ESPNet / ESPNet-C rewritten for inference, the same function, less memory traffic.

:class:`FusedESPNet` folds batch norms into the convolutions that feed them (or into one per-channel multiply-add
where a concat or a residual sits between), shares the input pooling between the two projections, and rewrites the
last 2x2 transposed convolution as a 1x1 convolution whose four sub-pixel class maps are reduced to class ids
*before* they are interleaved, strip by strip so that its scores stay in the cache (no full-resolution logits are
written, and no ``argmax`` over a strided axis is needed). It runs channels-last and returns ``uint8`` class ids.
Its labels equal the reference network's up to floating-point rounding (the tests pin agreement on real frames).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from typing import TypeVar

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from espnet_ros.core.model import ESPNet, ESPNetC, _ESPDown, _ESPPyramid, upsample_logits

__all__ = ["ACCEL_VERSION", "FusedESPNet", "channels_last", "flush_subnormals"]

M = TypeVar("M", bound=nn.Module)

ACCEL_VERSION = 7
"""Version of the fused graph; part of every cache key (bump it whenever :class:`FusedESPNet` computes differently)."""

_STRIP_BYTES = 4 << 20
"""Budget for one strip of the last layer's scores in :meth:`FusedESPNet.forward` (fits a core's share of cache)."""

_LEVEL1 = 16  # channels of ESPNet's level-1 features


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


def channels_last(module: M) -> M:
    """``module`` in the channels-last memory format (in place; returned for chaining)."""
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
    the concat, the residual and the closing batch norm + PReLU become one kernel (docs/performance.md), the same
    values bit for bit (negation is exact). Eager runs skip it.
    """
    return torch.neg(torch.neg(t)) if torch.compiler.is_compiling() else t


class _FusedESP(nn.Module):
    """An ESP module (strided or not, residual or not) with its closing batch norm as one multiply-add.

    The closing batch norm + PReLU runs on each of the five parts (and its slice of the residual) before they are
    concatenated: the same per-element operations, so the same values, but compiled the concat is written once, as
    the module's output, instead of once before and once after the batch norm.
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
    network several times slower there (docs/performance.md). What they contribute to any sum is below 1e-36 times an
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
                c = int(model.classifier.weight.shape[0])  # the decoder's width
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
            return upsample_logits(y, self.stride)
        y = self._subpixel_logits(x)
        n, _, h, w = y.shape
        y = y.permute(0, 2, 3, 1).reshape(n, h, w, 2, 2, self.classes)
        return y.permute(0, 5, 1, 3, 2, 4).reshape(n, self.classes, 2 * h, 2 * w)

    def forward(self, x: Tensor) -> Tensor:
        """Class ids ``(N, h, w) uint8`` at the input resolution (first maximum wins)."""
        if self.stride != 1:
            return self.logits(x).max(1)[1].to(torch.uint8)
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
