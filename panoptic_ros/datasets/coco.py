"""COCO panoptic format: the segment-id PNG encoding, and a reader/writer for its directory layout.

Layout (as COCO's ``panoptic_{split}.json`` + ``panoptic_{split}/`` pair)::

    annotations/panoptic_{split}.json    images, annotations (file_name + segments_info), categories
    annotations/panoptic_{split}/*.png   segment ids, id = R + 256 * G + 256**2 * B, 0 = void
    images/{split}/*.png                 the images (real COCO keeps them in ``{split}/`` or ``images/``)

The PNG id encoding and the per-segment statistics here are shared by the
Cityscapes writer (Cityscapes' panoptic ground truth is this format with
Cityscapes label ids as category ids).

**Ids in what we write.** Category ids are our train ids (0..18 for
Cityscapes), so a category id *is* a class id. A thing with a track id gets
segment id = track id (at most ``MAX_TRACK_ID`` = 2**23 - 1), so track ids
survive the round trip; stuff segments, and thing pixels that carry no track
id (crowd regions), get ``STUFF_SEGMENT_BASE + category id`` (2**23 + id),
which never collides with a track id. Things marked ``is_crowd`` are written
with ``iscrowd: 1``. Each image entry also carries ``sequence``,
``frame_index`` and ``stamp_ns`` (extra keys that COCO tools ignore) so frames
can be put back in sequence order.

**What the reader returns** (for our files and real ones alike): the json's
categories, sorted by id, become train ids 0..N-1 (``classes`` and
``category_to_train_id`` say which is which; for our files this is the
identity). Thing segments get instance id = segment id; crowd segments
(``iscrowd: 1``) and stuff get instance id 0, so a crowd region is a
thing-class pixel with instance 0, as in Cityscapes and KITTI-STEP.
``objects`` lists the non-crowd thing segments; the format stores no amodal
information, so ``visible_fraction`` is NaN (unknown) and ``amodal_box_xyxy``
is the visible box.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from panoptic_ros.classes import CITYSCAPES, VOID, ClassInfo, ClassTable
from panoptic_ros.datasets.types import DatasetError, FrameWriter, ObjectAnnotation, PanopticFrame, SequenceIndex
from panoptic_ros.panoptic import MAX_TRACK_ID, unique_inverse

STUFF_SEGMENT_BASE = 1 << 23
"""Segment id of stuff (and of thing pixels without a track id) = this + category id."""

MAX_SEGMENT_ID = 256 ** 3 - 1
"""Largest id the three 8-bit PNG channels can hold."""

FORMAT_NAME = "coco"


# ---------------------------------------------------------------------------
# PNG and id encoding, shared by the other layouts.

def rgb_to_id(rgb_hw3: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) int32 segment ids, id = R + 256 G + 256^2 B."""
    c = rgb_hw3.astype(np.int32)
    return c[..., 0] + 256 * c[..., 1] + 65536 * c[..., 2]


def id_to_rgb(ids_hw: np.ndarray) -> np.ndarray:
    """(H, W) segment ids in 0..2^24-1 -> (H, W, 3) uint8 RGB (inverse of :func:`rgb_to_id`)."""
    ids = ids_hw.astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() > MAX_SEGMENT_ID):
        raise DatasetError(f"segment ids must lie in 0..{MAX_SEGMENT_ID} to fit an RGB PNG, "
                           f"got {int(ids.min())}..{int(ids.max())}")
    # Little-endian bytes of the id are R, G, B (and a zero high byte).
    return np.ascontiguousarray(ids.astype("<u4").view(np.uint8).reshape(*ids.shape, 4)[..., :3])


def read_png(path: str | Path) -> np.ndarray:
    """A PNG as stored: (H, W) uint8/uint16 for grey, (H, W, 3) uint8 **RGB** for colour (alpha dropped)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"missing file {path}")
    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is None:
        raise DatasetError(f"cannot decode image {path}: the file is corrupt or not an image")
    if data.ndim == 3:
        data = cv2.cvtColor(data[..., :3], cv2.COLOR_BGR2RGB)
    return data


def read_image_rgb(path: str | Path) -> np.ndarray:
    """An 8-bit image file (PNG or JPEG) as (H, W, 3) uint8 RGB; grey images are replicated."""
    data = read_png(path)
    if data.dtype != np.uint8:
        raise DatasetError(f"image {path} has {data.dtype} pixels; expected 8-bit RGB or grey")
    if data.ndim == 2:
        data = np.repeat(data[..., None], 3, axis=2)
    return np.ascontiguousarray(data)


def write_png(path: str | Path, array: np.ndarray) -> None:
    """Write (H, W) uint8/uint16 grey or (H, W, 3) uint8 RGB as a lossless PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if array.ndim == 3 else array
    if not cv2.imwrite(str(path), out):
        raise DatasetError(f"could not write {path}")


# ---------------------------------------------------------------------------
# Frames -> segments.

@dataclass(frozen=True)
class SegmentStats:
    area_px: int
    bbox_xywh: tuple[int, int, int, int]  # integer pixels, COCO convention (w = last - first + 1)


def stats_by_index(index_hw: np.ndarray, count: int) -> list[SegmentStats | None]:
    """Area and box of each label 0..count-1 of an (H, W) index map (None where a label has no pixels)."""
    areas = np.bincount(index_hw.ravel(), minlength=count)
    slices = ndimage.find_objects(index_hw.astype(np.int32) + 1, max_label=count)
    out: list[SegmentStats | None] = []
    for area, sl in zip(areas.tolist(), slices):
        if sl is None:
            out.append(None)
            continue
        ys, xs = sl
        out.append(SegmentStats(int(area), (xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start)))
    return out


def _merge(a: SegmentStats, b: SegmentStats) -> SegmentStats:
    x0, y0 = min(a.bbox_xywh[0], b.bbox_xywh[0]), min(a.bbox_xywh[1], b.bbox_xywh[1])
    x1 = max(a.bbox_xywh[0] + a.bbox_xywh[2], b.bbox_xywh[0] + b.bbox_xywh[2])
    y1 = max(a.bbox_xywh[1] + a.bbox_xywh[3], b.bbox_xywh[1] + b.bbox_xywh[3])
    return SegmentStats(a.area_px + b.area_px, (x0, y0, x1 - x0, y1 - y0))


def segment_stats(ids_hw: np.ndarray) -> dict[int, SegmentStats]:
    """Area and box of every non-zero id of an (H, W) segment id map, in one pass."""
    uniq, inverse = unique_inverse(ids_hw)
    stats = stats_by_index(inverse.reshape(ids_hw.shape), uniq.size)
    return {int(i): st for i, st in zip(uniq.tolist(), stats) if i != 0 and st is not None}


@dataclass(frozen=True)
class PixelGroups:
    """The distinct (class id, instance id) pairs of a frame and which pixels hold each."""

    class_ids: np.ndarray  # int64 (G,)
    instance_ids: np.ndarray  # int64 (G,)
    index_hw: np.ndarray  # int64 (H, W): group of each pixel

    def paint(self, segment_id_of_group: np.ndarray) -> np.ndarray:
        """(G,) segment id per group -> (H, W) int64 segment id map."""
        return np.asarray(segment_id_of_group, dtype=np.int64)[self.index_hw]

    def segment_stats(self, segment_id_of_group: np.ndarray) -> dict[int, SegmentStats]:
        """Area and box per non-zero segment id when group g becomes segment ``segment_id_of_group[g]``
        (groups sharing an id merge): what :func:`segment_stats` of the painted map gives, without a sort."""
        out: dict[int, SegmentStats] = {}
        for seg_id, st in zip(np.asarray(segment_id_of_group).tolist(),
                              stats_by_index(self.index_hw, self.class_ids.size)):
            if seg_id == 0 or st is None:
                continue
            out[int(seg_id)] = _merge(out[int(seg_id)], st) if int(seg_id) in out else st
        return dict(sorted(out.items()))


def pixel_groups(semantic_hw: np.ndarray, instance_hw: np.ndarray) -> PixelGroups:
    key = instance_hw.astype(np.int64) * 256 + semantic_hw.astype(np.int64)
    uniq, inverse = unique_inverse(key)
    return PixelGroups(uniq % 256, uniq // 256, inverse.reshape(semantic_hw.shape))


def box_xywh_to_xyxy(box: tuple[int, int, int, int]) -> tuple[float, float, float, float]:
    """Integer pixel box -> corner box in the pixel-edge convention (a 1-pixel box is 1 wide)."""
    x, y, w, h = box
    return (float(x), float(y), float(x + w), float(y + h))


def check_frame(frame: PanopticFrame, classes: ClassTable) -> PixelGroups:
    """The invariants every writer relies on; raises DatasetError naming the first broken one.

    Returns the frame's pixel groups (which the check needs anyway) for the writer to reuse.
    """
    where = f"frame {frame.frame_index} of sequence {frame.sequence!r}"
    if frame.image.dtype != np.uint8 or frame.image.ndim != 3 or frame.image.shape[2] != 3:
        raise DatasetError(f"{where}: image must be (H, W, 3) uint8 RGB, got {frame.image.dtype} {frame.image.shape}")
    shape = frame.image.shape[:2]
    if frame.semantic.shape != shape or frame.instance.shape != shape:
        raise DatasetError(f"{where}: semantic {frame.semantic.shape} and instance {frame.instance.shape} "
                           f"must match the image size {shape}")
    if frame.semantic.dtype != np.uint8:
        raise DatasetError(f"{where}: semantic must be uint8 train ids, got {frame.semantic.dtype}")
    if not np.issubdtype(frame.instance.dtype, np.integer):
        raise DatasetError(f"{where}: instance must hold integer track ids, got {frame.instance.dtype}")
    groups = pixel_groups(frame.semantic, frame.instance)
    known = (groups.class_ids < len(classes)) | (groups.class_ids == VOID)
    if not known.all():
        bad = sorted(set(groups.class_ids[~known].tolist()))
        raise DatasetError(f"{where}: class ids {bad} are not in the class table (0..{len(classes) - 1}, void {VOID})")
    is_thing = np.append(classes.is_thing_mask, np.zeros(256 - len(classes), dtype=bool))
    stray = (groups.instance_ids != 0) & ~is_thing[groups.class_ids]
    if stray.any():
        i = int(np.flatnonzero(stray)[0])
        raise DatasetError(f"{where}: instance id {int(groups.instance_ids[i])} lies on class "
                           f"{int(groups.class_ids[i])}, which is stuff or void; only things carry instance ids")
    if groups.instance_ids.min(initial=0) < 0 or groups.instance_ids.max(initial=0) > MAX_TRACK_ID:
        raise DatasetError(f"{where}: instance ids must lie in 0..{MAX_TRACK_ID}")
    ids, counts = np.unique(groups.instance_ids[groups.instance_ids != 0], return_counts=True)
    if (counts > 1).any():
        raise DatasetError(f"{where}: instance id {int(ids[counts > 1][0])} covers pixels of two classes")
    return groups


def crowd_track_ids(frame: PanopticFrame) -> set[int]:
    return {o.track_id for o in frame.objects if o.is_crowd}


def safe_name(name: str, fallback: str = "sequence") -> str:
    """A sequence name usable in file names: runs of anything but [A-Za-z0-9-] become '-'."""
    cleaned = re.sub(r"[^A-Za-z0-9-]+", "-", name).strip("-")
    return cleaned or fallback


def load_json(path: Path) -> Any:
    if not path.is_file():
        raise DatasetError(f"missing annotation file {path}")
    try:
        with path.open() as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} is not valid JSON ({exc}); the file is truncated or corrupt") from None


@dataclass(frozen=True)
class DecodedPanoptic:
    semantic: np.ndarray  # uint8 (H, W)
    instance: np.ndarray  # int32 (H, W)
    objects: list[ObjectAnnotation]


def decode_segments(ids_hw: np.ndarray, segments_info: list[dict], train_id_of_category: dict[int, int],
                    is_thing_category: dict[int, bool], where: str) -> DecodedPanoptic:
    """COCO-style segment id map + segments_info -> semantic, instance (segment id / 0) and objects.

    Raises DatasetError when the PNG and the json disagree or a category is unknown.
    """
    segs: dict[int, dict] = {}
    for s in segments_info:
        try:
            segs[int(s["id"])] = s
        except (KeyError, TypeError, ValueError):
            raise DatasetError(f"{where}: malformed segments_info entry {s!r}; each needs an integer 'id'") from None
    uniq, inverse = unique_inverse(ids_hw)
    stats = {int(i): st for i, st in zip(uniq.tolist(), stats_by_index(inverse.reshape(ids_hw.shape), uniq.size))
             if i != 0 and st is not None}
    missing = sorted(set(stats) - set(segs))
    if missing:
        raise DatasetError(f"{where}: segment ids {missing[:5]} appear in the PNG but not in segments_info; "
                           "the PNG and the json do not belong together")
    absent = sorted(set(segs) - set(stats))
    if absent:
        raise DatasetError(f"{where}: segments {absent[:5]} are listed in segments_info but have no pixels in the PNG")
    cls = np.full(uniq.shape, VOID, dtype=np.uint8)
    inst = np.zeros(uniq.shape, dtype=np.int32)
    objects: list[ObjectAnnotation] = []
    for j, seg_id in enumerate(uniq.tolist()):
        if seg_id == 0:
            continue
        s = segs[seg_id]
        category = int(s.get("category_id", -1))
        if category not in train_id_of_category:
            raise DatasetError(f"{where}: segment {seg_id} has category_id {category}, which is not among the "
                               f"categories {sorted(train_id_of_category)}")
        cls[j] = train_id_of_category[category]
        if is_thing_category[category] and not int(s.get("iscrowd", 0)):
            inst[j] = seg_id
            st = stats[seg_id]
            objects.append(ObjectAnnotation(track_id=seg_id, class_id=int(cls[j]), area_px=st.area_px,
                                            visible_fraction=math.nan, amodal_box_xyxy=box_xywh_to_xyxy(st.bbox_xywh)))
    shape = ids_hw.shape
    return DecodedPanoptic(cls[inverse].reshape(shape), inst[inverse].reshape(shape),
                           sorted(objects, key=lambda o: o.track_id))


# ---------------------------------------------------------------------------
# Writer.

class CocoPanopticWriter(FrameWriter):
    """Writes PanopticFrames as a COCO panoptic split; frames stream to disk, the json is written on close."""

    def __init__(self, root: str | Path, split: str = "train", classes: ClassTable = CITYSCAPES,
                 info: dict | None = None) -> None:
        """``info``: extra entries for the json's ``info`` (``predict`` says there whether ids are track ids)."""
        if not re.fullmatch(r"[A-Za-z0-9_-]+", split):
            raise DatasetError(f"split name {split!r} must be letters, digits, '-' or '_'")
        self.root = Path(root)
        self.split = split
        self.classes = classes
        self.json_path = self.root / "annotations" / f"panoptic_{split}.json"
        self.png_dir = self.root / "annotations" / f"panoptic_{split}"
        self.image_dir = self.root / "images" / split
        if self.json_path.exists():
            raise DatasetError(f"{self.json_path} exists already; write to a new directory or delete it")
        self.png_dir.mkdir(parents=True, exist_ok=True)
        self.image_dir.mkdir(parents=True, exist_ok=True)
        self._images: list[dict] = []
        self._annotations: list[dict] = []
        self._stems: set[str] = set()
        self._info = dict(info or {})

    def add(self, frame: PanopticFrame) -> None:
        groups = check_frame(frame, self.classes)
        stem = f"{safe_name(frame.sequence)}_{frame.frame_index:06d}"
        if stem in self._stems:
            raise DatasetError(f"two frames map to the file name {stem!r}: sequence names must differ in more than "
                               "punctuation and frame indices must be unique within a sequence")
        self._stems.add(stem)
        crowd = crowd_track_ids(frame)
        is_thing = self.classes.is_thing_mask
        seg_of_group = np.zeros(len(groups.class_ids), dtype=np.int64)
        category: dict[int, int] = {}
        iscrowd: dict[int, int] = {}
        for g, (c, t) in enumerate(zip(groups.class_ids.tolist(), groups.instance_ids.tolist())):
            if c == VOID:
                continue
            seg_id = t if t else STUFF_SEGMENT_BASE + c
            seg_of_group[g] = seg_id
            category[seg_id] = c
            iscrowd[seg_id] = int(bool(is_thing[c]) and (t == 0 or t in crowd))
        stats = groups.segment_stats(seg_of_group)
        write_png(self.png_dir / f"{stem}.png", id_to_rgb(groups.paint(seg_of_group)))
        write_png(self.image_dir / f"{stem}.png", frame.image)
        image_id = len(self._images) + 1
        self._images.append({"id": image_id, "file_name": f"{stem}.png", "width": frame.width, "height": frame.height,
                             "sequence": frame.sequence, "frame_index": int(frame.frame_index),
                             "stamp_ns": int(frame.stamp_ns)})
        self._annotations.append({"image_id": image_id, "file_name": f"{stem}.png", "segments_info": [
            {"id": seg_id, "category_id": category[seg_id], "area": st.area_px, "bbox": list(st.bbox_xywh),
             "iscrowd": iscrowd[seg_id]}
            for seg_id, st in sorted(stats.items())]})

    def close(self) -> Path:
        """Write the json; returns its path."""
        categories = [{"id": c.train_id, "name": c.name, "supercategory": "thing" if c.is_thing else "stuff",
                       "isthing": int(c.is_thing), "color": list(c.color_rgb), "label_id": c.label_id}
                      for c in self.classes.classes]
        doc = {"info": {"description": "panoptic ground truth written by panoptic_ros",
                        "segment_ids": "things: track id; stuff and thing pixels without a track id: "
                                       f"{STUFF_SEGMENT_BASE} + category id; category id = train id",
                        **self._info},
               "licenses": [], "images": self._images, "annotations": self._annotations, "categories": categories}
        with self.json_path.open("w") as f:
            json.dump(doc, f)
        return self.json_path


def write_coco_panoptic(root: str | Path, frames: Iterable[PanopticFrame], split: str = "train",
                        classes: ClassTable = CITYSCAPES) -> Path:
    """Write ``frames`` as a COCO panoptic split under ``root``; returns the json path."""
    return CocoPanopticWriter(root, split, classes).write_all(frames)


# ---------------------------------------------------------------------------
# Reader.

def classes_from_categories(categories: list[dict], where: str) -> tuple[ClassTable, dict[int, int]]:
    """COCO categories (any id set) -> a ClassTable with train ids 0..N-1 in id order, and id -> train id."""
    if not isinstance(categories, list) or not categories:
        raise DatasetError(f"{where}: 'categories' must be a non-empty list")
    try:
        ordered = sorted(categories, key=lambda d: int(d["id"]))
        infos = []
        for i, d in enumerate(ordered):
            color = d.get("color") or _fallback_color(i)
            infos.append(ClassInfo(i, str(d.get("name", d["id"])), int(d.get("label_id", d["id"])),
                                   bool(d.get("isthing", 0)), (int(color[0]), int(color[1]), int(color[2]))))
        table = ClassTable(tuple(infos))
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{where}: malformed categories ({exc}); each needs 'id', 'name' and 'isthing'") from None
    return table, {int(d["id"]): i for i, d in enumerate(ordered)}


def _fallback_color(i: int) -> tuple[int, int, int]:
    rng = np.random.default_rng(i)
    return tuple(int(v) for v in rng.integers(0, 256, 3))  # type: ignore[return-value]


class CocoPanopticDataset(SequenceIndex[list[tuple[int, dict, dict]]]):
    """A COCO panoptic split on disk, read as PanopticFrames (see the module docstring for ids)."""

    format = FORMAT_NAME

    def __init__(self, root: str | Path, split: str | None = None) -> None:
        self.root = Path(root)
        ann_dir = self.root / "annotations"
        if split is None:
            found = sorted(ann_dir.glob("panoptic_*.json"))
            if len(found) != 1:
                raise DatasetError(f"{ann_dir}: expected one panoptic_<split>.json, found "
                                   f"{[p.name for p in found] or 'none'}; pass split= to choose")
            split = found[0].stem[len("panoptic_"):]
        self.split = split
        self.json_path = ann_dir / f"panoptic_{split}.json"
        self.png_dir = ann_dir / f"panoptic_{split}"
        doc = load_json(self.json_path)
        where = str(self.json_path)
        if not isinstance(doc, dict) or not all(k in doc for k in ("images", "annotations", "categories")):
            raise DatasetError(f"{where}: not a COCO panoptic file (needs 'images', 'annotations', 'categories')")
        self.info: dict = doc["info"] if isinstance(doc.get("info"), dict) else {}
        if not self.png_dir.is_dir():
            raise DatasetError(f"missing segment PNG folder {self.png_dir} next to {self.json_path.name}")
        self.image_dir = next((d for d in (self.root / "images" / split, self.root / split, self.root / "images")
                               if d.is_dir()), self.root / "images" / split)
        self.classes, self.category_to_train_id = classes_from_categories(doc["categories"], where)
        self._is_thing = {cat: self.classes.classes[t].is_thing for cat, t in self.category_to_train_id.items()}
        annotations = {a.get("image_id"): a for a in doc["annotations"]}
        self._sequences: dict[str, list[tuple[int, dict, dict]]] = {}
        self._origin = self.json_path
        for ordinal, image in enumerate(doc["images"]):
            ann = annotations.get(image.get("id"))
            if ann is None:
                raise DatasetError(f"{where}: image {image.get('id')!r} has no annotation")
            sequence = str(image.get("sequence", split))
            index = int(image.get("frame_index", ordinal))
            self._sequences.setdefault(sequence, []).append((index, image, ann))
        for entries in self._sequences.values():
            entries.sort(key=lambda e: e[0])

    def __len__(self) -> int:
        return sum(len(v) for v in self._sequences.values())

    def frames(self, sequence: str) -> Iterator[PanopticFrame]:
        for index, image, ann in self._record(sequence):
            where = f"{self.json_path.name}, image {image.get('id')!r}"
            png = read_png(self.png_dir / ann["file_name"])
            if png.ndim != 3:
                raise DatasetError(f"{self.png_dir / ann['file_name']} must be an RGB segment-id PNG")
            decoded = decode_segments(rgb_to_id(png), ann.get("segments_info", []), self.category_to_train_id,
                                      self._is_thing, where)
            rgb = read_image_rgb(self.image_dir / image["file_name"])
            if rgb.shape[:2] != png.shape[:2]:
                raise DatasetError(f"{where}: image {rgb.shape[:2]} and segment PNG {png.shape[:2]} differ in size")
            yield PanopticFrame(image=rgb, semantic=decoded.semantic, instance=decoded.instance,
                                objects=decoded.objects, camera=None, stamp_ns=int(image.get("stamp_ns", 0)),
                                frame_index=index, sequence=sequence)
