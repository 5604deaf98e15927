"""The node's topic names: one place for the node, the launch-file tests and the documentation.

Names are relative to the node's namespace. With one camera they have no
prefix (``image``, ``panoptic/objects``), as single-camera perception nodes
conventionally do and launch files remap; with several cameras each camera
``c`` gets its own under ``c/`` (``front/image``, ``front/panoptic/objects``).
Plain Python: no ROS import, so tests can read it without a ROS graph.
"""
from __future__ import annotations

import re

IMAGE_RAW = "image"
IMAGE_COMPRESSED = "image/compressed"
CAMERA_INFO = "camera_info"
INPUTS = (IMAGE_RAW, IMAGE_COMPRESSED, CAMERA_INFO)

OBJECTS = "panoptic/objects"  # panoptic_ros/PanopticObjectArray
PANOPTIC = "panoptic/image"  # sensor_msgs/Image 32SC1
SEMANTIC = "panoptic/semantic"  # sensor_msgs/Image mono8 (publish_semantic)
OVERLAY = "panoptic/overlay"  # sensor_msgs/Image rgb8, only while subscribed
MARKERS = "panoptic/markers"  # visualization_msgs/MarkerArray, only while subscribed
CLASS_INFO = "panoptic/class_info"  # panoptic_ros/PanopticClassInfo, latched
DETECTIONS = "panoptic/detections"  # vision_msgs/Detection2DArray, where vision_msgs is installed
LABEL_INFO = "panoptic/label_info"  # vision_msgs/LabelInfo, latched, where vision_msgs is installed
OUTPUTS = (OBJECTS, PANOPTIC, SEMANTIC, OVERLAY, MARKERS, CLASS_INFO, DETECTIONS, LABEL_INFO)

DIAGNOSTICS = "/diagnostics"
SET_ENABLED_SERVICE = "~/set_enabled"

_CAMERA_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*$")


class CameraListError(ValueError):
    """The ``cameras`` parameter cannot name topics; the message says why."""


def camera_prefixes(cameras: list[str]) -> dict[str, str]:
    """camera -> topic prefix ("" for a single camera, "<name>/" otherwise); CameraListError for a bad list."""
    if not cameras:
        raise CameraListError("cameras is empty: name at least one camera, e.g. -p cameras:=[front]")
    if len(set(cameras)) != len(cameras):
        raise CameraListError(f"cameras names a camera twice: {cameras}")
    for name in cameras:
        if not _CAMERA_NAME.match(name):
            raise CameraListError(f"camera name {name!r} is not a valid topic namespace (letters, digits, _ and /, "
                                  "each part starting with a letter)")
    return {name: "" if len(cameras) == 1 else f"{name}/" for name in cameras}


def node_topics(cameras: list[str]) -> tuple[list[str], list[str]]:
    """(input topics, output topics) of a node serving ``cameras``, relative to its namespace."""
    inputs, outputs = [], []
    for prefix in camera_prefixes(cameras).values():
        inputs += [prefix + t for t in INPUTS]
        outputs += [prefix + t for t in OUTPUTS]
    return inputs, outputs + [DIAGNOSTICS]
