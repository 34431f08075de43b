"""Rendering of class-id maps: colour masks, class overlays, binary drivable masks and drivable-area overlays.

Everything here is vectorised with lookup tables and OpenCV primitives (no per-pixel Python), so that a 2048x1024
frame takes a few milliseconds per product. The free functions take precomputed tables (a ``(256, 3) uint8``
palette, a ``(256,) uint8`` mask table) and accept ``out=`` buffers; :class:`Renderer` precomputes the tables of a
label set once, keeps scratch buffers between frames and is what the node and the command line use per frame.
Colours handed to the free functions are in the channel order of the image they draw on; :class:`Renderer` takes
colours as RGB and converts them to its ``color_order``. Plain numpy and OpenCV; no ROS.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from espnet_ros.core.errors import ImageError
from espnet_ros.core.labels import LabelSet

__all__ = [
    "DEFAULT_BOUNDARY_RGB",
    "DEFAULT_DRIVABLE_RGB",
    "ColorOrder",
    "Renderer",
    "class_overlay",
    "colorize",
    "drivable_boundary",
    "drivable_mask",
    "drivable_overlay",
]

_log = logging.getLogger(__name__)

ColorOrder = Literal["bgr", "rgb"]
Color = tuple[int, int, int]
U8 = npt.NDArray[np.uint8]

DEFAULT_DRIVABLE_RGB: Color = (0, 255, 0)
"""Tint of the drivable region in :func:`drivable_overlay` (green)."""

DEFAULT_BOUNDARY_RGB: Color = (255, 255, 0)
"""Colour of the drivable region's boundary (yellow)."""


def _check_ids(class_ids: object) -> U8:
    if not isinstance(class_ids, np.ndarray) or class_ids.dtype != np.uint8 or class_ids.ndim != 2:
        got = f"{class_ids.dtype} {class_ids.shape}" if isinstance(class_ids, np.ndarray) else type(class_ids).__name__
        raise ImageError(f"class ids must be a (H, W) uint8 array, got {got}")
    if class_ids.size == 0:
        raise ImageError(f"class ids are empty ({class_ids.shape})")
    return class_ids


def _check_image(image: object, shape: tuple[int, ...]) -> U8:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ImageError(f"image must be a (H, W, 3) uint8 array, got {got}")
    if image.shape[:2] != shape[:2]:
        raise ImageError(
            f"image is {image.shape[1]}x{image.shape[0]} but the class ids are {shape[1]}x{shape[0]}; "
            "segment with output_size='input' or resize the image to the mask's size first"
        )
    return image


def _check_out(out: U8 | None, shape: tuple[int, ...]) -> None:
    if out is None:
        return
    if not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.shape != shape or not out.flags.c_contiguous:
        got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
        raise ValueError(f"out must be a C-contiguous uint8 array of shape {shape}, got {got}")


def _check_alpha(alpha: float) -> float:
    a = float(alpha)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return a


def _palette_lut(palette: npt.NDArray[np.uint8]) -> U8:
    p = np.asarray(palette)
    if p.dtype != np.uint8 or p.shape not in ((256, 3), (256, 1, 3)):
        raise ValueError(f"palette must be a (256, 3) uint8 table, got {p.dtype} {p.shape}")
    return np.ascontiguousarray(p.reshape(256, 1, 3))


def _mask_table(lut: npt.NDArray[np.uint8]) -> U8:
    t = np.asarray(lut)
    if t.dtype != np.uint8 or t.shape not in ((256,), (256, 1), (1, 256)):
        raise ValueError(f"mask table must be a (256,) uint8 array, got {t.dtype} {t.shape}")
    return np.ascontiguousarray(t.reshape(256))


def colorize(class_ids: U8, palette: npt.NDArray[np.uint8], *, out: U8 | None = None) -> U8:
    """Colour a ``(H, W) uint8`` class-id map with ``palette`` (``(256, 3) uint8``, e.g. ``LabelSet.palette_bgr()``).

    Returns ``(H, W, 3) uint8`` in the palette's channel order (written into ``out`` when given).
    """
    ids = _check_ids(class_ids)
    shape = (*ids.shape, 3)
    _check_out(out, shape)
    lut = _palette_lut(palette)
    if not ids.flags.c_contiguous:
        ids = np.ascontiguousarray(ids)
    result = cv2.applyColorMap(ids, lut, dst=out)  # a user colour map is exactly a 256-entry palette lookup
    return np.asarray(result, np.uint8)


def class_overlay(
    image: U8,
    class_ids: U8,
    palette: npt.NDArray[np.uint8],
    *,
    alpha: float = 0.5,
    out: U8 | None = None,
    color_buffer: U8 | None = None,
) -> U8:
    """Blend the colour mask over ``image``: ``round((1 - alpha) * image + alpha * colour)``, per channel.

    ``image`` is ``(H, W, 3) uint8`` in the palette's channel order and the size of ``class_ids``. ``color_buffer``
    (``(H, W, 3) uint8``) receives the colour mask, which saves an allocation per frame. Returns ``(H, W, 3) uint8``.
    """
    ids = _check_ids(class_ids)
    img = _check_image(image, ids.shape)
    a = _check_alpha(alpha)
    shape = (*ids.shape, 3)
    _check_out(out, shape)
    color = colorize(ids, palette, out=color_buffer)
    result = cv2.addWeighted(img, 1.0 - a, color, a, 0.0, dst=out)
    return np.asarray(result, np.uint8)


def drivable_mask(class_ids: U8, lut: npt.NDArray[np.uint8], *, out: U8 | None = None) -> U8:
    """Binary mask ``(H, W) uint8``: 255 where ``lut[class_id]`` is 255 (see :meth:`LabelSet.mask_lut`), else 0."""
    ids = _check_ids(class_ids)
    _check_out(out, ids.shape)
    result = cv2.LUT(ids, _mask_table(lut), dst=out)
    return np.asarray(result, np.uint8)


def _kernel(width: int) -> U8:
    radius = max(1, (int(width) + 1) // 2)
    return np.asarray(cv2.getStructuringElement(cv2.MORPH_RECT, (2 * radius + 1, 2 * radius + 1)), np.uint8)


def drivable_boundary(mask: U8, *, width: int = 2, out: U8 | None = None) -> U8:
    """The boundary of a binary mask as a ``(H, W) uint8`` 0/255 band about ``width`` pixels wide.

    It is the morphological gradient (dilation minus erosion), half inside and half outside the region; the image
    border is not drawn as a boundary.
    """
    m = _check_ids(mask)
    _check_out(out, m.shape)
    if width < 1:
        raise ValueError(f"boundary width must be at least 1 pixel, got {width}")
    result = cv2.morphologyEx(m, cv2.MORPH_GRADIENT, _kernel(width), dst=out)
    return np.asarray(result, np.uint8)


def _tint_matrix(color: Color, alpha: float) -> npt.NDArray[np.float32]:
    """The 3x4 affine colour map ``y_c = (1 - alpha) * x_c + alpha * color_c`` for :func:`cv2.transform`."""
    m = np.zeros((3, 4), np.float32)
    for c in range(3):
        m[c, c] = 1.0 - alpha
        m[c, 3] = alpha * float(color[c])
    return m


def _check_color(color: Iterable[int], what: str) -> Color:
    c = tuple(int(v) for v in color)
    if len(c) != 3 or not all(0 <= v <= 255 for v in c):
        raise ValueError(f"{what} must be three integers in 0..255, got {tuple(color)}")
    return (c[0], c[1], c[2])


def drivable_overlay(
    image: U8,
    mask: U8,
    *,
    color: Color = (0, 255, 0),
    alpha: float = 0.4,
    boundary_color: Color | None = (0, 255, 255),
    boundary_width: int = 2,
    out: U8 | None = None,
    scratch: U8 | None = None,
    boundary_buffer: U8 | None = None,
) -> U8:
    """Tint the drivable region of ``image`` and draw its boundary.

    Where ``mask`` is non-zero the output is ``round((1 - alpha) * image + alpha * color)``, elsewhere it is the
    image unchanged; then the :func:`drivable_boundary` band is painted in ``boundary_color`` (``None``: no
    boundary). Colours are in the image's channel order (the defaults are green and yellow in BGR). ``scratch``
    (``(H, W, 3) uint8``) and ``boundary_buffer`` (``(H, W) uint8``) avoid allocations per frame. ``out`` may not
    be ``image``. Returns ``(H, W, 3) uint8``.
    """
    m = _check_ids(mask)
    img = _check_image(image, m.shape)
    a = _check_alpha(alpha)
    tint = _check_color(color, "color")
    shape = (*m.shape, 3)
    _check_out(out, shape)
    _check_out(scratch, shape)
    _check_out(boundary_buffer, m.shape)
    if out is not None and np.may_share_memory(out, img):
        raise ValueError("out must not share memory with image (the tint is computed from the unchanged image)")
    if out is None:
        out = img.copy()
    else:
        np.copyto(out, img)
    tinted = cv2.transform(img, _tint_matrix(tint, a), dst=scratch)
    cv2.copyTo(tinted, m, out)
    if boundary_color is not None:
        edge_color = _check_color(boundary_color, "boundary_color")
        edge = drivable_boundary(m, width=boundary_width, out=boundary_buffer)
        cv2.subtract(out, out, dst=out, mask=edge)  # two masked passes paint without a full-size colour image
        cv2.add(out, (*edge_color, 0), dst=out, mask=edge)  # type: ignore[call-overload]
    return out


class Renderer:
    """Per-frame renderer of one label set with all tables precomputed and scratch buffers reused.

    Args:
        labels: the label set whose class ids are rendered.
        drivable: class names or ids that count as drivable (``None``: the label set's default, e.g. road).
        color_order: channel order of the frames handed in and of the images returned (``bgr`` for OpenCV).
        alpha: weight of the colour mask in :meth:`class_overlay`.
        drivable_alpha: weight of the tint in :meth:`drivable_overlay`.
        drivable_rgb, boundary_rgb: tint and boundary colours, as RGB; ``boundary_rgb=None`` draws no boundary.
        boundary_width: width of the boundary band in pixels.

    A Renderer keeps scratch buffers between calls: use one per thread.

    Raises:
        UnknownClassError: a drivable class the label set does not have.
    """

    def __init__(
        self,
        labels: LabelSet,
        drivable: Iterable[str | int] | None = None,
        *,
        color_order: ColorOrder = "bgr",
        alpha: float = 0.5,
        drivable_alpha: float = 0.4,
        drivable_rgb: Color = DEFAULT_DRIVABLE_RGB,
        boundary_rgb: Color | None = DEFAULT_BOUNDARY_RGB,
        boundary_width: int = 2,
    ) -> None:
        if color_order not in ("bgr", "rgb"):
            raise ValueError(f"color_order must be 'bgr' or 'rgb', got {color_order!r}")
        self.labels = labels
        self.color_order: ColorOrder = color_order
        self.drivable_ids: tuple[int, ...] = labels.resolve_classes(None if drivable is None else list(drivable))
        self.alpha = _check_alpha(alpha)
        self.drivable_alpha = _check_alpha(drivable_alpha)
        if boundary_width < 1:
            raise ValueError(f"boundary_width must be at least 1 pixel, got {boundary_width}")
        self.boundary_width = int(boundary_width)
        self.palette: U8 = labels.palette_bgr() if color_order == "bgr" else labels.palette_rgb()
        self.mask_lut: U8 = labels.mask_lut(self.drivable_ids)
        self._drivable_color = self._ordered(_check_color(drivable_rgb, "drivable_rgb"))
        self._boundary_color = (
            None if boundary_rgb is None else self._ordered(_check_color(boundary_rgb, "boundary_rgb"))
        )
        self._lut3 = _palette_lut(self.palette)
        self._buffers: dict[tuple[str, tuple[int, ...]], U8] = {}

    def _ordered(self, rgb: Color) -> Color:
        return rgb if self.color_order == "rgb" else (rgb[2], rgb[1], rgb[0])

    def _buffer(self, name: str, shape: tuple[int, ...]) -> U8:
        key = (name, shape)
        buf = self._buffers.get(key)
        if buf is None:
            # keep only the current frame size per buffer name
            for k in [k for k in self._buffers if k[0] == name]:
                del self._buffers[k]
            buf = np.empty(shape, np.uint8)
            self._buffers[key] = buf
        return buf

    def colorize(self, class_ids: U8, *, out: U8 | None = None) -> U8:
        """``(H, W, 3) uint8`` colour mask in :attr:`color_order`."""
        ids = _check_ids(class_ids)
        _check_out(out, (*ids.shape, 3))
        return np.asarray(cv2.applyColorMap(np.ascontiguousarray(ids), self._lut3, dst=out), np.uint8)

    def class_overlay(self, image: U8, class_ids: U8, *, out: U8 | None = None) -> U8:
        """The colour mask blended over ``image`` (same size, :attr:`color_order`) with weight :attr:`alpha`."""
        ids = _check_ids(class_ids)
        img = _check_image(image, ids.shape)
        _check_out(out, img.shape)
        color = self.colorize(ids, out=self._buffer("color", img.shape))
        return np.asarray(cv2.addWeighted(img, 1.0 - self.alpha, color, self.alpha, 0.0, dst=out), np.uint8)

    def drivable_mask(self, class_ids: U8, *, out: U8 | None = None) -> U8:
        """``(H, W) uint8`` mask: 255 on drivable classes, 0 elsewhere."""
        ids = _check_ids(class_ids)
        _check_out(out, ids.shape)
        return np.asarray(cv2.LUT(ids, self.mask_lut, dst=out), np.uint8)

    def drivable_overlay(
        self, image: U8, class_ids: U8 | None = None, *, mask: U8 | None = None, out: U8 | None = None
    ) -> U8:
        """``image`` with the drivable region tinted and its boundary drawn.

        Give either the class ids or a precomputed :meth:`drivable_mask` (``mask=``), which saves one lookup.
        """
        if (class_ids is None) == (mask is None):
            raise ValueError("give exactly one of class_ids or mask")
        if mask is None:
            assert class_ids is not None
            ids = _check_ids(class_ids)
            mask = self.drivable_mask(ids, out=self._buffer("mask", ids.shape))
        m = _check_ids(mask)
        return drivable_overlay(
            image, m, color=self._drivable_color, alpha=self.drivable_alpha, boundary_color=self._boundary_color,
            boundary_width=self.boundary_width, out=out, scratch=self._buffer("tint", (*m.shape, 3)),
            boundary_buffer=self._buffer("edge", m.shape),
        )
