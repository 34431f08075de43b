"""The CPU work of each CPU backend and of the compiled preprocessing, side by side in one process.

Everything runs on one thread (torch, OpenCV), so the process's CPU time per call measures the work alone, whatever
else runs on a shared machine; wall time is printed beside it. Calls are interleaved round-robin, the order reversed
every other round. The network of each backend runs on the same preprocessed 2048x1024 sample frame; the
preprocessing and the whole ``Segmenter.segment`` run with and without the compiled preprocessing (the same values,
asserted first). Prints JSON: median and minimum CPU ms, median wall ms per function.

    python tools/cpu_work.py [ROUNDS] [PRESET]      (default 8 rounds, cityscapes; weights and samples as usual)
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable

import cv2
import numpy as np
import torch

from espnet_ros.core.accel import Backend, make_backend
from espnet_ros.core.baseline import BaselinePipeline
from espnet_ros.core.fpmode import denormals_flushed
from espnet_ros.core.frames import FrameSource, samples_dir
from espnet_ros.core.segmenter import Segmenter


def main(rounds: int, preset: str) -> dict[str, object]:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    frames = [np.ascontiguousarray(f.image) for f in FrameSource([samples_dir()])][:2]
    seg = Segmenter(preset, backend="compiled", num_threads=1)
    strips = Segmenter(preset, backend="compiled", num_threads=1)
    assert seg._cpu is not None and strips._cpu is not None
    strips._cpu.preprocess_half = None  # the same compiled network, the preprocessing in strips
    for f in frames:
        assert torch.equal(seg.preprocess([f], ["bgr"]), strips.preprocess([f], ["bgr"]))
    base = BaselinePipeline(seg.preset, model=seg.model)
    with torch.inference_mode():
        x = seg.preprocess([frames[0]], ["bgr"])
    backends: dict[str, Backend] = {
        n: make_backend(n, seg.model, seg.preset, seg.input_size) for n in ("eager", "fused")
    }
    backends["compiled"] = seg._cpu

    def network(b: Backend, flush: bool) -> Callable[[], object]:
        def run() -> object:
            with denormals_flushed(flush):
                return b.labels(x)
        return run

    fns: dict[str, Callable[[], object]] = {f"network_{n}": network(b, n != "eager") for n, b in backends.items()}
    fns["preprocess_compiled"] = lambda: seg.preprocess([frames[0]], ["bgr"])
    fns["preprocess_strips"] = lambda: strips.preprocess([frames[0]], ["bgr"])
    fns["segment_compiled_preprocessing"] = lambda: seg.segment(frames[1])
    fns["segment_strips"] = lambda: strips.segment(frames[1])
    fns["baseline_preprocess_and_network"] = lambda: base.logits(base.preprocess(frames[0]))
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    wall: dict[str, list[float]] = {k: [] for k in fns}
    with torch.inference_mode():
        for fn in fns.values():
            fn()
        for r in range(rounds):
            for k in list(fns) if r % 2 == 0 else list(reversed(fns)):
                c0, w0 = time.process_time(), time.perf_counter()
                fns[k]()
                cpu[k].append((time.process_time() - c0) * 1e3)
                wall[k].append((time.perf_counter() - w0) * 1e3)
    out: dict[str, object] = {
        k: {"cpu_ms_median": round(statistics.median(cpu[k]), 1), "cpu_ms_min": round(min(cpu[k]), 1),
            "wall_ms_median": round(statistics.median(wall[k]), 1)} for k in fns
    }
    out.update(rounds=rounds, preset=preset, torch=torch.__version__)
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    print(json.dumps(main(int(args[0]) if args else 8, args[1] if len(args) > 1 else "cityscapes"), indent=1))
