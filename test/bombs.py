"""Decompression bombs for tests: a few bytes of JPEG or PNG whose header declares a gigapixel image."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np


def jpeg_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A small baseline JPEG whose SOF declares ``width`` x ``height`` (its scan data is that of an 8x8 image)."""
    ok, buf = cv2.imencode(".jpg", np.full((8, 8, 3), 128, np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 50])
    assert ok
    data = bytearray(buf.tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(side: int = 30000) -> bytes:
    """A valid 1-bit grey PNG of ``side`` x ``side`` black pixels (about 110 kB for 30000: zeros deflate well)."""
    row = bytes(1 + (side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(row) for _ in range(side)]
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts))
            + _chunk(b"IEND", b""))
