"""Video panoptic layout (KITTI-STEP style): per-sequence frames whose instance ids are track ids.

Layout::

    sequences.json                                  classes, and per sequence: fps, camera, per-frame
                                                    stamps, objects and camera where it differs from the
                                                    sequence's (the complete ground truth)
    images/{split}/{sequence}/{frame:06d}.png       RGB images
    panoptic_maps/{split}/{sequence}/{frame:06d}.png
        KITTI-STEP encoding: R = semantic train id (255 void), G * 256 + B = track id (0 for stuff
        and for crowd regions), so track ids up to 65,535

Unlike the Cityscapes and COCO layouts this one keeps everything a
PanopticFrame holds: track ids consistent across frames, fully occluded
objects (``area_px`` 0), amodal boxes, visible fractions, positions, occluders,
the camera and the stamps. ``sequence`` directory names are the sequence name
with runs of characters other than ``[A-Za-z0-9-]`` replaced by ``-``; the
json keeps the real name.

Real KITTI-STEP (no ``sequences.json``) reads too: the sequences are the
directories of ``panoptic_maps/{split}/``, classes are Cityscapes' train ids,
frames are stamped ``frame_index / fps`` (KITTI's 10 Hz unless told), there is
no camera, ``objects`` are the visible things (``visible_fraction`` NaN), and
because STEP only promises instance ids unique within a class, instance id =
``class_id * 65536 + G * 256 + B`` (consistent across frames, unique across
classes).
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from panoptic_ros.camera import CameraIntrinsics, CameraModel, CameraMounting
from panoptic_ros.classes import CITYSCAPES, VOID, ClassTable
from panoptic_ros.datasets.coco import (
    box_xywh_to_xyxy,
    check_frame,
    load_json,
    read_image_rgb,
    read_png,
    safe_name,
    segment_stats,
    write_png,
)
from panoptic_ros.datasets.types import DatasetError, FrameWriter, ObjectAnnotation, PanopticFrame, SequenceIndex

FORMAT_NAME = "video"
SEQUENCES_JSON = "sequences.json"
MAX_STEP_INSTANCE_ID = 256 * 256 - 1
FOREIGN_CLASS_STRIDE = 1 << 16
"""Without sequences.json, instance id = class id * this + the PNG's G*256+B."""
KITTI_FPS = 10.0


def encode_step_png(semantic_hw: np.ndarray, instance_hw: np.ndarray) -> np.ndarray:
    """Train ids and track ids -> (H, W, 3) uint8 RGB, R = class, G*256+B = track id."""
    inst = instance_hw.astype(np.int64)
    if inst.size and inst.max() > MAX_STEP_INSTANCE_ID:
        raise DatasetError(f"track id {int(inst.max())} does not fit the KITTI-STEP PNG (at most "
                           f"{MAX_STEP_INSTANCE_ID}); renumber the tracks")
    return np.stack([semantic_hw.astype(np.uint8), (inst // 256).astype(np.uint8), (inst % 256).astype(np.uint8)],
                    axis=-1)


def decode_step_png(rgb_hw3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 -> ((H, W) uint8 train ids, (H, W) int32 G*256+B ids)."""
    return rgb_hw3[..., 0].copy(), rgb_hw3[..., 1].astype(np.int32) * 256 + rgb_hw3[..., 2].astype(np.int32)


def camera_to_json(camera: CameraModel) -> dict:
    k, m = camera.intrinsics, camera.mounting
    return {"intrinsics": {"width": k.width, "height": k.height, "fx": k.fx, "fy": k.fy, "cx": k.cx, "cy": k.cy},
            "mounting": {"height_m": m.height_m, "pitch_rad": m.pitch_rad}}


def camera_from_json(doc: dict | None, where: str) -> CameraModel | None:
    if doc is None:
        return None
    try:
        k, m = doc["intrinsics"], doc["mounting"]
        return CameraModel(CameraIntrinsics(int(k["width"]), int(k["height"]), float(k["fx"]), float(k["fy"]),
                                            float(k["cx"]), float(k["cy"])),
                           CameraMounting(float(m["height_m"]), float(m["pitch_rad"])))
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{where}: bad camera entry ({exc})") from None


def object_to_json(o: ObjectAnnotation) -> dict:
    return {"track_id": int(o.track_id), "class_id": int(o.class_id), "area_px": int(o.area_px),
            "visible_fraction": None if math.isnan(o.visible_fraction) else float(o.visible_fraction),
            "amodal_box_xyxy": [float(v) for v in o.amodal_box_xyxy],
            "position_m": None if o.position_m is None else [float(v) for v in o.position_m],
            "occluder_track_id": int(o.occluder_track_id), "is_crowd": bool(o.is_crowd)}


def object_from_json(d: dict, where: str) -> ObjectAnnotation:
    try:
        fraction = d.get("visible_fraction")
        box = tuple(float(v) for v in d["amodal_box_xyxy"])
        position = d.get("position_m")
        if len(box) != 4 or (position is not None and len(position) != 3):
            raise ValueError("amodal_box_xyxy needs 4 values and position_m 3")
        return ObjectAnnotation(
            track_id=int(d["track_id"]), class_id=int(d["class_id"]), area_px=int(d["area_px"]),
            visible_fraction=math.nan if fraction is None else float(fraction),
            amodal_box_xyxy=box,  # type: ignore[arg-type]
            position_m=None if position is None else tuple(float(v) for v in position),  # type: ignore[arg-type]
            occluder_track_id=int(d.get("occluder_track_id", 0)), is_crowd=bool(d.get("is_crowd", False)))
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{where}: bad object entry {d!r} ({exc})") from None


@dataclass
class _SequenceState:
    name: str
    directory: str
    camera: CameraModel | None
    width: int
    height: int
    frames: list[dict] = field(default_factory=list)


def _fps_from_stamps(stamps_ns: list[int]) -> float | None:
    steps = np.diff(np.asarray(sorted(stamps_ns), dtype=np.int64))
    if steps.size == 0 or (steps <= 0).any():
        return None
    return float(1e9 / np.median(steps))


class VideoPanopticWriter(FrameWriter):
    """Writes PanopticFrames in the video layout; frames stream to disk, sequences.json is written on close."""

    def __init__(self, root: str | Path, split: str = "train", classes: ClassTable = CITYSCAPES,
                 fps: float | None = None) -> None:
        if not split or safe_name(split) != split:
            raise DatasetError(f"split name {split!r} must be letters, digits or '-'")
        if fps is not None and not (math.isfinite(fps) and fps > 0):
            raise DatasetError(f"fps must be a positive number, got {fps}")
        self.root = Path(root)
        self.split = split
        self.classes = classes
        self.fps = fps
        self.json_path = self.root / SEQUENCES_JSON
        if self.json_path.exists():
            raise DatasetError(f"{self.json_path} exists already; write to a new directory or delete it")
        self._sequences: dict[str, _SequenceState] = {}

    def _state(self, frame: PanopticFrame) -> _SequenceState:
        state = self._sequences.get(frame.sequence)
        if state is None:
            directory = safe_name(frame.sequence)
            if any(s.directory == directory for s in self._sequences.values()):
                raise DatasetError(f"sequence {frame.sequence!r} maps to the directory {directory!r} of another "
                                   "sequence; give sequences names that differ in letters or digits")
            state = _SequenceState(frame.sequence, directory, frame.camera, frame.width, frame.height)
            self._sequences[frame.sequence] = state
        if (frame.width, frame.height) != (state.width, state.height):
            raise DatasetError(f"frame {frame.frame_index} of {frame.sequence!r} is {frame.width}x{frame.height}, "
                               f"the sequence {state.width}x{state.height}; one sequence has one image size")
        return state

    def add(self, frame: PanopticFrame) -> None:
        check_frame(frame, self.classes)
        state = self._state(frame)
        if any(f["frame_index"] == frame.frame_index for f in state.frames):
            raise DatasetError(f"frame {frame.frame_index} of sequence {frame.sequence!r} was added twice")
        file_name = f"{frame.frame_index:06d}.png"
        write_png(self.root / "panoptic_maps" / self.split / state.directory / file_name,
                  encode_step_png(frame.semantic, frame.instance))
        write_png(self.root / "images" / self.split / state.directory / file_name, frame.image)
        entry = {"frame_index": int(frame.frame_index), "stamp_ns": int(frame.stamp_ns), "file_name": file_name,
                 "objects": [object_to_json(o) for o in frame.objects]}
        if frame.camera != state.camera:  # e.g. the mounting pitch bounces with the vehicle
            entry["camera"] = None if frame.camera is None else camera_to_json(frame.camera)
        state.frames.append(entry)

    def close(self) -> Path:
        sequences = []
        for s in self._sequences.values():
            frames = sorted(s.frames, key=lambda f: f["frame_index"])
            fps = self.fps if self.fps is not None else _fps_from_stamps([f["stamp_ns"] for f in frames])
            sequences.append({"name": s.name, "directory": s.directory, "split": self.split, "fps": fps,
                              "width": s.width, "height": s.height,
                              "camera": None if s.camera is None else camera_to_json(s.camera), "frames": frames})
        doc = {"format": "panoptic_ros/video_panoptic", "version": 1,
               "panoptic_png": "R = train id (255 void), G*256+B = track id (0 stuff/crowd)",
               "classes": self.classes.to_json(), "sequences": sequences}
        self.root.mkdir(parents=True, exist_ok=True)
        with self.json_path.open("w") as f:
            json.dump(doc, f, indent=1)
        return self.json_path


def write_video_panoptic(root: str | Path, frames: Iterable[PanopticFrame], split: str = "train",
                         classes: ClassTable = CITYSCAPES, fps: float | None = None) -> Path:
    """Write ``frames`` in the video layout under ``root``; returns the sequences.json path."""
    return VideoPanopticWriter(root, split, classes, fps).write_all(frames)


@dataclass(frozen=True)
class VideoSequenceInfo:
    name: str
    directory: str
    split: str
    fps: float | None
    camera: CameraModel | None  # the first frame's; a frame's own (PanopticFrame.camera) may differ
    num_frames: int


@dataclass(frozen=True)
class _FrameEntry:
    frame_index: int
    stamp_ns: int
    file_name: str
    objects: tuple[ObjectAnnotation, ...] | None  # None: derive from the masks
    camera: CameraModel | None


class VideoPanopticDataset(SequenceIndex[VideoSequenceInfo]):
    """A video panoptic directory (ours, or real KITTI-STEP), read sequence by sequence."""

    format = FORMAT_NAME

    def __init__(self, root: str | Path, split: str | None = None, fps: float = KITTI_FPS) -> None:
        self.root = Path(root)
        self._sequences: dict[str, VideoSequenceInfo] = {}
        self._origin = self.root
        self._frames: dict[str, list[_FrameEntry]] = {}
        json_path = self.root / SEQUENCES_JSON
        if json_path.is_file():
            self._load_json(json_path, split)
            self._foreign = False
        else:
            self._scan(split, fps)
            self._foreign = True

    def _load_json(self, path: Path, split: str | None) -> None:
        doc = load_json(path)
        where = str(path)
        try:
            self.classes = ClassTable.from_json(doc["classes"])
            sequences = doc["sequences"]
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"{where}: not a panoptic_ros sequences.json ({exc})") from None
        for s in sequences:
            try:
                if split is not None and s["split"] != split:
                    continue
                name = str(s["name"])
                camera = camera_from_json(s.get("camera"), f"{where}, {name}")
                entries = [_FrameEntry(int(f["frame_index"]), int(f["stamp_ns"]), str(f["file_name"]),
                                       tuple(object_from_json(o, f"{where}, {name}") for o in f["objects"]),
                                       camera_from_json(f["camera"], f"{where}, {name}") if "camera" in f else camera)
                           for f in s["frames"]]
                fps = None if s.get("fps") is None else float(s["fps"])
                info = VideoSequenceInfo(name, str(s["directory"]), str(s["split"]), fps, camera, len(entries))
            except (KeyError, TypeError, ValueError) as exc:
                raise DatasetError(f"{where}: bad sequence entry ({exc})") from None
            self._sequences[name] = info
            self._frames[name] = sorted(entries, key=lambda e: e.frame_index)

    def _scan(self, split: str | None, fps: float) -> None:
        maps = self.root / "panoptic_maps"
        if not maps.is_dir():
            raise DatasetError(f"{self.root} has neither {SEQUENCES_JSON} nor panoptic_maps/; not a video panoptic "
                               "(KITTI-STEP) directory")
        if split is None:
            splits = sorted(d.name for d in maps.iterdir() if d.is_dir())
            if len(splits) != 1:
                raise DatasetError(f"{maps} holds splits {splits or 'none'}; pass split= to choose one")
            split = splits[0]
        if not (maps / split).is_dir():
            raise DatasetError(f"missing split folder {maps / split}")
        self.classes = CITYSCAPES
        for seq_dir in sorted(d for d in (maps / split).iterdir() if d.is_dir()):
            pngs = sorted(seq_dir.glob("*.png"))
            entries = []
            for ordinal, p in enumerate(pngs):
                index = int(p.stem) if p.stem.isdigit() else ordinal
                entries.append(_FrameEntry(index, round(index * 1e9 / fps), p.name, None, None))
            self._sequences[seq_dir.name] = VideoSequenceInfo(seq_dir.name, seq_dir.name, split, fps, None, len(entries))
            self._frames[seq_dir.name] = entries

    def sequence_info(self, sequence: str) -> VideoSequenceInfo:
        return self._record(sequence)

    def __len__(self) -> int:
        return sum(i.num_frames for i in self._sequences.values())

    def frames(self, sequence: str) -> Iterator[PanopticFrame]:
        info = self.sequence_info(sequence)
        for e in self._frames[sequence]:
            png_path = self.root / "panoptic_maps" / info.split / info.directory / e.file_name
            png = read_png(png_path)
            if png.ndim != 3 or png.dtype != np.uint8:
                raise DatasetError(f"{png_path} must be an 8-bit RGB KITTI-STEP panoptic PNG")
            semantic, instance = decode_step_png(png)
            if self._foreign:
                instance = np.where(instance > 0, semantic.astype(np.int32) * FOREIGN_CLASS_STRIDE + instance, 0)
                instance = np.where(semantic == VOID, 0, instance).astype(np.int32)
            image = read_image_rgb(self.root / "images" / info.split / info.directory / e.file_name)
            if image.shape[:2] != semantic.shape:
                raise DatasetError(f"{png_path}: image {image.shape[:2]} and panoptic map {semantic.shape} differ")
            objects = list(e.objects) if e.objects is not None else _objects_from_masks(semantic, instance)
            yield PanopticFrame(image=image, semantic=semantic, instance=instance, objects=objects,
                                camera=e.camera, stamp_ns=e.stamp_ns, frame_index=e.frame_index,
                                sequence=sequence)


def _objects_from_masks(semantic: np.ndarray, instance: np.ndarray) -> list[ObjectAnnotation]:
    objects = []
    for track_id, st in sorted(segment_stats(instance).items()):
        class_id = int(semantic[instance == track_id][0])
        objects.append(ObjectAnnotation(track_id=track_id, class_id=class_id, area_px=st.area_px,
                                        visible_fraction=math.nan, amodal_box_xyxy=box_xywh_to_xyxy(st.bbox_xywh)))
    return objects
