"""The report of ``espnet-ros bench``: a bench record as a plain-text table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["format_table"]


def _f(value: Any, digits: int = 1) -> str:
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.{digits}f}"
    return str(value)


def format_table(rec: dict[str, Any]) -> str:
    """A plain-text table of a bench record."""
    rows: list[tuple[str, str]] = [
        ("device / threads", f"{rec['device']} ({rec['cpu']}) / {rec['threads']} torch threads"),
        ("preset / network input / frames", f"{rec['preset']} / {rec['input_size'][0]}x{rec['input_size'][1]} / "
         f"{rec['frames']} x {rec['frame_size'][0]}x{rec['frame_size'][1]}"),
        ("fast path", f"backend {rec['backend']}, torch {rec['torch']}"),
    ]
    if "model_fast_ms" in rec:
        rows.append(("model only (ms, median)", f"{_f(rec['model_fast_ms'])} vs baseline eager NCHW "
                     f"{_f(rec['model_baseline_ms'])}  ({_f(rec['model_speedup'], 2)}x)"))
        for name, ms in rec["model_candidates_ms"].items():
            rows.append((f"  backend {name}", f"{_f(ms)} ms"))
        for name, why in rec.get("model_candidates_unavailable", {}).items():
            rows.append((f"  backend {name}", f"unavailable: {why}"))
    if "fast_ms" in rec:
        rows += [
            ("pipeline frame → ids (ms, median)", f"{_f(rec['fast_ms'])} (p95 {_f(rec['fast_p95_ms'])}) vs baseline "
             f"{_f(rec['baseline_ms'])} (p95 {_f(rec['baseline_p95_ms'])})"),
            ("speedup", f"{_f(rec['speedup'], 2)}x"),
            ("label agreement with baseline", f"{rec['label_agreement']:.6f} (worst frame)"),
        ]
        if "stages_ms" in rec:
            s = rec["stages_ms"]
            rows.append(("  baseline stages (ms)", f"preprocess {_f(s['baseline_preprocess'])}, network "
                         f"{_f(s['baseline_network'])}, argmax {_f(s['baseline_argmax'])}, resize "
                         f"{_f(s['baseline_resize'])}"))
            rows.append(("  fast stages (ms)", f"preprocess {_f(s['fast_preprocess'])}, network+argmax "
                         f"{_f(s['fast_network_and_argmax'])}, resize {_f(s['fast_resize'])}"))
        if "render_fast_ms" in rec:
            rows.append(("with colour mask + overlay (ms)", f"{_f(rec['fast_with_render_ms'])} vs "
                         f"{_f(rec['baseline_with_render_ms'])}  ({_f(rec['speedup_with_render'], 2)}x; render "
                         f"{_f(rec['render_fast_ms'], 2)} vs {_f(rec['render_baseline_ms'], 2)})"))
    if "camvid_val_miou_fast" in rec:
        rows.append(("CamVid val mIoU baseline → fast", f"{rec['camvid_val_miou_baseline']:.3f} → "
                     f"{rec['camvid_val_miou_fast']:.3f} ({rec['camvid_val_miou_delta']:+.4f}); pixels agree "
                     f"{rec['camvid_val_label_agreement']:.6f}"))
    if "e2e_p50_ms" in rec:
        profile = f"profile {Path(rec['fastdds_profile']).name}" if rec["fastdds_profile"] else "Fast DDS defaults"
        rows += [
            ("ros", f"{rec['ros_cameras']} camera(s) x {rec['ros_rate_hz']:g} Hz x {rec['ros_duration_s']:g} s, "
             f"max_frame_age {rec['max_frame_age']:g} s, max_queue_delay {rec['max_queue_delay']:g} s, {profile}"),
            ("  latency stamp → receipt (ms)", f"p50 {_f(rec['e2e_p50_ms'])}, p95 {_f(rec['e2e_p95_ms'])}, max "
             f"{_f(rec['e2e_max_ms'])} (p95 bound {_f(rec['e2e_p95_bound_ms'])}); receipt: the subscriber's "
             "middleware has the mask"),
            ("  stamp → the bench's callback (ms)", f"p50 {_f(rec.get('e2e_callback_p50_ms'))}, p95 "
             f"{_f(rec.get('e2e_callback_p95_ms'))} (adds this Python process's take and scheduling)"),
            ("  overhead p50 (e2e - pipeline)", f"{_f(rec['overhead_p50_ms'])} ms (segmentation in the node: p50 "
             f"{_f(rec['node_segment_p50_ms'])} ms)"),
        ]
        if "pipeline_ros_ms" in rec:
            rows.append(("  pipeline before / after (ms)", f"{_f(rec['pipeline_before_ms'])} / "
                         f"{_f(rec['pipeline_after_ms'])}: the faster, {_f(rec['pipeline_ros_ms'])}, used for the "
                         "overhead and the bound"))
        rows += [
            ("  frames sent / answered", f"{rec['frames_sent']} / {rec['frames_answered']} "
             f"({_f(rec['throughput_hz'])} Hz answered)"),
            ("  dropped by node / lost", f"{rec['dropped']} on purpose; {rec['lost_between_processes']} between "
             f"processes ({rec['replaced_in_input_queue']} replaced in the node's input queue, "
             f"{rec['lost_in_transport']} lost in transport, {rec['lost_unexplained']} neither), "
             f"{rec['lost_after_node']} after the node; "
             f"stamps {'ok' if rec['stamps_ok'] else 'WRONG'}"),
            ("  node RSS (MB)", f"idle {_f(rec['rss_idle_mb'])}, start {_f(rec['rss_start_mb'])}, end "
             f"{_f(rec['rss_end_mb'])}, max {_f(rec['rss_max_mb'])}"),
        ]
        for c in rec["per_camera"]:
            rows.append((f"  {c['topic']}", f"sent {c['frames_sent']}, node got {c['frames_received_by_node']}, "
                         f"superseded {c['dropped_superseded']}, late {c['dropped_late']}, stale {c['dropped_stale']}, "
                         f"answered "
                         f"{c['frames_answered']} ({_f(c['answer_rate_hz'])} Hz), p50 {_f(c['e2e_p50_ms'])} ms "
                         f"(stamp → node publish {_f(c['node_latency_p50_ms'])} ms)"))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
