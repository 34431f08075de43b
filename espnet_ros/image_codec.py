"""Conversion between ``sensor_msgs`` image messages and numpy arrays (our replacement for cv_bridge).

This module owns every byte-level detail of ``sensor_msgs/Image`` and ``sensor_msgs/CompressedImage``: encodings,
row padding (``step``), endianness, Bayer patterns, YUV 4:2:2 layouts and the ``format`` strings written by
image_transport's compressed plugin. Decoding yields a :class:`DecodedImage`, an ``(H, W, 3) uint8`` array plus its
colour order, copying only where the encoding forces it; encoding builds messages with ``data = arr.tobytes()``
(assigning a numpy array to ``msg.data`` is ~500x slower). Message classes are used only as types and containers;
the conversion maths is numpy and OpenCV. Malformed messages raise :class:`ImageEncodingError` naming what was
wrong, what was expected and how to fix it. (The PyPI ``cv-bridge`` is broken with numpy 2 / OpenCV 5 and ignores
``step``; never depend on it.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from espnet_ros.core.errors import MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, ImageError
from espnet_ros.core.image_header import ImageHeaderError, check_image_header

__all__ = [
    "COLOR_ORDER_OF_ENCODING",
    "ENCODABLE_ENCODINGS",
    "SUPPORTED_ENCODINGS",
    "ColorOrder",
    "DecodedImage",
    "ImageEncodingError",
    "bytes_per_pixel",
    "decode_compressed",
    "decode_image",
    "decode_mono8",
    "encode_compressed",
    "encode_image",
]

ColorOrder = Literal["bgr", "rgb"]


class ImageEncodingError(ImageError):
    """An image message is malformed, uses an unsupported encoding, or an array cannot be encoded as asked."""


_BYTES_PER_PIXEL: dict[str, int] = {
    "rgb8": 3,
    "bgr8": 3,
    "rgba8": 4,
    "bgra8": 4,
    "mono8": 1,
    "mono16": 2,
    "bayer_rggb8": 1,
    "bayer_bggr8": 1,
    "bayer_gbrg8": 1,
    "bayer_grbg8": 1,
    "yuv422": 2,
    "yuv422_yuy2": 2,
}

SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_BYTES_PER_PIXEL)
"""Encodings :func:`decode_image` accepts (``sensor_msgs/image_encodings`` names)."""

ENCODABLE_ENCODINGS: tuple[str, ...] = ("mono8", "mono16", "rgb8", "bgr8", "rgba8", "bgra8")
"""Encodings :func:`encode_image` writes."""

COLOR_ORDER_OF_ENCODING: dict[str, ColorOrder] = {
    "rgb8": "rgb",  # zero-copy view when rows are unpadded
    "rgba8": "rgb",  # alpha dropped: one copy
    "bgr8": "bgr",  # zero-copy view when rows are unpadded
    "bgra8": "bgr",  # alpha dropped: one copy
    # Everything below is converted by OpenCV into a new array, produced directly in BGR (the segmenter's order).
    "mono8": "bgr",
    "mono16": "bgr",
    "bayer_rggb8": "bgr",
    "bayer_bggr8": "bgr",
    "bayer_gbrg8": "bgr",
    "bayer_grbg8": "bgr",
    "yuv422": "bgr",
    "yuv422_yuy2": "bgr",
}
"""Colour order :func:`decode_image` returns for each encoding (the one that needs no extra copy)."""

# ROS names a Bayer pattern by its top-left 2x2 block read row by row (bayer_rggb8: R G / G B). OpenCV's historic
# two-letter names describe the second row's 2nd and 3rd pixels instead, so ROS rggb is OpenCV "BG". These old
# names exist in every OpenCV version (OpenCV 5 adds COLOR_BayerRGGB2BGR == COLOR_BayerBG2BGR); a test pins the
# mapping by mosaicking a known RGB image.
_BAYER_TO_BGR: dict[str, int] = {
    "bayer_rggb8": cv2.COLOR_BayerBG2BGR,
    "bayer_bggr8": cv2.COLOR_BayerRG2BGR,
    "bayer_gbrg8": cv2.COLOR_BayerGR2BGR,
    "bayer_grbg8": cv2.COLOR_BayerGB2BGR,
}

# ROS "yuv422" is UYVY (U0 Y0 V0 Y1); "yuv422_yuy2" is YUYV (Y0 U0 Y1 V0).
_YUV422_TO_BGR: dict[str, int] = {
    "yuv422": cv2.COLOR_YUV2BGR_UYVY,
    "yuv422_yuy2": cv2.COLOR_YUV2BGR_YUY2,
}

_COMPRESSED_CODECS = ("jpeg", "png")


@dataclass(frozen=True, eq=False)
class DecodedImage:
    """A decoded camera frame.

    ``image`` is ``(H, W, 3) uint8``, C-contiguous, in ``color_order`` (``"bgr"`` or ``"rgb"``). For unpadded
    ``rgb8``/``bgr8`` messages it is a view of the message's buffer (no copy; it keeps that buffer alive): writing
    to one changes the other, so copy it before modifying it if the message must stay intact.
    """

    image: NDArray[np.uint8]
    color_order: ColorOrder


def bytes_per_pixel(encoding: str) -> int:
    """Bytes per pixel of a supported ``sensor_msgs/Image`` encoding (``yuv422``: 2, averaged over a pixel pair)."""
    try:
        return _BYTES_PER_PIXEL[encoding]
    except KeyError:
        raise ImageEncodingError(_unknown_encoding_message(encoding)) from None


def _unknown_encoding_message(encoding: str) -> str:
    return (
        f"unsupported image encoding {encoding!r}; supported encodings are {', '.join(SUPPORTED_ENCODINGS)}. "
        "Convert the camera output to one of them (e.g. set the driver's pixel format to rgb8/bgr8/mono8) or "
        "subscribe to its compressed transport (jpeg/png)."
    )


def _check_size(width: int, height: int, what: str) -> None:
    if width <= 0 or height <= 0:
        raise ImageEncodingError(
            f"{what} has an empty size {width}x{height}; expected width and height > 0. "
            "Check that the publisher fills width, height, step and data."
        )
    if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS:
        raise ImageEncodingError(
            f"{what} is {width}x{height}, over the supported limit (each side <= {MAX_IMAGE_SIDE} and "
            f"width*height <= {MAX_IMAGE_PIXELS} pixels); downscale it before publishing (e.g. image_proc resize)."
        )


def _rows(msg: Image, encoding: str) -> NDArray[np.uint8]:
    """Validate the geometry of ``msg`` and return its pixel bytes as an ``(height, width*bpp)`` uint8 view."""
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    what = f"{encoding} image"
    _check_size(width, height, what)
    bpp = _BYTES_PER_PIXEL[encoding]
    row_bytes = width * bpp
    if encoding in _YUV422_TO_BGR and width % 2:
        raise ImageEncodingError(
            f"{what} has an odd width {width}; YUV 4:2:2 packs pixel pairs, so the width must be even. "
            "Fix the camera's resolution setting."
        )
    if step < row_bytes:
        raise ImageEncodingError(
            f"{what} {width}x{height} has step {step} bytes, less than width*{bpp} = {row_bytes} bytes per row; "
            "step must be the row length in bytes including any padding. Fix the publisher's step field."
        )
    data = np.frombuffer(msg.data, dtype=np.uint8)
    expected = step * height
    if data.size != expected:
        relation = "shorter" if data.size < expected else "longer"
        raise ImageEncodingError(
            f"{what} {width}x{height} with step {step} carries {data.size} data bytes, {relation} than "
            f"step*height = {expected}; sensor_msgs/Image requires len(data) == step*height. "
            "The message is truncated or its width/height/step/encoding fields do not describe its data."
        )
    rows = data.reshape(height, step)
    return rows if step == row_bytes else rows[:, :row_bytes]


def decode_image(msg: Image) -> DecodedImage:
    """Decode a ``sensor_msgs/Image`` into an ``(H, W, 3) uint8`` array and its colour order.

    Colour order per encoding is :data:`COLOR_ORDER_OF_ENCODING`: ``rgb8``/``rgba8`` give ``"rgb"``, everything else
    ``"bgr"``. Unpadded ``rgb8``/``bgr8`` are returned without a copy (a view of ``msg.data``); padded rows, alpha
    removal and conversions make exactly one new array. ``mono16`` honours ``is_bigendian`` and keeps the high byte
    (``value >> 8``), i.e. a linear 16-to-8-bit scale; ``mono8``/``mono16`` are replicated into 3 equal channels.
    Bayer images are demosaicked bilinearly by OpenCV. Raises :class:`ImageEncodingError` for unknown encodings,
    empty or oversized frames, ``step`` shorter than a row and ``len(data) != step * height``.
    """
    encoding = str(msg.encoding)
    if encoding not in _BYTES_PER_PIXEL:
        raise ImageEncodingError(_unknown_encoding_message(encoding))
    rows = _rows(msg, encoding)
    height, width = int(msg.height), int(msg.width)

    image: np.ndarray  # (H, W, 3) uint8 (OpenCV's results are typed loosely)
    if encoding in ("rgb8", "bgr8"):
        image = np.ascontiguousarray(rows.reshape(height, width, 3))
    elif encoding in ("rgba8", "bgra8"):
        image = np.ascontiguousarray(rows.reshape(height, width, 4)[:, :, :3])
    elif encoding == "mono8":
        image = cv2.cvtColor(rows, cv2.COLOR_GRAY2BGR)
    elif encoding == "mono16":
        words = rows.view(">u2" if msg.is_bigendian else "<u2")
        high = (words >> 8).astype(np.uint8)
        image = cv2.cvtColor(high, cv2.COLOR_GRAY2BGR)
    elif encoding in _BAYER_TO_BGR:
        image = cv2.cvtColor(np.ascontiguousarray(rows), _BAYER_TO_BGR[encoding])
    else:  # YUV 4:2:2
        pairs = np.ascontiguousarray(rows).reshape(height, width, 2)
        image = cv2.cvtColor(pairs, _YUV422_TO_BGR[encoding])
    return DecodedImage(image=np.asarray(image, dtype=np.uint8), color_order=COLOR_ORDER_OF_ENCODING[encoding])


def decode_mono8(msg: Image) -> NDArray[np.uint8]:
    """The ``(H, W) uint8`` pixels of a ``mono8`` image (class masks), its geometry checked like :func:`decode_image`.

    A view of ``msg.data`` where the rows are unpadded. Raises :class:`ImageEncodingError` for another encoding,
    an empty or oversized frame, ``step`` shorter than a row and ``len(data) != step * height``.
    """
    if str(msg.encoding) != "mono8":
        raise ImageEncodingError(f"expected a mono8 image, got encoding {msg.encoding!r}; decode it with decode_image")
    return _rows(msg, "mono8")


_FORMAT_WORD = re.compile(r"[a-z0-9_]+")


def _compressed_codec(fmt: str) -> str | None:
    """The codec named by a CompressedImage ``format`` (``"jpeg"``, ``"png"``), ``None`` if it names none.

    image_transport writes ``"<original encoding>; <codec> compressed <compressed encoding>"`` (e.g.
    ``"rgb8; jpeg compressed bgr8"``, ``"mono8; png compressed "``); older publishers write only ``"jpeg"``.
    """
    words = set(_FORMAT_WORD.findall(fmt.lower()))
    if "compresseddepth" in words:
        raise ImageEncodingError(
            f"CompressedImage format {fmt!r} is a compressedDepth image (a depth map), not a camera frame; "
            "subscribe to the colour camera's image/compressed topic (jpeg or png)."
        )
    if words & {"jpeg", "jpg"}:
        return "jpeg"
    if "png" in words:
        return "png"
    if not words:
        return None
    raise ImageEncodingError(
        f"unsupported CompressedImage format {fmt!r}; expected a jpeg or png image as image_transport's "
        "compressed plugin writes them (e.g. 'bgr8; jpeg compressed bgr8'). Set the publisher's format to "
        "jpeg or png."
    )


def decode_compressed(msg: CompressedImage) -> DecodedImage:
    """Decode a jpeg/png ``sensor_msgs/CompressedImage`` into an ``(H, W, 3) uint8`` BGR array.

    The compressed bytes always hold OpenCV's BGR order (image_transport converts colour images to bgr8 before
    compressing), so ``color_order`` is ``"bgr"`` whatever the original encoding in ``format``; grey images become 3
    equal channels, 16-bit png is reduced to 8 bits and alpha is dropped. An empty ``format`` is accepted and the
    codec sniffed from the data. The size declared in the png/jpeg header is checked before decoding, so a
    decompression bomb costs no memory. Raises :class:`ImageEncodingError` for compressedDepth or non-jpeg/png
    formats or data, empty or corrupted data and oversized frames.
    """
    fmt = str(msg.format)
    codec = _compressed_codec(fmt)
    data = np.frombuffer(msg.data, dtype=np.uint8)
    label = f"CompressedImage (format {fmt!r}, {data.size} bytes)"
    if data.size == 0:
        raise ImageEncodingError(f"{label} has no data; expected {codec or 'jpeg or png'} bytes. Check the publisher.")
    try:  # the declared size, before anything is decoded: a few bytes can declare gigapixels
        check_image_header(data, f"{label} could not be decoded", formats=("jpeg", "png"))
    except ImageHeaderError as exc:
        raise ImageEncodingError(str(exc)) from None
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ImageEncodingError(
            f"{label} could not be decoded by OpenCV ({exc.err}); the data is corrupted or not {codec or 'an image'}."
        ) from exc
    if image is None:
        raise ImageEncodingError(
            f"{label} could not be decoded; expected valid {codec or 'jpeg or png'} bytes. The data is corrupted, "
            "truncated or in a format OpenCV cannot read."
        )
    _check_size(int(image.shape[1]), int(image.shape[0]), label)
    return DecodedImage(image=np.ascontiguousarray(image), color_order="bgr")


def _check_array(array: NDArray[np.generic], encoding: str) -> tuple[int, int, int]:
    """Check ``array`` against ``encoding``; return (height, width, channels)."""
    channels = {"mono8": 1, "mono16": 1, "rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4}[encoding]
    dtype = np.uint16 if encoding == "mono16" else np.uint8
    shape_ok = (array.ndim == 2 and channels == 1) or (array.ndim == 3 and array.shape[2] == channels)
    if not shape_ok or array.dtype != dtype:
        expected = "(H, W)" if channels == 1 else f"(H, W, {channels})"
        raise ImageEncodingError(
            f"cannot encode an array of shape {array.shape} and dtype {array.dtype} as {encoding}; expected "
            f"{expected} {np.dtype(dtype).name}. Convert it first (e.g. cv2.cvtColor) or pick a matching encoding."
        )
    height, width = int(array.shape[0]), int(array.shape[1])
    _check_size(width, height, f"{encoding} array")
    return height, width, channels


def encode_image(array: NDArray[np.generic], encoding: str, header: Header | None = None) -> Image:
    """Build a ``sensor_msgs/Image`` from an array.

    ``mono8``: ``(H, W) uint8``; ``mono16``: ``(H, W) uint16`` (written little-endian); ``rgb8``/``bgr8``:
    ``(H, W, 3) uint8``; ``rgba8``/``bgra8``: ``(H, W, 4) uint8``. The channel order of ``array`` must already match
    ``encoding`` (nothing is swapped). ``step = width * bytes_per_pixel``, ``is_bigendian = 0``; ``header`` is
    assigned as given (a default Header if ``None``). Raises :class:`ImageEncodingError` on a shape/dtype mismatch,
    an unsupported encoding or an empty/oversized array.
    """
    if encoding not in ENCODABLE_ENCODINGS:
        raise ImageEncodingError(
            f"cannot encode as {encoding!r}; encode_image writes {', '.join(ENCODABLE_ENCODINGS)}. "
            "Pick one of them."
        )
    height, width, _ = _check_array(array, encoding)
    msg = Image()
    msg.header = header if header is not None else Header()
    msg.height = height
    msg.width = width
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = width * _BYTES_PER_PIXEL[encoding]
    if encoding == "mono16":
        msg.data = np.ascontiguousarray(array, dtype="<u2").tobytes()
    else:
        msg.data = array.tobytes()  # C order whatever the input strides
    return msg


def encode_compressed(
    array: NDArray[np.uint8],
    fmt: Literal["jpeg", "png"] = "jpeg",
    header: Header | None = None,
    quality: int = 90,
    png_compression: int = 3,
) -> CompressedImage:
    """Build a ``sensor_msgs/CompressedImage`` from an ``(H, W, 3) uint8`` BGR or ``(H, W) uint8`` grey array.

    ``format`` is written as image_transport's compressed plugin does: ``"bgr8; jpeg compressed bgr8"`` for colour,
    ``"mono8; jpeg compressed "`` for grey (``png`` likewise). ``quality`` is the jpeg quality (1..100);
    ``png_compression`` the png zlib level (0..9). Raises :class:`ImageEncodingError` on a bad array or argument.
    """
    if fmt not in _COMPRESSED_CODECS:
        raise ImageEncodingError(f"unsupported compressed format {fmt!r}; expected 'jpeg' or 'png'.")
    if not 1 <= quality <= 100:
        raise ImageEncodingError(f"jpeg quality {quality} is out of range; expected 1..100 (90 is a good default).")
    if not 0 <= png_compression <= 9:
        raise ImageEncodingError(f"png compression {png_compression} is out of range; expected 0..9.")
    encoding = "mono8" if array.ndim == 2 else "bgr8"
    _check_array(array, encoding)
    if fmt == "jpeg":
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    else:
        params = [cv2.IMWRITE_PNG_COMPRESSION, int(png_compression)]
    ok, buffer = cv2.imencode("." + fmt, array, params)
    if not ok:
        raise ImageEncodingError(f"OpenCV failed to encode a {array.shape} array as {fmt}.")
    msg = CompressedImage()
    msg.header = header if header is not None else Header()
    msg.format = f"{encoding}; {fmt} compressed {'bgr8' if encoding == 'bgr8' else ''}"
    msg.data = buffer.tobytes()
    return msg
