"""``panoptic-ros replay``: run the stack over recorded rosbag2 files and record what it publishes.

Any rosbag2 directory reads, either storage (mcap, sqlite3) and any metadata
version, through the pure-Python ``rosbags``. Camera streams are found by
type: a ``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage`` topic with a
``sensor_msgs/CameraInfo`` beside it (``{ns}/image``, ``{ns}/image_raw``,
``{ns}/image/compressed`` ... with ``{ns}/camera_info``), one stream per
namespace (raw preferred), or named with ``--topics``.

Offline (default) runs the core :class:`~panoptic_ros.pipeline.Pipeline`
here, as fast as it goes, several frames (of any cameras) per model batch.
``--live`` publishes the bag through real rclpy to a ``panoptic_node`` and
records what it publishes (:mod:`panoptic_ros.ros.live_replay`). Either way
the output directory holds:

- ``panoptic/`` an output rosbag2 (``panoptic.mcap`` or ``panoptic.db3``) with,
  per camera namespace ``{ns}``, the node's topics and types:
  ``{ns}/panoptic/image`` (32SC1 lossless ids), ``{ns}/panoptic/semantic``
  (mono8), ``{ns}/panoptic/objects`` (PanopticObjectArray),
  ``{ns}/panoptic/overlay`` (rgb8, unless ``--no-overlay``),
  ``{ns}/panoptic/class_info`` (latched) and the input ``{ns}/camera_info``.
  Every message carries the input image's header (stamp and frame id) and
  is logged at the input image's log time, so it lines up with the source
  bag in Foxglove or RViz.
- ``overlay.mp4`` the overlay as video (``overlay_{camera}.mp4`` per camera
  when there are several), mp4v at the bag's frame rate.
- ``timings.json`` per-frame latency components and their summary.

Several bags (or a directory of bags) write ``DIR/{bag name}/...`` each and
run in parallel with ``--workers N`` or ``--ray ADDRESS``.

Bad bags: a missing or truncated file, missing metadata, a corrupt database,
no camera topics or unknown message types each end that bag with one line on
stderr naming the bag, what is wrong and what to do; what was read before
the damage is processed and written (the output bag and video are closed and
valid; a cut-off mcap is read up to the cut). Exit codes: 0 all bags
replayed; 1 at least one bag was bad (the others are done); 2 bad arguments,
parameters or model; 130 interrupted (outputs closed).
"""
from __future__ import annotations

import argparse
import json
import math
import sqlite3
import struct
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from panoptic_ros.classes import VOID, ClassTable
from panoptic_ros.datasets.types import DatasetError
from panoptic_ros.params import NodeParams, add_node_param_flags, flatten, node_params
from panoptic_ros.panoptic import LABEL_DIVISOR, PANOPTIC_ENCODING
from panoptic_ros.scaleout import RAY_LOCAL, ScaleOut, ScaleOutError, default_workers, map_ordered

OUTPUT_BAG_NAME = "panoptic"
VIDEO_NAME = "overlay.mp4"
TIMINGS_NAME = "timings.json"
NODE_LOG_NAME = "node.log"
STORAGES = ("mcap", "sqlite3")
SOURCE_KEY = "panoptic_ros.source_bag"
MODE_KEY = "panoptic_ros.replay_mode"
MODEL_KEY = "panoptic_ros.model"
SEQUENCE_KEY = "panoptic_ros.sequence"
DEFAULT_VIDEO_FPS = 10.0

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
OBJECTS_TYPE = "panoptic_ros/msg/PanopticObjectArray"
CLASS_INFO_TYPE = "panoptic_ros/msg/PanopticClassInfo"

# Output topics relative to a camera's namespace: the node's names (panoptic_ros.ros.topics, not imported
# here because that package is the ROS layer; test_replay checks that they agree).
PANOPTIC_TOPIC = "panoptic/image"
SEMANTIC_TOPIC = "panoptic/semantic"
OBJECTS_TOPIC = "panoptic/objects"
OVERLAY_TOPIC = "panoptic/overlay"
CLASS_INFO_TOPIC = "panoptic/class_info"
CAMERA_INFO_TOPIC = "camera_info"

EXIT_OK, EXIT_BAD_BAG, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


# --------------------------------------------------------------------------- errors


class BagError(DatasetError):
    """A bag replay cannot read (further). ``kind`` names the case; the message names the bag and the fix."""

    KINDS = ("missing", "no_metadata", "truncated", "corrupt", "no_cameras", "unknown_type", "unreadable")

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class ReplaySetupError(RuntimeError):
    """The replay cannot start at all (no ROS for --live, the node never came up); the message says why."""


# --------------------------------------------------------------------------- finding bags


def _storage_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in (".mcap", ".db3"))


def bag_directories(path: str | Path) -> list[Path]:
    """The rosbag2 directories ``path`` names: a bag directory, a storage file inside one, or a directory
    of bags (sorted by name; sub-directories holding storage files without metadata.yaml are kept, so that
    they fail on their own, with their own message). BagError when it names none."""
    p = Path(path)
    if not p.exists():
        raise BagError("missing", f"{p} does not exist; pass a rosbag2 directory (the one with metadata.yaml)")
    if p.is_file():
        if p.suffix not in (".mcap", ".db3"):
            raise BagError("unreadable", f"{p} is not a rosbag2 storage file (.mcap or .db3) nor a bag directory")
        return [p.parent]
    if (p / "metadata.yaml").is_file() or _storage_files(p):
        return [p]
    bags = sorted(d for d in p.iterdir() if d.is_dir() and ((d / "metadata.yaml").is_file() or _storage_files(d)))
    if not bags:
        raise BagError("no_metadata", f"{p} is not a rosbag2 directory (no metadata.yaml, no .mcap/.db3 file) nor a "
                                      "directory of bags")
    return bags


def _metadata(bag: Path) -> dict:
    """metadata.yaml's ``rosbag2_bagfile_information``; BagError when absent or unreadable."""
    meta_path = bag / "metadata.yaml"
    if not meta_path.is_file():
        files = ", ".join(f.name for f in _storage_files(bag)) or "no storage file either"
        raise BagError("no_metadata", f"bag {bag}: no metadata.yaml ({files}); rosbag2 needs it to read the bag. "
                                      f"Rebuild it with `ros2 bag reindex {bag}`")
    try:
        doc = yaml.safe_load(meta_path.read_text())
        info = doc["rosbag2_bagfile_information"]
        if not isinstance(info, dict):
            raise TypeError("not a mapping")
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise BagError("no_metadata", f"bag {bag}: metadata.yaml is unreadable ({exc}); rebuild it with "
                                      f"`ros2 bag reindex {bag}`") from None
    return info


# --------------------------------------------------------------------------- reading a bag


@dataclass(frozen=True)
class BagMessage:
    """One serialized message as stored: CDR bytes, logged at ``log_time_ns`` (the recorder's receive time)."""

    topic: str
    msgtype: str
    log_time_ns: int
    raw: bytes | memoryview


_READ_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error, struct.error, EOFError, OSError, ValueError,
                                                 KeyError, IndexError, AssertionError)


class BagSource:
    """One rosbag2 directory opened for replay: its topics and its messages in log-time order.

    Opens through ``rosbags`` (any storage and metadata version). An mcap
    file that ``rosbags`` cannot open (a recording cut off before its
    summary was written) is read record by record with the ``mcap``
    library instead, up to the cut, and :meth:`messages` then ends with a
    ``truncated`` BagError after yielding every complete message.
    """

    def __init__(self, bag: Path) -> None:
        from rosbags.highlevel import AnyReader

        from panoptic_ros.datasets.rosbag_io import panoptic_typestore

        self.bag = Path(bag)
        self.info = _metadata(self.bag)
        self.typestore = panoptic_typestore()
        self.custom_data = {str(k): str(v) for k, v in (self.info.get("custom_data") or {}).items()}
        self._reader: Any = None
        self._recovery: Path | None = None
        self._open_error = ""
        try:
            reader = AnyReader([self.bag], default_typestore=self.typestore)
            reader.open()
        except Exception as exc:  # noqa: BLE001 - rosbags raises its own errors, KeyError, sqlite3 and struct errors
            self._open_error = _one_line(exc)
            recovery = self._mcap_file()
            if recovery is None or not self._mcap_header_ok(recovery):
                files = [f for f in _storage_files(self.bag)]
                if not files:
                    raise BagError("missing", f"bag {self.bag}: its storage file is missing ({self._open_error}); "
                                              "copy the whole bag directory") from None
                raise BagError("corrupt", f"bag {self.bag} is truncated or corrupt and cannot be opened "
                                          f"({self._open_error})") from None
            self._recovery = recovery
            self.topics = self._topics_from_metadata()
            self.message_counts = {}
        else:
            self._reader = reader
            self.topics = {c.topic: c.msgtype for c in reader.connections}
            self.message_counts = {}
            for c in reader.connections:
                self.message_counts[c.topic] = self.message_counts.get(c.topic, 0) + int(c.msgcount)

    @property
    def recovering(self) -> bool:
        """True when the bag could not be opened normally and is read up to its damage."""
        return self._recovery is not None

    def _mcap_file(self) -> Path | None:
        storage = str(self.info.get("storage_identifier", ""))
        files = [f for f in _storage_files(self.bag) if f.suffix == ".mcap"]
        return files[0] if files and storage in ("mcap", "") else None

    @staticmethod
    def _mcap_header_ok(path: Path) -> bool:
        with path.open("rb") as f:
            return f.read(8) == b"\x89MCAP0\r\n"

    def _topics_from_metadata(self) -> dict[str, str]:
        topics = {}
        for entry in self.info.get("topics_with_message_count") or []:
            meta = (entry or {}).get("topic_metadata") or {}
            if "name" in meta and "type" in meta:
                topics[str(meta["name"])] = str(meta["type"])
        return topics

    def messages(self, topics: set[str]) -> Iterator[BagMessage]:
        """The messages of ``topics`` in log-time order; BagError where the bag's damage starts."""
        if self._recovery is not None:
            yield from self._recover(topics)
            return
        reader = self._reader
        connections = [c for c in reader.connections if c.topic in topics]
        count = 0
        try:
            for conn, log_time_ns, raw in reader.messages(connections=connections):
                count += 1
                yield BagMessage(conn.topic, conn.msgtype, int(log_time_ns), raw)
        except _READ_ERRORS + (_rosbags_errors()) as exc:
            raise BagError("corrupt", f"bag {self.bag} is corrupt after {count} message(s) ({_one_line(exc)}); "
                                      "what came before the damage was used") from None

    def _recover(self, topics: set[str]) -> Iterator[BagMessage]:
        from mcap.exceptions import McapError
        from mcap.records import Channel, Message, Schema
        from mcap.stream_reader import StreamReader

        schemas: dict[int, str] = {}
        channels: dict[int, tuple[str, str]] = {}
        count = 0
        with self._recovery.open("rb") as f:  # type: ignore[union-attr]
            try:
                for record in StreamReader(f, record_size_limit=1 << 31).records:
                    if isinstance(record, Schema):
                        schemas[record.id] = record.name
                    elif isinstance(record, Channel):
                        channels[record.id] = (record.topic, schemas.get(record.schema_id)
                                               or self.topics.get(record.topic, ""))
                    elif isinstance(record, Message):
                        topic, msgtype = channels.get(record.channel_id, ("", ""))
                        if topic in topics and msgtype:
                            count += 1
                            yield BagMessage(topic, msgtype, int(record.log_time), record.data)
            except (McapError, EOFError, struct.error, ValueError, OSError) as exc:
                reason = _one_line(exc)
            else:
                return  # the whole file read: rosbags' complaint was not about missing data
        raise BagError("truncated", f"bag {self.bag} is truncated ({self._open_error}; reading stopped: {reason}); "
                                    f"used the {count} message(s) before the cut. `ros2 bag reindex` can "
                                    "rebuild the summary of a cut-off recording")

    def deserialize(self, message: BagMessage) -> Any:
        """The rosbags message object; BagError("unknown_type") for a type this bag and we cannot describe."""
        try:
            return self.typestore.deserialize_cdr(bytes(message.raw), message.msgtype)
        except KeyError:
            raise BagError("unknown_type", f"bag {self.bag}: topic {message.topic} has message type "
                                           f"{message.msgtype}, which is unknown here") from None

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _rosbags_errors() -> tuple[type[BaseException], ...]:
    """What ``rosbags`` raises on a damaged bag: its own errors and those of apsw, its SQLite binding."""
    from rosbags.highlevel import AnyReaderError
    from rosbags.rosbag2 import ReaderError
    from rosbags.serde import SerdeError

    errors: tuple[type[BaseException], ...] = (AnyReaderError, ReaderError, SerdeError)
    try:
        import apsw
    except ImportError:
        return errors
    return errors + (apsw.Error,)


def bag_read_errors() -> tuple[type[BaseException], ...]:
    """The storage-level errors a truncated or corrupt bag raises from the readers (``rosbags`` and its SQLite
    and mcap layers), for callers that read bags themselves; not the generic ValueError/KeyError family,
    which would hide bugs."""
    return (sqlite3.Error, struct.error, EOFError, OSError) + _rosbags_errors()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


# --------------------------------------------------------------------------- camera streams


@dataclass(frozen=True)
class CameraStream:
    """One camera in a bag: its image topic and namespace; outputs go to ``{namespace}/panoptic/...``."""

    name: str  # the camera name: the namespace without its leading '/', "camera" at the root
    namespace: str  # "/front" ("" for topics at the root)
    image_topic: str
    compressed: bool
    camera_info_topic: str | None

    def topic(self, relative: str) -> str:
        return f"{self.namespace}/{relative}"


def _namespace(topic: str, compressed: bool) -> str:
    parts = topic.rstrip("/").split("/")
    drop = 2 if compressed and parts[-1] == "compressed" else 1
    return "/".join(parts[:-drop])


def _stream(topic: str, msgtype: str, topics: dict[str, str]) -> CameraStream:
    compressed = msgtype == COMPRESSED_TYPE
    ns = _namespace(topic, compressed)
    info = f"{ns}/camera_info"
    return CameraStream(ns.strip("/") or "camera", ns, topic, compressed,
                        info if topics.get(info) == CAMERA_INFO_TYPE else None)


def find_cameras(topics: dict[str, str], bag: Path, requested: Sequence[str] = ()) -> list[CameraStream]:
    """The camera streams of a bag (topic -> msgtype): those named in ``requested``, else every image topic
    with a CameraInfo in its namespace. BagError("no_cameras" / "unknown_type") naming what the bag holds."""
    if requested:
        streams = []
        for topic in requested:
            if topic not in topics:
                raise BagError("no_cameras", f"bag {bag} has no topic {topic}; it holds {_listing(topics)}")
            msgtype = topics[topic]
            if msgtype not in (IMAGE_TYPE, COMPRESSED_TYPE):
                raise BagError("unknown_type", f"bag {bag}: topic {topic} has message type {msgtype}; replay reads "
                                               f"{IMAGE_TYPE} or {COMPRESSED_TYPE}")
            streams.append(_stream(topic, msgtype, topics))
    else:
        found: dict[str, tuple[int, CameraStream]] = {}
        for topic, msgtype in sorted(topics.items()):
            if msgtype not in (IMAGE_TYPE, COMPRESSED_TYPE) or "/ground_truth/" in topic or "/panoptic/" in topic:
                continue
            s = _stream(topic, msgtype, topics)
            if s.camera_info_topic is None:
                continue
            rank = 2 if s.compressed else (0 if topic.endswith("/image") else 1)
            if s.namespace not in found or rank < found[s.namespace][0]:
                found[s.namespace] = (rank, s)
        streams = [s for _, s in found.values()]
        if not streams:
            raise BagError("no_cameras", f"bag {bag} has no camera topics (a {IMAGE_TYPE} or {COMPRESSED_TYPE} topic "
                                         f"with a {CAMERA_INFO_TYPE} '<namespace>/camera_info' beside it); it holds "
                                         f"{_listing(topics)}. Name the image topics with --topics")
    names = [s.name for s in streams]
    if len(set(names)) != len(names):
        raise BagError("no_cameras", f"bag {bag}: topics {[s.image_topic for s in streams]} share a namespace; "
                                     "replay one image stream per namespace")
    return streams


def _listing(topics: dict[str, str]) -> str:
    if not topics:
        return "no topics at all"
    from panoptic_ros.datasets.rosbag_io import panoptic_typestore

    known = panoptic_typestore().fielddefs
    items = [f"{t} ({m}{'' if m in known else ', an unknown type'})" for t, m in sorted(topics.items())]
    return ", ".join(items[:12]) + (f" and {len(items) - 12} more" if len(items) > 12 else "")


# --------------------------------------------------------------------------- output messages (rosbags types)


def _stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def s_to_stamp_ns(seconds: float) -> int:
    """Seconds -> integer nanoseconds, rounded as the node's ``s_to_stamp`` rounds."""
    return int(round(seconds * 1e9))


class OutputMessages:
    """Builds the node's output messages as ``rosbags`` objects, field for field what
    ``panoptic_ros.ros.convert`` builds with rclpy (test_replay compares the serialized bytes)."""

    def __init__(self, typestore: Any) -> None:
        self.ts = typestore
        self.t = typestore.types

    def time(self, stamp_ns: int) -> Any:
        return self.t["builtin_interfaces/msg/Time"](sec=int(stamp_ns // 1_000_000_000),
                                                     nanosec=int(stamp_ns % 1_000_000_000))

    def header(self, stamp_ns: int, frame_id: str) -> Any:
        return self.t["std_msgs/msg/Header"](stamp=self.time(stamp_ns), frame_id=frame_id)

    def image(self, header: Any, array: np.ndarray, encoding: str) -> Any:
        from panoptic_ros.image_codec import numpy_to_image

        raw = numpy_to_image(array, encoding)
        return self.t[IMAGE_TYPE](header=header, height=raw.height, width=raw.width, encoding=raw.encoding,
                                  is_bigendian=int(raw.is_bigendian), step=raw.step,
                                  data=np.frombuffer(raw.data, dtype=np.uint8))

    def objects(self, header: Any, output: Any, camera_name: str, processing_time_s: float) -> Any:
        h, w = output.semantic.shape
        return self.t[OBJECTS_TYPE](header=header, camera_name=camera_name, frame_index=int(output.frame_index),
                                    processing_time_s=float(processing_time_s), image_width=int(w),
                                    image_height=int(h), objects=[self._object(o) for o in output.objects])

    def _object(self, o: Any) -> Any:
        t = o.track
        x1, y1, x2, y2 = (float(v) for v in t.box_xyxy)
        point = self.t["geometry_msgs/msg/Point"]
        if o.position_m is not None:
            x, y, z = (float(v) for v in o.position_m)
            has_position, position, distance = True, point(x=x, y=y, z=z), float(o.distance_m)
        else:
            has_position, position, distance = False, point(x=0.0, y=0.0, z=0.0), 0.0
        return self.t["panoptic_ros/msg/PanopticObject"](
            track_id=int(t.track_id), class_id=int(t.class_id), label=str(o.label), state=int(t.state),
            score=float(np.clip(t.score, 0.0, 1.0)), x_min_px=x1, y_min_px=y1, x_max_px=x2, y_max_px=y2,
            visible_area_px=int(t.visible_area_px), centroid_x_px=float(t.centroid_px[0]),
            centroid_y_px=float(t.centroid_px[1]), velocity_x_px_s=float(t.velocity_px_s[0]),
            velocity_y_px_s=float(t.velocity_px_s[1]), age_frames=int(t.age_frames), age_s=float(t.age_s),
            frames_since_seen=int(t.frames_since_seen), last_seen=self.time(s_to_stamp_ns(t.last_seen_s)),
            has_position=has_position, position_m=position, distance_m=distance)

    def class_info(self, stamp_ns: int, classes: ClassTable, model_id: str) -> Any:
        c = classes.classes
        return self.t[CLASS_INFO_TYPE](
            header=self.header(stamp_ns, ""), model_id=model_id,
            class_ids=np.array([x.train_id for x in c], dtype=np.uint8), names=[x.name for x in c],
            is_thing=np.array([x.is_thing for x in c], dtype=bool),
            colors_rgb=np.array([v for x in c for v in x.color_rgb], dtype=np.uint8), void_class_id=VOID,
            label_divisor=LABEL_DIVISOR, panoptic_encoding=PANOPTIC_ENCODING)

    def serialize(self, msg: Any, msgtype: str) -> bytes:
        return bytes(self.ts.serialize_cdr(msg, msgtype))


# --------------------------------------------------------------------------- output files


class OutputBag:
    """The replay's output rosbag2 directory; topics get connections as they first appear."""

    def __init__(self, path: Path, storage: str, typestore: Any) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer, WriterError

        from panoptic_ros.datasets.rosbag_io import BAG_VERSION

        if storage not in STORAGES:
            raise ValueError(f"--storage must be one of {', '.join(STORAGES)}, got {storage!r}")
        self.path = path
        self.typestore = typestore
        self.counts: dict[str, int] = {}
        self._connections: dict[str, Any] = {}
        self._custom: dict[str, str] = {}
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        try:
            self._writer = Writer(path, version=BAG_VERSION, storage_plugin=plugin)
            self._writer.open()
        except (WriterError, FileExistsError) as exc:
            raise ValueError(f"cannot create the output bag {path}: {exc}; choose a new --out or delete it") from None

    def write(self, topic: str, msgtype: str, log_time_ns: int, cdr: bytes, latched: bool = False) -> None:
        conn = self._connections.get(topic)
        if conn is None:
            conn = self._writer.add_connection(topic, msgtype, typestore=self.typestore,
                                               offered_qos_profiles=[_latched_qos()] if latched else [])
            self._connections[topic] = conn
        self._writer.write(conn, int(log_time_ns), cdr)
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def set_custom_data(self, key: str, value: str) -> None:
        self._custom[key] = value

    def close(self) -> Path:
        for k, v in self._custom.items():
            self._writer.set_custom_data(k, v)
        self._writer.close()
        return self.path


def _latched_qos() -> Any:
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, zero, zero,
               QosLiveliness.AUTOMATIC, zero, False)


class OverlayVideo:
    """An mp4v video of RGB frames; opens at the second frame, whose stamp step gives the frame rate."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.frames = 0
        self.error: str | None = None
        self._writer: Any = None
        self._first: tuple[np.ndarray, float] | None = None
        self._size: tuple[int, int] | None = None

    def add(self, rgb: np.ndarray, stamp_s: float) -> None:
        if self.error is not None:
            return
        if self._writer is None:
            if self._first is None:
                self._first = (rgb.copy(), stamp_s)
                return
            dt = stamp_s - self._first[1]
            self._open(1.0 / dt if dt > 0 else DEFAULT_VIDEO_FPS)
            if self._writer is None:
                return
            self._put(self._first[0])
            self._first = None
        self._put(rgb)

    def _open(self, fps: float) -> None:
        import cv2

        assert self._first is not None
        h, w = self._first[0].shape[:2]
        self._size = (w, h)
        fps = float(min(max(fps, 1.0), 120.0))
        writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        if not writer.isOpened():
            self.error = f"OpenCV cannot write {self.path} (mp4v, {w}x{h}); no overlay video"
            return
        self._writer = writer

    def _put(self, rgb: np.ndarray) -> None:
        import cv2

        if (rgb.shape[1], rgb.shape[0]) != self._size:
            rgb = cv2.resize(rgb, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> Path | None:
        if self._writer is None and self._first is not None and self.error is None:
            self._open(DEFAULT_VIDEO_FPS)  # a single frame
            if self._writer is not None:
                self._put(self._first[0])
        if self._writer is None:
            return None
        self._writer.release()
        self._writer = None
        import cv2

        reader = cv2.VideoCapture(str(self.path))  # what players will do: can it be read back?
        readable = reader.isOpened() and reader.read()[0]
        reader.release()
        if not readable:
            self.error = f"{self.path} was written but OpenCV cannot read it back (mp4v codec missing?)"
        return self.path


def latency_summary(values_ms: Sequence[float]) -> dict[str, float | int] | None:
    """count, mean, p50, p90, p99, max of latencies in milliseconds (None when there are none)."""
    v = np.asarray([x for x in values_ms if math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return None
    return {"count": int(v.size), "mean": float(v.mean()), "p50": float(np.percentile(v, 50)),
            "p90": float(np.percentile(v, 90)), "p99": float(np.percentile(v, 99)), "max": float(v.max())}


def close_outputs(result: "ReplayResult", wall_s: float, outbag: "OutputBag", videos: Iterable["OverlayVideo"]) -> None:
    """Close the output bag and videos of a replay (offline or live) and record them in ``result``."""
    result.wall_s = wall_s
    result.output_bag = outbag.close()
    for video in videos:
        path = video.close()
        if path is not None:
            result.videos.append(path)
        if video.error:
            result.warnings.append(video.error)


def video_path(out_dir: Path, streams: Sequence[CameraStream], stream: CameraStream) -> Path:
    if len(streams) == 1:
        return out_dir / VIDEO_NAME
    return out_dir / f"overlay_{stream.name.replace('/', '_')}.mp4"


# --------------------------------------------------------------------------- results


@dataclass
class CameraCounts:
    camera: str
    frames_in: int = 0  # image messages read (offline) or published (live)
    frames_out: int = 0  # outputs written
    frames_skipped: int = 0  # images that could not be decoded


@dataclass
class ReplayResult:
    """What replaying one bag did. ``error`` is the one-line reason a bad bag stopped early."""

    bag: Path
    out_dir: Path
    mode: str  # "offline" or "live"
    cameras: list[CameraCounts] = field(default_factory=list)
    output_bag: Path | None = None
    videos: list[Path] = field(default_factory=list)
    timings: Path | None = None
    wall_s: float = 0.0  # the whole replay, start-up (model load, node start) included
    active_s: float = 0.0  # from the first frame read (offline) or published (live) to the last output
    error: str | None = None
    error_kind: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def frames_in(self) -> int:
        return sum(c.frames_in for c in self.cameras)

    @property
    def frames_out(self) -> int:
        return sum(c.frames_out for c in self.cameras)

    @property
    def frames_dropped(self) -> int:
        """Live: frames published that produced no output; offline: 0 unless an image was undecodable."""
        return sum(c.frames_in - c.frames_out - c.frames_skipped for c in self.cameras)

    @property
    def ok(self) -> bool:
        return self.error is None

    def failed(self, exc: BagError, wall_s: float) -> "ReplayResult":
        """Record that a bad bag stopped the replay after ``wall_s`` seconds; returns self."""
        self.error, self.error_kind, self.wall_s = str(exc), exc.kind, wall_s
        return self

    @property
    def frames_per_s(self) -> float:
        """Outputs per second of active replay (live: bounded by the playback rate; lock-step: the node's own)."""
        return self.frames_out / self.active_s if self.active_s > 0 else 0.0

    def summary_line(self) -> str:
        fps = self.frames_per_s
        cams = ", ".join(c.camera for c in self.cameras) or "no camera"
        outs = [str(p) for p in [self.output_bag, *self.videos, self.timings] if p is not None]
        text = (f"replayed {self.bag} ({self.mode}): {self.frames_out} of {self.frames_in} frame(s) from {cams} in "
                f"{self.active_s:.1f} s ({fps:.1f} frames/s; {self.wall_s:.1f} s with start-up)")
        if self.mode == "live":
            text += f", {self.frames_dropped} dropped"
        return text + (f"; wrote {', '.join(outs)}" if outs else "")


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class ReplaySettings:
    """How to replay: the node parameters (model, tracker, ...), the output layout, live options."""

    params: NodeParams = field(default_factory=NodeParams)
    topics: tuple[str, ...] = ()
    storage: str = "mcap"
    video: bool = True
    overlay: bool = True
    progress: bool = True
    live: bool = False
    rate: float = 1.0
    lockstep: bool = False  # live: publish each image once the previous ones are answered (ignores rate)
    node_running: bool = False
    startup_timeout_s: float = 120.0
    param_values: tuple[tuple[str, str], ...] = ()  # the explicitly set parameters, for a live node

    def __post_init__(self) -> None:
        if self.storage not in STORAGES:
            raise ValueError(f"storage must be one of {', '.join(STORAGES)}, got {self.storage!r}")
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError(f"--rate must be a positive number (1 = recorded speed), got {self.rate}")
        if self.lockstep and not self.live:
            raise ValueError("--lockstep paces a live replay (--live); offline replay already processes every frame")

    @classmethod
    def create(cls, model: str | None = None, device: str | None = None, params_file: Path | None = None,
               values: Sequence[tuple[str, str]] = (), **options: Any) -> "ReplaySettings":
        """Settings from what a command line gives (see :func:`node_params`); ``options`` are the other fields.
        ValueError naming a bad parameter."""
        params, explicit = node_params(model, device, params_file, values)
        return cls(params=params, param_values=tuple((k, param_text(v)) for k, v in explicit.items()), **options)


def model_id(predictor: Any) -> str:
    """The identifier the node publishes in PanopticClassInfo.model_id."""
    card = getattr(predictor, "card", None)
    return f"{card.name} sha256:{card.weights_sha256[:16]}" if card else type(predictor).__name__


# --------------------------------------------------------------------------- offline replay


@dataclass
class _Pending:
    stream: CameraStream
    frame: Any  # CameraFrame
    stamp_ns: int
    frame_id: str
    log_time_ns: int


class _InfoHistory:
    """CameraInfo intrinsics by stamp; the node's matching rule (nearest within a tolerance)."""

    def __init__(self) -> None:
        self.items: list[tuple[int, Any]] = []

    def add(self, stamp_ns: int, intrinsics: Any) -> None:
        self.items.append((stamp_ns, intrinsics))
        del self.items[:-64]

    def match(self, stamp_ns: int, tolerance_s: float, shape: tuple[int, ...]) -> Any:
        if not self.items:
            return None
        stamp, k = min(self.items, key=lambda item: abs(item[0] - stamp_ns))
        if abs(stamp - stamp_ns) > tolerance_s * 1e9:
            return None
        h, w = shape[:2]
        if abs(k.width / k.height - w / h) > 0.01 * (w / h):
            return None
        return k


def _intrinsics(msg: Any) -> Any:
    from panoptic_ros.camera import CameraIntrinsics

    try:
        return CameraIntrinsics.from_k(np.asarray(msg.k, dtype=np.float64), int(msg.width), int(msg.height))
    except ValueError:
        return None


class OfflineReplay:
    """Runs one bag through a Pipeline and writes the output directory (see the module docstring)."""

    def __init__(self, bag: Path, out_dir: Path, settings: ReplaySettings, predictor: Any) -> None:
        from panoptic_ros.pipeline import Pipeline

        self.bag = bag
        self.out_dir = out_dir
        self.settings = settings
        self.params = settings.params
        self.predictor = predictor
        self.pipeline = Pipeline(predictor, tracker=self.params.tracker, mount=self.params.mount,
                                 max_batch=self.params.max_batch, fallback_device=self.params.model.fallback_device,
                                 tracking_threads=self.params.tracking_threads)
        self.result = ReplayResult(bag, out_dir, "offline")
        self._pending: list[_Pending] = []
        self._rows: list[dict[str, Any]] = []
        self._first_reason: str | None = None
        self._faults: list[Any] = []  # InferenceFault

    def run(self) -> ReplayResult:
        t0 = time.perf_counter()
        try:
            source = BagSource(self.bag)
        except BagError as exc:
            return self.result.failed(exc, time.perf_counter() - t0)
        try:
            try:
                self.streams = find_cameras(source.topics, self.bag, self.settings.topics)
            except BagError as exc:
                return self.result.failed(exc, time.perf_counter() - t0)
            self._open_outputs(source)
            interrupted = False
            t_active = time.perf_counter()
            try:
                self._read(source)
            except BagError as exc:
                self.result.error, self.result.error_kind = str(exc), exc.kind
            except KeyboardInterrupt:
                interrupted = True
            finally:
                try:
                    if not interrupted:
                        self._flush()  # what was read before the damage still counts
                finally:
                    self.result.active_s = time.perf_counter() - t_active
                    self._close(time.perf_counter() - t0)
            if interrupted:
                raise KeyboardInterrupt
        finally:
            source.close()
            self.pipeline.close()
        return self.result

    def _open_outputs(self, source: BagSource) -> None:
        self.counts = {s.name: CameraCounts(s.name) for s in self.streams}
        self.result.cameras = list(self.counts.values())
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.messages = OutputMessages(source.typestore)
        self.outbag = OutputBag(self.out_dir / OUTPUT_BAG_NAME, self.settings.storage, source.typestore)
        self.model_id = model_id(self.predictor)
        for key, value in ((SOURCE_KEY, self.bag.name), (MODE_KEY, "offline"), (MODEL_KEY, self.model_id),
                           (SEQUENCE_KEY, source.custom_data.get(SEQUENCE_KEY, self.bag.name))):
            self.outbag.set_custom_data(key, value)
        self.videos = {s.name: OverlayVideo(video_path(self.out_dir, self.streams, s))
                       for s in self.streams} if self.settings.video else {}
        self.infos = {s.name: _InfoHistory() for s in self.streams}
        self._class_info_sent: set[str] = set()

    def _read(self, source: BagSource) -> None:
        from tqdm import tqdm

        by_topic: dict[str, tuple[CameraStream, bool]] = {}
        for s in self.streams:
            by_topic[s.image_topic] = (s, True)
            if s.camera_info_topic:
                by_topic[s.camera_info_topic] = (s, False)
        total = sum(source.message_counts.get(s.image_topic, 0) for s in self.streams) or None
        with tqdm(total=total, unit="frame", desc=self.bag.name, disable=None if self.settings.progress else True,
                  leave=False) as bar:
            for message in source.messages(set(by_topic)):
                stream, is_image = by_topic[message.topic]
                if (self._pending and len(self._pending) >= self.params.max_batch
                        and message.log_time_ns > self._pending[-1].log_time_ns):
                    self._flush()
                if is_image:
                    self._add_image(source, stream, message)
                    bar.update(1)
                else:
                    self._add_camera_info(source, stream, message)

    def _add_camera_info(self, source: BagSource, stream: CameraStream, message: BagMessage) -> None:
        try:
            msg = source.deserialize(message)
        except _READ_ERRORS + _rosbags_errors():
            return  # a broken CameraInfo only costs positions
        k = _intrinsics(msg)
        if k is not None:
            self.infos[stream.name].add(_stamp_ns(msg.header), k)
        self.outbag.write(stream.topic(CAMERA_INFO_TOPIC), CAMERA_INFO_TYPE, message.log_time_ns, bytes(message.raw))

    def _add_image(self, source: BagSource, stream: CameraStream, message: BagMessage) -> None:
        from panoptic_ros.datasets.rosbag_io import compressed_msg_to_rgb, image_msg_to_rgb
        from panoptic_ros.pipeline import CameraFrame, check_frame

        counts = self.counts[stream.name]
        counts.frames_in += 1
        t0 = time.perf_counter()
        try:
            msg = source.deserialize(message)
            stamp_ns = _stamp_ns(msg.header)
            where = f"{message.topic} at {stamp_ns} ns"
            rgb = compressed_msg_to_rgb(msg, where) if stream.compressed else image_msg_to_rgb(msg, where)
        except BagError:
            raise
        except (DatasetError,) + _READ_ERRORS + _rosbags_errors() as exc:
            self._skip(counts, _one_line(exc))
            return
        decode_ms = (time.perf_counter() - t0) * 1e3
        frame = CameraFrame(stream.name, rgb, stamp_ns / 1e9, None, decode_ms=decode_ms)
        try:
            check_frame(frame)  # e.g. too small to segment: skipped like the node skips it
        except ValueError as exc:
            self._skip(counts, f"{message.topic} at {stamp_ns} ns: {exc}")
            return
        self._pending.append(_Pending(stream, frame, stamp_ns, str(msg.header.frame_id), message.log_time_ns))

    def _skip(self, counts: CameraCounts, reason: str) -> None:
        counts.frames_skipped += 1
        self._first_reason = self._first_reason or reason

    def _flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        frames = []
        for p in pending:
            k = self.infos[p.stream.name].match(p.stamp_ns, self.params.camera_info_tolerance_s,
                                                p.frame.image_rgb.shape)
            frames.append(replace(p.frame, intrinsics=k))
        from panoptic_ros.pipeline import FrameFailure

        outputs = self.pipeline.process_each(frames)  # a device fault costs only the frames it hits
        self._faults += self.pipeline.take_faults()
        for p, out in zip(pending, outputs):
            if isinstance(out, FrameFailure):
                self._skip(self.counts[p.stream.name], f"{p.stream.image_topic} at {p.stamp_ns} ns: inference "
                                                       f"failed ({_one_line(out.error)})")
            else:
                self._write(p, out)

    def _write(self, p: _Pending, out: Any) -> None:
        s = p.stream
        m = self.messages
        t0 = time.perf_counter()
        header = m.header(p.stamp_ns, p.frame_id)
        if s.name not in self._class_info_sent:
            info = m.class_info(p.stamp_ns, self.pipeline.classes, self.model_id)
            self.outbag.write(s.topic(CLASS_INFO_TOPIC), CLASS_INFO_TYPE, p.log_time_ns,
                              m.serialize(info, CLASS_INFO_TYPE), latched=True)
            self._class_info_sent.add(s.name)
        tm = out.timings
        processing_s = tm.total_ms / 1e3
        self.outbag.write(s.topic(OBJECTS_TOPIC), OBJECTS_TYPE, p.log_time_ns,
                          m.serialize(m.objects(header, out, s.name, processing_s), OBJECTS_TYPE))
        self.outbag.write(s.topic(PANOPTIC_TOPIC), IMAGE_TYPE, p.log_time_ns,
                          m.serialize(m.image(header, out.panoptic.astype(np.int32, copy=False), PANOPTIC_ENCODING),
                                      IMAGE_TYPE))
        if self.params.publish_semantic:
            self.outbag.write(s.topic(SEMANTIC_TOPIC), IMAGE_TYPE, p.log_time_ns,
                              m.serialize(m.image(header, out.semantic.astype(np.uint8, copy=False), "mono8"),
                                          IMAGE_TYPE))
        overlay_ms = 0.0
        if self.settings.overlay or self.settings.video:
            t1 = time.perf_counter()
            overlay = self.pipeline.overlay(out, self.params.overlay_alpha)
            overlay_ms = (time.perf_counter() - t1) * 1e3
            if self.settings.overlay:
                self.outbag.write(s.topic(OVERLAY_TOPIC), IMAGE_TYPE, p.log_time_ns,
                                  m.serialize(m.image(header, overlay, "rgb8"), IMAGE_TYPE))
            if s.name in self.videos:
                self.videos[s.name].add(overlay, p.stamp_ns / 1e9)
        write_ms = (time.perf_counter() - t0) * 1e3 - overlay_ms  # serializing and writing, the overlay apart
        self.counts[s.name].frames_out += 1
        self._rows.append({"camera": s.name, "stamp_ns": p.stamp_ns, "frame_index": out.frame_index,
                           "decode_ms": tm.decode_ms, "preprocess_ms": tm.preprocess_ms, "network_ms": tm.network_ms,
                           "fusion_ms": tm.fusion_ms, "tracking_ms": tm.tracking_ms, "encode_ms": tm.encode_ms,
                           "processing_ms": tm.total_ms, "overlay_ms": overlay_ms, "write_ms": write_ms,
                           "num_objects": len(out.objects)})

    def _close(self, wall_s: float) -> None:
        close_outputs(self.result, wall_s, self.outbag, self.videos.values())
        if self._faults:
            counts = ", ".join(f"{k} {v}" for k, v in sorted(self.pipeline.fault_counts.items()))
            self.result.warnings.append(f"bag {self.bag}: {len(self._faults)} inference fault(s) ({counts}); first: "
                                        f"{self._faults[0].describe()}")
        skipped = sum(c.frames_skipped for c in self.counts.values())
        if skipped and not self.result.frames_out and self.result.error is None:
            self.result.error, self.result.error_kind = (f"bag {self.bag}: none of its {skipped} image(s) could be "
                                                         f"processed; first: {self._first_reason}"), "unreadable"
        elif skipped:
            self.result.warnings.append(f"bag {self.bag}: skipped {skipped} image(s) that could not be processed; "
                                        f"first: {self._first_reason}")
        self.result.timings = write_timings(self.out_dir / TIMINGS_NAME, self.result, self._rows, {
            "model": self.model_id, "device": str(getattr(self.predictor, "device", "")),
            "max_batch": self.params.max_batch})


def write_timings(path: Path, result: ReplayResult, rows: list[dict[str, Any]], extra: dict[str, Any]) -> Path:
    """timings.json: every frame's latency components (ms) and their summary."""
    keys = [k for k in (rows[0] if rows else {}) if k.endswith("_ms")]
    summary: dict[str, Any] = {"frames": len(rows), "wall_s": result.wall_s, "active_s": result.active_s,
                               "frames_per_s": result.frames_per_s or None}
    for k in keys:
        summary[k] = latency_summary([float(r[k]) for r in rows if r.get(k) is not None])
    doc = {"mode": result.mode, "bag": str(result.bag), **extra, "summary": summary, "frames": rows}
    path.write_text(json.dumps(doc, indent=1))
    return path


# --------------------------------------------------------------------------- jobs (one bag each)


@dataclass(frozen=True)
class ReplayJob:
    """One bag to replay into ``out_dir``; what a worker process or Ray task receives."""

    bag: Path
    out_dir: Path
    settings: ReplaySettings


_PREDICTORS: dict[str, Any] = {}


def _predictor_for(params: NodeParams) -> Any:
    """One loaded model per process and model configuration (a worker replays many bags)."""
    from panoptic_ros.pipeline import load_predictor

    key = json.dumps(flatten(params.model), sort_keys=True)
    if key not in _PREDICTORS:
        _PREDICTORS.clear()
        _PREDICTORS[key] = load_predictor(params.model)
    return _PREDICTORS[key]


def run_replay_job(job: ReplayJob) -> ReplayResult:
    """Replay one bag offline (loading the model once per process); never raises for a bad bag."""
    predictor = _predictor_for(job.settings.params)
    return OfflineReplay(job.bag, job.out_dir, job.settings, predictor).run()


def replay_bag(bag: str | Path, out_dir: str | Path, settings: ReplaySettings, predictor: Any = None) -> ReplayResult:
    """Replay one bag into ``out_dir``, offline or live per ``settings.live`` (the API the demo uses).

    ``predictor`` (offline only) reuses an already loaded model. Bad bags come
    back as a result with ``error`` set; ValueError for bad settings,
    CheckpointError for a model that cannot load.
    """
    bag, out_dir = Path(bag), Path(out_dir)
    if settings.live:
        try:
            from panoptic_ros.ros.live_replay import replay_live
        except ImportError as exc:
            raise ReplaySetupError(f"--live needs rclpy and the panoptic_ros messages, which do not import here "
                                   f"({exc}); source the ROS 2 environment or replay offline") from None
        return replay_live(bag, out_dir, settings)
    if predictor is None:
        predictor = _predictor_for(settings.params)
    return OfflineReplay(bag, out_dir, settings, predictor).run()


# --------------------------------------------------------------------------- command line


def output_dirs(bags: Sequence[Path], out: Path) -> list[Path]:
    """``out`` for one bag; ``out/{bag name}`` each for several (names must differ)."""
    if len(bags) == 1:
        return [out]
    names = [b.name for b in bags]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"several bags are named {', '.join(dupes)}; their outputs would collide under {out}. "
                         "Replay them into different --out directories")
    return [out / n for n in names]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="run the stack over rosbag2 files; write an output bag, video and timings",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bags", nargs="+", type=Path, metavar="BAG",
                   help="rosbag2 directories (or a .mcap/.db3 file in one, or a directory of bags)")
    p.add_argument("--topics", nargs="+", default=(), metavar="TOPIC",
                   help="image topics to replay (default: every image topic with a camera_info beside it)")
    p.add_argument("--out", type=Path, default=Path("panoptic_replay"),
                   help="output directory (default ./panoptic_replay; one sub-directory per bag when several)")
    p.add_argument("--model", default=None, help="model file (.safetensors); default: the shipped demo model")
    p.add_argument("--device", default=None, help="inference device: auto, cpu, cuda, cuda:N (default auto)")
    add_node_param_flags(p)
    p.add_argument("--storage", choices=STORAGES, default="mcap", help="output bag storage (default mcap)")
    p.add_argument("--no-video", action="store_true", help="do not write overlay.mp4")
    p.add_argument("--no-overlay", action="store_true", help="do not record the overlay topic in the output bag")
    p.add_argument("--live", action="store_true",
                   help="publish the bag through real rclpy to a panoptic_node and record its outputs")
    p.add_argument("--rate", type=float, default=1.0, help="live: playback speed factor (default 1 = as recorded)")
    p.add_argument("--lockstep", action="store_true",
                   help="live: publish each image only once the node has answered the previous ones (no drops "
                        "by pace, as fast as the node goes; --rate is ignored)")
    p.add_argument("--node-running", action="store_true",
                   help="live: a panoptic_node already serves the bag's camera topics; do not start one")
    p.add_argument("--startup-timeout", type=float, default=120.0,
                   help="live: seconds to wait for the node to come up (default 120)")
    scale = p.add_mutually_exclusive_group()
    scale.add_argument("--workers", type=int, default=None,
                       help="offline, several bags: local worker processes (default min(cores, bags))")
    scale.add_argument("--ray", default=None, metavar="ADDRESS",
                       help=f"offline, several bags: run on a Ray cluster ('{RAY_LOCAL}' starts a small local one)")
    p.set_defaults(func=run)


def _error(message: str) -> None:
    print(f"panoptic-ros replay: error: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from panoptic_ros.model.checkpoint import CheckpointError

    try:
        settings = ReplaySettings.create(args.model, args.device, args.params_file, args.param_values,
                                         topics=tuple(args.topics), storage=args.storage, video=not args.no_video,
                                         overlay=not args.no_overlay, live=args.live, rate=args.rate,
                                         lockstep=args.lockstep, node_running=args.node_running,
                                         startup_timeout_s=args.startup_timeout)
        if args.live and (args.workers not in (None, 1) or args.ray is not None):
            raise ValueError("--live replays one bag at a time through one node; --workers and --ray are for "
                             "offline replay")
    except ValueError as exc:
        _error(str(exc))
        return EXIT_USAGE
    bags: list[Path] = []
    failed: list[str] = []
    for path in args.bags:
        try:
            bags.extend(bag_directories(path))
        except BagError as exc:
            failed.append(str(exc))
            _error(str(exc))
    try:
        outs = output_dirs(bags, args.out) if bags else []
    except ValueError as exc:
        _error(str(exc))
        return EXIT_USAGE
    jobs = [ReplayJob(b, o, settings) for b, o in zip(bags, outs)]
    try:
        plan = ScaleOut(args.workers if args.workers is not None else default_workers(len(jobs)), args.ray)
        if plan.backend != "serial":
            jobs = [replace(j, settings=replace(j.settings, progress=False)) for j in jobs]
        results = _run_jobs(jobs, plan)
    except (CheckpointError, ValueError, ScaleOutError, ReplaySetupError) as exc:
        _error(_one_line(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _error("interrupted; the outputs written so far are closed")
        return EXIT_INTERRUPTED
    return EXIT_BAD_BAG if failed or any(not r.ok for r in results) else EXIT_OK


def _run_jobs(jobs: list[ReplayJob], plan: ScaleOut) -> list[ReplayResult]:
    def report(_: int, result: ReplayResult) -> None:
        if result.error:
            _error(result.error)
        for w in result.warnings:
            print(f"panoptic-ros replay: warning: {w}", file=sys.stderr)
        if result.frames_out or result.error is None:
            print(result.summary_line(), flush=True)

    if jobs and jobs[0].settings.live:
        results = []
        for i, job in enumerate(jobs):
            results.append(replay_bag(job.bag, job.out_dir, job.settings))
            report(i, results[-1])
        return results
    if plan.ray_address is None and jobs:
        _predictor_for(jobs[0].settings.params)  # a model error stops here, before any bag or worker
    return map_ordered(run_replay_job, jobs, plan, on_result=report)


def param_text(value: Any) -> str:
    """A parameter value as ``ros2 run -p`` reads it (YAML): strings quoted, floats with a decimal point."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(param_text(v) for v in value) + "]"
    return "'" + str(value).replace("'", "''") + "'"


__all__ = ["BagError", "BagMessage", "BagSource", "CameraCounts", "CameraStream", "OfflineReplay", "OutputBag",
           "OutputMessages", "OverlayVideo", "ReplayJob", "ReplayResult", "ReplaySettings", "ReplaySetupError",
           "bag_directories", "bag_read_errors", "find_cameras", "latency_summary", "model_id",
           "param_text", "register", "replay_bag", "run", "run_replay_job", "video_path", "write_timings"]
