"""The GPU benchmark's measurement code, run on the CPU with tiny settings (it cannot time a GPU here)."""

from __future__ import annotations

import numpy as np

from espnet_ros.bench.cuda import format_table, run_cuda_bench


def test_cuda_bench_runs_on_cpu_and_reports_every_key(weights_dir: object) -> None:
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (72, 96, 3), dtype=np.uint8) for _ in range(2)]
    rec = run_cuda_bench(
        "camvid", "cpu", frames, weights_dir=str(weights_dir), repeats=2, warmup=1, cameras=3,
        camera_size=(64, 48), model_batches=(1, 2),
    )
    for key in ("device", "preset", "input_size", "baseline_ms", "fast_ms", "speedup", "label_agreement",
                "model_fps_batch1", "model_fps_batch2", "baseline_model_fps_batch1", "multi_camera"):
        assert key in rec, key
    assert rec["device"] == "cpu" and rec["half"] is False and rec["cuda_graphs"] is False
    assert rec["label_agreement"] == 1.0  # fp32 on the CPU: the fast path is the baseline's maths
    assert rec["multi_camera"]["cameras"] == 3
    assert "speedup vs eager fp32" in format_table(rec) and "float32, NCHW" in format_table(rec)



def test_cuda_bench_reports_the_uncompiled_path_beside_the_compiled_one(weights_dir: object) -> None:
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 255, (72, 96, 3), dtype=np.uint8)]
    rec = run_cuda_bench(
        "camvid", "cpu", frames, weights_dir=str(weights_dir), repeats=1, warmup=1, cameras=2,
        camera_size=(64, 48), model_batches=(1,), compile=True, compile_backend="eager",
    )
    assert rec["compiled"] is True
    for key in ("uncompiled_ms", "uncompiled_model_fps_batch1", "model_fps_batch1"):
        assert rec[key] > 0, key
    assert rec["label_agreement"] == 1.0
    table = format_table(rec)
    assert "uncompiled pipeline" in table and "uncompiled:" in table
