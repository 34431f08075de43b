"""The ROS mode of ``espnet-ros bench``: camera processes → ``segmentation_node`` → this process, end to end.

:func:`run_ros` starts image_player-style camera processes (one per camera, :func:`publisher_main`) and
``segmentation_node`` as subprocesses and listens in this process: latency from header stamp to receipt,
throughput, frames dropped by the node on purpose and lost between processes, stamps checked against the frames
sent, node RSS.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from espnet_ros.bench.harness import U8, BenchError, _pct
from espnet_ros.core.memory import retain_freed_memory
from espnet_ros.scheduling import DEFAULT_MAX_QUEUE_DELAY
from espnet_ros.transport import PROFILE_VARIABLES, TransportError, profile_variables, shipped_profile

__all__ = ["published_stamps", "publisher_main", "run_ros", "unknown_stamps"]


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
        return shipped_profile()
    except TransportError as exc:
        raise BenchError(f"{exc}; or pass --fastdds-profile PATH, or --fastdds-profile none to run with Fast DDS "
                         "defaults") from None


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
    model: str | None = None,
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
    from sensor_msgs.msg import CameraInfo, Image

    from espnet_ros.diagnostics import DiagKey
    from espnet_ros.ros_compat import MESSAGE_INFO_CALLBACKS

    if cameras < 1 or rate <= 0 or duration <= 0:
        raise BenchError("ros mode needs --cameras >= 1, --rate > 0 and --duration > 0")
    count = max(1, round(rate * duration))
    # This process is the subscriber. Like the node, it keeps freed heap blocks for reuse: otherwise glibc maps fresh
    # pages for every received mask and the take itself page-faults, which would count the listener's own heap
    # against the node. (The pipeline windows before the ROS phase, the ones the speedup comes from, run untuned like
    # the upstream recipe.)
    subscriber_heap_tuned = retain_freed_memory()
    domain = random.SystemRandom().randint(1, 101)
    profile = _fastdds_profile(fastdds_profile)
    ros_env = {"ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    if profile is not None:
        ros_env.update(dict.fromkeys(profile_variables(), str(profile)))
    saved = {k: os.environ.get(k) for k in (*ros_env, *PROFILE_VARIABLES.values())}
    os.environ.update(ros_env)
    if profile is None:
        for variable in PROFILE_VARIABLES.values():
            os.environ.pop(variable, None)
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
    message_info = MESSAGE_INFO_CALLBACKS
    for k in range(cameras):
        listener.create_subscription(CameraInfo, f"/cam{k}/camera_info", on_info(k), qos_profile_sensor_data)
        mask_cb = on_mask(k)
        listener.create_subscription(Image, f"/cam{k}/segmentation/class_mask",
                                     mask_cb if message_info else partial(mask_cb, info=None), reliable)
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
                    "-p", f"preset:={preset}", *(["-p", f"model:={model}"] if model else []), "-p", "device:=cpu",
                    "-p", f"cameras:=[{','.join(topics)}]",
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
        received, superseded, stale = num(DiagKey.RECEIVED), num(DiagKey.DROPPED_SUPERSEDED), \
            num(DiagKey.DROPPED_STALE)
        late = num(DiagKey.DROPPED_LATE)
        published = num(DiagKey.PUBLISHED)
        lost = max(0, count - received)
        lost_transport = num(DiagKey.LOST_IN_TRANSPORT)
        replaced = max(0, num(DiagKey.MISSED_UPSTREAM) - lost_transport)

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
            "node_latency_p50_ms": _diag_value(counters, DiagKey.LATENCY_P50),
            "node_latency_p95_ms": _diag_value(counters, DiagKey.LATENCY_P95),
            "node_queue_wait_p50_ms": _diag_value(counters, DiagKey.QUEUE_WAIT_P50),
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
    rec["node_segment_p50_ms"] = _diag_value(node_status, DiagKey.SEGMENTATION_P50)
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
