"""The ESPNet and ESPNet-C networks, with layer names that load the official upstream weights strictly.

ESPNet (Mehta et al., ECCV 2018) is built from ESP modules: a point-wise convolution that reduces the channels,
then a spatial pyramid of dilated 3x3 convolutions whose outputs are summed hierarchically and concatenated. The
encoder (ESPNet-C) predicts at 1/8 resolution; the light decoder of ESPNet brings it back to full resolution.
Two decoder variants exist in the official releases: the Cityscapes files feed the 16-channel level-1 features
into the last 3x3 convolution, the CamVid file the 19-channel features after the first concat.
The preset says which (:mod:`espnet_ros.core.weights`). Module attribute names are the upstream state-dict
keys; that is the compatibility contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

__all__ = [
    "DecoderVariant",
    "ESPNet",
    "ESPNetC",
    "decoder_variant_of",
    "espnet",
    "espnet_c",
    "upsample_logits",
]

DecoderVariant = Literal["cityscapes", "camvid"]

_BN_EPS = 1e-3
_LEVEL1_CHANNELS = 16


class _CBR(nn.Module):
    """Convolution, batch norm, PReLU."""

    def __init__(self, n_in: int, n_out: int, k: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(n_in, n_out, k, stride=stride, padding=(k - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(n_out, eps=_BN_EPS)
        self.act = nn.PReLU(n_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class _BR(nn.Module):
    """Batch norm, PReLU."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(n, eps=_BN_EPS)
        self.act = nn.PReLU(n)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(x))


class _C(nn.Module):
    """A plain convolution (optionally dilated) with 'same' padding."""

    def __init__(self, n_in: int, n_out: int, k: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        pad = ((k - 1) // 2) * dilation
        self.conv = nn.Conv2d(n_in, n_out, k, stride=stride, padding=pad, dilation=dilation, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class _ESPPyramid(nn.Module):
    """The shared part of the ESP modules: reduce, dilated pyramid d1/d2/d4/d8/d16, hierarchical sums, concat."""

    def __init__(self, n_in: int, n_out: int, reduce: nn.Module) -> None:
        super().__init__()
        n = n_out // 5
        n1 = n_out - 4 * n
        self.c1 = reduce
        self.d1 = _C(n, n1, 3, 1, 1)
        self.d2 = _C(n, n, 3, 1, 2)
        self.d4 = _C(n, n, 3, 1, 4)
        self.d8 = _C(n, n, 3, 1, 8)
        self.d16 = _C(n, n, 3, 1, 16)

    def pyramid(self, x: Tensor) -> Tensor:
        r = self.c1(x)
        add1 = self.d2(r)
        add2 = add1 + self.d4(r)
        add3 = add2 + self.d8(r)
        add4 = add3 + self.d16(r)
        return torch.cat([self.d1(r), add1, add2, add3, add4], 1)


class _ESPDown(_ESPPyramid):
    """Strided ESP module (upstream ``DownSamplerB``): halves the resolution."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__(n_in, n_out, _C(n_in, n_out // 5, 3, 2))
        self.bn = nn.BatchNorm2d(n_out, eps=_BN_EPS)
        self.act = nn.PReLU(n_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.pyramid(x)))


class _ESP(_ESPPyramid):
    """ESP module (upstream ``DilatedParllelResidualBlockB``), residual when ``add``."""

    def __init__(self, n_in: int, n_out: int, add: bool = True) -> None:
        super().__init__(n_in, n_out, _C(n_in, n_out // 5, 1, 1))
        self.bn = _BR(n_out)
        self.add = add

    def forward(self, x: Tensor) -> Tensor:
        y = self.pyramid(x)
        if self.add:
            y = x + y
        return self.bn(y)


class _InputProjection(nn.Module):
    """Average-pools the RGB input ``times`` times by 2 (no parameters)."""

    def __init__(self, times: int) -> None:
        super().__init__()
        self.pool = nn.ModuleList([nn.AvgPool2d(3, stride=2, padding=1) for _ in range(times)])

    def forward(self, x: Tensor) -> Tensor:
        for p in self.pool:
            x = p(x)
        return x


class ESPNetC(nn.Module):
    """ESPNet-C, the ESPNet encoder with its own classifier (output at 1/8 of the input resolution).

    Mehta et al., "ESPNet: Efficient Spatial Pyramid of Dilated Convolutions for Semantic Segmentation",
    ECCV 2018. ``p`` and ``q`` are the numbers of ESP modules at levels 2 and 3.

    ``forward`` returns logits of shape ``(N, classes, ceil(H/8), ceil(W/8))``; :meth:`features` returns the
    intermediate tensors the ESPNet decoder needs.
    """

    def __init__(self, classes: int = 20, p: int = 2, q: int = 8) -> None:
        super().__init__()
        self.level1 = _CBR(3, _LEVEL1_CHANNELS, 3, 2)
        self.sample1 = _InputProjection(1)
        self.sample2 = _InputProjection(2)
        self.b1 = _BR(_LEVEL1_CHANNELS + 3)
        self.level2_0 = _ESPDown(_LEVEL1_CHANNELS + 3, 64)
        self.level2 = nn.ModuleList([_ESP(64, 64) for _ in range(p)])
        self.b2 = _BR(128 + 3)
        self.level3_0 = _ESPDown(128 + 3, 128)
        self.level3 = nn.ModuleList([_ESP(128, 128) for _ in range(q)])
        self.b3 = _BR(256)
        self.classifier = _C(256, classes, 1, 1)

    def features(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Return ``(level1, level1_cat, level2_cat, level3_cat)`` with 16, 19, 131 and 256 channels."""
        out0 = self.level1(x)
        out0_cat = self.b1(torch.cat([out0, self.sample1(x)], 1))
        out1_0 = self.level2_0(out0_cat)
        out1 = out1_0
        for layer in self.level2:
            out1 = layer(out1)
        out1_cat = self.b2(torch.cat([out1, out1_0, self.sample2(x)], 1))
        out2_0 = self.level3_0(out1_cat)
        out2 = out2_0
        for layer in self.level3:
            out2 = layer(out2)
        out2_cat = self.b3(torch.cat([out2_0, out2], 1))
        return out0, out0_cat, out1_cat, out2_cat

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x)[3])


class ESPNet(nn.Module):
    """ESPNet: the ESPNet-C encoder plus the light-weight decoder (output at the input resolution).

    Mehta et al., "ESPNet: Efficient Spatial Pyramid of Dilated Convolutions for Semantic Segmentation",
    ECCV 2018. ``decoder_variant`` selects which level-1 features the last 3x3 convolution sees: ``cityscapes``
    (16 channels, before the first concat) or ``camvid`` (19 channels, after it), as in the official files.
    ``decoder_width`` is the channel count of the decoder's layers (and of the encoder's classifier that feeds it);
    upstream it equals ``classes`` (the default). A fine-tuned model keeps its initial model's width, so that the
    whole decoder carries over and only the last layer maps onto the new classes.

    ``forward`` returns logits of shape ``(N, classes, H, W)`` for inputs whose sides are multiples of 8.
    """

    def __init__(
        self, classes: int = 20, p: int = 2, q: int = 8, decoder_variant: DecoderVariant = "cityscapes",
        decoder_width: int | None = None,
    ) -> None:
        super().__init__()
        if decoder_variant not in ("cityscapes", "camvid"):
            raise ValueError(f"decoder_variant must be 'cityscapes' or 'camvid', got {decoder_variant!r}")
        w = classes if decoder_width is None else decoder_width
        if w < 5:
            raise ValueError(f"decoder_width must be at least 5 (the decoder's ESP module has five branches), got {w}")
        self.decoder_variant = decoder_variant
        self.decoder_width = w
        self.encoder = ESPNetC(w, p, q)
        self.level3_C = _C(128 + 3, w, 1, 1)
        self.br = nn.BatchNorm2d(w, eps=_BN_EPS)
        skip = _LEVEL1_CHANNELS if decoder_variant == "cityscapes" else _LEVEL1_CHANNELS + 3
        self.conv = _CBR(skip + w, w, 3, 1)
        self.up_l3 = nn.Sequential(nn.ConvTranspose2d(w, w, 2, stride=2, bias=False))
        self.combine_l2_l3 = nn.Sequential(_BR(2 * w), _ESP(2 * w, w, add=False))
        self.up_l2 = nn.Sequential(nn.ConvTranspose2d(w, w, 2, stride=2, bias=False), _BR(w))
        self.classifier = nn.ConvTranspose2d(w, classes, 2, stride=2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out0, out0_cat, out1_cat, out2_cat = self.encoder.features(x)
        l3 = self.up_l3(self.br(self.encoder.classifier(out2_cat)))
        l2 = self.up_l2(self.combine_l2_l3(torch.cat([self.level3_C(out1_cat), l3], 1)))
        skip = out0 if self.decoder_variant == "cityscapes" else out0_cat
        return self.classifier(self.conv(torch.cat([l2, skip], 1)))


def decoder_variant_of(state_dict: Mapping[str, Tensor]) -> DecoderVariant:
    """Tell the decoder variant of an ESPNet state dict from the shape of ``conv.conv.weight``."""
    w = state_dict["conv.conv.weight"]
    width, fan_in = int(w.shape[0]), int(w.shape[1])
    if fan_in == width + _LEVEL1_CHANNELS:
        return "cityscapes"
    if fan_in == width + _LEVEL1_CHANNELS + 3:
        return "camvid"
    raise ValueError(f"conv.conv.weight has shape {tuple(w.shape)}: not an ESPNet decoder of either variant")


def espnet(
    *, classes: int = 20, p: int = 2, q: int = 8, decoder_variant: DecoderVariant = "cityscapes",
    decoder_width: int | None = None,
) -> ESPNet:
    """Build an untrained ESPNet."""
    return ESPNet(classes, p, q, decoder_variant, decoder_width)


def espnet_c(*, classes: int = 20, p: int = 2, q: int = 8) -> ESPNetC:
    """Build an untrained ESPNet-C (encoder only)."""
    return ESPNetC(classes, p, q)


def upsample_logits(logits: Tensor, factor: int) -> Tensor:
    """ESPNet-C's logits at the input resolution: upsampled ``factor`` times bilinearly (``align_corners=False``).

    What upstream does before its ``argmax``; every path (reference, backends, CUDA pipeline) calls this one.
    """
    return F.interpolate(logits, scale_factor=factor, mode="bilinear", align_corners=False)
