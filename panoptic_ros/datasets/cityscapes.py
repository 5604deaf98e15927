"""Cityscapes panoptic layout: the writer and a reader for ours and the real dataset.

Layout (what cityscapesScripts' ``preparation/createPanopticImgs.py`` makes from gtFine)::

    leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png        uint8 Cityscapes label ids
    gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_instanceIds.png     uint16: label_id*1000+k for things,
                                                                          label_id for stuff and crowds
    gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelTrainIds.png   uint8 train ids (255 void)
    gtFine/cityscapes_panoptic_{split}.json                               COCO panoptic json, category id =
    gtFine/cityscapes_panoptic_{split}/{city}_{seq}_{frame}_gtFine_panoptic.png   Cityscapes label id
    camera/{split}/{city}/{city}_{seq}_{frame}_camera.json                intrinsics and mounting

Running ``createPanopticImgs`` on the gtFine folder we write reproduces our
panoptic json and PNGs (a test checks it), including its image
``file_name`` of ``{id}_gtFine_leftImg8bit.png``, which names no real file:
readers (ours, detectron2's) find the image by ``image_id``.

**Naming.** Our sequence name becomes the city (runs of characters other than
``[A-Za-z0-9-]`` become ``-``, since Cityscapes splits names on ``_``), the
Cityscapes sequence number is 0 and the frame number is ``frame_index``. Each
json image entry also keeps ``sequence``, ``frame_index`` and ``stamp_ns``
(extra keys that Cityscapes tools ignore), so our frames come back with their
original names and stamps. Real Cityscapes frames come back as sequence
``{city}_{seq}``, ``frame_index`` = the frame number, ``stamp_ns`` 0.

**Instance ids.** Cityscapes has no temporal ids: the writer numbers the
things of each class in each frame k = 0, 1, ... in ascending track-id order
(as Cityscapes does), segment id = label_id * 1000 + k, at most 1000 things of
one class per frame. The reader returns instance id = segment id, so within a
frame instances are distinct, but ids are **not** consistent across frames
(use the video layout for tracks). Crowd regions (thing pixels without a track
id, or objects marked ``is_crowd``) are written as the label id with
``iscrowd: 1`` and read back as thing pixels with instance 0. ``objects`` hold
the non-crowd things with ``visible_fraction`` NaN (unknown) and the visible
box as ``amodal_box_xyxy``.

**Camera.** The camera json holds fx, fy, u0, v0 and the mounting as
extrinsic z (height above the ground, metres) and pitch (radians, positive
looks down); roll, yaw, x, y and the stereo baseline are written as 0 and
ignored on reading.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from panoptic_ros.camera import CameraIntrinsics, CameraModel, CameraMounting
from panoptic_ros.classes import CITYSCAPES, VOID, ClassTable
from panoptic_ros.datasets.coco import (
    check_frame,
    crowd_track_ids,
    decode_segments,
    id_to_rgb,
    load_json,
    PixelGroups,
    SegmentStats,
    pixel_groups,
    read_image_rgb,
    read_png,
    rgb_to_id,
    safe_name,
    write_png,
)
from panoptic_ros.datasets.types import DatasetError, FrameWriter, PanopticFrame, SequenceIndex

FORMAT_NAME = "cityscapes"

# Cityscapes' label categories (helpers/labels.py), the json's "supercategory".
SUPERCATEGORY_BY_LABEL_ID: dict[int, str] = {
    7: "flat", 8: "flat", 11: "construction", 12: "construction", 13: "construction",
    17: "object", 19: "object", 20: "object", 21: "nature", 22: "nature", 23: "sky",
    24: "human", 25: "human", 26: "vehicle", 27: "vehicle", 28: "vehicle", 31: "vehicle",
    32: "vehicle", 33: "vehicle",
}
MAX_THINGS_PER_CLASS = 1000
_IMAGE_ID = re.compile(r"^(?P<city>.+)_(?P<seq>\d+)_(?P<frame>\d+)$")


def image_id_for(city: str, seq: int, frame: int) -> str:
    return f"{city}_{seq:06d}_{frame:06d}"


def cityscapes_categories(classes: ClassTable = CITYSCAPES) -> list[dict]:
    """The json ``categories`` list exactly as createPanopticImgs writes it (label ids)."""
    return [{"id": c.label_id, "name": c.name, "color": list(c.color_rgb),
             "supercategory": SUPERCATEGORY_BY_LABEL_ID.get(c.label_id, "thing" if c.is_thing else "stuff"),
             "isthing": int(c.is_thing)} for c in classes.classes]


@dataclass(frozen=True)
class CityscapesIds:
    """One frame in Cityscapes ids: segment and label id maps, and the area and box of every segment."""

    segment_ids: np.ndarray  # int64 (H, W): label_id*1000+k for things, label_id for stuff and crowds, 0 void
    label_ids: np.ndarray  # uint8 (H, W): Cityscapes label id, 0 (unlabeled) for void
    segments: dict[int, SegmentStats]  # area and box per segment id, ascending


def cityscapes_ids(frame: PanopticFrame, classes: ClassTable = CITYSCAPES,
                   groups: PixelGroups | None = None) -> CityscapesIds:
    """Map a frame's train ids / track ids to Cityscapes label ids / instance ids (see module docstring).

    ``groups``: the frame's pixel groups when the caller has them already.
    """
    groups = groups if groups is not None else pixel_groups(frame.semantic, frame.instance)
    crowd = crowd_track_ids(frame)
    label_of = np.zeros(256, dtype=np.int64)
    for c in classes.classes:
        label_of[c.train_id] = c.label_id
    seg = np.zeros(len(groups.class_ids), dtype=np.int64)
    next_k: dict[int, int] = {}
    # Groups come sorted by (instance, class): k follows ascending track id within each class.
    for g, (c, t) in enumerate(zip(groups.class_ids.tolist(), groups.instance_ids.tolist())):
        if c == VOID:
            continue
        label = int(label_of[c])
        if t == 0 or t in crowd:
            seg[g] = label
            continue
        k = next_k.get(label, 0)
        if k >= MAX_THINGS_PER_CLASS:
            raise DatasetError(f"frame {frame.frame_index} of {frame.sequence!r} has more than "
                               f"{MAX_THINGS_PER_CLASS} things of class {classes.classes[c].name!r}; "
                               "Cityscapes instance ids cannot hold them")
        next_k[label] = k + 1
        seg[g] = label * 1000 + k
    label_ids = groups.paint(np.where(groups.class_ids == VOID, 0, label_of[np.minimum(groups.class_ids, 255)]))
    return CityscapesIds(groups.paint(seg), label_ids.astype(np.uint8), groups.segment_stats(seg))


def camera_to_json(camera: CameraModel) -> dict:
    k = camera.intrinsics
    return {"extrinsic": {"baseline": 0.0, "pitch": camera.mounting.pitch_rad, "roll": 0.0, "x": 0.0, "y": 0.0,
                          "yaw": 0.0, "z": camera.mounting.height_m},
            "intrinsic": {"fx": k.fx, "fy": k.fy, "u0": k.cx, "v0": k.cy}}


def camera_from_json(doc: dict, width: int, height: int, where: str) -> CameraModel:
    try:
        i, e = doc["intrinsic"], doc["extrinsic"]
        return CameraModel(CameraIntrinsics(width, height, float(i["fx"]), float(i["fy"]), float(i["u0"]),
                                            float(i["v0"])),
                           CameraMounting(float(e["z"]), float(e["pitch"])))
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{where}: not a Cityscapes camera file ({exc}); needs intrinsic fx/fy/u0/v0 and "
                           "extrinsic z/pitch") from None


class CityscapesPanopticWriter(FrameWriter):
    """Writes PanopticFrames in the Cityscapes layout; the panoptic json is written on close."""

    def __init__(self, root: str | Path, split: str = "train", classes: ClassTable = CITYSCAPES) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", split):
            raise DatasetError(f"split name {split!r} must be letters, digits, '-' or '_'")
        self.root = Path(root)
        self.split = split
        self.classes = classes
        gt = self.root / "gtFine"
        self.json_path = gt / f"cityscapes_panoptic_{split}.json"
        self.panoptic_dir = gt / f"cityscapes_panoptic_{split}"
        if self.json_path.exists():
            raise DatasetError(f"{self.json_path} exists already; write to a new directory or delete it")
        self.panoptic_dir.mkdir(parents=True, exist_ok=True)
        self._city_of: dict[str, str] = {}
        self._images: list[dict] = []
        self._annotations: list[dict] = []
        self._ids: set[str] = set()

    def city_for(self, sequence: str) -> str:
        city = safe_name(sequence, "synthetic")
        owner = next((s for s, c in self._city_of.items() if c == city and s != sequence), None)
        if owner is not None:
            raise DatasetError(f"sequences {owner!r} and {sequence!r} both map to the city name {city!r}; "
                               "give them names that differ in letters or digits")
        self._city_of[sequence] = city
        return city

    def add(self, frame: PanopticFrame) -> None:
        groups = check_frame(frame, self.classes)
        city = self.city_for(frame.sequence)
        image_id = image_id_for(city, 0, frame.frame_index)
        if image_id in self._ids:
            raise DatasetError(f"frame {frame.frame_index} of sequence {frame.sequence!r} was added twice")
        self._ids.add(image_id)
        ids = cityscapes_ids(frame, self.classes, groups)
        gt_dir = self.root / "gtFine" / self.split / city
        write_png(self.root / "leftImg8bit" / self.split / city / f"{image_id}_leftImg8bit.png", frame.image)
        write_png(gt_dir / f"{image_id}_gtFine_labelIds.png", ids.label_ids)
        write_png(gt_dir / f"{image_id}_gtFine_instanceIds.png", ids.segment_ids.astype(np.uint16))
        write_png(gt_dir / f"{image_id}_gtFine_labelTrainIds.png", frame.semantic)
        write_png(self.panoptic_dir / f"{image_id}_gtFine_panoptic.png", id_to_rgb(ids.segment_ids))
        if frame.camera is not None:
            path = self.root / "camera" / self.split / city / f"{image_id}_camera.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(camera_to_json(frame.camera), indent=4))
        thing_labels = {c.label_id for c in self.classes.classes if c.is_thing}
        segments = []
        for seg_id, st in ids.segments.items():
            label = seg_id // 1000 if seg_id >= 1000 else seg_id
            segments.append({"id": seg_id, "category_id": label, "area": st.area_px, "bbox": list(st.bbox_xywh),
                             "iscrowd": int(seg_id < 1000 and label in thing_labels)})
        self._images.append({"id": image_id, "width": frame.width, "height": frame.height,
                             "file_name": f"{image_id}_gtFine_leftImg8bit.png", "sequence": frame.sequence,
                             "frame_index": int(frame.frame_index), "stamp_ns": int(frame.stamp_ns)})
        self._annotations.append({"image_id": image_id, "file_name": f"{image_id}_gtFine_panoptic.png",
                                  "segments_info": segments})

    def close(self) -> Path:
        doc = {"images": self._images, "annotations": self._annotations,
               "categories": cityscapes_categories(self.classes)}
        with self.json_path.open("w") as f:
            json.dump(doc, f, sort_keys=True, indent=4)
        return self.json_path


def write_cityscapes_panoptic(root: str | Path, frames: Iterable[PanopticFrame], split: str = "train",
                              classes: ClassTable = CITYSCAPES) -> Path:
    """Write ``frames`` in the Cityscapes layout under ``root``; returns the panoptic json path."""
    return CityscapesPanopticWriter(root, split, classes).write_all(frames)


@dataclass(frozen=True)
class _Entry:
    image_id: str
    city: str
    frame_index: int
    stamp_ns: int
    image_file: str
    panoptic_file: str | None  # None: read the gtFine instanceIds PNG instead
    segments_info: list[dict]


class CityscapesPanopticDataset(SequenceIndex[list[_Entry]]):
    """A Cityscapes split on disk (ours or the real dataset), read as PanopticFrames.

    Reads ``gtFine/cityscapes_panoptic_{split}.json`` (or its ``_trainId``
    variant); when no panoptic json exists it reads the gtFine
    ``*_instanceIds.png`` files directly, with the same meaning
    createPanopticImgs gives them. Json categories map to ``classes`` by name
    (label-id and train-id jsons both work).
    """

    format = FORMAT_NAME

    def __init__(self, root: str | Path, split: str | None = None, classes: ClassTable = CITYSCAPES) -> None:
        self.root = Path(root)
        self.classes = classes
        gt = self.root / "gtFine"
        if not gt.is_dir():
            raise DatasetError(f"{self.root} has no gtFine folder; pass the Cityscapes root (the folder holding "
                               "gtFine/ and leftImg8bit/)")
        json_path = self._find_json(gt, split)
        self._sequences: dict[str, list[_Entry]] = {}
        self._origin = self.root
        if json_path is not None:
            self.split = json_path.stem.removeprefix("cityscapes_panoptic_").removesuffix("_trainId")
            self.json_path: Path | None = json_path
            self.panoptic_dir = json_path.with_suffix("")
            self._load_json(json_path)
        else:
            self.split = self._find_instance_split(gt, split)
            self.json_path = None
            self.panoptic_dir = gt / self.split
            self._load_instance_ids(gt / self.split)
        for entries in self._sequences.values():
            entries.sort(key=lambda e: e.frame_index)

    @staticmethod
    def _find_json(gt: Path, split: str | None) -> Path | None:
        if split is not None:
            for name in (f"cityscapes_panoptic_{split}.json", f"cityscapes_panoptic_{split}_trainId.json"):
                if (gt / name).is_file():
                    return gt / name
            return None
        found = [p for p in sorted(gt.glob("cityscapes_panoptic_*.json")) if not p.stem.endswith("_trainId")]
        found = found or sorted(gt.glob("cityscapes_panoptic_*_trainId.json"))
        if len(found) > 1:
            raise DatasetError(f"{gt} holds panoptic jsons for several splits ({[p.name for p in found]}); "
                               "pass split= to choose")
        return found[0] if found else None

    @staticmethod
    def _find_instance_split(gt: Path, split: str | None) -> str:
        splits = [split] if split else sorted(d.name for d in gt.iterdir() if d.is_dir()
                                              and any(d.glob("*/*_gtFine_instanceIds.png")))
        if split and not any((gt / split).glob("*/*_gtFine_instanceIds.png")):
            splits = []
        if len(splits) != 1:
            wanted = f"cityscapes_panoptic_{split or '<split>'}.json"
            raise DatasetError(f"{gt}: missing {wanted} and no single split of *_gtFine_instanceIds.png "
                               f"(found {splits or 'none'}); run cityscapesScripts' createPanopticImgs or "
                               "pass split=")
        return splits[0]

    def _train_ids_of_categories(self, categories: list[dict], where: str) -> tuple[dict[int, int], dict[int, bool]]:
        by_name = {c.name: c.train_id for c in self.classes.classes}
        train_of: dict[int, int] = {}
        thing_of: dict[int, bool] = {}
        for d in categories:
            try:
                cat, name = int(d["id"]), str(d["name"])
            except (KeyError, TypeError, ValueError):
                raise DatasetError(f"{where}: malformed category {d!r}; needs 'id' and 'name'") from None
            if name not in by_name:
                raise DatasetError(f"{where}: category {cat} {name!r} is not in the class table "
                                   f"({', '.join(self.classes.names)})")
            train_of[cat] = by_name[name]
            thing_of[cat] = self.classes.classes[by_name[name]].is_thing
        return train_of, thing_of

    def _load_json(self, path: Path) -> None:
        doc = load_json(path)
        if not isinstance(doc, dict) or not all(k in doc for k in ("images", "annotations", "categories")):
            raise DatasetError(f"{path}: not a panoptic json (needs 'images', 'annotations', 'categories')")
        if not self.panoptic_dir.is_dir():
            raise DatasetError(f"missing panoptic PNG folder {self.panoptic_dir} next to {path.name}")
        self._train_of, self._thing_of = self._train_ids_of_categories(doc["categories"], str(path))
        annotations = {a.get("image_id"): a for a in doc["annotations"]}
        for image in doc["images"]:
            image_id = str(image.get("id"))
            ann = annotations.get(image.get("id"))
            if ann is None:
                raise DatasetError(f"{path}: image {image_id!r} has no annotation")
            m = _IMAGE_ID.match(image_id)
            if m is None:
                raise DatasetError(f"{path}: image id {image_id!r} is not of the form <city>_<seq>_<frame>")
            sequence = str(image.get("sequence", f"{m['city']}_{m['seq']}"))
            # Images are found by id: createPanopticImgs names them "<id>_gtFine_leftImg8bit.png",
            # which is not the real file name.
            entry = _Entry(image_id, m["city"], int(image.get("frame_index", int(m["frame"]))),
                           int(image.get("stamp_ns", 0)), f"{image_id}_leftImg8bit.png",
                           str(ann["file_name"]), list(ann.get("segments_info", [])))
            self._sequences.setdefault(sequence, []).append(entry)

    def _load_instance_ids(self, split_dir: Path) -> None:
        self._train_of, self._thing_of = {}, {}
        for path in sorted(split_dir.glob("*/*_gtFine_instanceIds.png")):
            image_id = path.name.removesuffix("_gtFine_instanceIds.png")
            m = _IMAGE_ID.match(image_id)
            if m is None:
                raise DatasetError(f"{path}: name is not of the form <city>_<seq>_<frame>_gtFine_instanceIds.png")
            entry = _Entry(image_id, m["city"], int(m["frame"]), 0, f"{image_id}_leftImg8bit.png", None, [])
            self._sequences.setdefault(f"{m['city']}_{m['seq']}", []).append(entry)

    def __len__(self) -> int:
        return sum(len(v) for v in self._sequences.values())

    def frames(self, sequence: str) -> Iterator[PanopticFrame]:
        for e in self._record(sequence):
            if e.panoptic_file is not None:
                png = read_png(self.panoptic_dir / e.panoptic_file)
                if png.ndim != 3:
                    raise DatasetError(f"{self.panoptic_dir / e.panoptic_file} must be an RGB segment-id PNG")
                decoded = decode_segments(rgb_to_id(png), e.segments_info, self._train_of, self._thing_of,
                                          f"{self.json_path}, image {e.image_id!r}")
                semantic, instance, objects = decoded.semantic, decoded.instance, decoded.objects
            else:
                semantic, instance, objects = self._decode_instance_ids(e)
            image = read_image_rgb(self.root / "leftImg8bit" / self.split / e.city / e.image_file)
            height, width = semantic.shape
            if image.shape[:2] != (height, width):
                raise DatasetError(f"{e.image_id}: image {image.shape[:2]} and ground truth {(height, width)} differ")
            camera_path = self.root / "camera" / self.split / e.city / f"{e.image_id}_camera.json"
            camera = (camera_from_json(load_json(camera_path), width, height, str(camera_path))
                      if camera_path.is_file() else None)
            yield PanopticFrame(image=image, semantic=semantic, instance=instance, objects=objects, camera=camera,
                                stamp_ns=e.stamp_ns, frame_index=e.frame_index, sequence=sequence)

    def _decode_instance_ids(self, e: _Entry) -> tuple[np.ndarray, np.ndarray, list]:
        """gtFine instanceIds -> frame arrays, with createPanopticImgs' meaning of the ids."""
        path = self.root / "gtFine" / self.split / e.city / f"{e.image_id}_gtFine_instanceIds.png"
        raw = read_png(path)
        if raw.ndim != 2:
            raise DatasetError(f"{path} must be a single-channel 16-bit instance id PNG")
        ids = raw.astype(np.int64)
        lut = self.classes.label_id_to_train_id()
        labels = np.where(ids >= 1000, ids // 1000, ids)
        if labels.max(initial=0) > 255:
            raise DatasetError(f"{path}: instance id {int(ids.max())} does not decode to a Cityscapes label id")
        semantic = lut[labels]
        is_thing = np.append(self.classes.is_thing_mask, np.zeros(256 - len(self.classes), dtype=bool))
        instance = np.where((ids >= 1000) & is_thing[semantic], ids, 0).astype(np.int32)
        decoded = decode_segments(instance, [{"id": i, "category_id": int(lut[i // 1000])}
                                             for i in np.unique(instance) if i],
                                  {c.train_id: c.train_id for c in self.classes.classes},
                                  {c.train_id: c.is_thing for c in self.classes.classes}, str(path))
        return semantic, instance, decoded.objects
