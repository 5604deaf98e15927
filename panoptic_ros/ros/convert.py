"""rclpy messages <-> core types: images through panoptic_ros.image_codec, results into our messages.

Input checks come in two weights. :func:`check_image` and
:func:`check_compressed` run in the subscription callback and cost
microseconds (field and header checks, no pixel is touched) so that an
obviously broken frame never displaces a good one waiting to be processed;
:func:`image_rgb` and :func:`compressed_rgb` decode the pixels on the worker
thread. Every rejection is an :class:`InputRejected` with a ``kind`` (the
diagnostics counter it lands in) and a message naming the bad field.
"""
from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from visualization_msgs.msg import Marker, MarkerArray

from panoptic_ros.camera import CameraIntrinsics
from panoptic_ros.classes import VOID, ClassTable
from panoptic_ros.image_codec import (DEFAULT_MAX_PIXELS, ImageDecodeError, compressed_to_numpy, describe_encoding,
                                      image_to_numpy, image_to_rgb, numpy_to_image, parse_compressed_format)
from panoptic_ros.msg import PanopticClassInfo, PanopticObject, PanopticObjectArray
from panoptic_ros.panoptic import LABEL_DIVISOR, PANOPTIC_ENCODING
from panoptic_ros.pipeline import MIN_IMAGE_SIDE_PX, FrameOutput

# Decode-error kinds (diagnostics keys decode_errors.<kind>).
SIZE, ENCODING, LAYOUT, FORMAT, CORRUPT = "size", "encoding", "layout", "format", "corrupt"
DECODE_ERROR_KINDS = (SIZE, ENCODING, LAYOUT, FORMAT, CORRUPT)
_COLOUR_DTYPES = (np.uint8, np.uint16)


class InputRejected(ValueError):
    """An input message the node cannot use; ``kind`` says which diagnostics counter it counts in."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# --------------------------------------------------------------------------- time


def stamp_to_s(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def s_to_stamp(seconds: float) -> Time:
    ns = int(round(seconds * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


# --------------------------------------------------------------------------- inputs


def check_size(width: int, height: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """InputRejected(SIZE) for an image too small to segment or over the pixel limit."""
    if width < 1 or height < 1:
        raise InputRejected(SIZE, f"image size {width}x{height} is empty")
    if width < MIN_IMAGE_SIDE_PX or height < MIN_IMAGE_SIDE_PX:
        raise InputRejected(SIZE, f"image size {width}x{height} is below the minimum of {MIN_IMAGE_SIDE_PX} px "
                                  "a side; nothing can be segmented in it")
    if width * height > max_pixels:
        raise InputRejected(SIZE, f"image size {width}x{height} is over the limit of {max_pixels} pixels")


def check_image(msg: Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Cheap validity check of a raw image's fields (no pixel conversion); raises InputRejected."""
    h, w = int(msg.height), int(msg.width)
    check_size(w, h, max_pixels)
    try:
        info = describe_encoding(msg.encoding)
    except ImageDecodeError as exc:
        raise InputRejected(ENCODING, str(exc)) from None
    if info.kind == "generic" and (info.dtype not in _COLOUR_DTYPES or info.channels == 2):
        raise InputRejected(ENCODING, f"encoding {msg.encoding!r} holds {info.channels}-channel {info.dtype} "
                                      "values, not an image the model can see; publish rgb8, bgr8, mono8, "
                                      "bayer_* or yuv422")
    try:
        image_to_numpy(h, w, msg.encoding, msg.step, msg.data, bool(msg.is_bigendian), max_pixels=max_pixels)
    except ImageDecodeError as exc:
        raise InputRejected(LAYOUT, str(exc)) from None


def image_rgb(msg: Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a raw image (a view of the message's buffer for rgb8); raises InputRejected."""
    check_image(msg, max_pixels)
    try:
        return image_to_rgb(msg.height, msg.width, msg.encoding, msg.step, msg.data, bool(msg.is_bigendian),
                            max_pixels=max_pixels)
    except ImageDecodeError as exc:
        raise InputRejected(LAYOUT, str(exc)) from None


def check_compressed(msg: CompressedImage) -> None:
    """Cheap check of a compressed image: a known format and some data; raises InputRejected."""
    try:
        parse_compressed_format(msg.format)
    except ImageDecodeError as exc:
        raise InputRejected(FORMAT, str(exc)) from None
    if len(msg.data) == 0:
        raise InputRejected(CORRUPT, f"compressed image ({msg.format}) has no data")


def compressed_rgb(msg: CompressedImage, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a JPEG/PNG CompressedImage; raises InputRejected."""
    check_compressed(msg)
    try:
        pixels = compressed_to_numpy(msg.format, msg.data, max_pixels=max_pixels)
    except ImageDecodeError as exc:
        raise InputRejected(CORRUPT, str(exc)) from None
    if pixels.dtype == np.uint16:
        pixels = ((pixels.astype(np.uint32) * 2 + 257) // 514).astype(np.uint8)  # v / 257, rounded
    if pixels.dtype != np.uint8:
        raise InputRejected(FORMAT, f"compressed image decoded to {pixels.dtype}, not an 8/16-bit image")
    check_size(pixels.shape[1], pixels.shape[0], max_pixels)
    if pixels.ndim == 2:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB)
    return pixels


# Focal length / longer image side of any real camera: from a fisheye's ~180 degree field of view
# (ratio ~1e-3 at the extreme) to a ~0.001 degree telescope (ratio ~6e4). Outside this, a CameraInfo is
# garbage, and numbers that small or large underflow or overflow once scaled to another resolution.
FOCAL_TO_SIDE_RANGE = (1e-3, 1e5)
PRINCIPAL_POINT_MAX_SIDES = 10.0  # |cx| / width and |cy| / height: beyond this the principal point is garbage


def camera_info_intrinsics(msg: CameraInfo, max_pixels: int = DEFAULT_MAX_PIXELS) -> CameraIntrinsics:
    """The pinhole part of a CameraInfo; ValueError naming the problem (NaN, zero or absurd focal length,
    absurd principal point, no size or an absurd one)."""
    k = [float(v) for v in msg.k]
    if len(k) != 9 or not all(math.isfinite(v) for v in k):
        raise ValueError(f"CameraInfo K has non-finite entries {k}")
    width, height = int(msg.width), int(msg.height)
    if width < 1 or height < 1:
        raise ValueError(f"CameraInfo image size {msg.width}x{msg.height} is empty (camera not calibrated?)")
    if width * height > max_pixels:
        raise ValueError(f"CameraInfo image size {width}x{height} is over the limit of {max_pixels} pixels")
    side = max(width, height)
    lo, hi = FOCAL_TO_SIDE_RANGE[0] * side, FOCAL_TO_SIDE_RANGE[1] * side
    for name, focal in (("fx", k[0]), ("fy", k[4])):
        if not lo <= focal <= hi:
            raise ValueError(f"CameraInfo K {name}={focal!r} px is not a focal length of a {width}x{height} "
                             f"camera (expected {lo:g}..{hi:g} px); publish the calibrated K")
    if abs(k[2]) > PRINCIPAL_POINT_MAX_SIDES * width or abs(k[5]) > PRINCIPAL_POINT_MAX_SIDES * height:
        raise ValueError(f"CameraInfo principal point ({k[2]!r}, {k[5]!r}) px lies far outside the "
                         f"{width}x{height} image; publish the calibrated K")
    try:
        return CameraIntrinsics.from_k(k, int(msg.width), int(msg.height))
    except ValueError as exc:
        raise ValueError(f"CameraInfo is unusable: {exc}") from None


# --------------------------------------------------------------------------- outputs


def image_msg(header: Header, array: np.ndarray, encoding: str) -> Image:
    raw = numpy_to_image(array, encoding)
    return Image(header=header, height=raw.height, width=raw.width, encoding=raw.encoding,
                 is_bigendian=int(raw.is_bigendian), step=raw.step, data=raw.data)


def panoptic_image_msg(header: Header, panoptic: np.ndarray) -> Image:
    """32SC1 little-endian: class_id * LABEL_DIVISOR + track_id per pixel (see PanopticClassInfo.msg)."""
    return image_msg(header, panoptic.astype(np.int32, copy=False), PANOPTIC_ENCODING)


def semantic_image_msg(header: Header, semantic: np.ndarray) -> Image:
    return image_msg(header, semantic.astype(np.uint8, copy=False), "mono8")


def objects_msg(header: Header, output: FrameOutput, camera_name: str, processing_time_s: float) -> PanopticObjectArray:
    h, w = output.semantic.shape
    return PanopticObjectArray(header=header, camera_name=camera_name, frame_index=output.frame_index,
                               processing_time_s=float(processing_time_s), image_width=w, image_height=h,
                               objects=[_object_msg(o) for o in output.objects])


def _object_msg(o: Any) -> PanopticObject:
    t = o.track
    x1, y1, x2, y2 = (float(v) for v in t.box_xyxy)
    msg = PanopticObject(
        track_id=int(t.track_id), class_id=int(t.class_id), label=o.label, state=int(t.state),
        score=float(np.clip(t.score, 0.0, 1.0)), x_min_px=x1, y_min_px=y1, x_max_px=x2, y_max_px=y2,
        visible_area_px=int(t.visible_area_px), centroid_x_px=float(t.centroid_px[0]),
        centroid_y_px=float(t.centroid_px[1]), velocity_x_px_s=float(t.velocity_px_s[0]),
        velocity_y_px_s=float(t.velocity_px_s[1]), age_frames=int(t.age_frames), age_s=float(t.age_s),
        frames_since_seen=int(t.frames_since_seen), last_seen=s_to_stamp(t.last_seen_s))
    if o.position_m is not None:
        x, y, z = (float(v) for v in o.position_m)
        msg.has_position = True
        msg.position_m = Point(x=x, y=y, z=z)
        msg.distance_m = float(o.distance_m)
    return msg


def class_info_msg(classes: ClassTable, model_id: str, stamp: Time) -> PanopticClassInfo:
    return PanopticClassInfo(
        header=Header(stamp=stamp), model_id=model_id, class_ids=[c.train_id for c in classes.classes],
        names=classes.names, is_thing=[c.is_thing for c in classes.classes],
        colors_rgb=[v for c in classes.classes for v in c.color_rgb], void_class_id=VOID,
        label_divisor=LABEL_DIVISOR, panoptic_encoding=PANOPTIC_ENCODING)


def markers_msg(header: Header, output: FrameOutput, namespace: str, lifetime_s: float = 0.5) -> MarkerArray:
    """Text labels ('#id label  d m') at each positioned object, in the camera frame; the first clears old ones."""
    markers = [Marker(header=header, ns=namespace, action=Marker.DELETEALL)]
    lifetime = s_to_stamp(lifetime_s)
    for o in output.objects:
        if o.position_m is None:
            continue
        x, y, z = (float(v) for v in o.position_m)
        m = Marker(header=header, ns=namespace, id=int(o.track.track_id), type=Marker.TEXT_VIEW_FACING,
                   action=Marker.ADD, text=f"#{o.track.track_id} {o.label} {o.distance_m:.1f} m")
        m.pose.position = Point(x=x, y=y, z=z)
        m.pose.orientation.w = 1.0
        m.scale.z = 0.4
        m.color.r = m.color.g = m.color.b = m.color.a = 1.0
        m.lifetime.sec, m.lifetime.nanosec = lifetime.sec, lifetime.nanosec
        markers.append(m)
    return MarkerArray(markers=markers)


# --------------------------------------------------------------------------- vision_msgs (full ROS installs)


def vision_msgs_available() -> bool:
    try:
        import vision_msgs.msg  # noqa: F401
    except ImportError:
        return False
    return True


def detections_msg(header: Header, output: FrameOutput) -> Any:
    """vision_msgs/Detection2DArray: one Detection2D per visible or occluded track, track id in ``id``."""
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose

    detections = []
    for o in output.objects:
        t = o.track
        x1, y1, x2, y2 = (float(v) for v in t.box_xyxy)
        d = Detection2D(header=header, id=str(t.track_id))
        d.bbox.center.position.x = (x1 + x2) / 2.0
        d.bbox.center.position.y = (y1 + y2) / 2.0
        d.bbox.size_x, d.bbox.size_y = x2 - x1, y2 - y1
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id = str(t.class_id)
        hyp.hypothesis.score = float(t.score)
        if o.position_m is not None:
            hyp.pose.pose.position = Point(x=float(o.position_m[0]), y=float(o.position_m[1]),
                                           z=float(o.position_m[2]))
        d.results = [hyp]
        detections.append(d)
    return Detection2DArray(header=header, detections=detections)


def label_info_msg(classes: ClassTable, stamp: Time, threshold: float) -> Any:
    """vision_msgs/LabelInfo: the class map (id -> name) that Detection2D class ids refer to."""
    from vision_msgs.msg import LabelInfo, VisionClass

    return LabelInfo(header=Header(stamp=stamp), threshold=float(threshold),
                     class_map=[VisionClass(class_id=c.train_id, class_name=c.name) for c in classes.classes])


def header_copy(header: Header) -> Header:
    return Header(stamp=Time(sec=header.stamp.sec, nanosec=header.stamp.nanosec), frame_id=header.frame_id)
