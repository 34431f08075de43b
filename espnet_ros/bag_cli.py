"""The ``segment-bag`` subcommand of ``espnet-ros`` (registered by :mod:`cli`).

It segments one or more rosbag2 recordings with :func:`~espnet_ros.bag_segment.segment_one_bag`, several bags in
worker processes (``--jobs``) each loading the model through :func:`~espnet_ros.bag_segment.load_segmenter`, shows a
progress bar and prints a summary; ``--measure`` compares its throughput with the Segmenter's own on the same
frames. A corrupt bag or unknown topic is a :class:`~espnet_ros.bags.BagError` (one line, exit status 2).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import shutil
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from espnet_ros.bag_segment import (
    DEFAULT_OUTPUTS,
    GROUND_OUTPUTS,
    OUTPUT_CHOICES,
    BagCliError,
    BagSummary,
    GroundSettings,
    ModelSpec,
    SegmentBagSettings,
    load_segmenter,
    segment_one_bag,
)
from espnet_ros.cli_common import csv_items, grid_settings, progress_bar
from espnet_ros.core.labels import VOID_MEANINGS

__all__ = ["add_segment_bag_parser", "run_segment_bag"]

_log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- the command line
def add_segment_bag_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``segment-bag`` on the subparsers ``sub``; ``common`` adds ``--weights-dir`` / ``--device``."""
    p = sub.add_parser(
        "segment-bag", help="segment the image topics of rosbag2 recordings into new bags (MCAP or sqlite3)",
        description="Segment every sensor_msgs/Image and CompressedImage topic of the recordings (or --topics) and "
                    "write a new bag with the node's outputs under each camera's namespace (/front/image_raw -> "
                    "/front/segmentation/class_mask ...), each with its source's header and bag time, plus the label "
                    "metadata (labels, label_info) once per camera. One input bag: OUT is the new bag; several, or a "
                    "folder of bags: OUT is a folder with one new bag per input.")
    p.add_argument("inputs", nargs="+", metavar="IN", help="rosbag2 folders, .mcap / .db3 files, folders of bags")
    p.add_argument("--out", required=True, metavar="OUT", help="output bag (one input) or folder of bags")
    p.add_argument("--preset", default=None, help="weights preset (see `espnet-ros presets`; default cityscapes)")
    p.add_argument("--weights-file", default=None, metavar="FILE", help="explicit weights file (still verified)")
    p.add_argument("--topics", default=None, metavar="T1,T2", help="image topics to segment (default: all)")
    p.add_argument("--outputs", default=None, metavar="NAMES",
                   help=f"comma-separated outputs among {', '.join(OUTPUT_CHOICES)} (default: "
                        f"{','.join(DEFAULT_OUTPUTS)}; --grid adds drivable_grid,obstacle_points)")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="output storage (default: mcap)")
    p.add_argument("--compress-overlays", choices=("jpeg", "png"), default=None,
                   help="write overlay and drivable_overlay as CompressedImage on .../overlay/compressed (without "
                        "--outputs: adds overlay to the default outputs)")
    p.add_argument("--copy-inputs", action="store_true", help="also copy every input topic into the output bag")
    p.add_argument("--batch-size", type=int, default=4, metavar="N", help="frames per forward pass (default: 4)")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="bags segmented in parallel processes")
    p.add_argument("--overwrite", action="store_true", help="replace output bags that exist")
    p.add_argument("--output-size", choices=("input", "network"), default="input",
                   help="masks at the frame's resolution (default) or the network's")
    p.add_argument("--drivable-classes", default=None, metavar="NAMES",
                   help="comma-separated class names or ids that are drivable (default: road)")
    p.add_argument("--alpha", type=float, default=0.5, help="weight of the colour mask in the overlay (0..1)")
    p.add_argument("--reserve-mb", type=float, default=64.0, metavar="MIB",
                   help="stop (closing the bag cleanly) before the output disk has less than this free (default 64)")
    p.add_argument("--measure", default=None, metavar="JSON",
                   help="measure: time segment-bag on the first bag against Segmenter.segment_batch on the same "
                        "decoded frames in this process, print a table and write JSON")
    p.add_argument("--repeat", type=int, default=3, metavar="N", help="with --measure: runs of each (default 3)")
    g = p.add_argument_group("ground outputs", "As `espnet-ros segment --grid` (see its --help): drivable_grid "
                             "and obstacle_points in --grid-frame. Intrinsics: --camera-intrinsics, else the "
                             "recorded <camera namespace>/camera_info, else fx = fy = width at the centre.")
    g.add_argument("--grid", action="store_true", help="also write drivable_grid and obstacle_points")
    g.add_argument("--camera-intrinsics", metavar="FX,FY,CX,CY", default=None, help="pinhole intrinsics in pixels")
    g.add_argument("--camera-mount", metavar="X,Y,Z,ROLL,PITCH,YAW", default=None,
                   help="the camera in the grid frame (default: 0,0,1.5,0,0,0)")
    g.add_argument("--grid-resolution", type=float, default=None, metavar="M", help="cell side in metres (0.1)")
    g.add_argument("--grid-range", type=float, default=None, metavar="M", help="grid reach in metres (20)")
    g.add_argument("--grid-void", choices=VOID_MEANINGS, default="unknown", help="void pixels: unknown or obstacle")
    g.add_argument("--grid-frame", default="base_footprint", help="frame_id of the ground outputs (base_footprint)")
    common(p)
    p.set_defaults(func=run_segment_bag)


def _settings(args: argparse.Namespace) -> SegmentBagSettings:
    """The settings of a parsed ``segment-bag`` command line, checked."""
    outputs = csv_items(args.outputs) or DEFAULT_OUTPUTS
    if not args.outputs and args.compress_overlays:  # asking for compressed overlays asks for the overlay
        outputs = (*outputs, "overlay")
    unknown = [o for o in outputs if o not in OUTPUT_CHOICES]
    if unknown:
        raise BagCliError(f"--outputs {', '.join(unknown)}: unknown; choose among {', '.join(OUTPUT_CHOICES)}")
    grid = grid_settings(args)
    ground = None
    if grid is not None:
        spec, pose, intrinsics = grid
        ground = GroundSettings(spec, pose, intrinsics, args.grid_void, args.grid_frame)
        if not args.outputs:
            outputs = (*outputs, *GROUND_OUTPUTS)
    elif set(outputs) & set(GROUND_OUTPUTS):
        raise BagCliError("--outputs drivable_grid / obstacle_points need --grid (and the camera's mount)")
    if args.batch_size < 1:
        raise BagCliError(f"--batch-size {args.batch_size}: expected >= 1")
    if not 0.0 <= args.alpha <= 1.0:
        raise BagCliError(f"--alpha must be between 0 and 1, got {args.alpha}")
    if args.reserve_mb < 0:
        raise BagCliError(f"--reserve-mb {args.reserve_mb}: expected >= 0")
    drivable = csv_items(args.drivable_classes) or None
    if drivable is not None:
        from espnet_ros.core.weights import DEFAULT_PRESET, get_preset

        get_preset(args.preset or DEFAULT_PRESET).label_set.resolve_classes(list(drivable))  # fails early
    return SegmentBagSettings(outputs=tuple(dict.fromkeys(outputs)), topics=csv_items(args.topics),
                              storage=args.storage,
                              batch_size=args.batch_size, compress_overlays=args.compress_overlays,
                              copy_inputs=args.copy_inputs, drivable_classes=drivable, alpha=args.alpha,
                              ground=ground, reserve_mb=args.reserve_mb)


def _bag_name(bag: Path) -> str:
    return bag.name if bag.is_dir() else bag.stem


def _targets(inputs: Sequence[str], bags: Sequence[Path], out: Path) -> list[Path]:
    """One input bag: ``out`` itself; otherwise ``out/<bag name>`` per bag (names must be unique)."""
    from espnet_ros.bags import is_bag

    if len(bags) == 1 and len(inputs) == 1 and is_bag(Path(inputs[0]).expanduser()):
        return [out]
    names = Counter(_bag_name(b) for b in bags)
    twice = sorted(n for n, c in names.items() if c > 1)
    if twice:
        raise BagCliError(f"several input bags are named {', '.join(twice)}; their outputs would collide in {out}. "
                          "Segment them in separate calls with different --out")
    return [out / _bag_name(b) for b in bags]


def _clear(target: Path, overwrite: bool) -> None:
    """Refuse an existing output unless ``overwrite``; then remove it (only if it is a bag)."""
    if not target.exists():
        return
    if not overwrite:
        raise BagCliError(f"output {target} exists; choose another --out or add --overwrite to replace it")
    from espnet_ros.bags import is_bag

    if not is_bag(target) and not (target.is_dir() and all(p.suffix in (".mcap", ".db3", ".yaml")
                                                            for p in target.iterdir())):
        raise BagCliError(f"output {target} exists and is not a bag; --overwrite replaces bags only, so remove it "
                          "yourself or choose another --out")
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()


def _worker(spec: ModelSpec, bag: str, out: str, settings: SegmentBagSettings, queue: Any) -> BagSummary:
    """One bag in a worker process (loads its own model); progress goes to ``queue``."""
    from espnet_ros.bags import BagError

    segmenter = load_segmenter(spec)
    try:
        return segment_one_bag(segmenter, Path(bag), Path(out), settings, progress=queue.put)
    except BagError as exc:
        return BagSummary(bag=bag, out=out, error=str(exc))


def _total_images(bags: Sequence[Path], topics: tuple[str, ...]) -> int | None:
    from espnet_ros.bags import BagReader, select_image_topics

    total = 0
    for bag in bags:
        with BagReader(bag) as reader:
            counts = reader.counts
            total += sum(counts.get(t, 0) for t in select_image_topics(reader, topics or None))
    return total or None


def run_segment_bag(args: argparse.Namespace) -> int:
    """``espnet-ros segment-bag``: check everything, then segment each bag (in ``--jobs`` processes)."""
    from espnet_ros.bags import BagError, find_bags

    settings = _settings(args)
    bags = find_bags(args.inputs)
    if args.jobs < 1:
        raise BagCliError(f"--jobs {args.jobs}: expected >= 1")
    out = Path(args.out).expanduser()
    if args.measure:
        return _measure(args, settings, bags[0], out)
    targets = _targets(args.inputs, bags, out)
    total = _total_images(bags, settings.topics)  # opens every bag: corrupt ones and unknown topics fail here
    for target in targets:
        _clear(target, args.overwrite)
    if len(targets) > 1 or targets[0] != out:
        out.mkdir(parents=True, exist_ok=True)
    summaries: list[BagSummary] = []
    started = time.perf_counter()
    with progress_bar(args.quiet, total=total, unit="frame", desc="segment-bag") as bar:
        if args.jobs == 1 or len(bags) == 1:
            segmenter = load_segmenter(ModelSpec.from_args(args))
            for bag, target in zip(bags, targets, strict=True):
                try:
                    summaries.append(segment_one_bag(segmenter, bag, target, settings, progress=bar.update))
                except BagError as exc:
                    summaries.append(BagSummary(bag=str(bag), out=str(target), error=str(exc)))
        else:
            summaries = _run_parallel(args, settings, bags, targets, bar)
    _print_summary(summaries, time.perf_counter() - started, args.quiet)
    failed = [s for s in summaries if s.error is not None]
    for s in failed:
        print(f"espnet-ros: error: {s.error}", file=sys.stderr)
    return 2 if failed else 0


def _run_parallel(args: argparse.Namespace, settings: SegmentBagSettings, bags: Sequence[Path],
                  targets: Sequence[Path], bar: Any) -> list[BagSummary]:
    import multiprocessing

    jobs = min(args.jobs, len(bags))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    spec = ModelSpec.from_args(args, num_threads=threads)
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that holds torch's thread pools
    with ctx.Manager() as manager:
        queue = manager.Queue()
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = [pool.submit(_worker, spec, str(b), str(t), settings, queue)
                       for b, t in zip(bags, targets, strict=True)]
            pending = set(futures)
            while pending:
                while not queue.empty():
                    bar.update(queue.get())
                pending = {f for f in pending if not f.done()}
                time.sleep(0.1)
            while not queue.empty():
                bar.update(queue.get())
            return [f.result() for f in as_completed(futures)]


def _print_summary(summaries: Sequence[BagSummary], seconds: float, quiet: bool) -> None:
    if quiet:
        return
    frames = 0
    for s in summaries:
        if s.error is not None and not s.frames:
            continue
        print(f"{s.bag} -> {s.out}: {s.written} message(s) in {s.seconds:.1f} s", file=sys.stderr)
        for topic, n in s.frames.items():
            frames += n
            skipped = s.skipped.get(topic, 0)
            line = f"  {topic}: {n} frame(s) segmented"
            if skipped:
                line += f", {skipped} skipped"
            print(line, file=sys.stderr)
            for reason, count in s.reasons.get(topic, {}).items():
                print(f"    {count} x {reason}", file=sys.stderr)
    rate = frames / seconds if seconds > 0 else math.nan
    print(f"{frames} frame(s) from {len(summaries)} bag(s) in {seconds:.1f} s ({rate:.2f} frames/s)", file=sys.stderr)


# --------------------------------------------------------------------------------------------------- measuring
def _decoded_frames(bag: Path, topics: tuple[str, ...]) -> tuple[list[Any], list[Any]]:
    from espnet_ros.bags import BagReader, read_frame, select_image_topics
    from espnet_ros.core.errors import ImageError

    images, orders = [], []
    with BagReader(bag) as reader:
        for m in reader.messages(select_image_topics(reader, topics or None)):
            try:
                decoded = read_frame(m).decode()
            except ImageError:
                continue  # segment-bag skips it too
            images.append(decoded.image.copy())
            orders.append(decoded.color_order)
    return images, orders


def _measure(args: argparse.Namespace, settings: SegmentBagSettings, bag: Path, out: Path) -> int:
    """``--measure``: alternate segment-bag runs and Segmenter.segment_batch runs on the same frames."""
    import torch

    if args.repeat < 1:
        raise BagCliError(f"--repeat {args.repeat}: expected >= 1")
    _clear(out, args.overwrite)
    segmenter = load_segmenter(ModelSpec.from_args(args))
    images, orders = _decoded_frames(bag, settings.topics)
    if not images:
        raise BagCliError(f"{bag} has no decodable frame to measure with")
    n, size = len(images), settings.batch_size
    confidence = "confidence" in settings.outputs
    # warm-up of both sides (the first bag run also imports the writer's modules and opens the bag's pages)
    segmenter.segment_batch(images[:size], color_order=orders[:size], confidence=confidence)  # type: ignore[arg-type]
    segment_one_bag(segmenter, bag, out, settings)
    own, full = [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        for i in range(0, n, size):
            segmenter.segment_batch(images[i:i + size], color_order=orders[i:i + size],  # type: ignore[arg-type]
                                    confidence=confidence)
        own.append(time.perf_counter() - t0)
        _clear(out, True)
        t0 = time.perf_counter()
        summary = segment_one_bag(segmenter, bag, out, settings)
        full.append(time.perf_counter() - t0)
    rows = {"segmenter": own, "segment_bag": full}
    doc: dict[str, Any] = {
        "command": "espnet-ros " + " ".join(sys.argv[1:]) if sys.argv else "",
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "inference_path": segmenter.inference_path,
        "preset": segmenter.preset.name, "bag": str(bag), "frames": n, "batch_size": size,
        "frame_size": [int(images[0].shape[1]), int(images[0].shape[0])], "outputs": list(settings.outputs),
        "storage": settings.storage, "written": summary.written,
    }
    for name, times in rows.items():
        doc[name] = {"seconds": times, "median_s": statistics.median(times), "best_s": min(times),
                     "fps_median": n / statistics.median(times), "fps_best": n / min(times)}
    doc["ratio_median"] = doc["segment_bag"]["fps_median"] / doc["segmenter"]["fps_median"]
    doc["ratio_best"] = doc["segment_bag"]["fps_best"] / doc["segmenter"]["fps_best"]
    table = [["what", "frames", "median s", "best s", "frames/s (median)", "vs segmenter"],
             ["Segmenter.segment_batch (decoded frames in memory)", str(n), f"{statistics.median(own):.3f}",
              f"{min(own):.3f}", f"{doc['segmenter']['fps_median']:.2f}", "1.000"],
             ["segment-bag (read, decode, segment, render, encode, write)", str(n), f"{statistics.median(full):.3f}",
              f"{min(full):.3f}", f"{doc['segment_bag']['fps_median']:.2f}", f"{doc['ratio_median']:.3f}"]]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for k, row in enumerate(table):
        print("  ".join(c.ljust(w_) for c, w_ in zip(row, widths, strict=True)).rstrip())
        if k == 0:
            print("  ".join("-" * w_ for w_ in widths))
    path = Path(args.measure).expanduser()
    try:
        path.write_text(json.dumps(doc, indent=2) + "\n")
    except OSError as exc:
        raise BagCliError(f"cannot write --measure {path}: {exc.strerror}") from exc
    return 0
