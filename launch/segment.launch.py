"""Launch the espnet_segmentation node (and optionally image_player and rviz2).

Arguments (``ros2 launch espnet_ros segment.launch.py --show-args``):
  image          image topic of a single camera (the node's ``image`` is remapped to it)   default: image
  cameras        several image topics, YAML list, e.g. "[/front/image_raw, /rear/image_raw]"; overrides image
  namespace      namespace of the node (relative topics resolve under it)                 default: ''
  preset         weights preset (cityscapes, camvid, cityscapes-c-p2q3 ...)               default: cityscapes
  model          model folder from `espnet-ros train` (OUT/best), run instead of preset   default: ''
  weights_dir    folder of the weights ('' = $ESPNET_ROS_WEIGHTS_DIR or ~/.cache/espnet_ros/weights)
  device         auto, cpu, cuda or cuda:N                                                default: auto
  params_file    YAML with the other parameters (root key /**)                default: config/segment.yaml
  use_sim_time   use /clock (bag playback, simulation): true or false                     default: false
  rviz           start rviz2 with config/espnet_ros.rviz                                  default: false
  log_level      debug, info, warn, error                                                 default: info
  play           image file / folder / video / glob for image_player ('' = no player)     default: ''
  play_rate      image_player rate in Hz (5 and 5.0 both work)                            default: 10.0
  lifecycle      true: the node starts unconfigured for a lifecycle manager (docs/lifecycle.md)  default: false
  autostart      the node configures and activates itself (false under lifecycle:=true)  default: true

Precedence: params_file over the arguments above over the node's defaults. The shipped segment.yaml sets none of
preset, weights_dir, device, cameras or use_sim_time, so those arguments apply unless your own params file sets them.
Each camera's outputs appear next to its image topic: /front/image_raw -> /front/segmentation/overlay.

Environment of the started processes (each variable only where it is not set already): the Fast DDS profile
config/fastdds_shm.xml under the name the installed Fast DDS reads (espnet_ros.transport), so that camera-sized images
cross processes; RCUTILS_COLORIZED_OUTPUT=0 when launch's output is not a terminal. rviz:=true without rviz2
installed stops the launch before anything starts. User documentation: docs/launch.md.
"""

import os
import sys
from pathlib import Path
from typing import Any

from ament_index_python.packages import PackageNotFoundError, get_package_prefix, get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from espnet_ros.transport import profile_environment

try:  # Jazzy and newer
    from launch.substitutions import AndSubstitution, NotEqualsSubstitution, NotSubstitution

    PLAY = IfCondition(NotEqualsSubstitution(LaunchConfiguration("play"), ""))
    AUTOSTART: Any = AndSubstitution(LaunchConfiguration("autostart"),
                                     NotSubstitution(LaunchConfiguration("lifecycle")))
except ImportError:  # Humble (the condition is deprecated, not removed, in newer distributions)
    from launch.conditions import LaunchConfigurationNotEquals

    PLAY = LaunchConfigurationNotEquals("play", "")
    AUTOSTART = LaunchConfiguration("autostart")  # no boolean substitutions on Humble: use autostart:=false there

SHARE = get_package_share_directory("espnet_ros")


class RvizNotFoundError(RuntimeError):
    """rviz:=true, but rviz2 is not installed."""


def _check_rviz(context: LaunchContext) -> None:
    """Stop the launch before anything starts when rviz:=true and rviz2 cannot be found."""
    if not IfCondition(LaunchConfiguration("rviz")).evaluate(context):
        return
    try:
        found = (Path(get_package_prefix("rviz2")) / "lib" / "rviz2" / "rviz2").is_file()
    except PackageNotFoundError:
        found = False
    if not found:
        distro = os.environ.get("ROS_DISTRO", "<distro>")
        raise RvizNotFoundError(
            f"rviz:=true needs rviz2, which is not installed here (no rviz2 package in the ament index): install it "
            f"(sudo apt install ros-{distro}-rviz2) and source its setup file, or launch with rviz:=false. "
            "Nothing was started."
        )


def _environment() -> list[SetEnvironmentVariable]:
    """Variables for the processes this launch starts, each only where the user has not set it.

    The Fast DDS profile that carries camera-sized images between processes (the variable the installed Fast DDS
    reads, :mod:`espnet_ros.transport`), and no colour codes in the node's lines when launch's output is not a
    terminal (the node runs with a pseudo-terminal so that its lines arrive unbuffered).
    """
    env = profile_environment()
    if "RCUTILS_COLORIZED_OUTPUT" not in os.environ and not sys.stdout.isatty():
        env["RCUTILS_COLORIZED_OUTPUT"] = "0"
    return [SetEnvironmentVariable(name, value) for name, value in env.items()]


# The arguments become parameters of the types the executables declare, so that what a user types works:
# play_rate:=5 or 5.0, use_sim_time:=true or True, a numeric-looking preset, path or device stays a string.
def _use_sim_time() -> ParameterValue:
    return ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)


def node_parameters() -> dict[str, Any]:
    """The segmentation node's parameters from the launch arguments (the params file comes after, and wins)."""
    return {
        "preset": ParameterValue(LaunchConfiguration("preset"), value_type=str),
        "model": ParameterValue(LaunchConfiguration("model"), value_type=str),
        "weights_dir": ParameterValue(LaunchConfiguration("weights_dir"), value_type=str),
        "device": ParameterValue(LaunchConfiguration("device"), value_type=str),
        "cameras": LaunchConfiguration("cameras"),  # a YAML list of topics
        "use_sim_time": _use_sim_time(),
        "autostart": ParameterValue(AUTOSTART, value_type=bool),
    }


def player_parameters() -> dict[str, Any]:
    """image_player's parameters from the launch arguments."""
    return {
        "paths": ParameterValue(LaunchConfiguration("play"), value_type=str),
        "rate": ParameterValue(LaunchConfiguration("play_rate"), value_type=float),
        "use_sim_time": _use_sim_time(),
    }


def generate_launch_description() -> LaunchDescription:
    args = [
        DeclareLaunchArgument("image", default_value="image", description="image topic of a single camera"),
        DeclareLaunchArgument("cameras", default_value="[image]",
                              description="image topics as a YAML list; outputs go next to each camera"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("preset", default_value="cityscapes", description="weights preset"),
        DeclareLaunchArgument("model", default_value="",
                              description="model folder from `espnet-ros train` ('' = the preset)"),
        DeclareLaunchArgument("weights_dir", default_value="",
                              description="weights folder ('' = $ESPNET_ROS_WEIGHTS_DIR or the user cache)"),
        DeclareLaunchArgument("device", default_value="auto", description="auto, cpu, cuda or cuda:N"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(SHARE, "config", "segment.yaml"),
                              description="YAML parameters file (root key /**); wins over the arguments"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (true or false)"),
        DeclareLaunchArgument("rviz", default_value="false",
                              description="start rviz2 with espnet_ros.rviz (true or false)"),
        DeclareLaunchArgument("log_level", default_value="info", description="debug, info, warn or error"),
        DeclareLaunchArgument("play", default_value="",
                              description="images/folder/video/glob to publish with image_player ('' = none)"),
        DeclareLaunchArgument("play_rate", default_value="10.0", description="image_player rate in Hz (5 or 5.0)"),
        DeclareLaunchArgument("lifecycle", default_value="false",
                              description="true: start unconfigured, for a lifecycle manager (docs/lifecycle.md)"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="the node configures and activates itself (lifecycle:=true makes it false)"),
    ]
    namespace = LaunchConfiguration("namespace")
    log_level = ["--log-level", LaunchConfiguration("log_level")]
    segmentation = Node(
        package="espnet_ros",
        executable="segmentation_node",
        name="espnet_segmentation",
        namespace=namespace,
        parameters=[node_parameters(), LaunchConfiguration("params_file")],
        remappings=[("image", LaunchConfiguration("image"))],
        ros_arguments=log_level,
        output="screen",
        emulate_tty=True,
    )
    player = Node(
        package="espnet_ros",
        executable="image_player",
        name="image_player",
        namespace=namespace,
        parameters=[player_parameters()],
        remappings=[("image", LaunchConfiguration("image"))],
        ros_arguments=log_level,
        output="screen",
        condition=PLAY,
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", os.path.join(SHARE, "config", "espnet_ros.rviz")],
        parameters=[{"use_sim_time": _use_sim_time()}],
        condition=IfCondition(LaunchConfiguration("rviz")),
        output="screen",
    )
    # the rviz2 check comes before every process: a failed check starts nothing
    return LaunchDescription([*args, OpaqueFunction(function=_check_rviz), *_environment(), segmentation, player,
                              rviz])
