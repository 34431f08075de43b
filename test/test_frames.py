"""Tests of espnet_ros.core.frames with small images and videos written to tmp_path by OpenCV."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from espnet_ros.core.errors import EspnetRosError
from espnet_ros.core.frames import (
    DEFAULT_SAMPLES_DIR,
    SAMPLES_DIR_ENV,
    Frame,
    FrameSource,
    FrameSourceError,
    is_image_file,
    is_video_file,
    samples_dir,
)

REPO = Path(__file__).resolve().parents[1]


def solid(value: int, height: int = 24, width: int = 32) -> NDArray[np.uint8]:
    image = np.zeros((height, width, 3), np.uint8)
    image[:, :] = (value, 255 - value, value // 2)  # distinct B, G, R
    return image


def write(path: Path, image: NDArray[np.uint8]) -> Path:
    assert cv2.imwrite(str(path), image)
    return path


def write_video(path: Path, fourcc: str, values: list[int], size: tuple[int, int] = (32, 24)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), 10.0, size)
    if not writer.isOpened():
        pytest.skip(f"this OpenCV build cannot write {fourcc} into {path.suffix}")
    for value in values:
        writer.write(solid(value, size[1], size[0]))
    writer.release()
    return path


def test_extension_helpers() -> None:
    assert is_image_file("a/B.PNG") and is_image_file("x.jpeg") and not is_image_file("x.mp4")
    assert is_video_file("clip.MP4") and is_video_file("c.avi") and not is_video_file("c.png")


def test_error_is_domain_error() -> None:
    assert issubclass(FrameSourceError, EspnetRosError)


def test_single_image(tmp_path: Path) -> None:
    path = write(tmp_path / "one.png", solid(10))
    source = FrameSource(path)
    assert source.files == (path,)
    assert source.frame_count == 1
    frames = list(source)
    assert len(frames) == 1
    frame = frames[0]
    assert isinstance(frame, Frame)
    assert (frame.stem, frame.path, frame.frame_number) == ("one", path, 0)
    assert frame.image.shape == (24, 32, 3) and frame.image.dtype == np.uint8 and frame.image.flags.c_contiguous
    np.testing.assert_array_equal(frame.image, solid(10))  # png is lossless and BGR stays BGR


def test_grey_and_alpha_images_become_bgr(tmp_path: Path) -> None:
    grey = np.arange(24 * 32, dtype=np.uint32).reshape(24, 32).astype(np.uint8)
    bgra = np.dstack([solid(50), np.full((24, 32), 9, np.uint8)])
    source = FrameSource([write(tmp_path / "g.png", grey), write(tmp_path / "a.png", bgra)])
    g, a = list(source)
    np.testing.assert_array_equal(g.image, np.repeat(grey[:, :, None], 3, axis=2))
    np.testing.assert_array_equal(a.image, solid(50))


def test_folder_natural_order_and_filtering(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, name in enumerate(["frame10.png", "frame2.jpg", "frame1.png", "Frame3.PNG"]):
        write(folder / name, solid(20 * i))
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden.png").write_bytes(b"")
    (folder / "sub").mkdir()
    write(folder / "sub" / "nested.png", solid(1))
    source = FrameSource(folder)
    assert [p.name for p in source.files] == ["frame1.png", "frame2.jpg", "Frame3.PNG", "frame10.png"]
    assert source.frame_count == 4
    assert [f.stem for f in source] == ["frame1", "frame2", "Frame3", "frame10"]


def test_reiterable(tmp_path: Path) -> None:
    source = FrameSource([write(tmp_path / "a.png", solid(1)), write(tmp_path / "b.png", solid(2))])
    assert [f.stem for f in source] == [f.stem for f in source] == ["a", "b"]


def test_duplicate_stems_made_unique(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    a = write(tmp_path / "x" / "img.png", solid(1))
    b = write(tmp_path / "y" / "img.png", solid(2))
    c = write(tmp_path / "y" / "img.jpg", solid(3))
    source = FrameSource([a, b, c])
    assert [f.stem for f in source] == ["img", "img-2", "img-3"]
    assert source.stem_of(b) == "img-2"


def test_glob_pattern(tmp_path: Path) -> None:
    for name in ("s_10.png", "s_9.png", "t.png"):
        write(tmp_path / name, solid(5))
    source = FrameSource(str(tmp_path / "s_*.png"))
    assert [p.name for p in source.files] == ["s_9.png", "s_10.png"]


@pytest.mark.parametrize(("name", "fourcc"), [("clip.mp4", "mp4v"), ("clip.avi", "MJPG")])
def test_video(tmp_path: Path, name: str, fourcc: str) -> None:
    values = [0, 60, 120, 180, 240]
    path = write_video(tmp_path / name, fourcc, values)
    source = FrameSource(path)
    assert source.frame_count == 5
    frames = list(source)
    assert [f.stem for f in frames] == [f"clip_{i:06d}" for i in range(5)]
    assert [f.frame_number for f in frames] == list(range(5))
    for frame, value in zip(frames, values, strict=True):
        assert frame.image.shape == (24, 32, 3) and frame.image.dtype == np.uint8 and frame.image.flags.c_contiguous
        # Lossy codecs: the mean colour of each solid frame survives, in BGR order.
        mean = frame.image.reshape(-1, 3).mean(axis=0)
        assert np.abs(mean - np.array([value, 255 - value, value // 2])).max() < 12, (name, value, mean)


def test_mixed_inputs_in_order(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.avi", "MJPG", [10, 20])
    image = write(tmp_path / "still.png", solid(3))
    source = FrameSource([image, video])
    assert source.frame_count == 3
    assert [f.stem for f in source] == ["still", "v_000000", "v_000001"]


def test_samples_dir_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(SAMPLES_DIR_ENV, str(tmp_path / "env"))
    assert samples_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert samples_dir() == tmp_path / "env"
    monkeypatch.delenv(SAMPLES_DIR_ENV)
    assert samples_dir() == DEFAULT_SAMPLES_DIR.expanduser()
    assert samples_dir("") == DEFAULT_SAMPLES_DIR.expanduser()


def test_shared_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    shared = REPO.parent / "shared" / "espnet" / "samples"
    monkeypatch.setenv(SAMPLES_DIR_ENV, str(shared))
    source = FrameSource(samples_dir())
    assert source.frame_count == 2
    frame = next(iter(source))
    assert frame.stem == "frankfurt_000000_000294_leftImg8bit"
    assert frame.image.shape == (1024, 2048, 3)


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda d: d / "missing.png", "does not exist"),
        (lambda d: d / "missing_*.png", "matches no image or video files"),
        (lambda d: (d / "f.txt").write_text("x") and d / "f.txt", "unsupported extension '.txt'"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "contains no images"),
        (lambda d: "", "input path is empty"),
    ],
)
def test_construction_errors(tmp_path: Path, make: object, pattern: str) -> None:
    with pytest.raises(FrameSourceError, match=pattern):
        FrameSource(make(tmp_path))  # type: ignore[operator]


def test_no_inputs() -> None:
    with pytest.raises(FrameSourceError, match="no inputs given"):
        FrameSource([])


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n garbage"])
def test_unreadable_image(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    source = FrameSource(path)  # checked lazily: the file exists and has an image extension
    with pytest.raises(FrameSourceError, match=r"cannot decode image .*bad\.png"):
        list(source)


def test_unreadable_video(tmp_path: Path) -> None:
    path = tmp_path / "bad.mp4"
    path.write_bytes(b"\x00" * 64)
    source = FrameSource(path)
    with pytest.raises(FrameSourceError, match=r"bad\.mp4"):
        list(source)
    with pytest.raises(FrameSourceError, match=r"bad\.mp4"):
        _ = source.frame_count
