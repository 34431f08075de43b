"""segmentation_node and image_player as separate processes (their real ``main()``), talking over DDS.

The test process only listens. Every process gets the test's random ROS_DOMAIN_ID and localhost-only discovery.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return proc.returncode, out


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
    """With config/fastdds_shm.xml, 2048x1024 best-effort frames reach the node in another process.

    (Without it, Fast DDS's 512 KiB shared-memory segment loses nearly all of them: 0 of 100 in a run here.) The
    count comes from the node's own /diagnostics, small messages that need no profile in this test process.
    """
    profile = str(Path(__file__).resolve().parents[1] / "config" / "fastdds_shm.xml")
    env = dict(_env(), FASTDDS_DEFAULT_PROFILES_FILE=profile)
    common = {"env": env, "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    node = subprocess.Popen([sys.executable, "-m", "espnet_ros.segmentation_node", "--ros-args",
                             "-p", "preset:=cityscapes-c-p2q3", "-p", "device:=cpu", "-p", "num_threads:=1"],
                            **common)  # type: ignore[call-overload]
    processes.append(node)
    listener = Node("listener", context=ros_context)
    received: list[int] = []

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for st in msg.status:
            if st.hardware_id == "/image":
                received.append(int({kv.key: kv.value for kv in st.values}["frames received"]))

    listener.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(listener)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not received and time.monotonic() < deadline:  # the node is up and reporting
            executor.spin_once(timeout_sec=0.1)
        player = subprocess.Popen([sys.executable, "-m", "espnet_ros.image_player", str(samples_dir), "--ros-args",
                                   "-p", "rate:=5.0", "-p", "count:=40"], **common)  # type: ignore[call-overload]
        processes.append(player)
        while (not received or received[-1] < 8) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        assert received and received[-1] >= 8, (received[-1:], _stop(player)[1][-2000:])
    finally:
        executor.shutdown()
        listener.destroy_node()
