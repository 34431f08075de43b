"""``espnet-ros bench``: how fast the model, the whole pipeline and the ROS node are, measured against a baseline.

This module owns the benchmark tool (a tool, not a test). Every run measures, in the same process and on the same
frames, the upstream recipe as written (:class:`~espnet_ros.core.baseline.BaselinePipeline`: numpy preprocessing,
eager fp32 NCHW network, ``argmax``, numpy resize) and the fast path (:class:`~espnet_ros.core.segmenter.Segmenter`
with its CPU backend), interleaving the two so that a busy machine slows both alike, and reports medians, the
speedup and the fraction of camera pixels whose label agrees with the baseline. ``--mode model`` adds the network
alone on a preprocessed tensor for every CPU backend; ``pipeline`` adds the per-stage split and the colour mask and
overlay; ``ros`` runs image_player-style camera processes (one per camera, :func:`publisher_main`) and
``segmentation_node`` as subprocesses and listens in this process: latency from header stamp to receipt,
throughput, frames dropped by the node on purpose and lost between processes, stamps checked against the frames
sent, node RSS. ``--device cuda`` hands over to
:mod:`espnet_ros.bench_cuda`. It prints a table, writes JSON with ``--json`` and shows progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import torch
from tqdm import tqdm

from espnet_ros.core.baseline import BaselinePipeline, colorize_numpy, overlay_numpy
from espnet_ros.core.errors import EspnetRosError
from espnet_ros.core.memory import retain_freed_memory
from espnet_ros.scheduling import DEFAULT_MAX_QUEUE_DELAY

__all__ = ["BenchError", "format_table", "main", "measure_camvid", "measure_model", "measure_pipeline",
           "publisher_main", "run_ros"]

_log = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]
Progress = Callable[[str], None]

MODES = ("model", "pipeline", "ros", "all", "grid")


class BenchError(EspnetRosError):
    """The benchmark cannot run as asked (bad option, missing input, a ROS process that died)."""


# ------------------------------------------------------------------------------------------------------ helpers


def _pct(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values, np.float64), q * 100.0))


def _med(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise BenchError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 1920x1080") from None
    if w <= 0 or h <= 0:
        raise BenchError(f"--size {text!r}: width and height must be positive")
    return w, h


def _load_frames(paths: Sequence[str] | None, size: tuple[int, int] | None) -> list[tuple[str, U8]]:
    """``(name, (H, W, 3) uint8 BGR)`` for the given images (default: the sample frames), resized to ``size``."""
    from espnet_ros.core.frames import FrameSource, samples_dir

    frames = []
    for f in FrameSource(list(paths) if paths else [samples_dir()]):
        img = f.image
        if size is not None and (img.shape[1], img.shape[0]) != size:
            shrink = size[0] * size[1] < img.shape[0] * img.shape[1]
            img = np.asarray(cv2.resize(img, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR),
                             np.uint8)
        frames.append((f.stem, np.ascontiguousarray(img, dtype=np.uint8)))
        if len(frames) >= 64:
            break
    if not frames:
        raise BenchError("no frames to benchmark; pass --images")
    return frames


def _bind(fn: Callable[[U8], object], img: U8) -> Callable[[], object]:
    return lambda: fn(img)


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000.0


def _interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int, desc: str, quiet: bool
) -> dict[str, list[float]]:
    """Time every function ``repeats`` times, round-robin (order reversed every other round); ms per call."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    with tqdm(total=repeats * len(names), desc=desc, unit="run", disable=quiet, leave=False) as bar:
        for r in range(repeats):
            for name in names if r % 2 == 0 else reversed(names):
                times[name].append(_timed(fns[name]))
                bar.update(1)
    return times


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


# ---------------------------------------------------------------------------------------------- in-process modes


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


# ------------------------------------------------------------------------------------------------------ ROS mode


def _fastdds_profile(explicit: str | None) -> Path | None:
    """The shipped Fast DDS profile (installed share dir, else the source tree), ``explicit``, or None for 'none'."""
    if explicit is not None:
        if explicit.lower() == "none":
            return None
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise BenchError(f"--fastdds-profile {p} does not exist")
        return p
    try:
        from ament_index_python.packages import get_package_share_directory

        p = Path(get_package_share_directory("espnet_ros")) / "config" / "fastdds_shm.xml"
        if p.is_file():
            return p
    except (ImportError, LookupError, ValueError, OSError):  # not installed through ament (a source checkout)
        pass
    p = Path(__file__).resolve().parents[1] / "config" / "fastdds_shm.xml"
    if p.is_file():
        return p
    raise BenchError("cannot find config/fastdds_shm.xml (the shipped Fast DDS profile); pass --fastdds-profile "
                     "PATH, or --fastdds-profile none to run with Fast DDS defaults")


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return float("nan")


def _diag_value(values: Mapping[str, str], key: str) -> float:
    """A number from a /diagnostics key-value list (NaN when missing or not a number, e.g. ``n/a``)."""
    try:
        return float(values.get(key, "nan"))
    except ValueError:
        return float("nan")


def _stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


def _stamp_ns(stamp: Any) -> int:
    """A ``builtin_interfaces/Time`` as integer nanoseconds (how the bench keys frames)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def publisher_main(argv: Sequence[str]) -> int:
    """The bench's camera process: ``DIR NAMESPACE RATE COUNT [STAMPS_FILE]`` → publish COUNT frames of DIR at RATE Hz.

    Like ``image_player`` (bgr8 ``image`` and ``camera_info`` with one header, stamped at publish time, sensor-data
    QoS), but it waits until the node subscribes to ``image`` and two subscribers (node and bench) to
    ``camera_info`` before the first frame, so that every frame counts, and it keeps a fixed schedule. With
    STAMPS_FILE it writes there, at the end, every stamp it published (nanoseconds, one per line): the bench checks
    answers against that, not against the ``camera_info`` messages its own best-effort subscription happened to get.
    """
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image

    folder, namespace, rate, count = Path(argv[0]), argv[1], float(argv[2]), int(argv[3])
    stamps_file = Path(argv[4]) if len(argv) > 4 else None
    published: list[int] = []
    files = sorted(folder.glob("*.png"))
    rclpy.init()
    node = rclpy.create_node("bench_camera", namespace=namespace)
    try:
        image_pub = node.create_publisher(Image, "image", qos_profile_sensor_data)
        info_pub = node.create_publisher(CameraInfo, "camera_info", qos_profile_sensor_data)
        frame_id = namespace.strip("/") or "camera"
        msgs = []
        for f in files:
            img = np.ascontiguousarray(cv2.imread(str(f)), dtype=np.uint8)
            m = Image(encoding="bgr8", height=img.shape[0], width=img.shape[1], step=img.shape[1] * 3)
            m.header.frame_id = frame_id
            m.data = img.tobytes()
            info = CameraInfo(height=img.shape[0], width=img.shape[1], distortion_model="plumb_bob")
            info.header.frame_id = frame_id
            msgs.append((m, info))
        deadline = time.monotonic() + 120.0
        while image_pub.get_subscription_count() < 1 or info_pub.get_subscription_count() < 2:
            if time.monotonic() > deadline:
                node.get_logger().error("no subscribers after 120 s")
                return 1
            time.sleep(0.05)
        time.sleep(0.5)  # let the other side's matching settle too
        period = 1.0 / rate
        t0 = time.monotonic()
        for i in range(count):
            delay = t0 + i * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            m, info = msgs[i % len(msgs)]
            stamp = node.get_clock().now().to_msg()
            m.header.stamp = stamp
            info.header.stamp = stamp
            image_pub.publish(m)
            info_pub.publish(info)
            published.append(_stamp_ns(stamp))
        if stamps_file is not None:
            stamps_file.write_text("".join(f"{ns}\n" for ns in published))
        time.sleep(0.5)
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def published_stamps(path: Path) -> set[int]:
    """The stamps (ns) a bench camera process wrote to ``path`` at its end; empty if it wrote none."""
    try:
        return {int(line) for line in path.read_text().split()}
    except (OSError, ValueError):
        return set()


def unknown_stamps(answers: Sequence[tuple[Any, ...]], known: set[int], frame_id: str) -> list[int]:
    """Stamps of ``(receipt time, stamp ns, frame_id, ...)`` answers that match no published frame of that camera."""
    return [a[1] for a in answers if a[1] not in known or a[2] != frame_id]


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_ros(
    *,
    preset: str,
    frames: Sequence[tuple[str, U8]],
    cameras: int,
    rate: float,
    duration: float,
    max_frame_age: float,
    pipeline_ms: float,
    max_queue_delay: float | None = None,
    warmup_s: float,
    threads: int | None = None,
    backend: str = "auto",
    weights_dir: str | None = None,
    cache_dir: str | None = None,
    fastdds_profile: str | None = None,
    input_qos: str = "sensor_data",
    startup_timeout: float = 600.0,
    quiet: bool = False,
) -> dict[str, Any]:
    """End to end through ROS: ``cameras`` camera processes → segmentation_node → this process.

    Each camera process (:func:`publisher_main`) publishes ``rate * duration`` frames (bgr8, the given frames in
    turn, stamped at publish time) on ``/camK/image`` and ``/camK/camera_info`` once the node and this process
    have subscribed. This process records the stamps sent (from ``camera_info``, same
    header as the image), receives ``/camK/segmentation/class_mask`` and reads the node's counters from
    ``/diagnostics``. Latency is receipt time minus header stamp (same host clock; receipt is the middleware's
    reception time of the mask in this process, and the time its Python callback ran gives ``e2e_callback_*``),
    over masks received more than
    ``warmup_s`` seconds after the first one; ``rss_start_mb`` is the node's RSS at that moment, ``rss_end_mb``
    when the cameras have finished. Frames lost between processes are those sent but never received by the node;
    the node's diagnostics split them: ``lost_in_transport`` (the middleware's message-lost count),
    ``replaced_in_input_queue`` (gaps in the camera's sequence numbers that were not lost in transport: replaced in
    the node's keep-last input queue while it was busy) and ``lost_unexplained`` (the rest, e.g. frames lost before
    the first or after the last frame the node received, which no gap reveals).
    """
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from rclpy.subscription import Subscription
    from sensor_msgs.msg import CameraInfo, Image

    if cameras < 1 or rate <= 0 or duration <= 0:
        raise BenchError("ros mode needs --cameras >= 1, --rate > 0 and --duration > 0")
    count = max(1, round(rate * duration))
    # This process is the subscriber. Like the node, it keeps freed heap blocks for reuse: otherwise glibc maps fresh
    # pages for every received mask and the take itself page-faults (2048x1024 mono8: 4.5 ms per take untuned,
    # 1.2 ms tuned, measured here), which would count the listener's own heap against the node. (The pipeline
    # windows before the ROS phase, the ones the speedup comes from, run untuned like the upstream recipe.)
    subscriber_heap_tuned = retain_freed_memory()
    domain = random.SystemRandom().randint(1, 101)
    profile = _fastdds_profile(fastdds_profile)
    ros_env = {"ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    if profile is not None:
        ros_env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    saved = {k: os.environ.get(k) for k in (*ros_env, "FASTDDS_DEFAULT_PROFILES_FILE")}
    os.environ.update(ros_env)
    if profile is None:
        os.environ.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    child_env = dict(os.environ, PYTHONUNBUFFERED="1")
    if weights_dir:
        child_env["ESPNET_ROS_WEIGHTS_DIR"] = weights_dir
    if cache_dir:
        child_env["ESPNET_ROS_CACHE_DIR"] = cache_dir
    if backend != "auto":
        child_env["ESPNET_ROS_BACKEND"] = backend
    topics = [f"/cam{k}/image" for k in range(cameras)]
    tmp = Path(tempfile.mkdtemp(prefix="espnet_ros_bench_"))
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    ctx = Context()
    rclpy.init(context=ctx, domain_id=domain)
    listener = Node("espnet_ros_bench", context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(listener)
    sent: list[dict[int, float]] = [{} for _ in range(cameras)]
    # (receipt, stamp ns, frame_id, callback time): receipt is when this process's middleware received the mask
    # (rmw's reception timestamp, system clock, like the stamps), the callback time when the Python callback ran
    answered: list[list[tuple[float, int, str, float]]] = [[] for _ in range(cameras)]
    diag: dict[str, dict[str, str]] = {}
    diag_time = [0.0]

    def on_info(k: int) -> Callable[[Any], None]:
        def cb(msg: Any) -> None:
            sent[k][_stamp_ns(msg.header.stamp)] = time.time()
        return cb

    def on_mask(k: int) -> Callable[..., None]:
        def cb(msg: Any, info: Any) -> None:  # two parameters: rclpy passes MessageInfo (a default would stop it)
            now = time.time()
            received_ns = info.get("received_timestamp", 0) if info is not None else 0
            receipt = received_ns * 1e-9 if isinstance(received_ns, int) and received_ns > 0 else now
            if not 0.0 <= now - receipt <= 10.0:  # no reception time, or a stepped clock: the callback's time
                receipt = now
            answered[k].append((receipt, _stamp_ns(msg.header.stamp), str(msg.header.frame_id), now))
        return cb

    def on_diag(msg: Any) -> None:
        for st in msg.status:
            diag[str(st.name)] = {str(kv.key): str(kv.value) for kv in st.values}
        diag_time[0] = time.monotonic()

    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    message_info = hasattr(Subscription, "CallbackType")  # rclpy >= Iron passes MessageInfo to 2-argument callbacks
    for k in range(cameras):
        listener.create_subscription(CameraInfo, f"/cam{k}/camera_info", on_info(k), qos_profile_sensor_data)
        mask_cb = on_mask(k)
        listener.create_subscription(Image, f"/cam{k}/segmentation/class_mask",
                                     mask_cb if message_info else (lambda m, cb=mask_cb: cb(m, None)), reliable)
    listener.create_subscription(DiagnosticArray, "/diagnostics", on_diag, reliable)
    rss: list[tuple[float, float]] = []
    try:
        for k in range(cameras):
            d = tmp / f"cam{k}"
            d.mkdir()
            for i in range(len(frames)):
                _, img = frames[(i + k) % len(frames)]
                cv2.imwrite(str(d / f"{i:04d}.png"), img)
        node_cmd = [sys.executable, "-m", "espnet_ros.segmentation_node", "--ros-args",
                    "-p", f"preset:={preset}", "-p", "device:=cpu", "-p", f"cameras:=[{','.join(topics)}]",
                    "-p", f"max_frame_age:={float(max_frame_age)}", "-p", f"input_qos:={input_qos}"]
        if max_queue_delay is not None:
            node_cmd += ["-p", f"max_queue_delay:={float(max_queue_delay)}"]
        if threads:
            node_cmd += ["-p", f"num_threads:={int(threads)}"]
        logs.append(tmp / "node.log")
        with logs[-1].open("wb") as log:
            node = subprocess.Popen(node_cmd, env=child_env, stdout=log, stderr=subprocess.STDOUT)
        procs.append(node)
        deadline = time.monotonic() + startup_timeout
        with tqdm(desc="node start (first start compiles)", unit="s", disable=quiet, leave=False) as bar:
            while not any("segmentation" in name for name in diag):
                executor.spin_once(timeout_sec=0.2)
                bar.update(0)
                if node.poll() is not None:
                    raise BenchError(f"segmentation_node exited with {node.returncode}:\n{_tail(logs[0])}")
                if time.monotonic() > deadline:
                    raise BenchError(f"segmentation_node did not start within {startup_timeout:.0f} s:\n"
                                     f"{_tail(logs[0])}")
        rss_idle = _rss_mb(node.pid)
        players = []
        for k in range(cameras):
            logs.append(tmp / f"camera{k}.log")
            with logs[-1].open("wb") as log:
                players.append(subprocess.Popen(
                    [sys.executable, "-m", "espnet_ros.bench", "_publish", str(tmp / f"cam{k}"), f"/cam{k}",
                     str(float(rate)), str(count), str(tmp / f"stamps{k}.txt")],
                    env=child_env, stdout=log, stderr=subprocess.STDOUT))
        procs += players
        t_start = time.monotonic()
        rss_start = float("nan")
        t_warm: float | None = None  # warm-up ends warmup_s after the first answer
        next_sample = t_start
        players_done_at: float | None = None
        grace = 3.0 + 3.0 * pipeline_ms / 1000.0 * cameras
        hard_end = t_start + duration * 3.0 + 120.0
        with tqdm(total=round(duration), desc=f"ros {cameras} cam x {rate:g} Hz", unit="s", disable=quiet,
                  leave=False) as bar:
            while True:
                executor.spin_once(timeout_sec=0.05)
                now = time.monotonic()
                if now >= next_sample:
                    rss.append((now - t_start, _rss_mb(node.pid)))
                    next_sample = now + 0.5
                    bar.n = min(round(duration), round(now - t_start))
                    bar.set_postfix(answered=sum(len(a) for a in answered), rss_mb=f"{rss[-1][1]:.0f}")
                    bar.refresh()
                if t_warm is None and any(answered):
                    t_warm = now + warmup_s
                if t_warm is not None and rss_start != rss_start and now >= t_warm:  # NaN until then
                    rss_start = _rss_mb(node.pid)
                if node.poll() is not None:
                    raise BenchError(f"segmentation_node died during the run (exit {node.returncode}):\n"
                                     f"{_tail(logs[0])}")
                if players_done_at is None and all(p.poll() is not None for p in players):
                    players_done_at = now
                if players_done_at is not None and now - players_done_at > grace:
                    break
                if any(p.poll() not in (None, 0) for p in players):
                    bad = next(i for i, p in enumerate(players) if p.poll() not in (None, 0))
                    raise BenchError(f"camera process {bad} failed:\n{_tail(logs[bad + 1])}")
                if now > hard_end:
                    raise BenchError("the camera processes did not finish in time; see their logs in " + str(tmp))
        rss_end = _rss_mb(node.pid)
        want = time.monotonic()
        while diag_time[0] < want + 0.05 and time.monotonic() < want + 5.0:
            executor.spin_once(timeout_sec=0.1)
        node_rc = _stop(node)
    finally:
        for p in procs:
            _stop(p)
        executor.shutdown()
        listener.destroy_node()
        ctx.try_shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    player_rcs = [p.returncode for p in players]
    lat_all: list[float] = []
    lat_cb_all: list[float] = []
    per_cam: list[dict[str, Any]] = []
    first_answer = min((a[0][0] for a in answered if a), default=time.time())
    t_warm_wall = first_answer + warmup_s
    stamps_ok = True
    unknown_total = 0
    for k in range(cameras):
        name = next((n for n in diag if n.endswith(f"camera {topics[k]}")), None)
        counters = diag.get(name, {}) if name else {}

        def num(key: str, counters: dict[str, str] = counters) -> int:
            value = _diag_value(counters, key)
            return int(value) if value == value else 0

        # the stamps the camera says it published, and those the bench's camera_info subscription saw (best
        # effort, like the camera: under load it can miss one, which must not make that frame's answer "unknown")
        unknown = unknown_stamps(answered[k], set(sent[k]) | published_stamps(tmp / f"stamps{k}.txt"), f"cam{k}")
        stamps_ok = stamps_ok and not unknown
        unknown_total += len(unknown)
        lat = [(t - s / 1e9) * 1000.0 for t, s, _, _ in answered[k] if t >= t_warm_wall]
        lat_all += lat
        lat_cb = [(c - s / 1e9) * 1000.0 for t, s, _, c in answered[k] if t >= t_warm_wall]
        lat_cb_all += lat_cb
        received, superseded, stale = num("frames received"), num("frames dropped (superseded)"), \
            num("frames dropped (stale)")
        late = num("frames dropped (late)")
        published = num("frames published")
        lost = max(0, count - received)
        lost_transport = num("frames lost in transport")
        replaced = max(0, num("frames missed upstream (sequence gaps)") - lost_transport)

        span = (max(sent[k].values()) - min(sent[k].values())) if len(sent[k]) > 1 else float("nan")
        per_cam.append({
            "topic": topics[k], "frames_sent": count, "frames_seen_by_bench": len(sent[k]),
            "frames_received_by_node": received, "dropped_superseded": superseded, "dropped_late": late,
            "dropped_stale": stale,
            "frames_published": published, "frames_answered": len(answered[k]),
            "lost_between_processes": lost, "lost_after_node": max(0, published - len(answered[k])),
            "lost_in_transport": lost_transport, "replaced_in_input_queue": replaced,
            "lost_unexplained": max(0, lost - lost_transport - replaced),
            "answered_with_unknown_stamp": len(unknown), "e2e_p50_ms": _pct(lat, 0.5), "e2e_p95_ms": _pct(lat, 0.95),
            "e2e_callback_p50_ms": _pct(lat_cb, 0.5),
            "node_latency_p50_ms": _diag_value(counters, "latency p50 (ms)"),
            "node_latency_p95_ms": _diag_value(counters, "latency p95 (ms)"),
            "node_queue_wait_p50_ms": _diag_value(counters, "queue wait p50 (ms)"),
            "answer_rate_hz": len(answered[k]) / span if span == span and span > 0 else float("nan"),
            "publish_rate_hz": (len(sent[k]) - 1) / span if span == span and span > 0 else float("nan"),
        })
    rss_vals = [v for _, v in rss if v == v]
    rec: dict[str, Any] = {
        "ros_cameras": cameras, "ros_rate_hz": rate, "ros_duration_s": duration, "max_frame_age": max_frame_age,
        "max_queue_delay": DEFAULT_MAX_QUEUE_DELAY if max_queue_delay is None else max_queue_delay,
        "ros_warmup_s": warmup_s, "fastdds_profile": str(profile) if profile else None,
        "frames_sent": count * cameras,
        "frames_answered": sum(c["frames_answered"] for c in per_cam),
        "dropped": sum(c["dropped_superseded"] + c["dropped_late"] + c["dropped_stale"] for c in per_cam),
        "lost_between_processes": sum(c["lost_between_processes"] for c in per_cam),
        "lost_after_node": sum(c["lost_after_node"] for c in per_cam),
        "lost_in_transport": sum(c["lost_in_transport"] for c in per_cam),
        "replaced_in_input_queue": sum(c["replaced_in_input_queue"] for c in per_cam),
        "lost_unexplained": sum(c["lost_unexplained"] for c in per_cam),
        "stamps_ok": stamps_ok, "answers_with_unknown_stamp": unknown_total,
        "e2e_p50_ms": _pct(lat_all, 0.5), "e2e_p95_ms": _pct(lat_all, 0.95),
        "e2e_max_ms": max(lat_all) if lat_all else float("nan"),
        "e2e_callback_p50_ms": _pct(lat_cb_all, 0.5), "e2e_callback_p95_ms": _pct(lat_cb_all, 0.95),
        "throughput_hz": sum(c["answer_rate_hz"] for c in per_cam if c["answer_rate_hz"] == c["answer_rate_hz"]),
        "rss_idle_mb": rss_idle, "rss_start_mb": rss_start, "rss_end_mb": rss_end,
        "rss_max_mb": max(rss_vals) if rss_vals else float("nan"),
        "rss_series_mb": [[round(t, 1), round(v, 1)] for t, v in rss[:: max(1, len(rss) // 120)]],
        "node_exit_code": node_rc, "player_exit_codes": player_rcs, "per_camera": per_cam,
        "subscriber_heap_tuned": subscriber_heap_tuned,
    }
    node_status = next((v for n, v in diag.items() if n.endswith(": segmentation")), {})
    rec["node_segment_p50_ms"] = _diag_value(node_status, "segmentation time p50 (ms)")
    rec["overhead_p50_ms"] = rec["e2e_p50_ms"] - pipeline_ms
    rec["e2e_p95_bound_ms"] = max_frame_age * 1000.0 + 2.0 * pipeline_ms
    failed = node_rc != 0 or any(rc != 0 for rc in player_rcs)
    if failed:  # keep what explains it
        print(f"segmentation_node exited with {node_rc}, cameras with {player_rcs}; logs kept in {tmp}; the "
              f"node's last lines:\n{_tail(logs[0])}", file=sys.stderr)
    elif os.environ.get("ESPNET_ROS_BENCH_KEEP"):
        print(f"bench logs kept in {tmp}", file=sys.stderr)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return rec


# ------------------------------------------------------------------------------------------------------- output


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


# ------------------------------------------------------------------------------------------------------ command


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
    ap.add_argument("--grid-resolution", type=float, default=0.1, help="grid: cell side in metres (default 0.1)")
    ap.add_argument("--grid-range", type=float, default=20.0, help="grid: reach in metres (default 20)")
    ap.add_argument("--device", default="cpu", help="cpu (this tool) or cuda[:N] (handed to bench_cuda)")
    ap.add_argument("--backend", default="auto", help="CPU backend of the fast path: auto, eager, fused, compiled, "
                    "onnxruntime (default auto)")
    ap.add_argument("--candidates", default="eager,fused,compiled,onnxruntime",
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
    from espnet_ros import bench_cuda

    argv = ["--preset", args.preset, "--device", args.device, "--repeats", str(args.repeats),
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
    seg = Segmenter(args.preset, weights_dir=args.weights_dir, device="cpu", backend=args.backend,
                    cache_dir=args.cache_dir)
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
            preset=args.preset, frames=frames, cameras=args.cameras, rate=args.rate, duration=args.duration,
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


if __name__ == "__main__":
    raise SystemExit(main())
