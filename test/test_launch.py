"""launch_testing test of launch/segment.launch.py: the player feeds the node, outputs arrive, both exit cleanly.

launch, launch_ros and launch_testing are not on PyPI, so this module is skipped where launch_testing cannot be
imported (a plain venv). In a ROS installation (colcon workspace with espnet_ros built and sourced) run it with
``launch_test test/test_launch.py``; launch_testing's pytest plugin also collects it with the pytest versions it
supports (with pytest 9 the plugin fails to load: its hook still takes ``path``). It needs the weights and the
sample frames (ESPNET_ROS_WEIGHTS_DIR, ESPNET_ROS_SAMPLES_DIR, defaulting to ../shared beside the repository).
"""

from __future__ import annotations

import os
import time
import unittest
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "launch_testing", reason="launch_testing is not on PyPI; this launch test runs in a ROS 2 installation"
)

import launch_testing.actions
import launch_testing.asserts
import rclpy
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from espnet_ros.transport import profile_environment

REPO = Path(__file__).resolve().parents[1]
WEIGHTS_DIR = os.environ.get("ESPNET_ROS_WEIGHTS_DIR") or str(REPO.parent / "shared" / "espnet" / "weights")
SAMPLES_DIR = os.environ.get("ESPNET_ROS_SAMPLES_DIR") or str(REPO.parent / "shared" / "espnet" / "samples")


@pytest.mark.launch_test
def generate_test_description() -> LaunchDescription:
    launch_file = Path(get_package_share_directory("espnet_ros")) / "launch" / "segment.launch.py"
    include = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(launch_file)),
        launch_arguments={
            "namespace": "/front",
            "preset": "cityscapes-c-p2q3",
            "device": "cpu",
            "weights_dir": WEIGHTS_DIR,
            "play": SAMPLES_DIR,
            "play_rate": "2.0",
        }.items(),
    )
    return LaunchDescription([include, launch_testing.actions.ReadyToTest()])


class TestSegmentationOutputs(unittest.TestCase):
    def test_overlay_and_class_mask_arrive_at_camera_resolution(self, proc_output: Any) -> None:
        # the launch file gives its processes the Fast DDS profile; this listener (6 MB overlays) takes it too
        os.environ.update(profile_environment())
        context = rclpy.context.Context()
        rclpy.init(context=context)
        try:
            node = rclpy.create_node("launch_test_listener", context=context)
            got: dict[str, list[Image]] = {"class_mask": [], "overlay": []}
            qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
            for name, store in got.items():
                node.create_subscription(Image, f"/front/segmentation/{name}", store.append, qos)
            executor = rclpy.executors.SingleThreadedExecutor(context=context)
            executor.add_node(node)
            deadline = time.monotonic() + 120.0
            while not all(got.values()) and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.1)
            self.assertTrue(all(got.values()), {k: len(v) for k, v in got.items()})
            mask, overlay = got["class_mask"][0], got["overlay"][0]
            self.assertEqual((mask.encoding, mask.width, mask.height), ("mono8", 2048, 1024))
            self.assertEqual((overlay.encoding, overlay.width, overlay.height), ("bgr8", 2048, 1024))
            self.assertEqual(mask.header.frame_id, "camera")
            executor.shutdown()
            node.destroy_node()
        finally:
            rclpy.shutdown(context=context)
        proc_output.assertWaitFor("segmenting 1 camera(s)", timeout=10)
        proc_output.assertWaitFor("CPU backend", timeout=10)  # a core (Python logging) line, bridged to ROS


@launch_testing.post_shutdown_test()
class TestCleanShutdown(unittest.TestCase):
    def test_processes_exit_cleanly(self, proc_info: Any) -> None:
        launch_testing.asserts.assertExitCodes(proc_info)
