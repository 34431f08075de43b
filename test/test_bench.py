"""Tests of espnet_ros.bench on tiny settings: every mode runs and writes its JSON record with all keys.

Benchmarks are tools: these tests check that the tool works and that what it reports is consistent (labels agree
with the baseline, every frame is accounted for), never how fast anything is.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from espnet_ros import bench

PIPELINE_KEYS = {"device", "preset", "input_size", "baseline_ms", "fast_ms", "speedup", "label_agreement", "backend",
                 "frame_size", "stages_ms", "render_baseline_ms", "render_fast_ms", "threads"}
ROS_KEYS = {"e2e_p50_ms", "e2e_p95_ms", "overhead_p50_ms", "frames_sent", "frames_answered", "dropped",
            "rss_start_mb", "rss_end_mb", "lost_between_processes", "lost_in_transport", "replaced_in_input_queue",
            "lost_unexplained", "stamps_ok", "per_camera"}


@pytest.fixture(scope="module")
def small_frames(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> list[Path]:
    """Two CamVid validation frames shrunk to 240x180 (BGR png)."""
    folder = tmp_path_factory.mktemp("frames")
    files = sorted((shared_dir / "camvid" / "val" / "images").iterdir())[:2]
    out = []
    for f in files:
        img = cv2.resize(cv2.imread(str(f)), (240, 180), interpolation=cv2.INTER_AREA)
        out.append(folder / f.name)
        assert cv2.imwrite(str(out[-1]), img)
    return out


def _run(args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, Any], str]:
    out = tmp_path / "bench.json"
    assert bench.main([*args, "--json", str(out)]) == 0
    table = capsys.readouterr().out
    return json.loads(out.read_text()), table


def test_pipeline_mode_writes_every_key(weights_dir: Path, small_frames: list[Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    rec, table = _run(["--mode", "pipeline", "--preset", "camvid", "--backend", "fused", "--weights-dir",
                       str(weights_dir), "--images", *map(str, small_frames), "--repeats", "1", "--warmup", "0"],
                      tmp_path, capsys)
    assert set(rec) >= PIPELINE_KEYS
    assert rec["device"] == "cpu" and rec["preset"] == "camvid" and rec["backend"] == "fused"
    assert rec["input_size"] == [480, 360] and rec["frame_size"] == [240, 180] and rec["frames"] == 2
    assert rec["label_agreement"] >= 0.999
    assert rec["speedup"] == pytest.approx(rec["baseline_ms"] / rec["fast_ms"])
    assert set(rec["stages_ms"]) >= {"baseline_network", "fast_network_and_argmax", "fast_resize"}
    for key in ("speedup", "label agreement with baseline", "baseline stages", "colour mask"):
        assert key in table


def test_model_mode_times_every_candidate_backend(weights_dir: Path, small_frames: list[Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    rec, table = _run(["--mode", "model", "--preset", "camvid", "--backend", "fused", "--candidates",
                       "eager,fused,nonsense", "--cache-dir", str(tmp_path / "cache"), "--weights-dir",
                       str(weights_dir), "--images", str(small_frames[0]), "--size", "160x120", "--repeats", "1",
                       "--warmup", "0", "--no-render", "--quiet"], tmp_path, capsys)
    assert {"model_baseline_ms", "model_fast_ms", "model_speedup", "baseline_ms", "fast_ms"} <= set(rec)
    assert rec["frame_size"] == [160, 120]
    cands = rec["model_candidates_ms"]
    assert "fused" in cands and "eager" in cands
    assert "unknown backend 'nonsense'" in rec["model_candidates_unavailable"]["nonsense"]
    assert all(v > 0 for v in cands.values())
    assert "model only" in table and "backend eager" in table


def test_camvid_miou_of_baseline_and_fast_path(weights_dir: Path, shared_dir: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    split = tmp_path / "split"
    for sub in ("images", "labels"):
        (split / sub).mkdir(parents=True)
        for f in sorted((shared_dir / "camvid" / "val" / sub).iterdir())[:3]:
            shutil.copy(f, split / sub / f.name)
    frame = str(split / "images" / sorted(p.name for p in (split / "images").iterdir())[0])
    rec, table = _run(["--preset", "camvid", "--backend", "fused", "--weights-dir", str(weights_dir), "--images",
                       frame, "--repeats", "1", "--warmup", "0", "--no-render", "--camvid", str(split), "--quiet"],
                      tmp_path, capsys)
    assert rec["camvid_frames"] == 3
    assert abs(rec["camvid_val_miou_delta"]) <= 0.01
    assert rec["camvid_val_label_agreement"] >= 0.999
    assert "CamVid val mIoU" in table


def test_ros_mode_accounts_for_every_frame(weights_dir: Path, small_frames: list[Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    rec, table = _run(["--mode", "ros", "--preset", "camvid", "--backend", "fused", "--weights-dir",
                       str(weights_dir), "--images", *map(str, small_frames), "--repeats", "1", "--warmup", "0",
                       "--cameras", "2", "--rate", "4", "--duration", "2", "--ros-warmup", "0", "--quiet"],
                      tmp_path, capsys)
    assert set(rec) >= ROS_KEYS
    assert rec["frames_sent"] == 2 * 8
    assert rec["stamps_ok"], "a mask carried a stamp no frame was sent with"
    assert rec["lost_between_processes"] == 0 and rec["lost_after_node"] == 0
    assert rec["lost_in_transport"] == rec["replaced_in_input_queue"] == rec["lost_unexplained"] == 0
    assert rec["subscriber_heap_tuned"] == (os.environ.get("ESPNET_ROS_MALLOC_TUNING", "1").strip() != "0")
    assert rec["frames_answered"] + rec["dropped"] == rec["frames_sent"]
    for cam in rec["per_camera"]:
        assert cam["frames_answered"] >= 1
        assert cam["frames_received_by_node"] == cam["frames_sent"]
        assert cam["dropped_late"] >= 0 and cam["node_queue_wait_p50_ms"] >= 0
    assert rec["max_queue_delay"] == 0.02
    assert rec["node_segment_p50_ms"] > 0  # the node's own segmentation time, from /diagnostics
    assert rec["rss_start_mb"] > 0 and rec["rss_end_mb"] > 0
    assert np.isfinite(rec["e2e_p50_ms"]) and rec["e2e_p95_ms"] >= rec["e2e_p50_ms"]
    # receipt is when the bench's middleware had the mask; its Python callback runs after that
    assert rec["e2e_callback_p50_ms"] >= rec["e2e_p50_ms"] and rec["e2e_callback_p95_ms"] >= rec["e2e_p95_ms"]
    assert all(c["e2e_callback_p50_ms"] >= c["e2e_p50_ms"] for c in rec["per_camera"])
    # the pipeline is measured before and after the ROS phase; the overhead and the bound use the faster median
    assert rec["pipeline_before_ms"] == rec["fast_ms"] and rec["pipeline_after_ms"] > 0
    assert rec["pipeline_ros_ms"] == min(rec["pipeline_before_ms"], rec["pipeline_after_ms"])
    assert rec["overhead_p50_ms"] == pytest.approx(rec["e2e_p50_ms"] - rec["pipeline_ros_ms"])
    assert rec["e2e_p95_bound_ms"] == pytest.approx(1000.0 * rec["max_frame_age"] + 2 * rec["pipeline_ros_ms"])
    assert rec["node_exit_code"] == 0 and rec["player_exit_codes"] == [0, 0]
    assert "latency stamp" in table and "the bench's callback" in table
    assert "/cam1/image" in table and "pipeline before / after" in table


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "12"], "expected WIDTHxHEIGHT"),
        (["--repeats", "0"], "--repeats must be >= 1"),
        (["--backend", "turbo"], "unknown backend 'turbo'"),
        (["--device", "tpu"], "expected cpu or cuda"),
        (["--images", "/nonexistent/frame.png"], "/nonexistent/frame.png"),
    ],
)
def test_bad_options_exit_2_with_a_message(weights_dir: Path, small_frames: list[Path], args: list[str],
                                           message: str, capsys: pytest.CaptureFixture[str]) -> None:
    images = [] if "--images" in args else ["--images", str(small_frames[0])]
    assert bench.main(["--preset", "camvid", "--weights-dir", str(weights_dir), "--quiet", *images, *args]) == 2
    assert message in capsys.readouterr().err


def test_grid_mode_writes_the_timings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "grid.json"
    assert bench.main(["--mode", "grid", "--size", "256x128", "--grid-range", "10", "--repeats", "5",
                       "--json", str(out)]) == 0
    rec = json.loads(out.read_text())
    for key in ("first_ms", "median_ms", "p95_ms", "points_median_ms", "grid_cells", "mask_size"):
        assert key in rec, key
    assert rec["mask_size"] == [256, 128] and rec["grid_cells"] == [200, 200]
    assert rec["seen_cells"] > 0
    assert "per frame after the first" in capsys.readouterr().out


def test_answers_are_checked_against_what_the_camera_published(tmp_path: Path) -> None:
    # the camera process writes every stamp it published; the bench's own best-effort camera_info subscription may
    # miss one under load, and that frame's answer must still count as a known stamp
    stamps = tmp_path / "stamps0.txt"
    stamps.write_text("100\n200\n300\n")
    assert bench.published_stamps(stamps) == {100, 200, 300}
    assert bench.published_stamps(tmp_path / "missing.txt") == set()
    (tmp_path / "bad.txt").write_text("100\nnot a stamp\n")
    assert bench.published_stamps(tmp_path / "bad.txt") == set()
    seen_by_bench = {100, 300}
    answers = [(1.0, 100, "cam0"), (2.0, 200, "cam0"), (3.0, 300, "cam1"), (4.0, 400, "cam0")]
    assert bench.unknown_stamps(answers, seen_by_bench, "cam0") == [200, 300, 400]
    assert bench.unknown_stamps(answers, seen_by_bench | bench.published_stamps(stamps), "cam0") == [300, 400]


def test_pipeline_mode_measures_a_trained_model(weights_dir: Path, shared_dir: Path, small_frames: list[Path],
                                                tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--model`` measures a model folder from ``espnet-ros train`` instead of a preset (its name in the record)."""
    from espnet_ros.core.classes import load_class_file
    from espnet_ros.core.train import RECIPES, TrainConfig, train

    (tmp_path / "c.yaml").write_text(
        "name: five\nclasses:\n" + "".join(f"  - {{id: {i}, name: c{i}, color: [{i}, 0, 0]}}\n" for i in range(4))
        + "  - {id: 4, name: other, color: [9, 9, 9], void: true}\n")
    src = shared_dir / "camvid" / "train"
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for path in sorted((src / "images").glob("*.png"))[:2]:
        cv2.imwrite(str(images / path.name), cv2.resize(cv2.imread(str(path)), (96, 72)))
        lab = cv2.imread(str(src / "labels" / path.name), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(labels / path.name), np.minimum(cv2.resize(lab, (96, 72), interpolation=cv2.INTER_NEAREST), 4))
    best = train(TrainConfig(images=images, labels=labels, classes=load_class_file(tmp_path / "c.yaml"),
                             out=tmp_path / "run", init="camvid", recipe=RECIPES["quick"], epochs=1, max_batches=1,
                             network_size=(96, 72), batch_size=2, num_threads=1, weights_dir=weights_dir,
                             name="five")).best
    rec, _ = _run(["--mode", "pipeline", "--model", str(best), "--backend", "fused", "--images",
                   *map(str, small_frames), "--repeats", "1", "--warmup", "0"], tmp_path, capsys)
    assert rec["preset"] == "five" and rec["input_size"] == [96, 72] and rec["label_agreement"] >= 0.999
