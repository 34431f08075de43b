"""Tests of espnet_ros.core.segmenter with the real CamVid weights: input validation, colour order, output size,
batching, confidence, the preprocessing recipe (hand-computed), label resizing and device resolution."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from numpy.typing import NDArray

from espnet_ros.core.errors import MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, ImageError
from espnet_ros.core.segmenter import (
    ColorOrder,
    DeviceError,
    Segmenter,
    resize_labels,
    resolve_device,
    validate_image,
)
from espnet_ros.core.weights import CITYSCAPES_PREPROCESSING, Preprocessing


@pytest.fixture(scope="module")
def segmenter(weights_dir: Path) -> Segmenter:
    return Segmenter("camvid", weights_dir=weights_dir)


@pytest.fixture(scope="module")
def frames(shared_dir: Path) -> list[NDArray[np.uint8]]:
    """Three CamVid validation frames at 480x360, 320x240 and 640x480 (BGR)."""
    files = sorted((shared_dir / "camvid" / "val" / "images").iterdir())
    images = [np.asarray(cv2.imread(str(files[i])), np.uint8) for i in (0, 10, 20)]
    assert all(im.shape == (360, 480, 3) for im in images)
    return [
        np.asarray(images[0], np.uint8),
        np.asarray(cv2.resize(images[1], (320, 240), interpolation=cv2.INTER_AREA), np.uint8),
        np.asarray(cv2.resize(images[2], (640, 480), interpolation=cv2.INTER_LINEAR), np.uint8),
    ]


def broadcast_image(height: int, width: int) -> NDArray[np.uint8]:
    """A read-only (height, width, 3) view of 3 bytes: huge shapes without allocating them."""
    return np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (height, width, 3))


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((4, 4, 3), np.float32), "dtype float32, expected uint8"),
        (np.zeros((4, 4, 3), np.uint16), "dtype uint16, expected uint8"),
        (np.zeros((4, 4), np.uint8), r"shape \(4, 4\), expected \(H, W, 3\)"),
        (np.zeros((4, 4, 4), np.uint8), r"shape \(4, 4, 4\), expected \(H, W, 3\)"),
        (np.zeros((4, 4, 1), np.uint8), r"expected \(H, W, 3\)"),
        (np.zeros((0, 4, 3), np.uint8), "empty"),
        (np.zeros((4, 8, 3), np.uint8)[:, ::2], "not C-contiguous"),
        (broadcast_image(MAX_IMAGE_SIDE + 1, 8), "beyond the limit"),
        (broadcast_image(8, MAX_IMAGE_SIDE + 1), "beyond the limit"),
        (broadcast_image(MAX_IMAGE_SIDE, MAX_IMAGE_PIXELS // MAX_IMAGE_SIDE + 1), "beyond the limit"),
        ([[0, 0, 0]], "must be a numpy array"),
    ],
    ids=["float32", "uint16", "grey", "bgra", "one-channel", "empty", "strided", "tall", "wide", "area", "list"],
)
def test_invalid_images_raise_image_error(segmenter: Segmenter, image: object, match: str) -> None:
    with pytest.raises(ImageError, match=match) as info:
        segmenter.segment(image)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    with pytest.raises(ImageError):
        validate_image(image)


def test_invalid_image_in_a_batch_is_named(segmenter: Segmenter, frames: list[NDArray[np.uint8]]) -> None:
    with pytest.raises(ImageError, match="image 1 has dtype float64"):
        segmenter.segment_batch([frames[0], frames[0].astype(np.float64)])
    with pytest.raises(ImageError, match="colour order"):
        segmenter.segment(frames[0], color_order="hsv")  # type: ignore[arg-type]


def test_largest_allowed_side_passes_validation() -> None:
    validate_image(np.ascontiguousarray(broadcast_image(1, MAX_IMAGE_SIDE)))


def test_rgb_and_bgr_give_the_same_labels(segmenter: Segmenter, frames: list[NDArray[np.uint8]]) -> None:
    bgr = frames[0]
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    a = segmenter.segment(bgr, color_order="bgr").class_ids
    b = segmenter.segment(rgb, color_order="rgb").class_ids
    np.testing.assert_array_equal(a, b)
    # and the colour order matters: the same bytes read as RGB give a different segmentation
    assert (segmenter.segment(bgr, color_order="rgb").class_ids != a).mean() > 0.01


def test_output_size_input_and_network(segmenter: Segmenter, frames: list[NDArray[np.uint8]]) -> None:
    big = frames[2]  # 640x480
    at_input = segmenter.segment(big)
    at_network = segmenter.segment(big, output_size="network")
    assert at_input.class_ids.shape == (480, 640) and at_input.output_size == (640, 480)
    assert at_network.class_ids.shape == (360, 480) and at_network.output_size == (480, 360)
    assert at_input.input_size == at_network.input_size == (640, 480)
    np.testing.assert_array_equal(at_input.class_ids, resize_labels(at_network.class_ids, (640, 480)))
    assert at_input.class_ids.dtype == np.uint8 and int(at_input.class_ids.max()) < 12


def test_batch_equals_single_calls(segmenter: Segmenter, frames: list[NDArray[np.uint8]]) -> None:
    singles = [segmenter.segment(f, confidence=True) for f in frames]
    before = segmenter.forward_batch_sizes.copy()
    batch = segmenter.segment_batch(frames, confidence=True)
    assert segmenter.forward_batch_sizes - before == {3: 1}
    assert len(batch) == 3
    for one, many, frame in zip(singles, batch, frames, strict=True):
        assert many.input_size == one.input_size == (frame.shape[1], frame.shape[0])
        np.testing.assert_array_equal(many.class_ids, one.class_ids)
        assert one.confidence is not None and many.confidence is not None
        assert np.abs(many.confidence.astype(int) - one.confidence).max() <= 1  # float sums in another order
    assert segmenter.segment_batch([]) == []


def test_confidence(segmenter: Segmenter, frames: list[NDArray[np.uint8]]) -> None:
    r = segmenter.segment(frames[1], confidence=True)
    assert r.confidence is not None
    assert r.confidence.shape == r.class_ids.shape == (240, 320)
    assert r.confidence.dtype == np.uint8
    # the top softmax probability of 12 classes is at least 1/12
    assert int(r.confidence.min()) >= int(255 / 12) and int(r.confidence.max()) <= 255
    assert int(r.confidence.max()) > 200
    assert segmenter.segment(frames[1]).confidence is None


def test_preprocessing_by_hand() -> None:
    # Cityscapes constants (BGR): mean 72.3923111, 82.90893555, 73.15840149; std 45.3192215, 46.15289307, 44.91483307
    pre = CITYSCAPES_PREPROCESSING
    gain, offset = pre.affine()
    np.testing.assert_allclose(gain, [8.6532127e-05, 8.4969075e-05, 8.7311215e-05], rtol=1e-6)
    np.testing.assert_allclose(offset, [-6.2642607e-03, -7.0446956e-03, -6.3875489e-03], rtol=1e-6)
    image = np.array([[[0, 0, 0], [255, 255, 255]], [[100, 100, 100], [10, 20, 30]]], np.uint8)  # BGR
    y = pre.apply_numpy(image, (2, 2))
    assert y.shape == (3, 2, 2) and y.dtype == np.float32  # channels first, still BGR
    np.testing.assert_allclose(y[:, 0, 0], [-6.26426065e-03, -7.04469555e-03, -6.38754889e-03], rtol=1e-6)
    np.testing.assert_allclose(y[:, 0, 1], [1.58014317e-02, 1.46224185e-02, 1.58768108e-02], rtol=1e-6)
    np.testing.assert_allclose(y[:, 1, 0], [2.38895204e-03, 1.45221194e-03, 2.34357257e-03], rtol=1e-5)
    np.testing.assert_allclose(
        y[:, 1, 1],
        [(10 - 72.3923111) / 45.3192215 / 255, (20 - 82.90893555) / 46.15289307 / 255,
         (30 - 73.15840149) / 44.91483307 / 255],
        rtol=1e-5,
    )
    # bilinear 2x2 → 1x1 is the mean of the four pixels (then the same affine map)
    mean = image.reshape(4, 3).astype(np.float64).mean(0)
    np.testing.assert_allclose(pre.apply_numpy(image, (1, 1))[:, 0, 0], mean * gain + offset, rtol=1e-5)
    # a scale of 1 drops the second /255
    plain = Preprocessing(pre.mean_bgr, pre.std_bgr, scale=1.0)
    np.testing.assert_allclose(plain.apply_numpy(image, (2, 2)), y * 255, rtol=1e-5)


def test_segmenter_preprocess_matches_the_numpy_recipe(segmenter: Segmenter, frames: list[NDArray[np.uint8]]) -> None:
    pre = segmenter.preset.preprocessing
    for frame in frames:
        fast = segmenter.preprocess([frame], ["bgr"])[0].cpu().numpy()
        np.testing.assert_allclose(fast, pre.apply_numpy(frame, segmenter.input_size), atol=2e-6)
        rgb = segmenter.preprocess([np.ascontiguousarray(frame[:, :, ::-1])], ["rgb"])[0].cpu().numpy()
        np.testing.assert_array_equal(rgb, fast)


def test_resize_labels_aligns_pixel_centres() -> None:
    # output pixel c takes input pixel floor((c + 0.5) * w / W)
    np.testing.assert_array_equal(
        resize_labels(np.array([[1, 2], [3, 4]], np.uint8), (4, 4)),
        [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]],
    )
    np.testing.assert_array_equal(resize_labels(np.array([[0, 1, 2, 3]], np.uint8), (2, 1)), [[1, 3]])
    np.testing.assert_array_equal(resize_labels(np.array([[0, 1, 2]], np.uint8), (2, 1)), [[0, 2]])
    np.testing.assert_array_equal(resize_labels(np.array([[0, 1, 2, 3, 4]], np.uint8), (3, 1)), [[0, 2, 4]])
    np.testing.assert_array_equal(resize_labels(np.array([[5, 6]], np.uint8), (3, 1)), [[5, 6, 6]])
    same = np.array([[7]], np.uint8)
    assert resize_labels(same, (1, 1)) is same


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(DeviceError, match="expected auto, cpu, cuda or cuda:N"):
        resolve_device("tpu")
    if torch.cuda.is_available():  # on a GPU machine the same calls must succeed instead
        assert resolve_device("cuda").type == "cuda"
        assert resolve_device("auto").type == "cuda"
    else:
        with pytest.raises(DeviceError, match="use device 'cpu' or 'auto'"):
            resolve_device("cuda")
        with pytest.raises(DeviceError):
            resolve_device("cuda:1")
        assert resolve_device("auto") == torch.device("cpu")
    assert issubclass(DeviceError, ValueError)


def test_bad_constructor_arguments(weights_dir: Path) -> None:
    with pytest.raises(ValueError, match="output_size"):
        Segmenter("camvid", weights_dir=weights_dir, output_size="half")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="multiples of 8"):
        Segmenter("camvid", weights_dir=weights_dir, network_size=(481, 360))


@pytest.mark.parametrize("order", ["bgr", "rgb"])
def test_preprocess_of_a_double_size_frame_in_strips_equals_the_whole_frame_resize(
    segmenter: Segmenter, frames: list[NDArray[np.uint8]], order: ColorOrder
) -> None:
    """Frames of exactly twice the input size are preprocessed strip by strip; the values equal the whole-frame path."""
    w, h = segmenter.input_size
    pre = segmenter.preset.preprocessing
    for frame in frames:
        big = np.ascontiguousarray(cv2.resize(frame, (2 * w, 2 * h), interpolation=cv2.INTER_NEAREST), np.uint8)
        if order == "rgb":
            big = np.ascontiguousarray(big[:, :, ::-1])
        got = segmenter.preprocess([big], [order])[0].permute(1, 2, 0).numpy()
        bgr = big[:, :, ::-1] if order == "rgb" else big
        whole = cv2.resize(bgr.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        want = torch.addcmul(segmenter._offset_hwc, torch.from_numpy(whole), segmenter._gain_hwc).numpy()
        np.testing.assert_array_equal(got, want)
        np.testing.assert_allclose(got.transpose(2, 0, 1), pre.apply_numpy(bgr, (w, h)), atol=2e-6)
