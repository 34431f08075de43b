"""Tests of espnet_ros.core.render on small hand-computed cases, plus free functions vs Renderer on a real map."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from espnet_ros.core.errors import ImageError
from espnet_ros.core.labels import CAMVID, CITYSCAPES, UnknownClassError
from espnet_ros.core.render import (
    Renderer,
    class_overlay,
    colorize,
    drivable_boundary,
    drivable_mask,
    drivable_overlay,
)

# Cityscapes ids: 0 road (128,64,128), 1 sidewalk (244,35,232), 13 car (0,0,142), 19 void (0,0,0); RGB.
IDS = np.array([[0, 13], [19, 255], [1, 0]], np.uint8)


def bgr(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    return (rgb[2], rgb[1], rgb[0])


def imread(path: Path, flags: int = cv2.IMREAD_COLOR) -> NDArray[np.uint8]:
    image = cv2.imread(str(path), flags)
    assert image is not None, path
    return np.asarray(image, np.uint8)


def solid(value: tuple[int, int, int], shape: tuple[int, int]) -> NDArray[np.uint8]:
    image = np.empty((*shape, 3), np.uint8)
    image[:, :] = value
    return image


def test_colorize_bgr_and_rgb_by_hand() -> None:
    expected_rgb = np.array(
        [[(128, 64, 128), (0, 0, 142)], [(0, 0, 0), (0, 0, 0)], [(244, 35, 232), (128, 64, 128)]], np.uint8
    )
    np.testing.assert_array_equal(colorize(IDS, CITYSCAPES.palette_rgb()), expected_rgb)
    np.testing.assert_array_equal(colorize(IDS, CITYSCAPES.palette_bgr()), expected_rgb[:, :, ::-1])
    out = np.full((3, 2, 3), 7, np.uint8)
    assert colorize(IDS, CITYSCAPES.palette_bgr(), out=out) is out
    np.testing.assert_array_equal(out, expected_rgb[:, :, ::-1])
    r = Renderer(CITYSCAPES, color_order="rgb")
    np.testing.assert_array_equal(r.colorize(IDS), expected_rgb)
    np.testing.assert_array_equal(Renderer(CITYSCAPES).colorize(IDS), expected_rgb[:, :, ::-1])


def test_colorize_non_contiguous_ids() -> None:
    ids = np.array([[0, 1, 13, 2]], np.uint8)[:, ::2]  # ids 0 and 13
    assert not ids.flags.c_contiguous
    expected = np.array([[(128, 64, 128), (0, 0, 142)]], np.uint8)
    np.testing.assert_array_equal(colorize(ids, CITYSCAPES.palette_rgb()), expected)


def test_class_overlay_by_hand() -> None:
    # road in BGR is (128, 64, 128); 0.75 * (12, 200, 40) + 0.25 * (128, 64, 128) = (41, 166, 62), all exact
    image = solid((12, 200, 40), (2, 2))
    ids = np.array([[0, 19], [0, 0]], np.uint8)  # 19 is void, black
    expected = np.empty((2, 2, 3), np.uint8)
    expected[:, :] = (41, 166, 62)
    expected[0, 1] = (9, 150, 30)  # 0.75 * image + 0.25 * black
    got = class_overlay(image, ids, CITYSCAPES.palette_bgr(), alpha=0.25)
    np.testing.assert_array_equal(got, expected)
    r = Renderer(CITYSCAPES, alpha=0.25)
    np.testing.assert_array_equal(r.class_overlay(image, ids), expected)
    out = np.zeros_like(image)
    assert r.class_overlay(image, ids, out=out) is out
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(class_overlay(image, ids, CITYSCAPES.palette_bgr(), alpha=0.0), image)
    np.testing.assert_array_equal(
        class_overlay(image, ids, CITYSCAPES.palette_bgr(), alpha=1.0), colorize(ids, CITYSCAPES.palette_bgr())
    )


def test_drivable_mask_by_hand() -> None:
    expected = np.array([[255, 0], [0, 0], [255, 255]], np.uint8)
    np.testing.assert_array_equal(drivable_mask(IDS, CITYSCAPES.mask_lut([0, 1])), expected)
    r = Renderer(CITYSCAPES, ["road", "sidewalk"])
    assert r.drivable_ids == (0, 1)
    np.testing.assert_array_equal(r.drivable_mask(IDS), expected)
    out = np.empty((3, 2), np.uint8)
    assert r.drivable_mask(IDS, out=out) is out
    np.testing.assert_array_equal(out, expected)
    # default: road only; ids given as digits work too
    np.testing.assert_array_equal(Renderer(CITYSCAPES).drivable_mask(IDS), [[255, 0], [0, 0], [0, 255]])
    np.testing.assert_array_equal(Renderer(CITYSCAPES, ["13"]).drivable_mask(IDS), [[0, 255], [0, 0], [0, 0]])
    # CamVid: Road is 3
    np.testing.assert_array_equal(Renderer(CAMVID).drivable_mask(np.array([[3, 4]], np.uint8)), [[255, 0]])


def test_boundary_by_hand() -> None:
    mask = np.zeros((7, 7), np.uint8)
    mask[2:5, 2:5] = 255
    expected = np.zeros((7, 7), np.uint8)
    expected[1:6, 1:6] = 255  # one pixel outside ...
    expected[3, 3] = 0  # ... and one inside the square
    np.testing.assert_array_equal(drivable_boundary(mask, width=2), expected)
    # a region touching the image border: the border itself is not a boundary
    mask = np.zeros((5, 6), np.uint8)
    mask[:, :3] = 255
    expected = np.zeros((5, 6), np.uint8)
    expected[:, 2:4] = 255
    np.testing.assert_array_equal(drivable_boundary(mask, width=2), expected)
    expected[:, 1:5] = 255
    np.testing.assert_array_equal(drivable_boundary(mask, width=4), expected)
    with pytest.raises(ValueError, match="at least 1"):
        drivable_boundary(mask, width=0)


def test_drivable_overlay_by_hand() -> None:
    image = solid((100, 100, 100), (7, 7))
    mask = np.zeros((7, 7), np.uint8)
    mask[2:5, 2:5] = 255
    # 0.75 * 100 + 0.25 * (0, 200, 0) = (75, 125, 75)
    got = drivable_overlay(image, mask, color=(0, 200, 0), alpha=0.25, boundary_color=None)
    expected = image.copy()
    expected[2:5, 2:5] = (75, 125, 75)
    np.testing.assert_array_equal(got, expected)
    got = drivable_overlay(image, mask, color=(0, 200, 0), alpha=0.25, boundary_color=(1, 2, 3), boundary_width=2)
    expected[1:6, 1:6] = (1, 2, 3)
    expected[3, 3] = (75, 125, 75)
    np.testing.assert_array_equal(got, expected)
    # the Renderer takes RGB colours and gives the same in BGR
    r = Renderer(CITYSCAPES, drivable_alpha=0.25, drivable_rgb=(0, 200, 0), boundary_rgb=(3, 2, 1), boundary_width=2)
    np.testing.assert_array_equal(r.drivable_overlay(image, mask=mask), expected)
    ids = np.where(mask > 0, 0, 2).astype(np.uint8)  # road inside, building outside
    np.testing.assert_array_equal(r.drivable_overlay(image, ids), expected)
    out = np.zeros_like(image)
    assert r.drivable_overlay(image, ids, out=out) is out
    np.testing.assert_array_equal(out, expected)
    rgb = Renderer(CITYSCAPES, color_order="rgb", drivable_alpha=0.25, drivable_rgb=(0, 200, 0), boundary_rgb=(3, 2, 1))
    np.testing.assert_array_equal(rgb.drivable_overlay(image, ids), expected[:, :, ::-1])
    # the image itself is never modified
    assert (image == 100).all()


def test_free_functions_equal_renderer_on_a_real_map(shared_dir: Path) -> None:
    ref = imread(shared_dir / "espnet" / "reference" / "espnet_p2q8_frankfurt_000000_000294_trainid.png",
                 cv2.IMREAD_UNCHANGED)
    ids = np.asarray(cv2.resize(ref, (2048, 1024), interpolation=cv2.INTER_NEAREST), np.uint8)
    image = imread(shared_dir / "espnet" / "samples" / "frankfurt_000000_000294_leftImg8bit.png")
    assert image.shape == (1024, 2048, 3)
    r = Renderer(CITYSCAPES, ["road", "sidewalk"], alpha=0.5)
    pal = CITYSCAPES.palette_bgr()
    color = r.colorize(ids)
    np.testing.assert_array_equal(color, pal[ids])
    np.testing.assert_array_equal(r.class_overlay(image, ids), class_overlay(image, ids, pal, alpha=0.5))
    mask = r.drivable_mask(ids)
    np.testing.assert_array_equal(mask, np.where(np.isin(ids, [0, 1]), 255, 0))
    free = drivable_overlay(image, mask, color=bgr((0, 255, 0)), boundary_color=bgr((255, 255, 0)))
    # frames of another size reuse the renderer (buffers follow the size)
    small = np.ascontiguousarray(image[:64, :96])
    r.drivable_overlay(small, np.ascontiguousarray(ids[:64, :96]))
    np.testing.assert_array_equal(r.drivable_overlay(image, mask=mask), free)
    inside = (mask > 0) & (drivable_boundary(mask) == 0)
    assert inside.sum() > 100_000
    expected = np.round(image[inside] * 0.6 + np.array([0, 255, 0]) * 0.4)
    assert np.abs(free[inside].astype(int) - expected).max() <= 1
    outside = (mask == 0) & (drivable_boundary(mask) == 0)
    np.testing.assert_array_equal(free[outside], image[outside])


def test_errors() -> None:
    pal = CITYSCAPES.palette_bgr()
    image = solid((1, 2, 3), (3, 2))
    with pytest.raises(ImageError, match=r"\(H, W\) uint8"):
        colorize(IDS.astype(np.int32), pal)  # type: ignore[arg-type]
    with pytest.raises(ImageError, match="empty"):
        colorize(np.zeros((0, 4), np.uint8), pal)
    with pytest.raises(ImageError, match="image is 2x3 but the class ids are 2x2"):
        class_overlay(image, np.zeros((2, 2), np.uint8), pal)
    with pytest.raises(ImageError, match=r"\(H, W, 3\) uint8"):
        class_overlay(image[:, :, 0], IDS, pal)
    with pytest.raises(ValueError, match="alpha"):
        class_overlay(image, IDS, pal, alpha=1.5)
    with pytest.raises(ValueError, match="palette"):
        colorize(IDS, pal[:20])
    with pytest.raises(ValueError, match="out must be"):
        colorize(IDS, pal, out=np.zeros((3, 2), np.uint8))
    with pytest.raises(ValueError, match="share memory"):
        drivable_overlay(image, drivable_mask(IDS, CITYSCAPES.mask_lut([0])), out=image)
    with pytest.raises(UnknownClassError, match="valid names"):
        Renderer(CITYSCAPES, ["road", "runway"])
    with pytest.raises(ValueError, match="exactly one"):
        Renderer(CITYSCAPES).drivable_overlay(image)
    with pytest.raises(ValueError, match="color_order"):
        Renderer(CITYSCAPES, color_order="hsv")  # type: ignore[arg-type]


def test_void_lut_marks_only_the_void_class_or_nothing() -> None:
    for labels in (CITYSCAPES, CAMVID):
        lut = labels.void_lut("unknown")
        assert lut is not None and lut.shape == (256,) and np.flatnonzero(lut).tolist() == [labels.ignore_id]
        assert labels.void_lut("obstacle") is None
    with pytest.raises(ValueError, match="unknown, obstacle"):
        CITYSCAPES.void_lut("free")
