"""Fuzzing the node's input paths: image messages, compressed images and CameraInfo, random and mutated.

A fixed seed makes every run the same few thousand cases. Each case either decodes (an ``(H, W, 3) uint8`` image, a
camera model) or is refused with the domain error and a message; nothing else may escape, numpy's RuntimeWarnings
count as escapes, and the peak memory stays bounded.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import cv2
import numpy as np
from bombs import jpeg_bomb, png_bomb
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from espnet_ros.core.errors import MAX_IMAGE_SIDE
from espnet_ros.core.geometry import CameraPose, GeometryError, GridSpec, ProjectorCache
from espnet_ros.core.image_header import read_image_header
from espnet_ros.ground_msgs import camera_model_from_camera_info
from espnet_ros.image_codec import (
    SUPPORTED_ENCODINGS,
    DecodedImage,
    ImageEncodingError,
    decode_compressed,
    decode_image,
)
from espnet_ros.segmentation_node import camera_info_image_size, scale_camera_info

SEED = 20261205
MAX_PEAK_GROWTH_MB = 256


def _peak_rss_reset() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(key)


def _side(rng: np.random.Generator) -> int:
    pick = rng.integers(0, 10)
    if pick == 0:
        return int(rng.choice([0, -1 & 0xFFFFFFFF, 2**31 - 1, MAX_IMAGE_SIDE + 1, 70000]))
    return int(rng.integers(1, 48))


def _raw_case(rng: np.random.Generator) -> Image:
    encoding = str(rng.choice([*SUPPORTED_ENCODINGS, "32FC1", "", "rgb8 ", "BGR8", "yuv422\x00"]))
    width, height = _side(rng), _side(rng)
    bpp = 4 if encoding.endswith("a8") else 3 if encoding in ("rgb8", "bgr8") else 2 if "16" in encoding else 1
    step = width * bpp + int(rng.choice([0, 0, 0, 1, -1, 3, int(rng.integers(0, 64))]))
    exact = max(0, step) * height
    size = exact if exact < 1 << 20 and rng.random() < 0.6 else int(rng.integers(0, 4096))
    return Image(header=Header(), encoding=encoding, width=width & 0xFFFFFFFF, height=height & 0xFFFFFFFF,
                 step=max(0, step) & 0xFFFFFFFF, is_bigendian=int(rng.integers(0, 2)),
                 data=rng.integers(0, 256, size, dtype=np.uint8).tobytes())


def _seeds() -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(0)
    image = cv2.resize(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), (16, 12))
    out = []
    for ext, fmt in ((".jpg", "jpeg"), (".png", "png"), (".bmp", "jpeg"), (".webp", "png")):
        ok, buf = cv2.imencode(ext, image)
        assert ok
        out.append((fmt, buf.tobytes()))
    ok, grey = cv2.imencode(".png", image[:, :, 0])
    out.append(("png", grey.tobytes()))
    out += [("jpeg", jpeg_bomb()), ("png", png_bomb(20000))]
    return out


def _mutate(rng: np.random.Generator, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 6))):
        op = int(rng.integers(0, 6))
        if op == 0 and b:  # flip bytes
            for i in rng.integers(0, len(b), int(rng.integers(1, 8))):
                b[int(i)] = int(rng.integers(0, 256))
        elif op == 1:  # truncate
            b = b[: int(rng.integers(0, len(b) + 1))]
        elif op == 2:  # insert junk
            at = int(rng.integers(0, len(b) + 1))
            b[at:at] = rng.integers(0, 256, int(rng.integers(1, 32)), dtype=np.uint8).tobytes()
        elif op == 3:  # rewrite the declared size (small or over the limit)
            header = read_image_header(bytes(b))
            if header is not None and header.format in ("png", "jpeg"):
                side = int(rng.choice([int(rng.integers(1, 200)), int(rng.integers(MAX_IMAGE_SIDE + 1, 65536))]))
                if header.format == "png" and len(b) >= 24:
                    b[16 + 4 * int(rng.integers(0, 2)):][:4] = side.to_bytes(4, "big")
                elif header.format == "jpeg" and b"\xff\xc0" in b:
                    sof = b.index(b"\xff\xc0")
                    b[sof + 5 + 2 * int(rng.integers(0, 2)):][:2] = side.to_bytes(2, "big")
        elif op == 4:  # duplicate a slice
            i, j = sorted(int(x) for x in rng.integers(0, len(b) + 1, 2))
            b[j:j] = b[i:j][:256]
        else:  # random bytes with a real signature
            b = bytearray(b[:8]) + rng.integers(0, 256, int(rng.integers(0, 512)), dtype=np.uint8).tobytes()
    return bytes(b)


def _compressed_case(rng: np.random.Generator, seeds: list[tuple[str, bytes]]) -> CompressedImage:
    fmt, data = seeds[int(rng.integers(0, len(seeds)))]
    if rng.random() < 0.1:
        data = rng.integers(0, 256, int(rng.integers(0, 256)), dtype=np.uint8).tobytes()
    elif rng.random() < 0.9:
        data = _mutate(rng, data)
    fmt = str(rng.choice([fmt, "", "bgr8; jpeg compressed bgr8", "mono8; png compressed ", "tiff", "jpg",
                          "32FC1; compressedDepth png", "rgb8; JPEG compressed bgr8"]))
    return CompressedImage(header=Header(), format=fmt, data=data)


def _number(rng: np.random.Generator) -> float:
    pick = rng.integers(0, 8)
    if pick == 0:
        return float(rng.choice([math.nan, math.inf, -math.inf, 1e300, -1e300, 0.0, 1e-300]))
    return float(rng.normal(0.0, [0.1, 1.0, 100.0, 1000.0][int(rng.integers(0, 4))]))


def _camera_info_case(rng: np.random.Generator) -> CameraInfo:
    w, h = int(rng.integers(0, 200)), int(rng.integers(0, 200))
    fx, fy = abs(_number(rng)) * 100, abs(_number(rng)) * 100
    k = [fx, _number(rng) if rng.random() < 0.2 else 0.0, w / 2 + _number(rng),
         0.0, fy, h / 2 + _number(rng), 0.0, 0.0, 1.0]
    if rng.random() < 0.2:
        k = [_number(rng) for _ in range(9)]
    model = str(rng.choice(["plumb_bob", "rational_polynomial", "equidistant", "", "fisheye", "none"]))
    n_d = int(rng.choice([0, 4, 5, 8, 3, 14]))
    d = [_number(rng) * (0.1 if rng.random() < 0.7 else 1.0) for _ in range(n_d)]
    info = CameraInfo(header=Header(frame_id="cam"), width=w, height=h, distortion_model=model, k=k, d=d,
                      binning_x=int(rng.choice([0, 0, 1, 2, 3, 1000])), binning_y=int(rng.choice([0, 0, 1, 2, 7])))
    if rng.random() < 0.2:
        info.roi.x_offset, info.roi.y_offset = int(rng.integers(0, 100)), int(rng.integers(0, 100))
        info.roi.width, info.roi.height = int(rng.integers(0, 200)), int(rng.integers(0, 200))
    return info


def test_fuzz_image_codec_and_camera_info() -> None:
    rng = np.random.default_rng(SEED)
    seeds = _seeds()
    counts = {"decoded": 0, "refused": 0, "models": 0, "model refused": 0, "grids": 0}
    pose = CameraPose.from_body_rpy(0.0, 0.0, 1.5, 0.0, 0.3, 0.0)
    spec = GridSpec.from_range(3.0, 0.5)
    projectors = ProjectorCache()
    _peak_rss_reset()
    rss_before = _status_mb("VmRSS")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a numpy warning is an escape too
        for n in range(10000):
            msg: Image | CompressedImage = _raw_case(rng) if n % 2 else _compressed_case(rng, seeds)
            try:
                decoded = decode_image(msg) if isinstance(msg, Image) else decode_compressed(msg)
            except ImageEncodingError as exc:
                assert len(str(exc)) > 20, (n, str(exc))
                counts["refused"] += 1
            else:
                assert isinstance(decoded, DecodedImage)
                image = decoded.image
                assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and image.size > 0
                counts["decoded"] += 1
        for n in range(5000):
            info = _camera_info_case(rng)
            size = (int(rng.integers(1, 64)), int(rng.integers(1, 64)))
            camera_info_image_size(info)
            scale_camera_info(info, size[0], size[1], Header())
            try:
                model = camera_model_from_camera_info(info, size)
            except GeometryError as exc:
                assert len(str(exc)) > 20, (n, str(exc))
                counts["model refused"] += 1
                continue
            counts["models"] += 1
            if n % 2 == 0:
                try:
                    projectors.get(model, pose, spec, (8, 6))
                    counts["grids"] += 1
                except GeometryError as exc:
                    assert len(str(exc)) > 20, (n, str(exc))
    grown = _status_mb("VmHWM") - rss_before
    assert grown < MAX_PEAK_GROWTH_MB, f"peak RSS grew {grown:.0f} MB"
    # the generator reaches every outcome (a fuzz test that only ever refuses proves little)
    assert all(v > 50 for v in counts.values()), counts
