"""Launch the espnet_segmentation node (and optionally image_player and rviz2).

Arguments (``ros2 launch espnet_ros segment.launch.py --show-args``):
  image          image topic of a single camera (the node's ``image`` is remapped to it)   default: image
  cameras        several image topics, YAML list, e.g. "[/front/image_raw, /rear/image_raw]"; overrides image
  namespace      namespace of the node (relative topics resolve under it)                 default: ''
  preset         weights preset (cityscapes, camvid, cityscapes-c-p2q3 ...)               default: cityscapes
  weights_dir    folder of the weights ('' = $ESPNET_ROS_WEIGHTS_DIR or ~/.cache/espnet_ros/weights)
  device         auto, cpu, cuda or cuda:N                                                default: auto
  params_file    YAML with the other parameters (root key /**)                default: config/segment.yaml
  use_sim_time   use /clock (bag playback, simulation)                                    default: false
  rviz           start rviz2 with config/espnet_ros.rviz                                  default: false
  log_level      debug, info, warn, error                                                 default: info
  play           image file / folder / video / glob for image_player ('' = no player)     default: ''
  play_rate      image_player rate in Hz                                                  default: 10.0

Precedence: params_file over the arguments above over the node's defaults. The shipped segment.yaml sets none of
preset, weights_dir, device, cameras or use_sim_time, so those arguments apply unless your own params file sets them.
Each camera's outputs appear next to its image topic: /front/image_raw -> /front/segmentation/overlay.
"""

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node

try:  # Jazzy and newer
    from launch.substitutions import NotEqualsSubstitution

    PLAY = IfCondition(NotEqualsSubstitution(LaunchConfiguration("play"), ""))
except ImportError:  # Humble (the condition is deprecated, not removed, in newer distributions)
    from launch.conditions import LaunchConfigurationNotEquals

    PLAY = LaunchConfigurationNotEquals("play", "")

SHARE = get_package_share_directory("espnet_ros")


def generate_launch_description() -> LaunchDescription:
    args = [
        DeclareLaunchArgument("image", default_value="image", description="image topic of a single camera"),
        DeclareLaunchArgument("cameras", default_value="[image]",
                              description="image topics as a YAML list; outputs go next to each camera"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("preset", default_value="cityscapes", description="weights preset"),
        DeclareLaunchArgument("weights_dir", default_value="",
                              description="weights folder ('' = $ESPNET_ROS_WEIGHTS_DIR or the user cache)"),
        DeclareLaunchArgument("device", default_value="auto", description="auto, cpu, cuda or cuda:N"),
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([SHARE, "config", "segment.yaml"]),
                              description="YAML parameters file (root key /**); wins over the arguments"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock"),
        DeclareLaunchArgument("rviz", default_value="false", description="start rviz2 with espnet_ros.rviz"),
        DeclareLaunchArgument("log_level", default_value="info", description="debug, info, warn or error"),
        DeclareLaunchArgument("play", default_value="",
                              description="images/folder/video/glob to publish with image_player ('' = none)"),
        DeclareLaunchArgument("play_rate", default_value="10.0", description="image_player rate in Hz"),
    ]
    namespace = LaunchConfiguration("namespace")
    log_level = ["--log-level", LaunchConfiguration("log_level")]
    segmentation = Node(
        package="espnet_ros",
        executable="segmentation_node",
        name="espnet_segmentation",
        namespace=namespace,
        parameters=[
            {
                "preset": LaunchConfiguration("preset"),
                "weights_dir": LaunchConfiguration("weights_dir"),
                "device": LaunchConfiguration("device"),
                "cameras": LaunchConfiguration("cameras"),
                "use_sim_time": LaunchConfiguration("use_sim_time"),
            },
            LaunchConfiguration("params_file"),
        ],
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
        parameters=[{"paths": LaunchConfiguration("play"), "rate": LaunchConfiguration("play_rate"),
                     "use_sim_time": LaunchConfiguration("use_sim_time")}],
        remappings=[("image", LaunchConfiguration("image"))],
        ros_arguments=log_level,
        output="screen",
        condition=PLAY,
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", PathJoinSubstitution([SHARE, "config", "espnet_ros.rviz"])],
        parameters=[{"use_sim_time": LaunchConfiguration("use_sim_time")}],
        condition=IfCondition(LaunchConfiguration("rviz")),
        output="screen",
    )
    return LaunchDescription([*args, segmentation, player, rviz])
