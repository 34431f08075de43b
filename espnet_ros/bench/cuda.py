"""The GPU half of ``espnet-ros bench --device cuda``: model-only fps, whole-pipeline latency and multi-camera rate.

Every number is measured side by side with an eager fp32 baseline in the same process, on the same frames: the
baseline is the upstream recipe moved to the GPU as written (numpy preprocessing on the host, upload, eager fp32
NCHW network, ``argmax``, download, nearest resize on the host); the fast path is :class:`~espnet_ros.core.gpu.
GpuPipeline` (uint8 upload from pinned memory, preprocessing on the GPU, float16 channels-last, CUDA graphs,
argmax and resize on the GPU, uint8 ids back). It also reports label agreement and, with CamVid data at hand, the
change in validation mIoU. It runs on the CPU too (without graphs), which is how it is tested without a GPU.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import torch

from espnet_ros.bench.harness import _pct
from espnet_ros.core.baseline import BaselinePipeline
from espnet_ros.core.gpu import GpuPipeline
from espnet_ros.core.modelfile import resolve_preset
from espnet_ros.core.segmenter import Segmenter

__all__ = ["format_table", "main", "measure", "run_cuda_bench"]

_log = logging.getLogger(__name__)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], object], repeats: int, warmup: int, device: torch.device) -> list[float]:
    """Run ``fn`` ``warmup`` times, then time ``repeats`` runs (ms each, device synchronised)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1000.0)
    return times


def _model_fps(
    net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, repeats: int, warmup: int, graphs: bool
) -> float:
    """Frames per second of the network alone on a preprocessed batch ``x``."""
    device = x.device
    with torch.inference_mode():
        if graphs:
            stream = torch.cuda.Stream(device)
            stream.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(stream):
                for _ in range(3):
                    net(x)
            torch.cuda.current_stream(device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                net(x)
            fn: Callable[[], object] = graph.replay
        else:
            def fn() -> object:
                return net(x)
        for _ in range(warmup):
            fn()
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        _sync(device)
        dt = time.perf_counter() - t0
    return repeats * int(x.shape[0]) / dt


def _camvid_miou(predict: Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.uint8]], root: Path) -> float:
    """CamVid val mIoU (upstream protocol) of ``predict`` over the pairs under ``root/images`` and ``root/labels``."""
    from espnet_ros.core.evaluate import ConfusionMatrix, find_pairs, read_label_map
    from espnet_ros.core.labels import CAMVID

    cm = ConfusionMatrix(CAMVID.num_classes)
    for img_path, label_path in find_pairs(root / "images", root / "labels"):
        img = cv2.imread(str(img_path))
        cm.update(read_label_map(label_path), predict(np.ascontiguousarray(img)))
    return float(cm.result(CAMVID, "upstream").miou)


def run_cuda_bench(
    preset: str,
    device: str,
    images: Sequence[npt.NDArray[np.uint8]],
    *,
    model: str | None = None,
    weights_dir: str | None = None,
    repeats: int = 100,
    warmup: int = 10,
    cameras: int = 8,
    camera_size: tuple[int, int] = (1920, 1080),
    model_batches: Sequence[int] = (1, 8),
    camvid_root: Path | None = None,
    progress: Callable[[str], None] | None = None,
    compile: bool | None = None,
    compile_backend: str | Callable[..., object] = "inductor",
    half: bool | None = None,
) -> dict[str, Any]:
    """Measure the fast GPU path against the eager fp32 baseline in this process; return the JSON record.

    ``compile`` / ``compile_backend`` / ``half`` go to :class:`GpuPipeline` (default: float16, compiled with
    Inductor on CUDA; the uncompiled comparison uses the same precision). When
    the fast path is compiled, the record also holds the same path uncompiled (``uncompiled_*``).
    """
    say = progress or (lambda _msg: None)
    seg = Segmenter(resolve_preset(preset, model), weights_dir=weights_dir, device=device)
    dev = seg.device
    on_cuda = dev.type == "cuda"
    fast = GpuPipeline(seg.model, seg.preset, seg.input_size, dev, compile=compile, compile_backend=compile_backend,
                       half=half)
    # the same path without torch.compile, for the table (what compiling the network gives)
    plain = GpuPipeline(seg.model, seg.preset, seg.input_size, dev, compile=False, half=fast.half) \
        if fast.compiled else None
    baseline = BaselinePipeline(seg.preset, model=seg.model, network_size=seg.input_size, device=dev)
    rec: dict[str, Any] = {
        "device": torch.cuda.get_device_name(dev) if on_cuda else "cpu",
        "torch": torch.__version__,
        "preset": seg.preset.name,
        "input_size": list(seg.input_size),
        "frame_size": [int(images[0].shape[1]), int(images[0].shape[0])],
        "half": fast.half,
        "channels_last": fast.channels_last,
        "cuda_graphs": fast.graphs,
    }
    frame = images[0]
    size = (int(frame.shape[1]), int(frame.shape[0]))
    say("pipeline, batch 1")
    base_t = measure(lambda: baseline(frame), max(1, repeats // 4), 2, dev)
    fast_t = measure(lambda: fast.run([frame], ["bgr"], [size]), repeats, warmup, dev)
    rec.update(
        baseline_ms=statistics.median(base_t),
        fast_ms=statistics.median(fast_t),
        fast_p95_ms=_pct(fast_t, 0.95),
    )
    rec["speedup"] = rec["baseline_ms"] / rec["fast_ms"]
    if plain is not None:
        rec["uncompiled_ms"] = statistics.median(
            measure(lambda: plain.run([frame], ["bgr"], [size]), repeats, warmup, dev)
        )
    rec["compiled"] = fast.compiled  # false if compiling failed on the way (the log says why)
    w, h = seg.input_size
    say("model only")
    for b in model_batches:
        x32 = torch.randn(b, 3, h, w, device=dev) * 0.01
        xf = x32.half() if fast.half else x32
        if fast.channels_last:
            xf = xf.contiguous(memory_format=torch.channels_last)
        try:
            rec[f"model_fps_batch{b}"] = _model_fps(fast.network, xf, repeats, warmup, fast.graphs)
        except Exception as exc:  # compiling this batch size failed: say so and measure the uncompiled network
            _log.warning("compiled network failed at batch %d (%s); measuring it uncompiled", b, exc)
            rec[f"model_compile_error_batch{b}"] = f"{type(exc).__name__}: {exc}"[:500]
            rec[f"model_fps_batch{b}"] = _model_fps(fast._net, xf, repeats, warmup, fast.graphs)
        if plain is not None:
            rec[f"uncompiled_model_fps_batch{b}"] = _model_fps(plain.network, xf, repeats, warmup, plain.graphs)
        rec[f"baseline_model_fps_batch{b}"] = _model_fps(seg.model, x32, max(1, repeats // 4), 2, False)
    say("label agreement")
    agree = []
    for im in images:
        ref = baseline(im)
        got = fast.run([im], ["bgr"], [(im.shape[1], im.shape[0])])[0].class_ids
        agree.append(float((ref == got).mean()))
    rec["label_agreement"] = min(agree)
    say(f"{cameras} cameras batched")
    cw, ch = camera_size
    cams = [np.ascontiguousarray(cv2.resize(images[i % len(images)], (cw, ch)), dtype=np.uint8) for i in range(cameras)]
    multi_t = measure(lambda: fast.run(cams, ["bgr"] * cameras, [(cw, ch)] * cameras), repeats, warmup, dev)
    rec["multi_camera"] = {"cameras": cameras, "size": [cw, ch], "batch_ms": statistics.median(multi_t)}
    rec["multi_camera"]["frames_per_s"] = cameras * 1000.0 / rec["multi_camera"]["batch_ms"]
    if camvid_root is not None and seg.preset.name == "camvid":
        say("CamVid val mIoU, fp32 vs fast path")
        base_miou = _camvid_miou(baseline, camvid_root)
        fast_miou = _camvid_miou(
            lambda im: fast.run([im], ["bgr"], [(im.shape[1], im.shape[0])])[0].class_ids, camvid_root
        )
        rec["camvid_val_miou_baseline"] = base_miou
        rec["camvid_val_miou_fast"] = fast_miou
        rec["camvid_val_miou_delta"] = fast_miou - base_miou
    return rec


def format_table(rec: dict[str, Any]) -> str:
    """A plain-text table of a :func:`run_cuda_bench` record."""
    rows = [
        ("device", rec["device"]),
        ("preset / network input", f"{rec['preset']} / {rec['input_size'][0]}x{rec['input_size'][1]}"),
        ("fast path's network", ("float16" if rec["half"] else "float32")
         + (", channels-last" if rec.get("channels_last") else ", NCHW")),
    ]
    for key in sorted(k for k in rec if k.startswith("model_fps_batch")):
        b = key.removeprefix("model_fps_batch")
        plain = rec.get("uncompiled_model_fps_batch" + b)
        rows.append((f"model only, batch {b} (frames/s)",
                     f"{rec[key]:.0f}" + (f"  (uncompiled: {plain:.0f})" if plain is not None else "")
                     + f"  (eager fp32: {rec['baseline_model_fps_batch' + b]:.0f})"))
    fw, fh = rec["frame_size"]
    rows += [
        (f"pipeline {fw}x{fh} → ids, batch 1 (ms)",
         f"{rec['fast_ms']:.2f} p50, {rec['fast_p95_ms']:.2f} p95  (eager fp32: {rec['baseline_ms']:.2f})"),
        ("speedup vs eager fp32", f"{rec['speedup']:.1f}x"),
        ("torch.compile", "yes" + (f" (uncompiled pipeline: {rec['uncompiled_ms']:.2f} ms)"
                                   if "uncompiled_ms" in rec else "") if rec.get("compiled") else "no"),
        ("label agreement vs fp32", f"{rec['label_agreement']:.5f}"),
    ]
    mc = rec["multi_camera"]
    rows.append((f"{mc['cameras']} cameras {mc['size'][0]}x{mc['size'][1]} batched",
                 f"{mc['frames_per_s']:.0f} frames/s ({mc['batch_ms']:.2f} ms a batch)"))
    if "camvid_val_miou_delta" in rec:
        rows.append(("CamVid val mIoU fp32 → fast",
                     f"{rec['camvid_val_miou_baseline']:.2f} → {rec['camvid_val_miou_fast']:.2f} "
                     f"({rec['camvid_val_miou_delta']:+.3f})"))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m espnet_ros.bench.cuda`` (also reached as ``espnet-ros bench --device cuda``)."""
    import argparse
    import json
    import sys

    from espnet_ros.core.errors import EspnetRosError
    from espnet_ros.core.frames import FrameSource, samples_dir

    ap = argparse.ArgumentParser(prog="espnet-ros bench --device cuda", description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cityscapes")
    ap.add_argument("--model", default=None, metavar="DIR", help="a model folder, measured instead of --preset")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--weights-dir", default=None)
    ap.add_argument("--images", nargs="*", default=None, help="frames (default: the two sample frames)")
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--camera-size", default="1920x1080")
    ap.add_argument("--camvid", type=Path, default=None, help="CamVid split root (images/, labels/) for the mIoU")
    ap.add_argument("--no-compile", action="store_true", help="run the fast path without torch.compile")
    ap.add_argument("--precision", choices=("float16", "float32"), default="float16",
                    help="the fast path's network arithmetic (float32 runs NCHW)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    try:
        frames = [f.image for f in FrameSource(args.images or [samples_dir()])]
        cw, ch = (int(v) for v in args.camera_size.lower().split("x"))
        rec = run_cuda_bench(
            args.preset, args.device, frames, model=args.model, weights_dir=args.weights_dir, repeats=args.repeats,
            warmup=args.warmup, cameras=args.cameras, camera_size=(cw, ch), camvid_root=args.camvid,
            compile=False if args.no_compile else None, half=args.precision == "float16",
            progress=lambda msg: print(f"… {msg}", file=sys.stderr, flush=True),
        )
    except (EspnetRosError, ValueError) as exc:
        print(f"espnet-ros bench: {exc}", file=sys.stderr)
        return 2
    print(format_table(rec))
    if args.json:
        args.json.write_text(json.dumps(rec, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
