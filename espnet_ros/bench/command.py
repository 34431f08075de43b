"""The ``espnet-ros bench`` command: its arguments, the run they describe, and the grid and CUDA hand-offs."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch

from espnet_ros.bench.harness import BenchError, Progress, _cpu_name, _load_frames, _parse_size
from espnet_ros.bench.inprocess import measure_camvid, measure_model, measure_pipeline
from espnet_ros.bench.report import format_table
from espnet_ros.bench.ros import publisher_main, run_ros
from espnet_ros.core.baseline import BaselinePipeline
from espnet_ros.core.errors import EspnetRosError
from espnet_ros.core.modelfile import resolve_preset

__all__ = ["MODES", "main", "run"]

MODES = ("model", "pipeline", "ros", "all", "grid")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="espnet-ros bench",
        description="Measure the model, the pipeline and the ROS node against the upstream-style baseline "
        "(same frames, same process). Prints a table; --json writes the record.",
    )
    ap.add_argument("--mode", choices=MODES, default="pipeline",
                    help="model: + network alone per backend; pipeline: frame → ids (+ stages, rendering); "
                    "ros: publisher → node → subscriber processes; all: everything but grid; grid: the drivable "
                    "grid from a mask of --size (default 2048x1024) (default: pipeline)")
    ap.add_argument("--preset", default="cityscapes")
    ap.add_argument("--model", default=None, metavar="DIR",
                    help="a model folder from espnet-ros train, measured instead of --preset")
    ap.add_argument("--grid-resolution", type=float, default=0.1, help="grid: cell side in metres (default 0.1)")
    ap.add_argument("--grid-range", type=float, default=20.0, help="grid: reach in metres (default 20)")
    ap.add_argument("--device", default="cpu", help="cpu (this tool) or cuda[:N] (handed to espnet_ros.bench.cuda)")
    ap.add_argument("--backend", default="auto", help="CPU backend of the fast path: auto, eager, fused, compiled "
                    "(default auto)")
    ap.add_argument("--candidates", default="eager,fused,compiled",
                    help="backends timed side by side in model mode (comma-separated)")
    ap.add_argument("--images", nargs="*", default=None, help="frames (default: the sample frames)")
    ap.add_argument("--size", default=None, help="resize the frames to WIDTHxHEIGHT first, e.g. 1920x1080")
    ap.add_argument("--repeats", type=int, default=10, help="timed runs per frame and path (default 10)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    ap.add_argument("--weights-dir", default=None)
    ap.add_argument("--cache-dir", default=None, help="compiled-artifact cache (default $ESPNET_ROS_CACHE_DIR)")
    ap.add_argument("--camvid", type=Path, default=None,
                    help="CamVid split root (images/, labels/): adds the val mIoU of baseline and fast path")
    ap.add_argument("--no-render", action="store_true", help="skip the colour mask / overlay measurement")
    ap.add_argument("--cameras", type=int, default=1, help="ros: number of cameras (default 1)")
    ap.add_argument("--rate", type=float, default=10.0, help="ros: frames per second per camera (default 10)")
    ap.add_argument("--duration", type=float, default=60.0, help="ros: seconds of publishing (default 60)")
    ap.add_argument("--max-frame-age", type=float, default=1.0, help="ros: the node's max_frame_age (default 1.0)")
    ap.add_argument("--max-queue-delay", type=float, default=None,
                    help="ros: the node's max_queue_delay (default: the node's, 0.02; negative: never drop "
                    "late frames)")
    ap.add_argument("--ros-warmup", type=float, default=None,
                    help="ros: seconds after the first answer excluded from latency; RSS start is taken then "
                    "(default min(10, duration/5))")
    ap.add_argument("--input-qos", default="sensor_data", help="ros: the node's input_qos (default sensor_data)")
    ap.add_argument("--fastdds-profile", default=None,
                    help="ros: Fast DDS XML profile (default: the shipped config/fastdds_shm.xml; 'none' for defaults)")
    ap.add_argument("--json", type=Path, default=None, help="write the record here")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    return ap


def _cuda(args: argparse.Namespace) -> int:
    from espnet_ros.bench import cuda as bench_cuda

    argv = ["--preset", args.preset, *(["--model", args.model] if args.model else []),
            "--device", args.device, "--repeats", str(args.repeats),
            "--warmup", str(args.warmup)]
    if args.weights_dir:
        argv += ["--weights-dir", args.weights_dir]
    if args.images:
        argv += ["--images", *args.images]
    if args.size:
        argv += ["--camera-size", args.size]
    if args.camvid:
        argv += ["--camvid", str(args.camvid)]
    if args.json:
        argv += ["--json", str(args.json)]
    return bench_cuda.main(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark described by parsed ``args``; return the record."""
    from espnet_ros.core.accel import resolve_backend
    from espnet_ros.core.segmenter import Segmenter

    if args.repeats < 1 or args.warmup < 0:
        raise BenchError("--repeats must be >= 1 and --warmup >= 0")
    if args.threads is not None:
        if args.threads < 1:
            raise BenchError("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    size = _parse_size(args.size) if args.size else None
    frames = _load_frames(args.images, size)
    say: Progress = (lambda _m: None) if args.quiet else (lambda m: print(f"… {m}", file=sys.stderr, flush=True))
    say(f"loading {args.preset} (backend {resolve_backend(args.backend, torch.device('cpu'))}; a first start "
        "compiles it, about 45 s)")
    seg = Segmenter(resolve_preset(args.preset, args.model), weights_dir=args.weights_dir, device="cpu",
                    backend=args.backend, cache_dir=args.cache_dir)
    base = BaselinePipeline(seg.preset, model=seg.model, network_size=seg.input_size)
    img0 = frames[0][1]
    rec: dict[str, Any] = {
        "device": "cpu", "cpu": _cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "preset": seg.preset.name, "input_size": list(seg.input_size), "backend": seg.backend,
        "frame_size": [int(img0.shape[1]), int(img0.shape[0])], "frames": len(frames),
        "frame_names": [n for n, _ in frames], "repeats": args.repeats, "warmup": args.warmup,
        "command": "espnet-ros bench " + " ".join(sys.argv[1:] if args.argv is None else args.argv),
    }
    render = not args.no_render and args.mode in ("pipeline", "all")
    stages = args.mode in ("pipeline", "all")
    say("pipeline: baseline and fast path, interleaved")
    reps = args.repeats if args.mode != "ros" else max(3, args.repeats // 2)
    rec.update(measure_pipeline(seg, base, frames, reps, args.warmup, render=render, stages=stages,
                                quiet=args.quiet))
    if args.mode in ("model", "all"):
        say("model: the network alone, per backend")
        cands = [c.strip() for c in args.candidates.split(",") if c.strip()]
        rec.update(measure_model(seg, base, img0, cands, args.repeats, args.warmup, cache_dir=args.cache_dir,
                                 quiet=args.quiet))
    if args.camvid is not None:
        say(f"CamVid mIoU over {args.camvid}")
        rec.update(measure_camvid(seg, base, args.camvid, quiet=args.quiet))
    if args.mode in ("ros", "all"):
        warm = args.ros_warmup if args.ros_warmup is not None else min(10.0, args.duration / 5.0)
        say(f"ros: {args.cameras} camera(s) at {args.rate:g} Hz for {args.duration:g} s")
        rec.update(run_ros(
            preset=args.preset, model=args.model, frames=frames, cameras=args.cameras, rate=args.rate,
            duration=args.duration,
            max_frame_age=args.max_frame_age, max_queue_delay=args.max_queue_delay,
            pipeline_ms=rec["fast_ms"], warmup_s=warm, threads=args.threads,
            backend=args.backend, weights_dir=args.weights_dir, cache_dir=args.cache_dir,
            fastdds_profile=args.fastdds_profile, input_qos=args.input_qos, quiet=args.quiet,
        ))
        # The host's speed drifts over minutes: the pipeline is measured again right after the ROS phase, and the
        # overhead and the p95 bound use the faster of the two medians (a slow window never makes the node look
        # better: the overhead can only come out larger than against the first measurement alone). This window runs
        # with the heap tuning the ROS phase applied, as the node does; that only makes the fast path faster here.
        say("pipeline again, after the ROS phase")
        after = measure_pipeline(seg, base, frames, reps, args.warmup, render=False, stages=False,
                                 quiet=args.quiet)
        bracket = min(rec["fast_ms"], after["fast_ms"])
        rec.update(pipeline_before_ms=rec["fast_ms"], pipeline_after_ms=after["fast_ms"], pipeline_ros_ms=bracket,
                   overhead_p50_ms=rec["e2e_p50_ms"] - bracket,
                   e2e_p95_bound_ms=args.max_frame_age * 1000.0 + 2.0 * bracket)
    return rec


def _grid(args: argparse.Namespace) -> int:
    """``--mode grid``: mask → occupancy grid (and obstacle points) per frame after the first, on this CPU."""
    from espnet_ros.core.geometry import benchmark_grid

    try:
        w, h = _parse_size(args.size) if args.size else (2048, 1024)
        rec = benchmark_grid(w, h, resolution=args.grid_resolution, max_range=args.grid_range,
                             repeats=max(args.repeats, 5))
    except (EspnetRosError, ValueError) as exc:
        print(f"espnet-ros bench: {exc}", file=sys.stderr)
        return 2
    rec.update(device="cpu", cpu=_cpu_name(), command="espnet-ros bench " + " ".join(args.argv or sys.argv[1:]))
    gw, gh = rec["grid_cells"]
    print(f"mask {w}x{h} → grid {gw}x{gh} cells of {rec['resolution']:g} m (range {rec['max_range']:g} m)\n"
          f"first frame (builds the per-pixel mapping)  {rec['first_ms']:.0f} ms\n"
          f"per frame after the first                  {rec['median_ms']:.2f} ms median, "
          f"{rec['p95_ms']:.2f} ms p95, {rec['min_ms']:.2f} ms min\n"
          f"obstacle points per frame                  {rec['points_median_ms']:.2f} ms median")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rec, indent=2, default=float) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``espnet-ros bench`` (also ``python -m espnet_ros.bench``); returns the exit status."""
    raw = sys.argv[1:] if argv is None else argv
    if raw[:1] == ["_publish"]:
        return publisher_main(raw[1:])
    args = _parser().parse_args(argv)
    args.argv = argv
    if args.mode == "grid":
        return _grid(args)
    if args.device.strip().lower().startswith("cuda"):
        return _cuda(args)
    if args.device.strip().lower() != "cpu":
        print(f"espnet-ros bench: --device {args.device!r}: expected cpu or cuda[:N]", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        rec = run(args)
    except (EspnetRosError, ValueError, OSError) as exc:
        print(f"espnet-ros bench: {exc}", file=sys.stderr)
        return 2
    print(format_table(rec))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rec, indent=2, default=float) + "\n")
    return 0
