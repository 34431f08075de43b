"""The in-process modes of ``espnet-ros bench``: the network alone per backend, the whole pipeline, CamVid mIoU.

Each measures, in the same process and on the same frames, the upstream recipe as written
(:class:`~espnet_ros.core.baseline.BaselinePipeline`: numpy preprocessing, eager fp32 NCHW network, ``argmax``,
numpy resize) against the fast path (:class:`~espnet_ros.core.segmenter.Segmenter` with its CPU backend),
interleaved, and reports medians, the speedup and the fraction of camera pixels whose label agrees.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from espnet_ros.bench.harness import U8, _bind, _interleaved, _med, _pct
from espnet_ros.core.baseline import BaselinePipeline, colorize_numpy, overlay_numpy

__all__ = ["measure_camvid", "measure_model", "measure_pipeline"]


def measure_model(
    seg: Any, base: BaselinePipeline, frame: U8, candidates: Sequence[str], repeats: int, warmup: int,
    *, cache_dir: str | None = None, quiet: bool = False,
) -> dict[str, Any]:
    """The network alone on a preprocessed tensor: baseline eager NCHW vs the Segmenter's backend and candidates.

    Every fast candidate includes the ``max`` over classes (it is part of its graph); the baseline is the forward
    pass only. Returns ``model_baseline_ms``, ``model_fast_ms``, ``model_speedup`` and ``model_candidates_ms``.
    """
    from espnet_ros.core.accel import BackendError, make_backend

    x_base = base.preprocess(frame)
    with torch.inference_mode():
        x_fast = seg.preprocess([frame], ["bgr"])
    fns: dict[str, Callable[[], object]] = {
        "baseline": lambda: base.logits(x_base),
        "fast": lambda: seg.forward_labels(x_fast),
    }
    unavailable: dict[str, str] = {}
    for name in candidates:
        if name in ("auto", seg.backend):
            continue
        try:
            b = make_backend(name, base.model, seg.preset, seg.input_size, cache=cache_dir)
        except BackendError as exc:
            unavailable[name] = str(exc)
            continue
        fns[name] = (lambda b=b: b.labels(x_fast))  # type: ignore[misc]
    with torch.inference_mode():
        times = _interleaved(fns, repeats, warmup, "model", quiet)
    cands = {seg.backend if k == "fast" else k: _med(v) for k, v in times.items() if k != "baseline"}
    rec: dict[str, Any] = {
        "model_baseline_ms": _med(times["baseline"]),
        "model_fast_ms": _med(times["fast"]),
        "model_candidates_ms": cands,
    }
    rec["model_speedup"] = rec["model_baseline_ms"] / rec["model_fast_ms"]
    if unavailable:
        rec["model_candidates_unavailable"] = unavailable
    return rec


def measure_pipeline(
    seg: Any, base: BaselinePipeline, frames: Sequence[tuple[str, U8]], repeats: int, warmup: int,
    *, render: bool = True, stages: bool = True, quiet: bool = False,
) -> dict[str, Any]:
    """Camera frame → class ids at camera resolution: baseline vs fast, interleaved; agreement; stages; rendering."""
    from espnet_ros.core.render import Renderer

    images = [img for _, img in frames]
    agreement = {}
    for name, img in frames:
        want = base(img)
        got = seg.segment(img).class_ids
        agreement[name] = float((want == got).mean())
    fns: dict[str, Callable[[], object]] = {}
    for i, img in enumerate(images):
        fns[f"baseline/{i}"] = _bind(base, img)
        fns[f"fast/{i}"] = _bind(seg.segment, img)
    times = _interleaved(fns, repeats, warmup, "pipeline", quiet)
    base_t = [t for k, v in times.items() if k.startswith("baseline/") for t in v]
    fast_t = [t for k, v in times.items() if k.startswith("fast/") for t in v]
    rec: dict[str, Any] = {
        "baseline_ms": _med(base_t),
        "fast_ms": _med(fast_t),
        "baseline_p95_ms": _pct(base_t, 0.95),
        "fast_p95_ms": _pct(fast_t, 0.95),
        "label_agreement": min(agreement.values()),
        "label_agreement_per_frame": agreement,
    }
    rec["speedup"] = rec["baseline_ms"] / rec["fast_ms"]
    img = images[0]
    size = (int(img.shape[1]), int(img.shape[0]))
    if stages:
        x_b = base.preprocess(img)
        with torch.inference_mode():
            logits_b = base.logits(x_b)
            ids_b = logits_b[0].argmax(0).to(torch.uint8).numpy()
            x_f = seg.preprocess([img], ["bgr"])
            ids_f = seg.forward_labels(x_f)[0].numpy()
        from espnet_ros.core.baseline import nearest_resize_numpy
        from espnet_ros.core.segmenter import resize_labels

        st = _interleaved({
            "baseline_preprocess": lambda: base.preprocess(img),
            "baseline_network": lambda: base.logits(x_b),
            "baseline_argmax": lambda: logits_b[0].argmax(0).to(torch.uint8).numpy(),
            "baseline_resize": lambda: nearest_resize_numpy(ids_b, size),
            "fast_preprocess": lambda: seg.preprocess([img], ["bgr"]),
            "fast_network_and_argmax": lambda: seg.forward_labels(x_f),
            "fast_resize": lambda: resize_labels(ids_f, size),
        }, max(3, repeats // 2), 1, "stages", quiet)
        rec["stages_ms"] = {k: _med(v) for k, v in st.items()}
    if render:
        renderer = Renderer(seg.labels)
        palette = seg.labels.palette_bgr()[: seg.labels.num_classes]
        ids = seg.segment(img).class_ids
        rt = _interleaved({
            "baseline": lambda: overlay_numpy(img, colorize_numpy(ids, palette)),
            "fast": lambda: renderer.class_overlay(img, ids),
            "fast_color_mask": lambda: renderer.colorize(ids),
        }, repeats, 1, "render", quiet)
        rec["render_baseline_ms"] = _med(rt["baseline"])
        rec["render_fast_ms"] = _med(rt["fast"])
        rec["render_fast_color_mask_ms"] = _med(rt["fast_color_mask"])
        rec["baseline_with_render_ms"] = rec["baseline_ms"] + rec["render_baseline_ms"]
        rec["fast_with_render_ms"] = rec["fast_ms"] + rec["render_fast_ms"]
        rec["speedup_with_render"] = rec["baseline_with_render_ms"] / rec["fast_with_render_ms"]
    return rec


def measure_camvid(seg: Any, base: BaselinePipeline, root: Path, quiet: bool = False) -> dict[str, Any]:
    """CamVid val mIoU (upstream and standard protocols) of the baseline and the fast path, and pixel agreement."""
    from espnet_ros.core.evaluate import ConfusionMatrix, find_pairs, read_label_map

    pairs = find_pairs(root / "images", root / "labels")
    k = seg.labels.num_classes
    cm_b, cm_f = ConfusionMatrix(k), ConfusionMatrix(k)
    equal = total = 0
    for img_path, label_path in tqdm(pairs, desc="camvid val", unit="frame", disable=quiet, leave=False):
        img = np.ascontiguousarray(cv2.imread(str(img_path)), dtype=np.uint8)
        gt = read_label_map(label_path)
        pb = base(img)
        pf = seg.segment(img).class_ids
        if pb.shape != gt.shape:
            from espnet_ros.core.segmenter import resize_labels

            pb = resize_labels(pb, (gt.shape[1], gt.shape[0]))
            pf = resize_labels(pf, (gt.shape[1], gt.shape[0]))
        cm_b.update(gt, pb)
        cm_f.update(gt, pf)
        equal += int((pb == pf).sum())
        total += pb.size
    rb, rf = cm_b.result(seg.labels, "upstream"), cm_f.result(seg.labels, "upstream")
    sb, sf = cm_b.result(seg.labels, "standard"), cm_f.result(seg.labels, "standard")
    return {
        "camvid_frames": len(pairs),
        "camvid_val_miou_baseline": rb.miou,
        "camvid_val_miou_fast": rf.miou,
        "camvid_val_miou_delta": rf.miou - rb.miou,
        "camvid_val_miou_standard_baseline": sb.miou,
        "camvid_val_miou_standard_fast": sf.miou,
        "camvid_val_label_agreement": equal / max(total, 1),
    }
