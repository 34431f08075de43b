"""Frames from files: still images, folders of images and video files, as ``(H, W, 3) uint8 BGR`` arrays.

This module owns turning what a user names on a command line or in a ROS parameter (image files, folders, glob
patterns, videos) into an ordered stream of :class:`Frame` objects, each with a unique ``stem`` for naming output
files (``<stem>.labels.png``), and it owns where the demo sample frames live (:func:`samples_dir`). Inputs are
checked when a :class:`FrameSource` is built (missing paths, unsupported extensions, empty folders), decoding errors
surface while iterating; both raise :class:`FrameSourceError`. Plain Python, numpy and OpenCV; no ROS.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from espnet_ros.core.errors import EspnetRosError
from espnet_ros.core.image_header import ImageHeaderError, check_image_header

__all__ = [
    "DEFAULT_SAMPLES_DIR",
    "IMAGE_EXTENSIONS",
    "SAMPLES_DIR_ENV",
    "VIDEO_EXTENSIONS",
    "Frame",
    "FrameSource",
    "FrameSourceError",
    "is_image_file",
    "is_video_file",
    "samples_dir",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm",
)
"""Still-image extensions read with OpenCV (case-insensitive)."""

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv")
"""Video extensions read with ``cv2.VideoCapture`` (case-insensitive; what decodes depends on OpenCV's FFmpeg)."""

SAMPLES_DIR_ENV = "ESPNET_ROS_SAMPLES_DIR"
DEFAULT_SAMPLES_DIR = Path("~/.cache/espnet_ros/samples")


class FrameSourceError(EspnetRosError):
    """An input path is missing, unsupported or cannot be decoded into frames."""


@dataclass(frozen=True, eq=False)
class Frame:
    """One frame: ``image`` is ``(H, W, 3) uint8 BGR``, C-contiguous.

    ``stem`` is unique within its :class:`FrameSource` (the file's stem for still images, ``<video stem>_000042``
    for video frames); ``path`` is the file it came from; ``frame_number`` is its position in that file (0 for
    still images).
    """

    image: NDArray[np.uint8]
    stem: str
    path: Path
    frame_number: int


def samples_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The sample-frames directory: ``explicit``, else ``$ESPNET_ROS_SAMPLES_DIR``, else the default.

    The default is ``~/.cache/espnet_ros/samples``, where real users keep the two upstream Cityscapes frames. The
    directory is not created or checked here; :class:`FrameSource` reports a missing one.
    """
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser()
    env = os.environ.get(SAMPLES_DIR_ENV, "")
    return Path(env).expanduser() if env else DEFAULT_SAMPLES_DIR.expanduser()


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has a still-image extension (:data:`IMAGE_EXTENSIONS`)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def is_video_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has a video extension (:data:`VIDEO_EXTENSIONS`)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _natural_key(path: Path) -> list[int | str]:
    """Sort key that orders ``frame2.png`` before ``frame10.png``; ties broken by the full path."""
    parts: list[int | str] = [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]
    return [*parts, str(path)]


_SUPPORTED = f"images ({' '.join(IMAGE_EXTENSIONS)}) or videos ({' '.join(VIDEO_EXTENSIONS)})"


def _expand(entry: str | os.PathLike[str]) -> list[Path]:
    """The files named by one input: a file, a folder's images (natural order) or a glob pattern's matches."""
    text = os.fspath(entry)
    if text == "":
        raise FrameSourceError("an input path is empty; give an image file, a folder of images or a video file.")
    path = Path(text).expanduser()
    if path.is_dir():
        images = [p for p in path.iterdir() if p.is_file() and is_image_file(p) and not p.name.startswith(".")]
        if not images:
            raise FrameSourceError(
                f"folder {str(path)!r} contains no images; expected files ending in {' '.join(IMAGE_EXTENSIONS)}. "
                "Point at the folder that holds the frames (folders are not searched recursively), or name a video."
            )
        return sorted(images, key=_natural_key)
    if path.is_file():
        if not (is_image_file(path) or is_video_file(path)):
            raise FrameSourceError(
                f"{str(path)!r} has an unsupported extension {path.suffix!r}; expected {_SUPPORTED}. "
                "Convert the file or rename it if its extension is wrong."
            )
        return [path]
    if glob.has_magic(text):
        matches = [Path(m) for m in glob.glob(os.path.expanduser(text))]
        files = [m for m in matches if m.is_file() and (is_image_file(m) or is_video_file(m))]
        if not files:
            raise FrameSourceError(
                f"pattern {text!r} matches no image or video files; expected {_SUPPORTED}. Check the pattern."
            )
        return sorted(files, key=_natural_key)
    if path.exists():
        raise FrameSourceError(f"{str(path)!r} is neither a file nor a folder; give an image, folder or video.")
    raise FrameSourceError(
        f"input {str(path)!r} does not exist (resolved from {str(Path.cwd())!r}); give an existing image file, "
        "folder of images or video file."
    )


class FrameSource:
    """An ordered, re-iterable stream of :class:`Frame` objects from image files, folders and videos.

    ``inputs`` is one path or a sequence of them; each is an image file, a folder (its images, not recursive,
    in natural order: ``2.png`` before ``10.png``), a video file, or a glob pattern. The expansion is done and
    checked at construction (:attr:`files`); images and video frames are decoded lazily while iterating, and every
    ``iter(source)`` starts again from the first file. Raises :class:`FrameSourceError` for missing paths,
    unsupported extensions, empty folders (at construction) and unreadable files (while iterating).
    """

    def __init__(self, inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> None:
        entries = [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)
        if not entries:
            raise FrameSourceError("no inputs given; give at least one image file, folder of images or video file.")
        files: list[Path] = []
        for entry in entries:
            files.extend(_expand(entry))
        self.files: tuple[Path, ...] = tuple(files)
        self._stems = self._unique_stems(self.files)
        self._frame_count: int | None = None
        self._frame_count_known = False

    @staticmethod
    def _unique_stems(files: tuple[Path, ...]) -> dict[Path, str]:
        """File stems made unique in input order (a repeated stem gets ``-2``, ``-3``, ...)."""
        stems: dict[Path, str] = {}
        used: set[str] = set()
        for path in files:
            if path in stems:
                continue
            stem, n = path.stem, 1
            while stem in used:
                n += 1
                stem = f"{path.stem}-{n}"
            if n > 1:
                logger.info("input %s shares its stem with an earlier input; its frames are named %r", path, stem)
            used.add(stem)
            stems[path] = stem
        return stems

    def __repr__(self) -> str:
        return f"FrameSource({len(self.files)} files, frame_count={self.frame_count})"

    @property
    def frame_count(self) -> int | None:
        """Number of frames one pass yields, or ``None`` when a video does not state its length.

        Still images count 1 each; videos report their container's frame count (``CAP_PROP_FRAME_COUNT``), which
        can be an estimate for some formats. Computed once (opening each video), then cached.
        """
        if not self._frame_count_known:
            total: int | None = 0
            for path in self.files:
                n = 1 if not is_video_file(path) else _video_frame_count(path)
                total = None if n is None or total is None else total + n
            self._frame_count, self._frame_count_known = total, True
        return self._frame_count

    def stem_of(self, path: Path) -> str:
        """The unique stem given to ``path`` (one of :attr:`files`)."""
        return self._stems[path]

    def __iter__(self) -> Iterator[Frame]:
        for path in self.files:
            yield from self.iter_file(path)

    def iter_file(self, path: Path) -> Iterator[Frame]:
        """The frames of one of :attr:`files` (one for a still image, all decodable frames of a video)."""
        stem = self._stems[path]
        if is_video_file(path):
            yield from _read_video(path, stem)
        else:
            yield Frame(image=_read_image(path), stem=stem, path=path, frame_number=0)


def _read_image(path: Path) -> NDArray[np.uint8]:
    try:
        data = np.fromfile(path, dtype=np.uint8)  # works for non-ASCII paths, unlike cv2.imread on some platforms
    except OSError as exc:
        raise FrameSourceError(
            f"cannot read image {str(path)!r}: {exc.strerror}. Check that it exists and is readable."
        ) from exc
    image = None
    if data.size:
        try:  # the declared size first: a few bytes can declare gigapixels
            check_image_header(data, f"cannot decode image {str(path)!r}")
        except ImageHeaderError as exc:
            raise FrameSourceError(str(exc)) from None
        try:
            image = cv2.imdecode(data, cv2.IMREAD_COLOR)
        except cv2.error:
            image = None
    if image is None:
        raise FrameSourceError(
            f"cannot decode image {str(path)!r} ({data.size} bytes); the file is empty, corrupted or not in a "
            "format OpenCV reads. Re-export it as png or jpeg."
        )
    return np.ascontiguousarray(image, dtype=np.uint8)


def _open_video(path: Path) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise FrameSourceError(
            f"cannot open video {str(path)!r}; the file is corrupted or its codec is not supported by this OpenCV "
            "build. Re-encode it (e.g. ffmpeg -i in.mov -c:v mjpeg out.avi) or extract its frames as images."
        )
    return capture


def _video_frame_count(path: Path) -> int | None:
    capture = _open_video(path)
    try:
        n = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()
    return n if n > 0 else None


def _read_video(path: Path, stem: str) -> Iterator[Frame]:
    capture = _open_video(path)
    try:
        number = 0
        while True:
            ok, image = capture.read()
            if not ok or image is None:
                break
            if image.ndim == 2:
                image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
            yield Frame(
                image=np.ascontiguousarray(image, dtype=np.uint8),
                stem=f"{stem}_{number:06d}",
                path=path,
                frame_number=number,
            )
            number += 1
    finally:
        capture.release()
    if number == 0:
        raise FrameSourceError(
            f"video {str(path)!r} opened but no frame could be decoded; the file is empty, truncated or uses a "
            "codec this OpenCV build cannot decode. Re-encode it or extract its frames as images."
        )
