"""segmentation_node and image_player as separate processes (their real ``main()``), talking over DDS.

The test process only listens. Every process gets the test's random ROS_DOMAIN_ID and localhost-only discovery.
Processes are stopped as a terminal does (SIGINT), and killed if they hang (:mod:`espnet_ros.processes`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from node_harness import RELIABLE, WEIGHTS_DIR, textured
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from espnet_ros.diagnostics import DiagKey
from espnet_ros.processes import stop_process
from espnet_ros.transport import PROFILE_VARIABLES, profile_environment, profile_variables

TIMEOUT = 90.0


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["ESPNET_ROS_WEIGHTS_DIR"] = str(WEIGHTS_DIR)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _start(module: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", module, *args], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    stopped = stop_process(proc)
    return stopped.returncode, stopped.output


@pytest.fixture
def frame_file(tmp_path: Path) -> Path:
    path = tmp_path / "frame.png"
    assert cv2.imwrite(str(path), textured(240, 320))
    return path


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        _stop(p)


def test_node_and_player_processes_talk(
    ros_context: Context, frame_file: Path, processes: list[subprocess.Popen[str]]
) -> None:
    node = _start("espnet_ros.segmentation_node", "--ros-args", "-r", "__ns:=/front", "-p", "preset:=camvid",
                  "-p", "device:=cpu", "-p", "num_threads:=1", "-p", "input_qos:=reliable")
    player = _start("espnet_ros.image_player", str(frame_file), "--ros-args", "-r", "__ns:=/front",
                    "-p", "rate:=5.0", "-p", "qos:=reliable", "-p", "frame_id:=front_camera")
    processes += [node, player]
    listener = Node("listener", context=ros_context)
    masks: list[Image] = []
    overlays: list[Image] = []
    infos: list[CameraInfo] = []
    listener.create_subscription(Image, "/front/segmentation/class_mask", masks.append, RELIABLE)
    listener.create_subscription(Image, "/front/segmentation/drivable_overlay", overlays.append, RELIABLE)
    listener.create_subscription(CameraInfo, "/front/segmentation/camera_info", infos.append, RELIABLE)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(listener)
    try:
        deadline = time.monotonic() + TIMEOUT
        while (len(masks) < 3 or not overlays or not infos) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
            assert node.poll() is None and player.poll() is None, "a process died"
        assert len(masks) >= 3 and overlays and infos, (len(masks), len(overlays), len(infos))
        for m in masks:
            assert (m.encoding, m.width, m.height, m.header.frame_id) == ("mono8", 320, 240, "front_camera")
        assert overlays[-1].encoding == "bgr8"
        assert (infos[-1].width, infos[-1].height, infos[-1].header.frame_id) == (320, 240, "front_camera")
    finally:
        executor.shutdown()
        listener.destroy_node()
    rc, out = _stop(node)
    assert rc == 0, out  # Ctrl-C: the worker stops, the node is destroyed, exit 0
    assert "segmenting 1 camera(s)" in out and "/front/image -> /front/segmentation" in out


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["-p", "preset:=nope"], ["preset='nope' is not a known preset"]),
        (["-p", "overlay_alpha:=7.0"], ["overlay_alpha", "[0.0, 1.0]"]),
        (["-p", "device:=tpu"], ["device='tpu'"]),
        (["-p", "preset:=camvid", "-p", "weights_dir:=/nonexistent"], ["not found", "download-weights camvid"]),
    ],
)
def test_bad_configuration_exits_non_zero_with_the_message(
    ros_env: int, args: list[str], words: list[str]
) -> None:
    proc = subprocess.run([sys.executable, "-m", "espnet_ros.segmentation_node", "--ros-args", *args],
                          env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert "cannot start" in out
    for w in words:
        assert w in out
    assert "Traceback" not in out


def test_fastdds_profile_carries_full_size_frames_best_effort(ros_context: Context, samples_dir: Path,
                                                              processes: list[subprocess.Popen[str]]) -> None:
    """With the profile that espnet_ros.transport sets, every 2048x1024 best-effort frame reaches another process.

    Without it (or with it under a name the installed Fast DDS does not read), Fast DDS's 512 KiB shared-memory
    segment loses nearly all of them (0 of 100 in a run here), so this test fails. The player starts once the node
    reports; only the first frames, published before the two processes have matched, may be missed. The node's input
    queue holds every frame, so a busy node replaces none of them. The count comes
    from the node's own /diagnostics, small messages that need no profile in this test process.
    """
    count = 12
    env = dict(_env(), **profile_environment())
    common = {"env": env, "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    node = subprocess.Popen([sys.executable, "-m", "espnet_ros.segmentation_node", "--ros-args",
                             "-p", "preset:=cityscapes-c-p2q3", "-p", "device:=cpu", "-p", "num_threads:=1",
                             "-p", f"input_qos:=sensor_data:{count}"],  # deep enough that no frame is replaced
                            **common)  # type: ignore[call-overload]
    processes.append(node)
    listener = Node("listener", context=ros_context)
    received: list[int] = []
    last: dict[str, str] = {}

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for st in msg.status:
            if st.hardware_id == "/image":
                last.update({kv.key: kv.value for kv in st.values})
                received.append(int(last["frames received"]))

    listener.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(listener)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not received and time.monotonic() < deadline:  # the node is up and reporting
            executor.spin_once(timeout_sec=0.1)
        player = subprocess.Popen([sys.executable, "-m", "espnet_ros.image_player", str(samples_dir), "--ros-args",
                                   "-p", "rate:=2.0", "-p", f"count:={count}"],
                                  **common)  # type: ignore[call-overload]
        processes.append(player)
        deadline = time.monotonic() + TIMEOUT  # the node's start (a cold compile) must not eat the frames' time

        def all_arrived() -> bool:
            # frames the player sent before the two processes matched are counted by the node as sent before the
            # first received; every later frame must arrive (without the profile nearly none do)
            early = int(last.get(DiagKey.MISSED_BEFORE_FIRST, "0"))
            return bool(received) and received[-1] >= max(count // 2, count - 2 - early)

        while not all_arrived() and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        assert all_arrived(), (last, _stop(player)[1][-2000:])
    finally:
        executor.shutdown()
        listener.destroy_node()


class _Group:
    """Processes started in one new process group, as a terminal or ``ros2 launch`` runs them; output collected."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = _env() if env is None else env
        self.procs: list[subprocess.Popen[str]] = []
        self.output: dict[int, list[str]] = {}

    def start(self, module: str, *args: str) -> subprocess.Popen[str]:
        pgid = {"process_group": self.procs[0].pid} if self.procs else {"process_group": 0}
        proc = subprocess.Popen([sys.executable, "-m", module, *args], env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, **pgid)
        lines: list[str] = []
        self.output[proc.pid] = lines
        assert proc.stdout is not None
        threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()  # type: ignore[arg-type]
        self.procs.append(proc)
        return proc

    def text(self, proc: subprocess.Popen[str]) -> str:
        return "".join(self.output[proc.pid])

    def wait_for(self, proc: subprocess.Popen[str], words: str, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while words not in self.text(proc) and time.monotonic() < deadline:
            assert proc.poll() is None, self.text(proc)
            time.sleep(0.1)
        assert words in self.text(proc), self.text(proc)

    def signal(self, signum: int) -> None:
        os.killpg(self.procs[0].pid, signum)

    def kill_all(self) -> None:
        """Kill what still runs (a hung process, or a test that failed early); the asserts report it."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_frames_lost_in_transport_are_reported_once_on_the_console(ros_env: int, samples_dir: Path) -> None:
    """Without the profile, 2048x1024 best-effort frames are lost: the node says so once, naming the fix."""
    group = _Group({k: v for k, v in _env().items() if k not in PROFILE_VARIABLES.values()})
    try:
        node = group.start("espnet_ros.segmentation_node", "--ros-args", "-p", "preset:=camvid", "-p", "device:=cpu",
                           "-p", "num_threads:=1", "-p", "backend:=fused")
        group.wait_for(node, "segmenting 1 camera(s)")
        # frames until the node has seen a loss (it needs a frame to arrive to count those before or between)
        player = group.start("espnet_ros.image_player", str(samples_dir), "--ros-args", "-p", "rate:=10.0",
                             "-p", "count:=600")
        group.wait_for(node, "frames are being lost in transport", timeout=TIMEOUT)
        time.sleep(2.0)  # more losses reported meanwhile: no second line
        player.send_signal(signal.SIGINT)
        player.wait(timeout=30.0)
        node.send_signal(signal.SIGINT)
        node.wait(timeout=30.0)
    finally:
        group.kill_all()
    out = group.text(node)
    assert node.returncode == 0, out
    warnings = [line for line in out.splitlines() if "frames are being lost in transport" in line]
    assert len(warnings) == 1, out
    assert "[WARN]" in warnings[0] and all(name in warnings[0] for name in profile_variables()), warnings[0]


# (signal, delays before each): a terminal's Ctrl-C, then launch's own SIGINT, a third Ctrl-C, launch's SIGTERM;
# a burst (a key held down, a supervisor repeating its signal) lands on every step of the clean-up
STOPS = {
    "one_sigint": [(signal.SIGINT, 0.0)],
    "two_sigints": [(signal.SIGINT, 0.0), (signal.SIGINT, 0.05)],
    "three_sigints": [(signal.SIGINT, 0.0), (signal.SIGINT, 0.05), (signal.SIGINT, 0.3)],
    "sigterm": [(signal.SIGTERM, 0.0)],
    "sigint_burst": [(signal.SIGINT, 0.0)] + [(signal.SIGINT, 0.002)] * 600,
}


@pytest.mark.parametrize("stop", list(STOPS))
def test_node_and_player_stop_cleanly_on_signals_to_the_process_group(ros_env: int, frame_file: Path,
                                                                      stop: str) -> None:
    """Both executables, busy with frames, exit 0 without a traceback on 1-3 SIGINTs, a SIGTERM or a burst of SIGINTs.

    The node's console also shows a core log line (espnet_ros.core.segmenter, Python logging) as a ROS INFO line
    of the node's logger.
    """
    group = _Group()
    node = group.start("espnet_ros.segmentation_node", "--ros-args", "-r", "__ns:=/front", "-p", "preset:=camvid",
                       "-p", "device:=cpu", "-p", "num_threads:=1", "-p", "backend:=fused")
    player = group.start("espnet_ros.image_player", str(frame_file), "--ros-args", "-r", "__ns:=/front",
                         "-p", "rate:=20.0")
    try:
        group.wait_for(node, "segmenting 1 camera(s)")
        group.wait_for(player, "publishing 1 file(s)")
        time.sleep(1.0)  # frames flowing: the worker is busy when the signal comes
        for signum, delay in STOPS[stop]:
            time.sleep(delay)
            if all(proc.poll() is not None for proc in (node, player)):
                break  # both gone: nothing left to signal
            group.signal(signum)
        for proc in (node, player):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30.0)  # bounded: a clean stop takes a few seconds
    finally:
        group.kill_all()
    for proc in (node, player):
        out = group.text(proc)
        assert proc.returncode == 0, out
        assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
    node_out = group.text(node)
    core_line = next((line for line in node_out.splitlines() if "CPU backend fused for camvid" in line), "")
    assert "[INFO]" in core_line and "[front.espnet_segmentation]" in core_line, node_out


_STOPPER = """
import os, signal, sys
import rclpy
from rclpy.signals import SignalHandlerOptions, get_current_signal_handlers_options
from espnet_ros.spinning import StopSignals, spin_until_shutdown
signals = StopSignals()
rclpy.init(args=sys.argv)
node = rclpy.create_node("stopper")
print("rclpy handlers before:", get_current_signal_handlers_options().name, flush=True)
node.create_timer(0.2, lambda: os.kill(os.getpid(), signal.SIGINT))
spin_until_shutdown(node)
print("rclpy handlers after:", get_current_signal_handlers_options().name, flush=True)
for _ in range(50):
    os.kill(os.getpid(), signal.SIGINT)
print("received", len(signals.received), flush=True)
signals.cleaning_up()
node.destroy_node()
rclpy.try_shutdown()
signals.exiting()
"""


def test_the_first_stop_signal_takes_rclpy_signal_handling_out(ros_env: int) -> None:
    """After the first SIGINT, rclpy's handlers and its signal thread are gone and later signals are ignored.

    rclpy's signal thread triggers every executor's guard condition on each signal; left running during clean-up it
    raced the executor's ``shutdown()`` that destroys that guard condition (the process crashed or hung).
    """
    proc = subprocess.run([sys.executable, "-c", _STOPPER], env=_env(), capture_output=True, text=True,
                          timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "rclpy handlers before: ALL" in out and "rclpy handlers after: NO" in out, out
    assert "received 51" in out, out
    assert "Traceback" not in out, out
