"""Start-up refuses what cannot work with a message that says so, and warns about what it would silently ignore."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest
import rclpy
from node_harness import WEIGHTS_DIR
from rclpy.context import Context
from rclpy.parameter import Parameter

from espnet_ros.core.errors import WeightsError
from espnet_ros.core.weights import check_file, get_preset
from espnet_ros.parameters import ParameterError, unknown_parameter_warnings
from espnet_ros.segmentation_node import SegmentationNode


def _context(*ros_args: str) -> Context:
    context = Context()
    rclpy.init(context=context, args=["espnet_segmentation", "--ros-args", *ros_args])
    return context


def _node(context: Context) -> SegmentationNode:
    overrides = [Parameter("device", value="cpu"), Parameter("num_threads", value=1),
                 Parameter("weights_dir", value=str(WEIGHTS_DIR))]
    return SegmentationNode(context=context, parameter_overrides=overrides)


def test_an_empty_camera_list_on_the_command_line_is_refused(ros_env: int) -> None:
    context = _context("-p", "cameras:=[]")
    try:
        with pytest.raises(ParameterError, match="parameter cameras is empty"):
            _node(context)
    finally:
        context.try_shutdown()


def test_an_unknown_parameter_is_warned_once_with_the_closest_name(
    ros_env: int, capfd: pytest.CaptureFixture[str]
) -> None:
    context = _context("-p", "presets:=camvid", "-p", "preset:=camvid", "-p", "use_sim_time:=false")
    node = _node(context)
    try:
        err = capfd.readouterr().err
        assert err.count("parameter presets is not a parameter of this node and is ignored; did you mean preset?") == 1
        assert "use_sim_time is not" not in err
    finally:
        node.destroy_node()
        context.try_shutdown()
    assert unknown_parameter_warnings(["qos_overrides./image.subscription.depth", "overlay_alpha"]) == []
    assert "the parameters are:" in unknown_parameter_warnings(["zzzz"])[0]


def test_weights_file_that_is_a_device_a_folder_or_huge_is_refused_without_reading_it(tmp_path: Path) -> None:
    preset = get_preset("camvid")
    with pytest.raises(WeightsError, match="not a regular file"):
        check_file(preset, Path("/dev/zero"))
    with pytest.raises(WeightsError, match="is a folder"):
        check_file(preset, tmp_path)
    huge = tmp_path / "huge.pth"
    with huge.open("wb") as f:
        f.truncate(1 << 30)  # sparse: 1 GiB that takes no disk
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(WeightsError, match="larger than any preset file"):
        check_file(preset, huge)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024  # KiB: never read whole
