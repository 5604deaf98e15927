"""Several cameras through one node and one batched model (config/multi_camera.yaml: front, left, right).

    ros2 launch panoptic_ros panoptic_multi_camera.launch.py input_transport:=compressed \
        front_image:=/cameras/front/image_raw front_camera_info:=/cameras/front/camera_info ...

Each camera ``c`` has its own tracker and its own topics under ``c/``
(``c/image``, ``c/camera_info`` in; ``c/panoptic/...`` out); the newest
frame of every camera goes through the model as one batch. At several
megapixels per camera, compressed input keeps the DDS transport from being
the bottleneck (docs/PERFORMANCE.md). To serve other cameras, edit the
``cameras`` list in a copy of config/multi_camera.yaml and the remappings
below.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    config = PathJoinSubstitution([FindPackageShare("panoptic_ros"), "config", "panoptic_ros.yaml"])
    cameras = PathJoinSubstitution([FindPackageShare("panoptic_ros"), "config", "multi_camera.yaml"])
    arguments = [
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node and its topics"),
        DeclareLaunchArgument("params_file", default_value=cameras,
                              description="Camera list and overrides, applied over config/panoptic_ros.yaml"),
        DeclareLaunchArgument("model_path", default_value="",
                              description="Model .safetensors (its .json card beside it); "
                                          "empty = the shipped demo model"),
        DeclareLaunchArgument("device", default_value="auto", description="auto, cpu, cuda or cuda:N"),
        DeclareLaunchArgument("input_transport", default_value="raw",
                              description="raw (sensor_msgs/Image) or compressed (sensor_msgs/CompressedImage)"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="Use /clock (rosbag replay); tracking always runs on the image stamps"),
        DeclareLaunchArgument("front_image", default_value="front/image", description="Front camera image topic"),
        DeclareLaunchArgument("front_camera_info", default_value="front/camera_info",
                              description="Front camera CameraInfo topic"),
        DeclareLaunchArgument("left_image", default_value="left/image", description="Left camera image topic"),
        DeclareLaunchArgument("left_camera_info", default_value="left/camera_info",
                              description="Left camera CameraInfo topic"),
        DeclareLaunchArgument("right_image", default_value="right/image", description="Right camera image topic"),
        DeclareLaunchArgument("right_camera_info", default_value="right/camera_info",
                              description="Right camera CameraInfo topic"),
    ]
    node = Node(
        package="panoptic_ros",
        executable="panoptic_node",
        name="panoptic_node",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[
            config,
            LaunchConfiguration("params_file"),
            {
                "model.path": ParameterValue(LaunchConfiguration("model_path"), value_type=str),
                "model.device": ParameterValue(LaunchConfiguration("device"), value_type=str),
                "input_transport": ParameterValue(LaunchConfiguration("input_transport"), value_type=str),
                "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
            },
        ],
        remappings=[
            ("front/image", LaunchConfiguration("front_image")),
            ("front/image/compressed", [LaunchConfiguration("front_image"), "/compressed"]),
            ("front/camera_info", LaunchConfiguration("front_camera_info")),
            ("left/image", LaunchConfiguration("left_image")),
            ("left/image/compressed", [LaunchConfiguration("left_image"), "/compressed"]),
            ("left/camera_info", LaunchConfiguration("left_camera_info")),
            ("right/image", LaunchConfiguration("right_image")),
            ("right/image/compressed", [LaunchConfiguration("right_image"), "/compressed"]),
            ("right/camera_info", LaunchConfiguration("right_camera_info")),
        ],
    )
    return LaunchDescription(arguments + [node])
