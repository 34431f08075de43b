"""The ``espnet-ros`` command line: segment files, evaluate on a labelled split, list presets, download, benchmark.

Subcommands: ``segment`` (images, folders or videos → ``<stem>.labels.png``, ``.color.png``, ``.overlay.jpg``,
``.drivable.png``, and with ``--grid`` the bird's-eye ``.grid.png`` drawn by
:func:`espnet_ros.core.geometry.render_grid` for the camera of ``--camera-intrinsics`` / ``--camera-mount``),
``eval`` (mIoU, pixel and class-average accuracy under the ``upstream`` or ``standard`` protocol, optionally as
JSON), ``presets`` (the weights registry and the state of each file in the weights directory),
``download-weights`` (verified downloads of weights and sample frames) and ``bench`` (handed to
:mod:`espnet_ros.bench`). It is a thin shell over :mod:`espnet_ros.core`: domain errors are printed as one line on
stderr with exit status 2, never as a traceback. ``segment`` skips an input it cannot read (a missing path, a
corrupt image, a video that will not open) with one line each, writes everything else and then exits with status 1.
No ROS.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

# Heavy modules (torch, OpenCV) are imported inside the subcommands so that `espnet-ros --help` stays instant.
from espnet_ros.bag_cli import add_segment_bag_parser
from espnet_ros.cli_common import CliError, grid_settings, progress_bar, write_image
from espnet_ros.core.errors import EspnetRosError
from espnet_ros.core.labels import VOID_MEANINGS, UnknownClassError
from espnet_ros.extract_frames import add_extract_frames_parser

if TYPE_CHECKING:
    from espnet_ros.core.frames import Frame, FrameSource
    from espnet_ros.core.weights import WeightsPreset

__all__ = ["CliError", "build_parser", "main"]

_log = logging.getLogger(__name__)

PROG = "espnet-ros"


def _add_common(p: argparse.ArgumentParser, *, device: bool = True) -> None:
    p.add_argument("--weights-dir", metavar="DIR", default=None,
                   help="folder holding the weights (default: $ESPNET_ROS_WEIGHTS_DIR or ~/.cache/espnet_ros/weights)")
    if device:
        p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with all subcommands (``bench`` takes its arguments verbatim)."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="ESPNet semantic segmentation: segment files, evaluate, manage pretrained weights."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens (INFO level)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    seg = sub.add_parser("segment", help="segment images, folders of images or videos and write masks and overlays",
                         description="Segment frames and write <stem>.labels.png (class ids), <stem>.color.png, "
                                     "<stem>.overlay.jpg and <stem>.drivable.png (0/255) into --out; with --grid "
                                     "also <stem>.grid.png, the drivable area seen from above.")
    seg.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders of images, video files")
    seg.add_argument("--preset", default=None, help="weights preset (see `espnet-ros presets`; default cityscapes)")
    seg.add_argument("--model", default=None, metavar="DIR", help="a model file from `espnet-ros train` instead")
    seg.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    seg.add_argument("--output-size", choices=("input", "network"), default="input",
                     help="write masks at the frame's resolution (default) or the network's")
    seg.add_argument("--drivable-classes", default=None, metavar="NAMES",
                     help="comma-separated class names or ids that are drivable (default: road)")
    seg.add_argument("--alpha", type=float, default=0.5, help="weight of the colour mask in the overlay (0..1)")
    seg.add_argument("--weights-file", default=None, metavar="FILE", help="explicit weights file (still verified)")
    grid = seg.add_argument_group(
        "bird's-eye grid",
        "With --grid, the drivable mask is projected onto the ground plane and <stem>.grid.png is written: the "
        "grid seen from above with the camera's forward direction (+x) up and its left (+y) left, one pixel per "
        "cell, green free, red occupied (blends: partly drivable), dark grey unknown. Negative first numbers need "
        "the = form, e.g. --camera-mount=-0.5,0,1.2,0,0.1,0.")
    grid.add_argument("--grid", action="store_true", help="also write <stem>.grid.png")
    grid.add_argument("--camera-intrinsics", metavar="FX,FY,CX,CY", default=None,
                      help="pinhole intrinsics in pixels of the input frames (default: fx = fy = frame width, a "
                           "horizontal field of view of about 53 degrees, and cx, cy at the frame's centre)")
    grid.add_argument("--camera-mount", metavar="X,Y,Z,ROLL,PITCH,YAW", default=None,
                      help="the camera in the grid frame, body convention: metres, x forward, y left, z up (height "
                           "above the ground); radians, pitch > 0 looks down, yaw > 0 looks left "
                           "(default: 0,0,1.5,0,0,0)")
    grid.add_argument("--grid-resolution", type=float, default=None, metavar="M",
                      help="cell side in metres (default: 0.1)")
    grid.add_argument("--grid-range", type=float, default=None, metavar="M",
                      help="the square grid reaches this many metres from its origin in every direction, and ground "
                           "farther than this from the point below the camera is not mapped (default: 20)")
    grid.add_argument("--grid-void", choices=VOID_MEANINGS, default="unknown",
                      help="void / unlabelled pixels (the ego vehicle's hood in Cityscapes) count neither way "
                           "(unknown, the default) or as non-drivable (obstacle), as the node's grid_void")
    _add_common(seg)
    seg.set_defaults(func=_cmd_segment)

    ev = sub.add_parser("eval", help="evaluate a preset on a labelled split (mIoU, accuracies)",
                        description="Segment every image at the preset's native size and compare with the label map "
                                    "of the same name (single-channel class ids at any resolution).")
    ev.add_argument("--preset", default=None, help="weights preset, e.g. camvid")
    ev.add_argument("--model", default=None, metavar="DIR", help="a model file from `espnet-ros train` instead")
    ev.add_argument("--images", required=True, metavar="DIR", help="folder of images")
    ev.add_argument("--labels", required=True, metavar="DIR", help="folder of label maps (same file names)")
    ev.add_argument("--protocol", choices=("upstream", "standard"), default="upstream",
                    help="upstream: all labels in the matrix, predictions on unlabelled pixels count as false "
                         "positives (reproduces the published numbers); standard: unlabelled pixels ignored")
    ev.add_argument("--json", metavar="FILE", default=None, help="also write the metrics as JSON")
    _add_common(ev)
    ev.set_defaults(func=_cmd_eval)

    pr = sub.add_parser("presets", help="list the weights presets and whether their files are present and valid")
    pr.add_argument("--models-dir", metavar="DIR", default=None,
                    help="also list the model files in DIR (default: $ESPNET_ROS_MODELS_DIR or "
                         "~/.cache/espnet_ros/models)")
    _add_common(pr, device=False)
    pr.set_defaults(func=_cmd_presets)

    dl = sub.add_parser("download-weights", help="download and verify weights (and the sample frames)",
                        description="Download the files of the named presets (default: cityscapes) into the weights "
                                    "folder, verifying each sha256; files already present and valid are skipped.")
    dl.add_argument("presets", nargs="*", metavar="PRESET", help="presets to download")
    dl.add_argument("--all", action="store_true", help="download the files of every preset")
    dl.add_argument("--samples", action="store_true", help="also download the two upstream sample frames")
    dl.add_argument("--samples-dir", metavar="DIR", default=None,
                    help="where the samples go (default: $ESPNET_ROS_SAMPLES_DIR or ~/.cache/espnet_ros/samples)")
    dl.add_argument("--url-base", metavar="URL", default=None,
                    help="repository root to download from (default: $ESPNET_ROS_URL_BASE or upstream GitHub; "
                         "file:// works for a local mirror)")
    _add_common(dl, device=False)
    dl.set_defaults(func=_cmd_download)

    add_segment_bag_parser(sub, _add_common)
    add_extract_frames_parser(sub)
    from espnet_ros.train_cli import add_export_parser, add_train_parser

    add_train_parser(sub)
    add_export_parser(sub)

    sub.add_parser("bench", help="benchmark inference (arguments are passed to espnet_ros.bench; see bench --help)",
                   add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(args_list)
    except SystemExit as exc:  # --help, or a usage error argparse already printed
        return int(exc.code) if isinstance(exc.code, int) else 2
    if args.command == "bench":
        return _cmd_bench(_bench_args(args_list))
    if extra:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: unrecognized arguments: {' '.join(extra)}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        status: int = args.func(args)
        return status
    except (EspnetRosError, UnknownClassError) as exc:
        return _fail(exc)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _fail(exc: Exception) -> int:
    print(f"{PROG}: error: {exc}", file=sys.stderr)
    return 2


def _bench_args(argv: list[str]) -> list[str]:
    """The arguments after the ``bench`` subcommand, verbatim."""
    return argv[argv.index("bench") + 1:]


def _cmd_bench(argv: list[str]) -> int:
    from espnet_ros.bench import main as bench_main  # imported on use: the other commands start faster

    try:
        status = bench_main(argv)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else 2
    except EspnetRosError as exc:
        return _fail(exc)
    return int(status or 0)


def _preset_or_model(args: argparse.Namespace) -> WeightsPreset:
    """The preset of ``--preset`` or the model file of ``--model`` (one of them; default preset cityscapes)."""
    from espnet_ros.core.modelfile import resolve_preset

    if args.preset is not None and args.model is not None:
        raise CliError("give --preset or --model, not both")
    if args.model is not None and getattr(args, "weights_file", None):
        raise CliError("--weights-file applies to presets; a model folder names its own weights")
    return resolve_preset(args.preset, args.model)


def _cmd_segment(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np

    from espnet_ros.core.frames import FrameSource
    from espnet_ros.core.geometry import CameraModel, ProjectorCache, render_grid
    from espnet_ros.core.render import Renderer
    from espnet_ros.core.segmenter import Segmenter
    preset = _preset_or_model(args)
    classes = None if args.drivable_classes is None else [c for c in args.drivable_classes.split(",") if c.strip()]
    if not 0.0 <= args.alpha <= 1.0:
        raise CliError(f"--alpha must be between 0 and 1, got {args.alpha}")
    renderer = Renderer(preset.label_set, classes, alpha=args.alpha)  # validates the classes before loading
    grid = grid_settings(args)
    unknown_lut = preset.label_set.void_lut(args.grid_void)
    projectors = ProjectorCache()
    inputs, skipped = _usable_inputs(args.inputs)
    source = FrameSource(inputs)
    out_dir = Path(args.out).expanduser()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create output folder {out_dir}: {exc.strerror}") from exc
    segmenter = Segmenter(preset, weights_dir=args.weights_dir, weights_file=args.weights_file,
                          device=args.device, output_size=args.output_size)
    _log.info("segmenting %d file(s) with %s into %s", len(source.files), preset.name, out_dir)
    count = 0
    with progress_bar(args.quiet, total=_frame_count(source), unit="frame", desc="segment") as bar:
        for frame in _frames_skipping_bad_files(source, skipped):
            result = segmenter.segment(frame.image, color_order="bgr")
            ids = result.class_ids
            image = frame.image
            if result.output_size != result.input_size:
                interp = cv2.INTER_AREA if result.output_size[0] < result.input_size[0] else cv2.INTER_LINEAR
                image = np.asarray(cv2.resize(image, result.output_size, interpolation=interp), np.uint8)
            mask = renderer.drivable_mask(ids)
            base = out_dir / frame.stem
            write_image(base.with_name(f"{frame.stem}.labels.png"), ids)
            write_image(base.with_name(f"{frame.stem}.color.png"), renderer.colorize(ids))
            write_image(base.with_name(f"{frame.stem}.overlay.jpg"), renderer.class_overlay(image, ids),
                         (cv2.IMWRITE_JPEG_QUALITY, 90))
            write_image(base.with_name(f"{frame.stem}.drivable.png"), mask)
            if grid is not None:
                spec, pose, intrinsics = grid
                height, width = frame.image.shape[:2]
                fx, fy, cx, cy = intrinsics or (width, width, (width - 1) / 2, (height - 1) / 2)
                camera = CameraModel.pinhole(width, height, fx, fy, cx, cy)
                projector = projectors.get(camera, pose, spec, result.output_size)
                write_image(base.with_name(f"{frame.stem}.grid.png"),
                             render_grid(projector.grid(ids, renderer.mask_lut, unknown_lut)))
            count += 1
            bar.update(1)
    if not args.quiet:
        print(f"wrote {count} frame(s) × {5 if grid else 4} files to {out_dir}", file=sys.stderr)
    if skipped:
        print(f"{PROG}: {len(skipped)} input(s) skipped (see above); everything else was written", file=sys.stderr)
        return 1
    return 0


def _frame_count(source: FrameSource) -> int | None:
    """The frames ``source`` will yield, for the progress bar; ``None`` if a video's count cannot be read."""
    from espnet_ros.core.frames import FrameSourceError
    from espnet_ros.core.quiet import native_stderr_captured

    try:
        with native_stderr_captured():
            return source.frame_count
    except FrameSourceError:  # the video is reported when its frames are read
        return None


def _skip(skipped: list[str], reason: str) -> None:
    """Report one input that cannot be used (one line) and remember it; the command goes on with the others."""
    skipped.append(reason)
    print(f"{PROG}: skipped: {reason}", file=sys.stderr)


def _usable_inputs(inputs: Sequence[str]) -> tuple[list[str], list[str]]:
    """The inputs that name usable files, and the reasons of those skipped (each reported on its line)."""
    from espnet_ros.core.frames import FrameSource, FrameSourceError

    usable: list[str] = []
    problems: list[FrameSourceError] = []
    for entry in inputs:
        try:
            FrameSource([entry])  # checks the path: exists, supported, not an empty folder
        except FrameSourceError as exc:
            problems.append(exc)
        else:
            usable.append(entry)
    if not usable and len(problems) == 1:
        raise problems[0]
    skipped: list[str] = []
    for problem in problems:
        _skip(skipped, str(problem))
    if not usable:
        raise CliError(f"none of the {len(inputs)} inputs can be read (see above)")
    return usable, skipped


def _frames_skipping_bad_files(source: FrameSource, skipped: list[str]) -> Iterator[Frame]:
    """The frames of every file of ``source``; a file that cannot be decoded is reported and skipped.

    Native libraries (libpng, libjpeg, FFmpeg) write their own complaints to stderr while decoding; they are kept
    off the terminal and the first of them is added to the one line that reports the file.
    """
    from espnet_ros.core.frames import FrameSourceError
    from espnet_ros.core.quiet import native_stderr_captured

    for path in source.files:
        frames = source.iter_file(path)
        while True:
            try:
                with native_stderr_captured() as noise:
                    frame = next(frames, None)
            except FrameSourceError as exc:
                detail = noise.first_line()
                _skip(skipped, f"{exc}" + (f" (decoder: {detail})" if detail else ""))
                break
            if frame is None:
                break
            yield frame


def _fmt(v: float) -> str:
    return "   n/a" if math.isnan(v) else f"{v:6.2f}"


def _cmd_eval(args: argparse.Namespace) -> int:
    from espnet_ros.core.evaluate import evaluate_split, find_pairs
    from espnet_ros.core.segmenter import Segmenter
    if args.preset is None and args.model is None:
        raise CliError("give --preset NAME or --model DIR")
    preset = _preset_or_model(args)
    pairs = find_pairs(Path(args.images).expanduser(), Path(args.labels).expanduser())
    json_path = Path(args.json).expanduser() if args.json else None
    if json_path is not None and not json_path.parent.is_dir():
        raise CliError(f"cannot write --json {json_path}: folder {json_path.parent} does not exist")
    segmenter = Segmenter(preset, weights_dir=args.weights_dir, device=args.device, output_size="network")
    with progress_bar(args.quiet, total=len(pairs), unit="image", desc="eval") as bar:
        cm = evaluate_split(segmenter, pairs, on_image=lambda _p: bar.update(1))
    result = cm.result(preset.label_set, args.protocol)
    out: TextIO = sys.stdout
    width = max(len(n) for n in result.per_class_iou)
    print(f"{preset.name} on {len(pairs)} images, {args.protocol} protocol", file=out)
    print(f"{'class':<{width}}  {'IoU %':>6}  {'acc %':>6}", file=out)
    for name, iou in result.per_class_iou.items():
        print(f"{name:<{width}}  {_fmt(iou)}  {_fmt(result.per_class_acc[name])}", file=out)
    print(f"{'mIoU':<{width}}  {_fmt(result.miou)}", file=out)
    print(f"pixel accuracy {result.pixel_acc:.2f} %, class-average accuracy {result.class_avg_acc:.2f} %", file=out)
    if cm.skipped_pixels:
        print(f"({cm.skipped_pixels} pixels with labels outside 0..{cm.num_classes - 1} were not counted)", file=out)
    if json_path is not None:
        doc = {"preset": preset.name, **result.to_dict(), "skipped_pixels": cm.skipped_pixels}
        try:
            json_path.write_text(json.dumps(doc, indent=2) + "\n")
        except OSError as exc:
            raise CliError(f"cannot write {json_path}: {exc.strerror}") from exc
    return 0


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)
        if n == 0:
            print("  ".join("-" * w for w in widths), file=out)


def _cmd_presets(args: argparse.Namespace) -> int:
    from espnet_ros.core.weights import DEFAULT_PRESET, PRESETS, check_file, weights_dir

    folder = weights_dir(args.weights_dir)
    rows = [["name", "classes", "params", "input", "file", "status"]]
    for p in PRESETS.values():
        path = folder / p.file
        if not path.is_file():
            status = "missing"
        else:
            try:
                check_file(p, path)
                status = "ok (sha256 verified)"
            except EspnetRosError:
                status = "INVALID (run download-weights)"
        name = f"{p.name} (default)" if p.name == DEFAULT_PRESET else p.name
        rows.append([name, str(p.label_set.num_classes), f"{p.num_params:,}", f"{p.input_size[0]}x{p.input_size[1]}",
                     p.file, status])
    print(f"weights folder: {folder}", file=sys.stdout)
    _table(rows, sys.stdout)
    _list_models(args.models_dir)
    return 0


def _list_models(explicit: str | None) -> None:
    """Print the model files of the models folder (``presets --models-dir``; the default folder only if it exists)."""
    from espnet_ros.core.modelfile import find_models, models_dir

    folder = models_dir(explicit)
    if explicit is None and not folder.is_dir():
        return
    found = find_models(folder)
    print(f"\nmodels folder: {folder}" + ("" if found else " (no model files; `espnet-ros train --out` writes them)"),
          file=sys.stdout)
    if not found:
        return
    rows = [["model (use with --model / model:=)", "classes", "params", "input", "val mIoU", "status"]]
    for path, model in found:
        if isinstance(model, EspnetRosError):
            rows.append([str(path), "", "", "", "", f"INVALID: {model}"])
            continue
        miou = model.metrics.get("val_miou")
        rows.append([str(path), str(model.label_set.num_classes), f"{model.num_params:,}",
                     f"{model.input_size[0]}x{model.input_size[1]}", "n/a" if miou is None else f"{miou:.2f}",
                     "ok (sha256 verified)"])
    _table(rows, sys.stdout)


def _cmd_download(args: argparse.Namespace) -> int:
    from espnet_ros.core.frames import samples_dir
    from espnet_ros.core.weights import DEFAULT_PRESET, PRESETS, SAMPLES, download_files, get_preset, weights_dir

    if args.all and args.presets:
        raise CliError("give preset names or --all, not both")
    names = list(PRESETS) if args.all else list(dict.fromkeys(args.presets))
    if not names and not args.samples:
        names = [DEFAULT_PRESET]
    files = list(dict.fromkeys(get_preset(n).data for n in names))
    jobs = []
    if files:
        jobs.append((files, weights_dir(args.weights_dir)))
    if args.samples:
        jobs.append((list(SAMPLES), samples_dir(args.samples_dir)))
    for batch, folder in jobs:
        fetched: list[str] = []
        bars: list[Any] = []

        def factory(total: int, name: str, fetched: list[str] = fetched, bars: list[Any] = bars
                    ) -> Callable[[int], None]:
            fetched.append(name)
            bar = progress_bar(args.quiet, total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name)
            bars.append(bar)
            return bar.update  # type: ignore[no-any-return]

        try:
            paths = download_files(batch, folder, base=args.url_base, progress=factory)
        finally:
            for bar in bars:
                bar.close()
        for f, path in zip(batch, paths, strict=True):
            state = "downloaded" if f.file in fetched else "already present, verified"
            print(f"{path}: {state}", file=sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
