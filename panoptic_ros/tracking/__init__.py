"""Occlusion-aware multi-object tracking over panoptic results (pure core, no ROS).

``Tracker`` (one per camera) turns each frame's ``PanopticResult`` into a
``TrackedFrame``: stable track ids per thing pixel and per object, with state
(new / tracked / occluded), velocity and age. The parts -- the Kalman box
filter, camera-motion estimation and the association functions -- are
separate modules, usable alone (e.g. by a comparison against other trackers).
"""
from panoptic_ros.tracking.camera_motion import CameraMotionEstimator
from panoptic_ros.tracking.kalman import MotionNoise
from panoptic_ros.tracking.tracker import Tracker
from panoptic_ros.tracking.types import CameraMotion, TrackedFrame, TrackedObject, TrackState

__all__ = ["CameraMotion", "CameraMotionEstimator", "MotionNoise", "TrackState", "TrackedFrame",
           "TrackedObject", "Tracker"]
