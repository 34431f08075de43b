"""Tests of espnet_ros.image_codec against hand-built sensor_msgs messages with known pixel values."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from espnet_ros.core.errors import EspnetRosError, ImageError
from espnet_ros.image_codec import (
    COLOR_ORDER_OF_ENCODING,
    ENCODABLE_ENCODINGS,
    SUPPORTED_ENCODINGS,
    ImageEncodingError,
    bytes_per_pixel,
    decode_compressed,
    decode_image,
    encode_compressed,
    encode_image,
)

PAD_BYTE = 0xEE


def make_msg(rows: NDArray[np.uint8], encoding: str, width: int, pad: int = 0, bigendian: int = 0) -> Image:
    """An Image message whose rows are the bytes of ``rows`` (height, row_bytes), each followed by ``pad`` bytes."""
    height, row_bytes = rows.shape
    padded = np.full((height, row_bytes + pad), PAD_BYTE, np.uint8)
    padded[:, :row_bytes] = rows
    return Image(
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=bigendian,
        step=row_bytes + pad,
        data=padded.tobytes(),
    )


def pixels(height: int = 4, width: int = 6, channels: int = 3) -> NDArray[np.uint8]:
    """Distinct, known pixel values: value = (row*width + col)*channels + channel (mod 256)."""
    return (np.arange(height * width * channels, dtype=np.uint32) % 256).astype(np.uint8).reshape(
        height, width, channels
    )


def test_encoding_tables_agree() -> None:
    assert set(COLOR_ORDER_OF_ENCODING) == set(SUPPORTED_ENCODINGS)
    assert [bytes_per_pixel(e) for e in ("rgb8", "bgra8", "mono8", "mono16", "bayer_grbg8", "yuv422")] == [
        3, 4, 1, 2, 1, 2,
    ]
    with pytest.raises(ImageEncodingError, match="unsupported image encoding '32FC1'"):
        bytes_per_pixel("32FC1")


def test_error_hierarchy() -> None:
    assert issubclass(ImageEncodingError, ImageError)
    assert issubclass(ImageEncodingError, EspnetRosError)
    assert issubclass(ImageEncodingError, ValueError)


@pytest.mark.parametrize("pad", [0, 5])
@pytest.mark.parametrize(("encoding", "order"), [("rgb8", "rgb"), ("bgr8", "bgr")])
def test_three_channel(encoding: str, order: str, pad: int) -> None:
    src = pixels()
    msg = make_msg(src.reshape(4, -1), encoding, width=6, pad=pad)
    out = decode_image(msg)
    assert out.color_order == order
    assert out.image.shape == (4, 6, 3) and out.image.dtype == np.uint8
    assert out.image.flags.c_contiguous
    np.testing.assert_array_equal(out.image, src)
    # Unpadded rows are returned without a copy; padded rows must be copied (and the padding dropped).
    assert np.shares_memory(out.image, np.frombuffer(msg.data, np.uint8)) == (pad == 0)


@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize(("encoding", "order"), [("rgba8", "rgb"), ("bgra8", "bgr")])
def test_alpha_dropped(encoding: str, order: str, pad: int) -> None:
    src = pixels(channels=4)
    out = decode_image(make_msg(src.reshape(4, -1), encoding, width=6, pad=pad))
    assert out.color_order == order
    assert out.image.flags.c_contiguous
    np.testing.assert_array_equal(out.image, src[:, :, :3])


@pytest.mark.parametrize("pad", [0, 7])
def test_mono8(pad: int) -> None:
    src = pixels(channels=1)[:, :, 0]
    out = decode_image(make_msg(src, "mono8", width=6, pad=pad))
    assert out.color_order == "bgr"
    assert out.image.shape == (4, 6, 3) and out.image.flags.c_contiguous
    for channel in range(3):
        np.testing.assert_array_equal(out.image[:, :, channel], src)


@pytest.mark.parametrize("pad", [0, 3, 4])
@pytest.mark.parametrize("bigendian", [0, 1])
def test_mono16_endianness_and_scaling(bigendian: int, pad: int) -> None:
    values = np.array([[0x0000, 0x00FF, 0x0100, 0x12AB], [0x7FFF, 0x8000, 0xFE01, 0xFFFF]], np.uint16)
    raw = values.astype(">u2" if bigendian else "<u2").view(np.uint8).reshape(2, 8)
    out = decode_image(make_msg(raw, "mono16", width=4, pad=pad, bigendian=bigendian))
    expected = np.array([[0x00, 0x00, 0x01, 0x12], [0x7F, 0x80, 0xFE, 0xFF]], np.uint8)  # value >> 8
    assert out.color_order == "bgr"
    for channel in range(3):
        np.testing.assert_array_equal(out.image[:, :, channel], expected)


def test_mono16_byte_order_matters() -> None:
    raw = np.array([[0x12, 0x34]], np.uint8)  # one pixel: 0x1234 big-endian, 0x3412 little-endian
    assert decode_image(make_msg(raw, "mono16", width=1, bigendian=1)).image[0, 0, 0] == 0x12
    assert decode_image(make_msg(raw, "mono16", width=1, bigendian=0)).image[0, 0, 0] == 0x34


def mosaic(rgb: NDArray[np.uint8], pattern: str) -> NDArray[np.uint8]:
    """Sample ``rgb`` through a Bayer filter whose top-left 2x2 block reads ``pattern`` row by row (ROS naming)."""
    channel_of = {"r": 0, "g": 1, "b": 2}
    out = np.zeros(rgb.shape[:2], np.uint8)
    for dy in range(2):
        for dx in range(2):
            out[dy::2, dx::2] = rgb[dy::2, dx::2, channel_of[pattern[2 * dy + dx]]]
    return out


@pytest.mark.parametrize("pad", [0, 6])
@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer_pattern_mapping(pattern: str, pad: int) -> None:
    # Four flat colour tiles with distinct R, G, B: a wrong pattern mapping swaps or mixes the channels.
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:8, :8] = (200, 100, 30)
    rgb[:8, 8:] = (20, 180, 90)
    rgb[8:, :8] = (60, 40, 220)
    rgb[8:, 8:] = (250, 250, 10)
    out = decode_image(make_msg(mosaic(rgb, pattern), f"bayer_{pattern}8", width=16, pad=pad))
    assert out.color_order == "bgr"
    assert out.image.shape == (16, 16, 3)
    decoded_rgb = out.image[:, :, ::-1].astype(int)
    for ys, xs in ((slice(2, 6), slice(2, 6)), (slice(2, 6), slice(10, 14)), (slice(10, 14), slice(2, 6)),
                   (slice(10, 14), slice(10, 14))):  # tile interiors, away from tile and image borders
        assert np.abs(decoded_rgb[ys, xs] - rgb[ys, xs]).max() <= 1, pattern


def bt601_bgr(y: int, u: int, v: int) -> tuple[float, float, float]:
    """BT.601 limited-range YUV to BGR, the formula OpenCV's YUV 4:2:2 conversions implement."""
    c, d, e = 1.164 * (y - 16), u - 128, v - 128
    return c + 2.018 * d, c - 0.391 * d - 0.813 * e, c + 1.596 * e


@pytest.mark.parametrize("pad", [0, 4])
def test_yuv422_layouts(pad: int) -> None:
    # Two rows of two pixel pairs: (Y0, Y1, U, V) per pair.
    pairs = [[(16, 235, 128, 128), (120, 130, 90, 200)], [(81, 81, 240, 110), (200, 60, 60, 60)]]
    uyvy = np.array([[v for y0, y1, u, vv in row for v in (u, y0, vv, y1)] for row in pairs], np.uint8)
    yuyv = np.array([[v for y0, y1, u, vv in row for v in (y0, u, y1, vv)] for row in pairs], np.uint8)
    out_uyvy = decode_image(make_msg(uyvy, "yuv422", width=4, pad=pad))
    out_yuyv = decode_image(make_msg(yuyv, "yuv422_yuy2", width=4, pad=pad))
    assert out_uyvy.color_order == out_yuyv.color_order == "bgr"
    np.testing.assert_array_equal(out_uyvy.image, out_yuyv.image)
    expected = np.zeros((2, 4, 3))
    for r, row in enumerate(pairs):
        for p, (y0, y1, u, v) in enumerate(row):
            expected[r, 2 * p] = bt601_bgr(y0, u, v)
            expected[r, 2 * p + 1] = bt601_bgr(y1, u, v)
    assert np.abs(out_uyvy.image.astype(float) - np.clip(expected, 0, 255)).max() <= 2.0
    # Neutral chroma: black and white at the ends of the video range.
    np.testing.assert_array_equal(out_uyvy.image[0, 0], (0, 0, 0))
    np.testing.assert_array_equal(out_uyvy.image[0, 1], (255, 255, 255))


def test_supported_encodings_all_decode() -> None:
    for encoding in SUPPORTED_ENCODINGS:
        bpp = bytes_per_pixel(encoding)
        out = decode_image(make_msg(np.zeros((2, 4 * bpp), np.uint8), encoding, width=4, pad=2))
        assert out.image.shape == (2, 4, 3), encoding
        assert out.image.dtype == np.uint8 and out.image.flags.c_contiguous
        assert out.color_order == COLOR_ORDER_OF_ENCODING[encoding]


def base_msg(**fields: object) -> Image:
    msg = Image(height=2, width=3, encoding="rgb8", step=9, data=bytes(18))
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg


@pytest.mark.parametrize(
    ("fields", "pattern"),
    [
        ({"data": bytes(17)}, r"carries 17 data bytes, shorter than step\*height = 18"),
        ({"data": bytes(19)}, r"carries 19 data bytes, longer than step\*height = 18"),
        ({"data": b""}, "shorter"),
        ({"width": 0, "step": 0, "data": b""}, "empty size 0x2"),
        ({"height": 0, "data": b""}, "empty size 3x0"),
        ({"step": 8, "data": bytes(16)}, r"step 8 bytes, less than width\*3 = 9"),
        ({"encoding": "16UC1"}, "unsupported image encoding '16UC1'; supported encodings are rgb8"),
        ({"encoding": ""}, "unsupported image encoding ''"),
        ({"width": 16385, "height": 1, "step": 3 * 16385, "data": b""}, "16385x1, over the supported limit"),
        ({"width": 8193, "height": 8193, "step": 3 * 8193, "data": b""}, "8193x8193, over the supported limit"),
        ({"encoding": "yuv422", "step": 6, "data": bytes(12)}, "odd width 3"),
    ],
)
def test_malformed_messages(fields: dict[str, object], pattern: str) -> None:
    with pytest.raises(ImageEncodingError, match=pattern):
        decode_image(base_msg(**fields))


@pytest.mark.parametrize("encoding", ENCODABLE_ENCODINGS)
def test_encode_decode_round_trip(encoding: str) -> None:
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    array: NDArray[np.generic]
    if encoding == "mono16":
        array = (np.arange(30, dtype=np.uint32).reshape(5, 6) * 2000 + 7).astype(np.uint16)
    elif encoding == "mono8":
        array = pixels(5, 6, 1)[:, :, 0]
    else:
        array = pixels(5, 6, 4 if encoding.endswith("a8") else 3)
    msg = encode_image(array, encoding, header)
    assert (msg.width, msg.height, msg.encoding, msg.is_bigendian) == (6, 5, encoding, 0)
    assert msg.step == 6 * bytes_per_pixel(encoding) and len(msg.data) == msg.step * 5
    assert msg.header.frame_id == "cam" and (msg.header.stamp.sec, msg.header.stamp.nanosec) == (12, 345)
    out = decode_image(msg)
    expected: NDArray[np.generic]
    if encoding == "mono16":
        expected = np.repeat((array.astype(np.uint16) >> 8).astype(np.uint8)[:, :, None], 3, axis=2)
    elif encoding == "mono8":
        expected = np.repeat(array[:, :, None], 3, axis=2)
    else:
        expected = array[:, :, :3]
    assert out.color_order == ("rgb" if encoding.startswith("rgb") else "bgr")
    np.testing.assert_array_equal(out.image, expected)


def test_encode_mono16_is_little_endian() -> None:
    msg = encode_image(np.array([[0x1234]], np.uint16), "mono16")
    assert bytes(msg.data) == b"\x34\x12"


def test_encode_non_contiguous_array() -> None:
    array = pixels(4, 8)[:, ::2]  # strided view
    msg = encode_image(array, "bgr8")
    np.testing.assert_array_equal(decode_image(msg).image, array)


@pytest.mark.parametrize(
    ("array", "encoding", "pattern"),
    [
        (np.zeros((2, 2, 3), np.uint8), "mono8", r"shape \(2, 2, 3\) and dtype uint8 as mono8; expected \(H, W\)"),
        (np.zeros((2, 2), np.uint8), "rgb8", r"expected \(H, W, 3\) uint8"),
        (np.zeros((2, 2, 3), np.float32), "bgr8", "dtype float32"),
        (np.zeros((2, 2), np.uint8), "mono16", "expected .* uint16"),
        (np.zeros((0, 2, 3), np.uint8), "bgr8", "empty size 2x0"),
        (np.zeros((2, 2, 3), np.uint8), "yuv422", "cannot encode as 'yuv422'"),
    ],
)
def test_encode_errors(array: NDArray[np.generic], encoding: str, pattern: str) -> None:
    with pytest.raises(ImageEncodingError, match=pattern):
        encode_image(array, encoding)


def smooth_bgr(height: int = 48, width: int = 64) -> NDArray[np.uint8]:
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) * 127 // (width + height)], -1).astype(
        np.uint8
    )


def test_compressed_png_round_trip_is_exact() -> None:
    image = smooth_bgr()
    msg = encode_compressed(image, "png", Header(frame_id="f"))
    assert msg.format == "bgr8; png compressed bgr8" and msg.header.frame_id == "f"
    out = decode_compressed(msg)
    assert out.color_order == "bgr" and out.image.flags.c_contiguous
    np.testing.assert_array_equal(out.image, image)


def test_compressed_jpeg_round_trip() -> None:
    image = smooth_bgr()
    msg = encode_compressed(image, "jpeg", quality=95)
    assert msg.format == "bgr8; jpeg compressed bgr8"
    assert bytes(msg.data[:2]) == b"\xff\xd8"
    out = decode_compressed(msg)
    assert out.image.shape == image.shape
    assert np.abs(out.image.astype(int) - image).mean() < 3.0
    # The channel order survives: blue rises along x, green along y.
    assert out.image[24, 60, 0] > 200 and out.image[24, 60, 1] < 150
    assert out.image[44, 4, 1] > 200 and out.image[44, 4, 0] < 50


def test_compressed_grey() -> None:
    grey = smooth_bgr()[:, :, 0]
    msg = encode_compressed(grey, "png")
    assert msg.format == "mono8; png compressed "
    out = decode_compressed(msg)
    for channel in range(3):
        np.testing.assert_array_equal(out.image[:, :, channel], grey)


@pytest.mark.parametrize(
    "fmt",
    ["jpeg", "jpg", "png", "", "bgr8; jpeg compressed bgr8", "rgb8; jpeg compressed bgr8", "rgb8; png compressed bgr8",
     "mono8; jpeg compressed ", "bgra8; png compressed bgra8", "JPEG"],
)
def test_decode_compressed_format_strings(fmt: str) -> None:
    image = smooth_bgr(16, 16)
    codec = "png" if "png" in fmt else "jpeg"
    ok, buffer = cv2.imencode("." + codec, image)
    assert ok
    out = decode_compressed(CompressedImage(format=fmt, data=buffer.tobytes()))
    assert out.color_order == "bgr" and out.image.shape == (16, 16, 3)
    assert np.abs(out.image.astype(int) - image).mean() < 4.0


def test_decode_compressed_png_with_alpha_and_16_bit() -> None:
    bgra = np.dstack([smooth_bgr(8, 8), np.full((8, 8), 77, np.uint8)])
    out = decode_compressed(CompressedImage(format="bgra8; png compressed bgra8", data=cv2.imencode(".png", bgra)[1]
                                            .tobytes()))
    np.testing.assert_array_equal(out.image, bgra[:, :, :3])
    deep = np.full((4, 4), 0x1234, np.uint16)
    out16 = decode_compressed(CompressedImage(format="mono16; png compressed ", data=cv2.imencode(".png", deep)[1]
                                              .tobytes()))
    assert out16.image.shape == (4, 4, 3) and out16.image.dtype == np.uint8
    assert int(out16.image[0, 0, 0]) == 0x12


@pytest.mark.parametrize(
    ("fmt", "data", "pattern"),
    [
        ("jpeg", b"not an image at all", "could not be decoded"),
        ("png", b"\x89PNG\r\n\x1a\n" + bytes(40), "could not be decoded"),
        ("jpeg", b"", "has no data"),
        ("16UC1; compressedDepth png", b"\x89PNG", "compressedDepth"),
        ("webp", b"RIFF", "unsupported CompressedImage format 'webp'"),
    ],
)
def test_decode_compressed_errors(fmt: str, data: bytes, pattern: str) -> None:
    with pytest.raises(ImageEncodingError, match=pattern):
        decode_compressed(CompressedImage(format=fmt, data=data))


def test_decode_compressed_truncated_jpeg() -> None:
    data = encode_compressed(smooth_bgr(), "jpeg").data
    with pytest.raises(ImageEncodingError, match="could not be decoded"):
        decode_compressed(CompressedImage(format="jpeg", data=bytes(data[:30])))


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"fmt": "bmp"}, "expected 'jpeg' or 'png'"),
        ({"quality": 0}, "jpeg quality 0 is out of range"),
        ({"fmt": "png", "png_compression": 10}, "png compression 10"),
    ],
)
def test_encode_compressed_errors(kwargs: dict[str, object], pattern: str) -> None:
    with pytest.raises(ImageEncodingError, match=pattern):
        encode_compressed(smooth_bgr(4, 4), **kwargs)  # type: ignore[arg-type]


def test_encode_compressed_rejects_rgba() -> None:
    with pytest.raises(ImageEncodingError, match=r"expected \(H, W, 3\) uint8"):
        encode_compressed(np.zeros((4, 4, 4), np.uint8))
