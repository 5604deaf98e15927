"""rosbag2 (mcap or sqlite3) with camera topics and panoptic ground truth, through the pure-Python ``rosbags``.

Topics of one camera ``{camera}`` (a ROS name such as ``camera`` or ``front/camera``)::

    /{camera}/image                      sensor_msgs/msg/Image rgb8          (or, compressed:)
    /{camera}/image/compressed           sensor_msgs/msg/CompressedImage     "rgb8; jpeg compressed bgr8" (or png)
    /{camera}/camera_info                sensor_msgs/msg/CameraInfo          K, P, R = I, D = 0, plumb_bob
    /{camera}/ground_truth/panoptic      sensor_msgs/msg/Image 32SC1         encode_panoptic(semantic, instance)
    /{camera}/ground_truth/objects       panoptic_ros/msg/PanopticObjectArray
    /{camera}/ground_truth/class_info    panoptic_ros/msg/PanopticClassInfo  once, transient-local
    /tf                                  tf2_msgs/msg/TFMessage              every frame: base_footprint ->
                                         {camera}_optical_frame (the mounting, which may bounce)

Every message of a frame carries ``header.stamp = frame.stamp_ns`` and
``frame_id = {camera}_optical_frame`` (``/`` in the camera name becomes
``_``); the bag's receive time is the same stamp. The bag's
``custom_data["panoptic_ros.sequence"]`` keeps the sequence name.

Ground-truth objects: every non-crowd thing of the frame (crowd regions keep
their pixels in the panoptic image but are not tracks), track id = the
panoptic image's instance id, score 1, state ``TRACKED`` when visible and
``OCCLUDED`` when fully hidden but in view; the box and centroid are the
visible mask's (pixel-edge convention: a pixel's centre is at +0.5) when
visible and the amodal box (and its centre) when hidden; velocity is the box
centre's change since the track's previous frame; ages count frames and
seconds since the track's first frame. The message has no visible fraction or
occluder, so objects read back from a bag carry ``visible_fraction`` NaN
(0 when hidden), ``occluder_track_id`` 0, and the message box as
``amodal_box_xyxy``.

The reader takes any rosbag2 directory (either storage; a directory of bag
directories reads as several sequences). It finds cameras by their image
topics (``…/image``, ``…/image_raw``, any ``sensor_msgs/Image`` or
``…/compressed`` outside ``ground_truth/``; one stream per namespace, raw
preferred), pairs CameraInfo and ground truth by header stamp (CameraInfo
falls back to the latest one before the image), and gives frames without
ground truth an all-void ``semantic``. ``camera`` is set when both CameraInfo
and a ``base_footprint`` -> optical frame transform (on ``/tf`` at or before the
frame's stamp, else on ``/tf_static``) exist; the transform may only pitch the
camera (the model has no roll or yaw), and its height and pitch come back to
within a few 1e-16 (quaternion round-off).

Images decode through :mod:`panoptic_ros.image_codec` (every ROS colour,
mono, Bayer and YUV encoding; JPEG and PNG).
"""
from __future__ import annotations

import functools
import math
import os
import re
import sqlite3
import struct
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import ReaderError, StoragePlugin, Writer, WriterError
from rosbags.serde import SerdeError
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from panoptic_ros.camera import CameraIntrinsics, CameraModel, CameraMounting
from panoptic_ros.classes import CITYSCAPES, VOID, ClassInfo, ClassTable
from panoptic_ros.datasets.coco import box_xywh_to_xyxy, check_frame, crowd_track_ids, stats_by_index
from panoptic_ros.datasets.types import DatasetError, FrameWriter, ObjectAnnotation, PanopticFrame, SequenceIndex
from panoptic_ros.image_codec import (
    ImageDecodeError,
    compressed_to_numpy,
    image_to_numpy,
    image_to_rgb,
    numpy_to_compressed,
)
from panoptic_ros.panoptic import (LABEL_DIVISOR, PANOPTIC_ENCODING, decode_panoptic, encode_panoptic,
                                   unique_inverse)

FORMAT_NAME = "rosbag"
MESSAGE_NAMES = ("PanopticObject", "PanopticObjectArray", "PanopticClassInfo")
STORAGES = ("mcap", "sqlite3")
SEQUENCE_KEY = "panoptic_ros.sequence"
GROUND_FRAME = "base_footprint"
BAG_VERSION = 9  # what Jazzy's rosbag2 writes

# PanopticObject.STATE_* (a test checks them against the generated message).
STATE_NEW = 0
STATE_TRACKED = 1
STATE_OCCLUDED = 2

_LATCHED_QOS = Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL,
                   QosTime(0, 0), QosTime(0, 0), QosLiveliness.AUTOMATIC, QosTime(0, 0), False)
_CAMERA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*")
_PENDING_LIMIT = 16  # frames waiting for a missing part before they are emitted as they are


# ---------------------------------------------------------------------------
# Message types.

def find_msg_dir() -> Path:
    """The directory holding our .msg files: the source checkout's ``msg/`` or ``<prefix>/share/panoptic_ros/msg``."""
    package_dir = Path(__file__).resolve().parent.parent
    candidates = [package_dir.parent / "msg"]
    candidates += [Path(p) / "share" / "panoptic_ros" / "msg"
                   for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    # Installed as <prefix>/lib/pythonX.Y/site-packages/panoptic_ros.
    candidates += [package_dir.parents[2] / "share" / "panoptic_ros" / "msg",
                   Path(sys.prefix) / "share" / "panoptic_ros" / "msg"]
    for d in candidates:
        if all((d / f"{n}.msg").is_file() for n in MESSAGE_NAMES):
            return d
    raise DatasetError("cannot find panoptic_ros' .msg files; looked in "
                       + ", ".join(str(c) for c in candidates)
                       + ". Run from a source checkout or source the workspace's install/setup.sh")


@functools.lru_cache(maxsize=1)
def _panoptic_typesdict() -> dict[str, Any]:
    msg_dir = find_msg_dir()
    types: dict[str, Any] = {}
    for name in MESSAGE_NAMES:
        types.update(get_types_from_msg((msg_dir / f"{name}.msg").read_text(), f"panoptic_ros/msg/{name}"))
    return types


def panoptic_typestore() -> Typestore:
    """A fresh ROS 2 Jazzy typestore with panoptic_ros' messages registered (from the .msg files)."""
    store = get_typestore(Stores.ROS2_JAZZY)
    store.register(_panoptic_typesdict())
    return store


@dataclass(frozen=True)
class CameraTopics:
    """The topic names of one camera in our layout."""

    camera: str

    @property
    def image(self) -> str:
        return f"/{self.camera}/image"

    @property
    def compressed(self) -> str:
        return f"/{self.camera}/image/compressed"

    @property
    def camera_info(self) -> str:
        return f"/{self.camera}/camera_info"

    @property
    def panoptic(self) -> str:
        return f"/{self.camera}/ground_truth/panoptic"

    @property
    def objects(self) -> str:
        return f"/{self.camera}/ground_truth/objects"

    @property
    def class_info(self) -> str:
        return f"/{self.camera}/ground_truth/class_info"

    @property
    def frame_id(self) -> str:
        return f"{self.camera.replace('/', '_')}_optical_frame"


# ---------------------------------------------------------------------------
# Geometry of the mounting transform.

_BASE_FROM_LEVEL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
"""Columns: the level optical axes (x right, y down, z forward) in base_footprint (x forward, y left, z up)."""


def mounting_rotation(mounting: CameraMounting) -> np.ndarray:
    """R_base_from_optical: rotates optical-frame vectors into base_footprint."""
    return _BASE_FROM_LEVEL @ mounting.rotation_level_to_camera().T


def quaternion_from_matrix(r: np.ndarray) -> tuple[float, float, float, float]:
    """Rotation matrix -> (x, y, z, w), w >= 0."""
    w = math.sqrt(max(0.0, 1.0 + r[0, 0] + r[1, 1] + r[2, 2])) / 2.0
    x = math.sqrt(max(0.0, 1.0 + r[0, 0] - r[1, 1] - r[2, 2])) / 2.0
    y = math.sqrt(max(0.0, 1.0 - r[0, 0] + r[1, 1] - r[2, 2])) / 2.0
    z = math.sqrt(max(0.0, 1.0 - r[0, 0] - r[1, 1] + r[2, 2])) / 2.0
    x = math.copysign(x, r[2, 1] - r[1, 2])
    y = math.copysign(y, r[0, 2] - r[2, 0])
    z = math.copysign(z, r[1, 0] - r[0, 1])
    return x, y, z, w


def matrix_from_quaternion(x: float, y: float, z: float, w: float) -> np.ndarray:
    n = math.sqrt(x * x + y * y + z * z + w * w)
    if not n > 0:
        raise DatasetError("a transform's rotation quaternion is zero or NaN")
    x, y, z, w = x / n, y / n, z / n, w / n
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def mounting_from_transform(translation_m: tuple[float, float, float],
                            rotation_xyzw: tuple[float, float, float, float]) -> CameraMounting | None:
    """base_footprint -> optical frame transform -> height and pitch; None if it has roll or yaw."""
    r_level_cam = _BASE_FROM_LEVEL.T @ matrix_from_quaternion(*rotation_xyzw)  # = R(pitch)^T
    pitch = math.atan2(r_level_cam[1, 2], r_level_cam[1, 1])
    c, s = math.cos(pitch), math.sin(pitch)
    expected = np.array([[1.0, 0.0, 0.0], [0.0, c, s], [0.0, -s, c]])
    if not np.allclose(r_level_cam, expected, atol=1e-6):
        return None  # the model has no roll or yaw
    try:
        return CameraMounting(float(translation_m[2]), pitch)
    except ValueError:
        return None


# ---------------------------------------------------------------------------
# Image messages <-> arrays (panoptic_ros.image_codec does the work).

def image_msg_to_rgb(msg: Any, where: str) -> np.ndarray:
    """sensor_msgs/Image in any colour/mono/Bayer/YUV encoding -> (H, W, 3) uint8 RGB (a copy)."""
    try:
        rgb = image_to_rgb(int(msg.height), int(msg.width), str(msg.encoding), int(msg.step), msg.data,
                           bool(msg.is_bigendian))
    except ImageDecodeError as exc:
        raise DatasetError(f"{where}: {exc}") from None
    return np.array(rgb, dtype=np.uint8, copy=True, order="C")


def compressed_msg_to_rgb(msg: Any, where: str) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG or PNG, 8-bit colour or mono) -> (H, W, 3) uint8 RGB."""
    try:
        pixels = compressed_to_numpy(str(msg.format), msg.data)
    except ImageDecodeError as exc:
        raise DatasetError(f"{where}: {exc}") from None
    if pixels.dtype != np.uint8:
        raise DatasetError(f"{where}: compressed image holds {pixels.dtype} pixels; expected 8-bit colour or mono")
    return np.ascontiguousarray(np.repeat(pixels[..., None], 3, axis=2) if pixels.ndim == 2 else pixels)


def panoptic_msg_to_maps(msg: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """32SC1 ground-truth Image -> ((H, W) uint8 class ids, (H, W) int32 track ids)."""
    if str(msg.encoding) != PANOPTIC_ENCODING:
        raise DatasetError(f"{where}: panoptic image encoding is {msg.encoding!r}, expected {PANOPTIC_ENCODING!r}")
    try:
        ids = image_to_numpy(int(msg.height), int(msg.width), PANOPTIC_ENCODING, int(msg.step), msg.data,
                             bool(msg.is_bigendian))
        classes, tracks = decode_panoptic(ids)
    except (ImageDecodeError, ValueError) as exc:
        raise DatasetError(f"{where}: {exc}") from None
    return classes, tracks.astype(np.int32)


# ---------------------------------------------------------------------------
# Writer.

@dataclass
class _TrackState:
    first_frame: int
    first_stamp_ns: int
    last_seen_frame: int = -1
    last_seen_stamp_ns: int = 0
    prev_center: tuple[float, float] | None = None
    prev_stamp_ns: int = 0


@dataclass(frozen=True)
class GroundTruthObject:
    """What the objects message says about one object, computed from a frame (see the module docstring)."""

    track_id: int
    class_id: int
    state: int
    box_xyxy: tuple[float, float, float, float]
    visible_area_px: int
    centroid_px: tuple[float, float]
    position_m: tuple[float, float, float] | None


def ground_truth_objects(frame: PanopticFrame) -> list[GroundTruthObject]:
    """The per-object content of the objects message for ``frame``, in ascending track id."""
    crowd = crowd_track_ids(frame)
    inst = frame.instance.astype(np.int64)
    ids, inverse = unique_inverse(inst)
    stats = {int(t): st for t, st in zip(ids.tolist(), stats_by_index(inverse.reshape(inst.shape), ids.size))
             if t != 0 and st is not None}
    ys, xs = np.indices(inst.shape)
    sum_x = np.bincount(inverse, weights=xs.ravel(), minlength=ids.size)
    sum_y = np.bincount(inverse, weights=ys.ravel(), minlength=ids.size)
    position_of = {int(t): j for j, t in enumerate(ids.tolist())}
    out = []
    for o in sorted(frame.objects, key=lambda o: o.track_id):
        if o.is_crowd or o.track_id in crowd:
            continue
        st = stats.get(int(o.track_id))
        if st is not None:
            j = position_of[int(o.track_id)]
            box = box_xywh_to_xyxy(st.bbox_xywh)
            area = st.area_px
            centroid = (float(sum_x[j] / area + 0.5), float(sum_y[j] / area + 0.5))
            state = STATE_TRACKED
        else:
            box = tuple(float(v) for v in o.amodal_box_xyxy)  # type: ignore[assignment]
            area = 0
            centroid = ((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0)
            state = STATE_OCCLUDED
        out.append(GroundTruthObject(int(o.track_id), int(o.class_id), state, box, area, centroid,
                                     None if o.position_m is None else tuple(float(v) for v in o.position_m)))
    return out


def _time(ts: Typestore, stamp_ns: int) -> Any:
    return ts.types["builtin_interfaces/msg/Time"](sec=int(stamp_ns // 1_000_000_000),
                                                   nanosec=int(stamp_ns % 1_000_000_000))


def _header(ts: Typestore, stamp_ns: int, frame_id: str) -> Any:
    return ts.types["std_msgs/msg/Header"](stamp=_time(ts, stamp_ns), frame_id=frame_id)


def _stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


class RosbagWriter(FrameWriter):
    """Writes one sequence of PanopticFrames from one camera as a rosbag2 directory.

    ``compressed`` = ``"jpeg"`` or ``"png"`` writes ``image/compressed``
    instead of the raw ``image`` topic.
    """

    def __init__(self, path: str | Path, camera: str = "camera", storage: str = "mcap",
                 compressed: str | None = None, classes: ClassTable = CITYSCAPES, jpeg_quality: int = 95) -> None:
        if storage not in STORAGES:
            raise DatasetError(f"storage {storage!r} is not one of {STORAGES}")
        if compressed not in (None, "jpeg", "png"):
            raise DatasetError(f"compressed must be 'jpeg', 'png' or None, got {compressed!r}")
        if not _CAMERA_NAME.fullmatch(camera):
            raise DatasetError(f"camera name {camera!r} is not a valid ROS name (letters, digits, '_', '/' between "
                               "parts, not starting with a digit)")
        self.path = Path(path)
        self.topics = CameraTopics(camera)
        self.compressed = compressed
        self.classes = classes
        self.jpeg_quality = int(jpeg_quality)
        self.ts = panoptic_typestore()
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        try:
            self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=plugin)
            self._writer.open()
        except WriterError as exc:
            raise DatasetError(f"cannot create bag {self.path}: {exc}; choose a path that does not exist") from None
        self._connections: dict[str, Any] = {}
        self._sequence: str | None = None
        self._last_stamp_ns = -1
        self._count = 0
        self._tracks: dict[int, _TrackState] = {}

    def _connection(self, topic: str, msgtype: str, latched: bool = False) -> Any:
        if topic not in self._connections:
            self._connections[topic] = self._writer.add_connection(
                topic, msgtype, typestore=self.ts, offered_qos_profiles=[_LATCHED_QOS] if latched else [])
        return self._connections[topic]

    def _write(self, topic: str, msgtype: str, msg: Any, stamp_ns: int, latched: bool = False) -> None:
        conn = self._connection(topic, msgtype, latched)
        self._writer.write(conn, stamp_ns, self.ts.serialize_cdr(msg, msgtype))

    def add(self, frame: PanopticFrame) -> None:
        check_frame(frame, self.classes)
        if self._sequence is None:
            self._sequence = frame.sequence
        elif frame.sequence != self._sequence:
            raise DatasetError(f"a bag holds one sequence: got {frame.sequence!r} after {self._sequence!r}; "
                               "write each sequence to its own bag")
        if frame.stamp_ns <= self._last_stamp_ns or frame.stamp_ns < 0:
            raise DatasetError(f"frame {frame.frame_index} of {frame.sequence!r}: stamp {frame.stamp_ns} ns must be "
                               f"after the previous frame's {self._last_stamp_ns} ns")
        stamp = int(frame.stamp_ns)
        t = self.ts.types
        fid = self.topics.frame_id
        if self._count == 0:
            self._write_class_info(stamp)
        if frame.camera is not None:
            self._write_mounting(frame.camera.mounting, stamp)
            k = frame.camera.intrinsics
            info = t["sensor_msgs/msg/CameraInfo"](
                header=_header(self.ts, stamp, fid), height=k.height, width=k.width, distortion_model="plumb_bob",
                d=np.zeros(5), k=k.k.ravel().astype(np.float64), r=np.eye(3).ravel(),
                p=np.array([k.fx, 0.0, k.cx, 0.0, 0.0, k.fy, k.cy, 0.0, 0.0, 0.0, 1.0, 0.0]),
                binning_x=0, binning_y=0,
                roi=t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                          do_rectify=False))
            self._write(self.topics.camera_info, "sensor_msgs/msg/CameraInfo", info, stamp)
        if self.compressed is None:
            img = t["sensor_msgs/msg/Image"](header=_header(self.ts, stamp, fid), height=frame.height,
                                             width=frame.width, encoding="rgb8", is_bigendian=0,
                                             step=frame.width * 3, data=np.ascontiguousarray(frame.image).ravel())
            self._write(self.topics.image, "sensor_msgs/msg/Image", img, stamp)
        else:
            packed = numpy_to_compressed(frame.image, self.compressed, self.jpeg_quality)
            comp = t["sensor_msgs/msg/CompressedImage"](header=_header(self.ts, stamp, fid), format=packed.format,
                                                        data=np.frombuffer(packed.data, dtype=np.uint8))
            self._write(self.topics.compressed, "sensor_msgs/msg/CompressedImage", comp, stamp)
        panoptic = encode_panoptic(frame.semantic, frame.instance).astype("<i4")
        pan = t["sensor_msgs/msg/Image"](header=_header(self.ts, stamp, fid), height=frame.height, width=frame.width,
                                         encoding=PANOPTIC_ENCODING, is_bigendian=0, step=frame.width * 4,
                                         data=panoptic.view(np.uint8).ravel())
        self._write(self.topics.panoptic, "sensor_msgs/msg/Image", pan, stamp)
        self._write(self.topics.objects, "panoptic_ros/msg/PanopticObjectArray", self._objects_msg(frame), stamp)
        self._last_stamp_ns = stamp
        self._count += 1

    def _write_class_info(self, stamp: int) -> None:
        t = self.ts.types
        c = self.classes.classes
        info = t["panoptic_ros/msg/PanopticClassInfo"](
            header=_header(self.ts, stamp, ""), model_id="ground_truth",
            class_ids=np.array([x.train_id for x in c], dtype=np.uint8), names=[x.name for x in c],
            is_thing=np.array([x.is_thing for x in c], dtype=bool),
            colors_rgb=np.array([v for x in c for v in x.color_rgb], dtype=np.uint8), void_class_id=VOID,
            label_divisor=LABEL_DIVISOR, panoptic_encoding=PANOPTIC_ENCODING)
        self._write(self.topics.class_info, "panoptic_ros/msg/PanopticClassInfo", info, stamp, latched=True)

    def _write_mounting(self, m: CameraMounting, stamp: int) -> None:
        t = self.ts.types
        qx, qy, qz, qw = quaternion_from_matrix(mounting_rotation(m))
        tf = t["geometry_msgs/msg/TransformStamped"](
            header=_header(self.ts, stamp, GROUND_FRAME), child_frame_id=self.topics.frame_id,
            transform=t["geometry_msgs/msg/Transform"](
                translation=t["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=float(m.height_m)),
                rotation=t["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw)))
        self._write("/tf", "tf2_msgs/msg/TFMessage", t["tf2_msgs/msg/TFMessage"](transforms=[tf]), stamp)

    def _objects_msg(self, frame: PanopticFrame) -> Any:
        t = self.ts.types
        stamp = int(frame.stamp_ns)
        objects = []
        for g in ground_truth_objects(frame):
            st = self._tracks.setdefault(g.track_id, _TrackState(self._count, stamp))
            visible = g.state == STATE_TRACKED
            if visible:
                st.last_seen_frame, st.last_seen_stamp_ns = self._count, stamp
            center = ((g.box_xyxy[0] + g.box_xyxy[2]) / 2.0, (g.box_xyxy[1] + g.box_xyxy[3]) / 2.0)
            vx = vy = 0.0
            if st.prev_center is not None and stamp > st.prev_stamp_ns:
                dt_s = (stamp - st.prev_stamp_ns) / 1e9
                vx, vy = (center[0] - st.prev_center[0]) / dt_s, (center[1] - st.prev_center[1]) / dt_s
            st.prev_center, st.prev_stamp_ns = center, stamp
            seen = st.last_seen_frame >= 0
            pos = g.position_m
            objects.append(t["panoptic_ros/msg/PanopticObject"](
                track_id=g.track_id, class_id=g.class_id, label=self.classes.classes[g.class_id].name,
                state=g.state, score=1.0, x_min_px=g.box_xyxy[0], y_min_px=g.box_xyxy[1], x_max_px=g.box_xyxy[2],
                y_max_px=g.box_xyxy[3], visible_area_px=g.visible_area_px, centroid_x_px=g.centroid_px[0],
                centroid_y_px=g.centroid_px[1], velocity_x_px_s=vx, velocity_y_px_s=vy,
                age_frames=self._count - st.first_frame, age_s=(stamp - st.first_stamp_ns) / 1e9,
                frames_since_seen=(self._count - st.last_seen_frame) if seen else self._count - st.first_frame,
                last_seen=_time(self.ts, st.last_seen_stamp_ns if seen else st.first_stamp_ns),
                has_position=pos is not None,
                position_m=t["geometry_msgs/msg/Point"](x=pos[0], y=pos[1], z=pos[2]) if pos is not None
                else t["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
                distance_m=float(np.linalg.norm(pos)) if pos is not None else 0.0))
        return t["panoptic_ros/msg/PanopticObjectArray"](
            header=_header(self.ts, stamp, self.topics.frame_id), camera_name=self.topics.camera,
            frame_index=int(frame.frame_index), processing_time_s=0.0, image_width=frame.width,
            image_height=frame.height, objects=objects)

    def close(self) -> Path:
        if self._sequence is not None:
            self._writer.set_custom_data(SEQUENCE_KEY, self._sequence)
        self._writer.close()
        return self.path

    def abort(self) -> None:
        self._writer.abort()


def write_rosbag(path: str | Path, frames: Iterable[PanopticFrame], camera: str = "camera", storage: str = "mcap",
                 compressed: str | None = None, classes: ClassTable = CITYSCAPES) -> Path:
    """Write one sequence of ``frames`` as a rosbag2 directory at ``path``; returns the path."""
    return RosbagWriter(path, camera, storage, compressed, classes).write_all(frames)


# ---------------------------------------------------------------------------
# Reader.

def _sqlite_driver_errors() -> tuple[type[BaseException], ...]:
    """rosbags reads sqlite3 bags through apsw where it is installed; its errors are not sqlite3.Error."""
    try:
        import apsw
    except ImportError:
        return ()
    return (apsw.Error,)


_BAG_ERRORS = (AnyReaderError, ReaderError, SerdeError, sqlite3.Error, struct.error, EOFError,
               OSError) + _sqlite_driver_errors()


@dataclass(frozen=True)
class BagCamera:
    """One camera stream found in a bag and the topics that belong to it (None: absent)."""

    name: str
    image_topic: str
    compressed: bool
    camera_info_topic: str | None
    panoptic_topic: str | None
    objects_topic: str | None
    class_info_topic: str | None

    @property
    def has_ground_truth(self) -> bool:
        return self.panoptic_topic is not None


@dataclass(frozen=True)
class BagSequence:
    name: str
    bag: Path
    camera: BagCamera


def _cameras(topics: dict[str, str]) -> list[BagCamera]:
    """topic -> msgtype of a bag -> the cameras in it (one image stream per namespace, raw preferred)."""
    streams: dict[str, tuple[int, str, bool]] = {}
    for topic, msgtype in sorted(topics.items()):
        if "/ground_truth/" in topic:
            continue
        if msgtype == "sensor_msgs/msg/Image":
            ns, rank, compressed = topic.rsplit("/", 1)[0], (0 if topic.endswith("/image") else 1), False
        elif msgtype == "sensor_msgs/msg/CompressedImage":
            ns, rank, compressed = topic.rsplit("/", 2)[0], 2, True
        else:
            continue
        if ns not in streams or rank < streams[ns][0]:
            streams[ns] = (rank, topic, compressed)
    cameras = []
    for ns, (_, topic, compressed) in sorted(streams.items()):
        def have(t: str, msgtype: str) -> str | None:
            return t if topics.get(t) == msgtype else None
        cameras.append(BagCamera(ns.strip("/") or "camera", topic, compressed,
                                 have(f"{ns}/camera_info", "sensor_msgs/msg/CameraInfo"),
                                 have(f"{ns}/ground_truth/panoptic", "sensor_msgs/msg/Image"),
                                 have(f"{ns}/ground_truth/objects", "panoptic_ros/msg/PanopticObjectArray"),
                                 have(f"{ns}/ground_truth/class_info", "panoptic_ros/msg/PanopticClassInfo")))
    return cameras


def _open(bag: Path) -> AnyReader:
    try:
        reader = AnyReader([bag], default_typestore=panoptic_typestore())
        reader.open()
    except FileNotFoundError as exc:
        raise DatasetError(f"cannot open bag {bag}: {exc}") from None
    except _BAG_ERRORS as exc:
        raise DatasetError(f"cannot open bag {bag}: {exc}; the bag is truncated or corrupt (for a recording that "
                           "was cut short, `ros2 bag reindex` can rebuild its metadata)") from None
    return reader


def _bag_dirs(path: Path) -> list[Path]:
    if (path / "metadata.yaml").is_file():
        return [path]
    if path.is_file() and path.suffix in (".mcap", ".db3"):
        if (path.parent / "metadata.yaml").is_file():
            return [path.parent]
        raise DatasetError(f"{path} has no metadata.yaml beside it; rosbags reads bag directories. Run "
                           "`ros2 bag reindex` on its directory to create one")
    if path.is_dir():
        bags = sorted(d for d in path.iterdir() if (d / "metadata.yaml").is_file())
        if bags:
            return bags
    raise DatasetError(f"{path} is not a rosbag2 directory (no metadata.yaml) nor a directory of them")


def _custom_data(bag: Path) -> dict[str, str]:
    """The bag's ``custom_data`` from metadata.yaml (rosbags has no public accessor for it)."""
    try:
        doc = yaml.safe_load((bag / "metadata.yaml").read_text())
        custom = doc["rosbag2_bagfile_information"].get("custom_data") or {}
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
        raise DatasetError(f"cannot read {bag / 'metadata.yaml'}: {exc}") from None
    return {str(k): str(v) for k, v in custom.items()} if isinstance(custom, dict) else {}


@dataclass
class _Pending:
    stamp_ns: int
    parts: dict[str, Any] = field(default_factory=dict)


class RosbagDataset(SequenceIndex[BagSequence]):
    """One rosbag2 directory, or a directory of them, read as PanopticFrames (see the module docstring).

    Sequence names: the bag's ``panoptic_ros.sequence`` custom data (else the
    bag directory's name), followed by ``/{camera}`` when the bag has several
    cameras.
    """

    format = FORMAT_NAME

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._sequences: dict[str, BagSequence] = {}
        self._origin = self.path
        self.classes = CITYSCAPES
        for bag in _bag_dirs(self.path):
            reader = _open(bag)
            try:
                topics = {c.topic: c.msgtype for c in reader.connections}
                custom = _custom_data(bag)
                cameras = _cameras(topics)
                base = custom.get(SEQUENCE_KEY, bag.name)
                for cam in cameras:
                    name = base if len(cameras) == 1 else f"{base}/{cam.name}"
                    if name in self._sequences:
                        name = f"{bag.name}/{name}"
                    self._sequences[name] = BagSequence(name, bag, cam)
                if cameras and cameras[0].class_info_topic is not None:
                    self.classes = self._read_classes(reader, cameras[0].class_info_topic, bag)
            finally:
                reader.close()
        if not self._sequences:
            raise DatasetError(f"{self.path}: no camera image topics (sensor_msgs/Image or CompressedImage) found")

    @staticmethod
    def _read_classes(reader: AnyReader, topic: str, bag: Path) -> ClassTable:
        conns = [c for c in reader.connections if c.topic == topic]
        try:
            for conn, _, raw in reader.messages(connections=conns):
                msg = reader.deserialize(raw, conn.msgtype)
                cs = CITYSCAPES.names
                label_ids = {c.name: c.label_id for c in CITYSCAPES.classes}
                colors = np.asarray(msg.colors_rgb, dtype=np.uint8).reshape(-1, 3)
                return ClassTable(tuple(
                    ClassInfo(int(cid), str(name), label_ids.get(str(name), int(cid)) if name in cs else int(cid),
                              bool(thing), tuple(int(v) for v in colors[i]))  # type: ignore[arg-type]
                    for i, (cid, name, thing) in enumerate(zip(msg.class_ids, msg.names, msg.is_thing))))
        except _BAG_ERRORS as exc:
            raise DatasetError(f"cannot read {topic} from bag {bag}: {exc}; the bag is truncated or corrupt") from None
        except (ValueError, IndexError) as exc:
            raise DatasetError(f"bag {bag}: bad class table on {topic}: {exc}") from None
        return CITYSCAPES

    def sequence_info(self, sequence: str) -> BagSequence:
        return self._record(sequence)

    def frames(self, sequence: str) -> Iterator[PanopticFrame]:
        seq = self.sequence_info(sequence)
        cam = seq.camera
        wanted = [t for t in (cam.image_topic, cam.camera_info_topic, cam.panoptic_topic, cam.objects_topic)
                  if t is not None]
        required = {t for t in (cam.image_topic, cam.panoptic_topic, cam.objects_topic, cam.camera_info_topic) if t}
        reader = _open(seq.bag)
        try:
            yield from self._assemble(reader, seq, wanted, required)
        except _BAG_ERRORS as exc:
            raise DatasetError(f"reading bag {seq.bag} failed: {exc}; the bag is truncated or corrupt") from None
        finally:
            reader.close()

    def _assemble(self, reader: AnyReader, seq: BagSequence, wanted: list[str],
                  required: set[str]) -> Iterator[PanopticFrame]:
        cam = seq.camera
        conns = [c for c in reader.connections if c.topic in wanted]
        pending: dict[int, _Pending] = {}
        state: dict[str, Any] = {"info": None, "count": 0, "tf": self._mountings(reader)}
        for conn, _, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            stamp = _stamp_ns(msg.header)
            if conn.topic == cam.camera_info_topic:
                state["info"] = msg
            p = pending.setdefault(stamp, _Pending(stamp))
            p.parts[conn.topic] = msg
            if required <= set(p.parts):
                for s in sorted(k for k in pending if k <= stamp):
                    frame = self._frame(pending.pop(s), seq, state)
                    if frame is not None:
                        yield frame
            elif len(pending) > _PENDING_LIMIT:
                frame = self._frame(pending.pop(min(pending)), seq, state)
                if frame is not None:
                    yield frame
        for s in sorted(pending):
            frame = self._frame(pending.pop(s), seq, state)
            if frame is not None:
                yield frame

    @staticmethod
    def _mountings(reader: AnyReader) -> dict[str, list[tuple[int, CameraMounting | None]]]:
        """child frame id -> [(stamp ns, mounting)] ascending, from base_footprint transforms on /tf and
        /tf_static (static ones at stamp -1: they always apply). Read first: they are small."""
        found: dict[str, list[tuple[int, CameraMounting | None]]] = {}
        conns = [c for c in reader.connections if c.topic in ("/tf", "/tf_static")
                 and c.msgtype == "tf2_msgs/msg/TFMessage"]
        if not conns:
            return found
        for conn, _, raw in reader.messages(connections=conns):
            for tf in reader.deserialize(raw, conn.msgtype).transforms:
                if tf.header.frame_id == GROUND_FRAME:
                    tr, q = tf.transform.translation, tf.transform.rotation
                    stamp = -1 if conn.topic == "/tf_static" else _stamp_ns(tf.header)
                    found.setdefault(tf.child_frame_id, []).append(
                        (stamp, mounting_from_transform((tr.x, tr.y, tr.z), (q.x, q.y, q.z, q.w))))
        for entries in found.values():
            entries.sort(key=lambda e: e[0])
        return found

    @staticmethod
    def _mounting_at(entries: list[tuple[int, CameraMounting | None]], stamp_ns: int) -> CameraMounting | None:
        """The latest mounting at or before ``stamp_ns``."""
        before = [m for s, m in entries if s <= stamp_ns]
        return before[-1] if before else None

    def _frame(self, p: _Pending, seq: BagSequence, state: dict) -> PanopticFrame | None:
        cam = seq.camera
        img_msg = p.parts.get(cam.image_topic)
        if img_msg is None:
            return None  # ground truth without an image
        where = f"bag {seq.bag.name}, {cam.image_topic} at {p.stamp_ns} ns"
        image = compressed_msg_to_rgb(img_msg, where) if cam.compressed else image_msg_to_rgb(img_msg, where)
        h, w = image.shape[:2]
        pan_msg = p.parts.get(cam.panoptic_topic) if cam.panoptic_topic else None
        if pan_msg is not None:
            semantic, instance = panoptic_msg_to_maps(pan_msg, f"bag {seq.bag.name}, {cam.panoptic_topic}")
            if semantic.shape != (h, w):
                raise DatasetError(f"{where}: ground truth {semantic.shape} and image {(h, w)} differ in size")
        else:
            semantic, instance = np.full((h, w), VOID, dtype=np.uint8), np.zeros((h, w), dtype=np.int32)
        info = p.parts.get(cam.camera_info_topic) if cam.camera_info_topic else None
        if info is None and state["info"] is not None and _stamp_ns(state["info"].header) <= p.stamp_ns:
            info = state["info"]
        camera = None
        mounting = self._mounting_at(state["tf"].get(img_msg.header.frame_id, []), p.stamp_ns)
        if info is not None and mounting is not None:
            try:
                camera = CameraModel(CameraIntrinsics.from_k(np.asarray(info.k), info.width, info.height), mounting)
            except ValueError as exc:
                raise DatasetError(f"bag {seq.bag.name}, {cam.camera_info_topic}: bad CameraInfo ({exc})") from None
        objects: list[ObjectAnnotation] = []
        frame_index = state["count"]
        obj_msg = p.parts.get(cam.objects_topic) if cam.objects_topic else None
        if obj_msg is not None:
            frame_index = int(obj_msg.frame_index)
            for o in obj_msg.objects:
                hidden = int(o.state) == STATE_OCCLUDED
                objects.append(ObjectAnnotation(
                    track_id=int(o.track_id), class_id=int(o.class_id), area_px=int(o.visible_area_px),
                    visible_fraction=0.0 if hidden else math.nan,
                    amodal_box_xyxy=(float(o.x_min_px), float(o.y_min_px), float(o.x_max_px), float(o.y_max_px)),
                    position_m=(float(o.position_m.x), float(o.position_m.y), float(o.position_m.z))
                    if o.has_position else None))
        state["count"] += 1
        return PanopticFrame(image=image, semantic=semantic, instance=instance, objects=objects, camera=camera,
                             stamp_ns=p.stamp_ns, frame_index=frame_index, sequence=seq.name)
