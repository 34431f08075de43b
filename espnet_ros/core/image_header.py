"""The size of a compressed image read from its header bytes, before anything is decoded.

A few hundred bytes of PNG or JPEG can declare 30000x30000 pixels; decoding them allocates gigabytes and takes
seconds. :func:`read_image_header` reads the format and the declared width and height from the first bytes of PNG
(IHDR), JPEG (the SOF segment), BMP, the PNM family, WebP and TIFF files without decoding, and
:func:`check_image_header` refuses what exceeds the limits of :mod:`espnet_ros.core.errors`, so that callers decide
before they call ``cv2.imdecode``. Plain Python; no OpenCV, no ROS.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from espnet_ros.core.errors import MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, ImageError

__all__ = ["ImageFormat", "ImageHeader", "ImageHeaderError", "check_image_header", "read_image_header"]

ImageFormat = Literal["png", "jpeg", "bmp", "pnm", "webp", "tiff"]

_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (not DHT, JPG, DAC)
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])  # TEM, RSTn: no length field
_PNM_HEADER = re.compile(rb"\AP[1-6](?:\s+|#[^\n]*\n)*?(\d+)(?:\s+|#[^\n]*\n)+?(\d+)\s")


class ImageHeaderError(ImageError):
    """Compressed image bytes whose header is missing, unreadable or declares a size over the limits."""


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header declares: its format and its size in pixels."""

    format: ImageFormat
    width: int
    height: int


def _png(b: bytes) -> ImageHeader | None:
    if len(b) < 24 or b[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", b[16:24])
    return ImageHeader("png", width, height)


def _jpeg(b: bytes) -> ImageHeader | None:
    i = 2
    while i + 4 <= len(b):
        if b[i] != 0xFF:
            return None
        marker = b[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _JPEG_STANDALONE:
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header before them
            return None
        (length,) = struct.unpack(">H", b[i + 2:i + 4])
        if marker in _JPEG_SOF:
            if length < 7 or i + 9 > len(b):
                return None
            height, width = struct.unpack(">HH", b[i + 5:i + 9])
            return ImageHeader("jpeg", width, height)
        if length < 2:
            return None
        i += 2 + length
    return None


def _bmp(b: bytes) -> ImageHeader | None:
    if len(b) < 26:
        return None
    (size,) = struct.unpack("<I", b[14:18])
    if size == 12:  # OS/2 BITMAPCOREHEADER
        width, height = struct.unpack("<HH", b[18:22])
    else:
        width, height = struct.unpack("<ii", b[18:26])
    return ImageHeader("bmp", abs(width), abs(height))


def _pnm(b: bytes) -> ImageHeader | None:
    m = _PNM_HEADER.match(b[:1024])
    return None if m is None else ImageHeader("pnm", int(m.group(1)), int(m.group(2)))


def _webp(b: bytes) -> ImageHeader | None:
    chunk = b[12:16]
    if chunk == b"VP8 " and len(b) >= 30:
        width, height = struct.unpack("<HH", b[26:30])
        return ImageHeader("webp", width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L" and len(b) >= 25:
        (bits,) = struct.unpack("<I", b[21:25])
        return ImageHeader("webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X" and len(b) >= 30:
        width = int.from_bytes(b[24:27], "little") + 1
        height = int.from_bytes(b[27:30], "little") + 1
        return ImageHeader("webp", width, height)
    return None


def _tiff(b: bytes) -> ImageHeader | None:
    order = "<" if b[:2] == b"II" else ">"
    if len(b) < 8:
        return None
    (offset,) = struct.unpack(order + "I", b[4:8])
    if offset + 2 > len(b):
        return None
    (count,) = struct.unpack(order + "H", b[offset:offset + 2])
    size: dict[int, int] = {}
    for n in range(count):
        entry = offset + 2 + 12 * n
        if entry + 12 > len(b):
            return None
        tag, kind = struct.unpack(order + "HH", b[entry:entry + 4])
        if tag in (256, 257):  # ImageWidth, ImageLength (SHORT or LONG)
            fmt = order + ("H" if kind == 3 else "I")
            size[tag] = struct.unpack(fmt, b[entry + 8:entry + 8 + struct.calcsize(fmt)])[0]
        if len(size) == 2:
            return ImageHeader("tiff", size[256], size[257])
    return None


def read_image_header(data: bytes | bytearray | memoryview | npt.NDArray[np.uint8]) -> ImageHeader | None:
    """The format and declared size of compressed image bytes, read from their header; ``None`` if unrecognised.

    Recognises PNG, JPEG (baseline, progressive, lossless: the first SOF segment), BMP, PNM (P1-P6), WebP and TIFF
    (the first image). Reads at most the bytes up to the size fields; never decodes pixel data.
    """
    b = data[:65536] if isinstance(data, bytes) else np.asarray(data, np.uint8).reshape(-1)[:65536].tobytes()
    if b.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png(b)
    if b.startswith(b"\xff\xd8"):
        return _jpeg(b)
    if b.startswith(b"BM"):
        return _bmp(b)
    if b[:1] == b"P" and b[1:2] in (b"1", b"2", b"3", b"4", b"5", b"6"):
        return _pnm(b)
    if b.startswith(b"RIFF") and b[8:12] == b"WEBP":
        return _webp(b)
    if b[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff(b)
    return None


def check_image_header(data: bytes | bytearray | memoryview | npt.NDArray[np.uint8], what: str,
                       formats: tuple[ImageFormat, ...] | None = None) -> ImageHeader:
    """The header of ``data`` if decoding it is safe; else raise :class:`ImageHeaderError` (``"<what>: <why>"``).

    Refused: bytes whose format is not recognised (or not among ``formats``), a header that declares an empty
    size, and one over :data:`~espnet_ros.core.errors.MAX_IMAGE_SIDE` a side or
    :data:`~espnet_ros.core.errors.MAX_IMAGE_PIXELS` in all (a decompression bomb declares far more pixels than its
    bytes could hold). Nothing is decoded.
    """
    header = read_image_header(data)
    allowed = formats or ("png", "jpeg", "bmp", "pnm", "webp", "tiff")
    if header is None or header.format not in allowed:
        found = "unrecognised bytes" if header is None else f"a {header.format} image"
        raise ImageHeaderError(
            f"{what}: {found} (no readable {' or '.join(allowed)} header); the data is corrupted, truncated or in "
            "another format. Re-encode it as png or jpeg."
        )
    width, height = header.width, header.height
    if width <= 0 or height <= 0:
        raise ImageHeaderError(f"{what}: its {header.format} header declares an empty size {width}x{height}; the "
                               "data is corrupted. Re-encode it.")
    if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS:
        raise ImageHeaderError(
            f"{what}: its {header.format} header declares {width}x{height} pixels, over the limit (each side <= "
            f"{MAX_IMAGE_SIDE}, width*height <= {MAX_IMAGE_PIXELS}); refused before decoding (a decompression "
            "bomb declares more pixels than its bytes hold). Downscale the image before sending it."
        )
    return header
