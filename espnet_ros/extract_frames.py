"""The ``extract-frames`` subcommand of ``espnet-ros``: frames of recordings or videos as PNG for labelling.

Every N-th frame (``--every``) or N frames per second (``--fps``) of each image topic of rosbag2 recordings
(:mod:`espnet_ros.bags`), or of each video, is written as ``OUT/<topic>/<topic>_<sec>_<nanosec>.png``, named by the
frame's header stamp (video frames by their time in the video). Frames that cannot be decoded are counted and skipped.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from espnet_ros.bag_segment import BagCliError
from espnet_ros.cli_common import csv_items, progress_bar, write_image

__all__ = ["add_extract_frames_parser", "run_extract_frames"]


def add_extract_frames_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None] | None = None) -> None:
    """Register ``extract-frames`` on the subparsers ``sub``."""
    p = sub.add_parser(
        "extract-frames", help="write frames of recordings or videos as PNG for labelling",
        description="Write every N-th frame (--every) or N frames per second (--fps) of each image topic of the "
                    "bags (or of each video) as OUT/<topic>/<topic>_<sec>_<nanosec>.png, named by the frame's "
                    "header stamp (video frames by their time in the video).")
    p.add_argument("inputs", nargs="+", metavar="IN",
                   help="rosbag2 folders, .mcap / .db3 files, folders of bags or video files")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    p.add_argument("--topics", default=None, metavar="T1,T2", help="image topics (default: all)")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--every", type=int, default=None, metavar="N", help="every N-th frame per topic (default 1)")
    rate.add_argument("--fps", type=float, default=None, metavar="N", help="at most N frames per second per topic")
    p.set_defaults(func=run_extract_frames)


# ---------------------------------------------------------------------------------------------- extract-frames
def _slug(name: str) -> str:
    return name.strip("/").replace("/", "_") or "image"


def run_extract_frames(args: argparse.Namespace) -> int:
    """``espnet-ros extract-frames``: PNGs of every N-th frame (or N per second) per topic or video."""
    from espnet_ros.bags import find_bags, is_bag
    from espnet_ros.core.frames import is_video_file

    if args.every is not None and args.every < 1:
        raise BagCliError(f"--every {args.every}: expected >= 1")
    if args.fps is not None and not (math.isfinite(args.fps) and args.fps > 0):
        raise BagCliError(f"--fps {args.fps}: expected a rate > 0")
    out = Path(args.out).expanduser()
    inputs: list[Path] = []
    for path in (Path(i).expanduser() for i in args.inputs):
        if not path.exists():
            raise BagCliError(f"{path} does not exist; give a rosbag2 folder, an .mcap / .db3 file or a video")
        if path.is_dir() and not is_bag(path):
            inputs.extend(find_bags([path]))  # a folder of bags
        elif is_bag(path) or is_video_file(path):
            inputs.append(path)
        else:
            raise BagCliError(f"{path} is neither a bag nor a video file")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BagCliError(f"cannot create output folder {out}: {exc.strerror}") from exc
    written: Counter[str] = Counter()
    skipped: dict[str, Counter[str]] = defaultdict(Counter)
    with progress_bar(args.quiet, unit="frame", desc="extract-frames") as bar:
        for path in inputs:
            if is_bag(path):
                _extract_bag(path, out, args, written, skipped, bar)
            else:
                _extract_video(path, out, args, written, bar)
    if not args.quiet:
        for name, n in written.items():
            print(f"{name}: {n} PNG(s) in {out / _slug(name)}", file=sys.stderr)
        for name, reasons in skipped.items():
            for reason, n in reasons.items():
                print(f"{name}: skipped {n} x {reason}", file=sys.stderr)
    return 0


class _Keep:
    """Every N-th frame, or at most N per second of stamps, per stream."""

    def __init__(self, every: int | None, fps: float | None) -> None:
        self.every, self.period_ns = every or 1, (None if fps is None else int(1e9 / fps))
        self.seen: Counter[str] = Counter()
        self.last: dict[str, int] = {}

    def __call__(self, stream: str, t_ns: int) -> bool:
        n = self.seen[stream]
        self.seen[stream] += 1
        if self.period_ns is None:
            return n % self.every == 0
        last = self.last.get(stream)
        if last is not None and t_ns - last < self.period_ns:
            return False
        self.last[stream] = t_ns
        return True


def _png(out: Path, stream: str, t_ns: int, image_bgr: Any) -> None:

    folder = out / _slug(stream)
    folder.mkdir(parents=True, exist_ok=True)
    write_image(folder / f"{_slug(stream)}_{t_ns // 1_000_000_000}_{t_ns % 1_000_000_000:09d}.png", image_bgr)


def _extract_bag(path: Path, out: Path, args: argparse.Namespace, written: Counter[str],
                 skipped: dict[str, Counter[str]], bar: Any) -> None:
    import cv2

    from espnet_ros.bags import BagReader, read_frame, select_image_topics, stamp_ns
    from espnet_ros.core.errors import ImageError

    keep = _Keep(args.every, args.fps)
    with BagReader(path) as reader:
        topics = select_image_topics(reader, csv_items(args.topics) or None)
        for m in reader.messages(topics):
            try:
                frame = read_frame(m)
            except ImageError as exc:
                skipped[m.topic][str(exc)] += 1
                continue
            t = stamp_ns(frame.header) or m.time_ns
            if not keep(m.topic, t):
                continue
            try:
                decoded = frame.decode()
            except ImageError as exc:
                skipped[m.topic][str(exc)] += 1
                continue
            image = decoded.image if decoded.color_order == "bgr" else cv2.cvtColor(decoded.image, cv2.COLOR_RGB2BGR)
            _png(out, m.topic, t, image)
            written[m.topic] += 1
            bar.update(1)


def _extract_video(path: Path, out: Path, args: argparse.Namespace, written: Counter[str], bar: Any) -> None:
    import cv2

    from espnet_ros.core.frames import FrameSource

    capture = cv2.VideoCapture(str(path))
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    capture.release()
    if args.fps is not None and not (math.isfinite(fps) and fps > 0):
        raise BagCliError(f"{path} does not state its frame rate; use --every N instead of --fps")
    keep = _Keep(args.every, args.fps)
    period_ns = 1e9 / fps if math.isfinite(fps) and fps > 0 else 0.0
    for frame in FrameSource([path]):
        t = round(frame.frame_number * period_ns) if period_ns else frame.frame_number
        if keep(path.stem, t):
            _png(out, path.stem, t, frame.image)
            written[path.stem] += 1
            bar.update(1)
