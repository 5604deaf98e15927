"""Panoptic quality (PQ, SQ, RQ) exactly as panopticapi computes it, and mIoU.

A frame's labelling, ground truth or prediction, is a pair of maps: the class
(train id of a :class:`~panoptic_ros.classes.ClassTable`, ``VOID`` = 255) and
the instance id (int, 0 for stuff). Segments are formed as panopticapi's
COCO panoptic format would hold them:

- a stuff class is one segment per image (its instance ids are ignored);
- a thing pixel belongs to the segment (class, instance id);
- ground-truth thing pixels with instance id 0 form the *crowd* region of their
  class (Cityscapes' convention for "car group" and the like), as do the
  ground-truth instances listed in ``gt_crowd_ids``;
- predicted thing pixels with instance id 0 form one ordinary segment of their
  class (an instance id is a segment id; nothing is void unless marked void);
- class ``VOID`` is void whatever the instance map says.

Matching (panopticapi ``pq_compute_single_core``): a ground-truth and a
predicted segment of the same class match when IoU > 0.5, where the union
leaves out the prediction's pixels on void ground truth
(``union = pred_area + gt_area - intersection - void_in_pred``). Crowd
segments are never matched nor false negatives. An unmatched prediction is not a
false positive when more than half of it lies on void or on the crowd region of
its class. Per-class counts add up over images; classes with TP + FP + FN = 0
are left out of the averages.

One difference from panopticapi, on a case it cannot express: when an image
has several crowd segments of one class, panopticapi keeps only the last one it
reads as "the" crowd region of the class; here all of them together are. With
at most one crowd segment per class and image (Cityscapes, COCO) the numbers
are identical, which the tests check against panopticapi itself.

Beyond panopticapi, the matching also counts segments by area
(:class:`AreaCounts`, bins split at ``AREA_EDGES_PX``): per class, the
ground-truth segments and how many of them were matched (recall by size), and
the false positives by their own area. Where PQ is lost -- small, distant or
mostly hidden objects, or thin stuff -- is then a table, not a guess.

How far PQ itself can be trusted is a bootstrap (:func:`bootstrap_pq`): the
per-class counts of independent units (sequences: frames within one are
correlated) are resampled with replacement, and the percentile interval of the
resampled PQ is reported; with two runs over the same units
(:func:`bootstrap_pq_difference`) the same resamples give an interval for the
difference, which says whether a change is larger than the spread of the data.

Everything is vectorised (bincount over densified segment keys, no sorting of
pixels), so a 512x1024 frame costs a few milliseconds.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from panoptic_ros.classes import CITYSCAPES, VOID, ClassTable
from panoptic_ros.metrics.bootstrap import LEVEL, RESAMPLES, excludes_zero, percentile_interval, unit_weights

VOID_KEY = -1
"""Segment key of void pixels (ground truth or prediction)."""

_INSTANCE_BITS = 32
_INSTANCE_MASK = (1 << _INSTANCE_BITS) - 1
_MAX_INSTANCE_ID = (1 << 31) - 1
_LUT_MAX_ID = 1 << 20  # above this, instance ids are densified by sorting instead of a lookup table

AREA_EDGES_PX = (64, 256, 1024, 4096, 16384)
"""Segment-area bin edges, px: squares of 8, 16, 32, 64 and 128 px sides (six bins, the last open)."""


def segment_key(class_id: int, instance_id: int) -> int:
    """The int64 key of segment (class, instance): ``class << 32 | instance``."""
    return (int(class_id) << _INSTANCE_BITS) | int(instance_id)


def key_class(keys: np.ndarray) -> np.ndarray:
    """Class id of each segment key (int64 array); -1 for ``VOID_KEY``."""
    keys = np.asarray(keys, dtype=np.int64)
    return np.where(keys == VOID_KEY, -1, keys >> _INSTANCE_BITS)


def key_instance(keys: np.ndarray) -> np.ndarray:
    """Instance id of each segment key (int64 array); 0 for ``VOID_KEY``."""
    keys = np.asarray(keys, dtype=np.int64)
    return np.where(keys == VOID_KEY, 0, keys & _INSTANCE_MASK)


# --------------------------------------------------------------------------- input checks


@dataclass(frozen=True)
class LabelMap:
    """One validated labelling, flattened: uint8 class ids (void = 255) and int32/int64 instance ids."""

    semantic: np.ndarray  # uint8 (N,)
    instance: np.ndarray  # integer (N,), >= 0
    shape: tuple[int, int]


def check_label_map(semantic: np.ndarray, instance: np.ndarray | None, what: str) -> LabelMap:
    """Validate the shapes and dtypes of one (class map, instance map) pair.

    Class ids are checked against the class table later, on the few distinct
    values (see :func:`pair_codes`). ``instance`` None means all zeros.
    Raises ``ValueError`` naming the bad value and the fix.
    """
    semantic = np.asarray(semantic)
    if semantic.ndim != 2:
        raise ValueError(f"{what} class map must be 2-D (H, W), got shape {semantic.shape}")
    if not np.issubdtype(semantic.dtype, np.integer):
        raise ValueError(f"{what} class map must hold integer class ids, got dtype {semantic.dtype}")
    flat = semantic.ravel()
    if semantic.dtype != np.uint8:
        if flat.size and (int(flat.min()) < 0 or int(flat.max()) > VOID):
            bad = int(flat.min()) if int(flat.min()) < 0 else int(flat.max())
            raise ValueError(f"{what} class map holds class id {bad}; class ids are train ids or {VOID} (void)")
        flat = flat.astype(np.uint8)
    if instance is None:
        return LabelMap(flat, np.zeros(flat.size, dtype=np.int32), semantic.shape)
    instance = np.asarray(instance)
    if instance.shape != semantic.shape:
        raise ValueError(f"{what} instance map {instance.shape} and class map {semantic.shape} differ in shape")
    if not np.issubdtype(instance.dtype, np.integer):
        raise ValueError(f"{what} instance map must hold integer ids, got dtype {instance.dtype}")
    inst = instance.ravel()
    if inst.size:
        lo, hi = int(inst.min()), int(inst.max())
        if lo < 0 or hi > _MAX_INSTANCE_ID:
            raise ValueError(f"{what} instance map holds id {lo if lo < 0 else hi}; instance ids are "
                             f"0..{_MAX_INSTANCE_ID} (0 = stuff)")
    if inst.dtype not in (np.int32, np.int64):
        inst = inst.astype(np.int64)
    return LabelMap(flat, inst, semantic.shape)


def check_classes(class_ids: np.ndarray, class_table: ClassTable, what: str) -> None:
    """Refuse class ids that are neither in the table nor void."""
    bad = class_ids[(class_ids >= len(class_table)) & (class_ids != VOID)]
    if bad.size:
        raise ValueError(f"{what} class map holds class id {int(bad[0])}, which the class table of "
                         f"{len(class_table)} classes does not have; use 0..{len(class_table) - 1} or {VOID} (void)")


def same_shape(gt: LabelMap, pred: LabelMap) -> None:
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in shape; "
                         "resize the prediction to the ground truth first")


# --------------------------------------------------------------------------- pixel codes


class Workspace:
    """Reusable per-pixel scratch buffers.

    Fresh multi-megabyte arrays cost page faults on every frame, which doubled
    the time of a 512x1024 frame in measurements; an accumulator keeps one
    workspace and the per-pixel passes write into it.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}

    def get(self, name: str, size: int) -> np.ndarray:
        """An uninitialised intp array of ``size`` elements (a view of a buffer at least that large)."""
        buf = self._buffers.get(name)
        if buf is None or buf.size < size:
            buf = np.empty(max(size, 1), dtype=np.intp)
            self._buffers[name] = buf
        return buf[:size]

    def __getstate__(self) -> dict:
        """Scratch space does not travel: a pickled accumulator (sent to another process) carries no buffers."""
        return {"_buffers": {}}


@dataclass(frozen=True)
class PairCodes:
    """Every pixel's (class, instance) pair as a small integer code, found without sorting pixels.

    ``codes`` (N,) index a code space of ``space`` values; ``present`` lists
    the codes that occur, with their class id (uint8 value, 255 = void) and
    instance id. ``spare`` is a scratch buffer of N elements for :meth:`gather`.
    """

    codes: np.ndarray  # intp (N,)
    space: int
    present: np.ndarray  # int64 (S,)
    present_class: np.ndarray  # int64 (S,)
    present_instance: np.ndarray  # int64 (S,)
    present_count: np.ndarray  # int64 (S,), pixels with each present code
    spare: np.ndarray  # intp (N,)

    def gather(self, present_to_dense: np.ndarray) -> np.ndarray:
        """Per pixel, ``present_to_dense[i]`` where the pixel's code is ``present[i]``; written into ``spare``."""
        lut = np.zeros(self.space, dtype=np.intp)
        lut[self.present] = present_to_dense
        return np.take(lut, self.codes, out=self.spare, mode="clip")


_DIRECT_MAX_ID = 1024  # instance ids below this are coded directly (code space 256 * 1024)


def pair_codes(semantic: np.ndarray, instance: np.ndarray, workspace: Workspace | None = None,
               name: str = "") -> PairCodes:
    """Code the (uint8 class, instance >= 0) pairs of some pixels: ``code = dense_instance * 256 + class``.

    Works in the platform's index type throughout, so that bincount and take
    run without hidden conversions, and in ``workspace`` buffers ``name+"a"``,
    ``name+"b"`` when given.
    """
    n = semantic.size
    ws = workspace if workspace is not None else Workspace()
    buf_a, buf_b = ws.get(name + "a", n), ws.get(name + "b", n)
    if n == 0:
        z = np.zeros(0, dtype=np.int64)
        return PairCodes(buf_a, 1, z, z, z, z, buf_b)
    max_id = int(instance.max())
    np.copyto(buf_a, instance, casting="safe")
    if max_id < _DIRECT_MAX_ID:
        ids = None
        n_ids = max_id + 1
        codes, spare = buf_a, buf_b
    else:
        if max_id < _LUT_MAX_ID:
            ids = np.flatnonzero(np.bincount(buf_a, minlength=max_id + 1))
            lut = np.zeros(max_id + 1, dtype=np.intp)
            lut[ids] = np.arange(ids.size, dtype=np.intp)
            np.take(lut, buf_a, out=buf_b, mode="clip")
        else:
            ids, dense = np.unique(buf_a, return_inverse=True)
            np.copyto(buf_b, dense.ravel(), casting="same_kind")
        n_ids = ids.size
        codes, spare = buf_b, buf_a
    np.left_shift(codes, 8, out=codes)
    np.bitwise_or(codes, semantic, out=codes)
    space = 256 * n_ids
    counts = np.bincount(codes, minlength=space)
    present = np.flatnonzero(counts).astype(np.int64)
    cls = present & 255
    ins = present >> 8
    if ids is not None:
        ins = np.asarray(ids, dtype=np.int64)[ins]
    return PairCodes(codes, space, present, cls, ins, counts[present].astype(np.int64), spare)


# --------------------------------------------------------------------------- overlap


@dataclass(frozen=True)
class SegmentOverlap:
    """Pixel counts of every (ground-truth segment, predicted segment) pair.

    One image, or one spatio-temporal window (the sum of its frames' overlaps,
    see :func:`merge_overlaps`). Keys are :func:`segment_key` values or
    ``VOID_KEY``; each (gt_key, pred_key) pair appears once.
    """

    gt_keys: np.ndarray  # int64 (P,)
    pred_keys: np.ndarray  # int64 (P,)
    counts: np.ndarray  # int64 (P,), pixels
    crowd_keys: np.ndarray  # int64 (K,), sorted ground-truth keys that are crowd


def thing_lut(class_table: ClassTable) -> np.ndarray:
    """bool[256]: class id -> is a thing (void and unknown ids: False)."""
    lut = np.zeros(256, dtype=bool)
    lut[class_table.thing_ids] = True
    return lut


def _segment_keys(codes: PairCodes, is_thing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct segment keys of the present codes, and the index of each code's key.

    Stuff keeps no instance id (one segment per class), void is ``VOID_KEY``.
    """
    cls = codes.present_class
    ins = np.where(is_thing[cls], codes.present_instance, 0)
    keys = np.where(cls == VOID, VOID_KEY, (cls << _INSTANCE_BITS) | ins)
    uniq, inverse = np.unique(keys, return_inverse=True)
    return uniq, inverse.ravel()


def joint_counts(gi: np.ndarray, pi: np.ndarray, n_gt: int, n_pred: int) -> tuple[np.ndarray, np.ndarray]:
    """(pair index gi * n_pred + pi, pixel count) of every co-occurring pair.

    ``gi`` is overwritten: callers pass a workspace buffer (see :meth:`PairCodes.gather`).
    """
    if n_gt * n_pred <= (1 << 24):
        np.multiply(gi, n_pred, out=gi)
        np.add(gi, pi, out=gi)
        joint = np.bincount(gi, minlength=n_gt * n_pred)
        nz = np.flatnonzero(joint)
        return nz, joint[nz].astype(np.int64)
    pairs, counts = np.unique(gi.astype(np.int64) * n_pred + pi, return_counts=True)
    return pairs, counts.astype(np.int64)


def _crowd_keys(gt_keys: np.ndarray, is_thing: np.ndarray, gt_crowd_ids: Iterable[int]) -> np.ndarray:
    crowd_ids = np.asarray(sorted({int(i) for i in gt_crowd_ids}), dtype=np.int64)
    if crowd_ids.size and crowd_ids.min() <= 0:
        raise ValueError(f"gt_crowd_ids must be positive instance ids, got {crowd_ids.tolist()} "
                         "(instance 0 of a thing class is crowd already)")
    cls = key_class(gt_keys)
    ins = key_instance(gt_keys)
    thing = (cls >= 0) & is_thing[np.clip(cls, 0, 255)]
    return np.sort(gt_keys[thing & ((ins == 0) | np.isin(ins, crowd_ids))])


def overlap_of(gt: LabelMap, pred: LabelMap, class_table: ClassTable, gt_crowd_ids: Iterable[int] = (),
               workspace: Workspace | None = None) -> SegmentOverlap:
    """Overlap of validated label maps (see :func:`segment_overlap`)."""
    same_shape(gt, pred)
    is_thing = thing_lut(class_table)
    ws = workspace if workspace is not None else Workspace()
    gc = pair_codes(gt.semantic, gt.instance, ws, "gt")
    check_classes(gc.present_class, class_table, "ground-truth")
    pc = pair_codes(pred.semantic, pred.instance, ws, "pred")
    check_classes(pc.present_class, class_table, "predicted")
    gk, g_map = _segment_keys(gc, is_thing)
    pk, p_map = _segment_keys(pc, is_thing)
    pair, counts = joint_counts(gc.gather(g_map), pc.gather(p_map), gk.size, pk.size)
    n_pred = max(pk.size, 1)
    return SegmentOverlap(gt_keys=gk[pair // n_pred], pred_keys=pk[pair % n_pred], counts=counts,
                          crowd_keys=_crowd_keys(gk, is_thing, gt_crowd_ids))


def segment_overlap(gt_semantic: np.ndarray, gt_instance: np.ndarray, pred_semantic: np.ndarray,
                    pred_instance: np.ndarray, class_table: ClassTable = CITYSCAPES,
                    gt_crowd_ids: Iterable[int] = (), workspace: Workspace | None = None) -> SegmentOverlap:
    """Overlap of the ground-truth and predicted segments of one image (see module docstring)."""
    gt = check_label_map(gt_semantic, gt_instance, "ground-truth")
    pred = check_label_map(pred_semantic, pred_instance, "predicted")
    return overlap_of(gt, pred, class_table, gt_crowd_ids, workspace)


def merge_overlaps(overlaps: Iterable[SegmentOverlap]) -> SegmentOverlap:
    """Sum the overlaps of several frames into one spatio-temporal "image".

    Segments keep their identity through the keys, so a track is one tube; a
    key is crowd when any frame marks it crowd.
    """
    items = list(overlaps)
    if not items:
        raise ValueError("merge_overlaps needs at least one overlap")
    if len(items) == 1:
        return items[0]
    g = np.concatenate([o.gt_keys for o in items])
    p = np.concatenate([o.pred_keys for o in items])
    c = np.concatenate([o.counts for o in items])
    pairs, inverse = np.unique(np.stack([g, p], axis=1), axis=0, return_inverse=True)
    summed = np.bincount(inverse.ravel(), weights=c, minlength=pairs.shape[0]).astype(np.int64)
    crowd = np.unique(np.concatenate([o.crowd_keys for o in items]))
    return SegmentOverlap(gt_keys=pairs[:, 0].copy(), pred_keys=pairs[:, 1].copy(), counts=summed,
                          crowd_keys=crowd)


# --------------------------------------------------------------------------- matching


@dataclass
class PQCounts:
    """Per-class PQ statistics, summable over images (panopticapi's ``PQStat``)."""

    tp: np.ndarray  # int64 (C,)
    fp: np.ndarray  # int64 (C,)
    fn: np.ndarray  # int64 (C,)
    iou_sum: np.ndarray  # float64 (C,), sum of the IoUs of the true positives

    @classmethod
    def zeros(cls, num_classes: int) -> "PQCounts":
        z = np.zeros(num_classes, dtype=np.int64)
        return cls(z.copy(), z.copy(), z.copy(), np.zeros(num_classes, dtype=np.float64))

    def __iadd__(self, other: "PQCounts") -> "PQCounts":
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.iou_sum += other.iou_sum
        return self


def area_bins(areas_px: np.ndarray) -> np.ndarray:
    """Bin index (0..len(AREA_EDGES_PX)) of each segment area: bin b holds areas in [edge[b-1], edge[b])."""
    return np.searchsorted(np.asarray(AREA_EDGES_PX), areas_px, side="right")


@dataclass
class AreaCounts:
    """Segments per class and area bin (``AREA_EDGES_PX``), summable over images.

    ``gt``: ground-truth segments that count (not crowd), by their area;
    ``matched``: those of them matched (true positives); ``fp``: false-positive
    predicted segments, by their own area. Summed over bins they are TP + FN,
    TP and FP of :class:`PQCounts`.
    """

    gt: np.ndarray  # int64 (C, B)
    matched: np.ndarray  # int64 (C, B)
    fp: np.ndarray  # int64 (C, B)

    @classmethod
    def zeros(cls, num_classes: int) -> "AreaCounts":
        z = np.zeros((num_classes, len(AREA_EDGES_PX) + 1), dtype=np.int64)
        return cls(z.copy(), z.copy(), z.copy())

    def __iadd__(self, other: "AreaCounts") -> "AreaCounts":
        self.gt += other.gt
        self.matched += other.matched
        self.fp += other.fp
        return self

    def result(self, class_table: ClassTable) -> "AreaResult":
        def row(sel: np.ndarray | slice) -> AreaRow:
            return AreaRow(*(tuple(int(v) for v in a[sel].sum(axis=0)) for a in (self.gt, self.matched, self.fp)))

        thing = np.array([c.is_thing for c in class_table.classes])
        per_class = {c.name: row(slice(c.train_id, c.train_id + 1)) for c in class_table.classes
                     if self.gt[c.train_id].any() or self.fp[c.train_id].any()}
        return AreaResult(AREA_EDGES_PX, row(thing), row(~thing), per_class)


@dataclass(frozen=True)
class AreaRow:
    """One class (or group) by area bin: ground-truth segments, those matched, false positives."""

    gt: tuple[int, ...]
    matched: tuple[int, ...]
    fp: tuple[int, ...]

    @property
    def recall(self) -> tuple[float, ...]:
        """matched / gt per bin (NaN for a bin without ground truth)."""
        return tuple(m / g if g else math.nan for m, g in zip(self.matched, self.gt))

    def to_dict(self) -> dict:
        return {"gt": list(self.gt), "matched": list(self.matched), "fp": list(self.fp),
                "recall": [_json_float(r) for r in self.recall]}


@dataclass(frozen=True)
class AreaResult:
    """Segments by area over all images: all things, all stuff, and each class that has any."""

    edges_px: tuple[int, ...]
    things: AreaRow
    stuff: AreaRow
    per_class: dict[str, AreaRow]

    def to_dict(self) -> dict:
        return {"edges_px": list(self.edges_px), "things": self.things.to_dict(), "stuff": self.stuff.to_dict(),
                "per_class": {name: r.to_dict() for name, r in self.per_class.items()}}


def area_bin_labels() -> list[str]:
    """Human labels of the area bins, e.g. '<64', '64-256', ..., '>=16384' (px)."""
    edges = AREA_EDGES_PX
    return ([f"<{edges[0]}"] + [f"{a}-{b}" for a, b in zip(edges[:-1], edges[1:])] + [f">={edges[-1]}"])


def match_segments(overlap: SegmentOverlap, class_table: ClassTable = CITYSCAPES,
                   by_area: AreaCounts | None = None) -> PQCounts:
    """Match the segments of one image (or window) and count TP / FP / FN per class.

    ``by_area``: also add the segments, by area, to these counts (see :class:`AreaCounts`).
    """
    num_classes = len(class_table)
    out = PQCounts.zeros(num_classes)
    if overlap.counts.size == 0:
        return out
    g_keys, g_idx = np.unique(overlap.gt_keys, return_inverse=True)
    p_keys, p_idx = np.unique(overlap.pred_keys, return_inverse=True)
    g_idx = g_idx.ravel()
    p_idx = p_idx.ravel()
    c = overlap.counts.astype(np.int64)
    g_area = np.bincount(g_idx, weights=c, minlength=g_keys.size).astype(np.int64)
    p_area = np.bincount(p_idx, weights=c, minlength=p_keys.size).astype(np.int64)
    g_void = g_keys == VOID_KEY
    p_void = p_keys == VOID_KEY
    g_cls = key_class(g_keys)
    p_cls = key_class(p_keys)
    g_crowd = np.isin(g_keys, overlap.crowd_keys)

    pair_gt_void = g_void[g_idx]
    pred_void_px = np.bincount(p_idx[pair_gt_void], weights=c[pair_gt_void], minlength=p_keys.size).astype(np.int64)

    cand = (~pair_gt_void) & (~p_void[p_idx]) & (~g_crowd[g_idx]) & (g_cls[g_idx] == p_cls[p_idx])
    union = p_area[p_idx] + g_area[g_idx] - c - pred_void_px[p_idx]
    iou = np.zeros(c.size, dtype=np.float64)
    iou[cand] = c[cand] / union[cand]
    matched = cand & (iou > 0.5)
    m_cls = g_cls[g_idx[matched]]
    out.tp += np.bincount(m_cls, minlength=num_classes)
    out.iou_sum += np.bincount(m_cls, weights=iou[matched], minlength=num_classes)

    g_matched = np.zeros(g_keys.size, dtype=bool)
    g_matched[g_idx[matched]] = True
    p_matched = np.zeros(p_keys.size, dtype=bool)
    p_matched[p_idx[matched]] = True

    fn_seg = ~g_void & ~g_crowd & ~g_matched
    out.fn += np.bincount(g_cls[fn_seg], minlength=num_classes)

    # Pixels of each prediction on the crowd region of its own class.
    on_crowd = g_crowd[g_idx] & (g_cls[g_idx] == p_cls[p_idx])
    crowd_px = np.bincount(p_idx[on_crowd], weights=c[on_crowd], minlength=p_keys.size).astype(np.int64)
    candidates_fp = ~p_void & ~p_matched
    ignored_fraction = np.zeros(p_keys.size, dtype=np.float64)
    ignored_fraction[candidates_fp] = (pred_void_px[candidates_fp] + crowd_px[candidates_fp]) / p_area[candidates_fp]
    fp_seg = candidates_fp & ~(ignored_fraction > 0.5)
    out.fp += np.bincount(p_cls[fp_seg], minlength=num_classes)
    if by_area is not None:
        counted = ~g_void & ~g_crowd
        for target, cls, area in ((by_area.gt, g_cls[counted], g_area[counted]),
                                  (by_area.matched, g_cls[g_matched], g_area[g_matched]),
                                  (by_area.fp, p_cls[fp_seg], p_area[fp_seg])):
            np.add.at(target, (cls, area_bins(area)), 1)
    return out


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class PQGroupResult:
    """PQ, SQ, RQ averaged over the ``n`` classes of a group that occur (NaN when n == 0)."""

    pq: float
    sq: float
    rq: float
    n: int


@dataclass(frozen=True)
class PQClassResult:
    """One class. ``pq``/``sq``/``rq`` are NaN when the class has no TP, FP or FN."""

    class_id: int
    name: str
    is_thing: bool
    pq: float
    sq: float
    rq: float
    tp: int
    fp: int
    fn: int
    iou_sum: float


@dataclass(frozen=True)
class MIoUResult:
    """Semantic segmentation IoU from a confusion matrix over non-void ground truth.

    ``confusion[g, p]`` counts pixels of ground-truth class g predicted as p; the
    last column holds pixels predicted void, which count as misses of g.
    ``iou`` is NaN for classes absent from both ground truth and prediction;
    ``miou`` is the mean over the others (NaN when there are none).
    """

    miou: float
    iou: tuple[float, ...]
    class_names: tuple[str, ...]
    confusion: np.ndarray = field(repr=False, compare=False)  # int64 (C, C+1)

    def shares(self) -> np.ndarray:
        """The confusion matrix normalised by row: each ground-truth class's pixels by what they were
        predicted as (the last column: void); all-zero rows stay zero."""
        conf = self.confusion.astype(np.float64)
        return conf / np.maximum(conf.sum(axis=1, keepdims=True), 1.0)

    def top_confusions(self, k: int = 10, min_share: float = 0.01) -> tuple[tuple[str, str, float], ...]:
        """The ``k`` largest off-diagonal :meth:`shares` ``(ground truth, predicted as, share of its pixels)``;
        "void" is a prediction of no class; shares under ``min_share`` are left out."""
        share = self.shares()
        c = share.shape[0]
        share[np.arange(c), np.arange(c)] = 0.0
        cols = (*self.class_names, "void")
        order = np.argsort(-share, axis=None, kind="stable")[:k]
        return tuple((self.class_names[i], cols[j], float(share[i, j]))
                     for i, j in (np.unravel_index(o, share.shape) for o in order) if share[i, j] >= min_share)

    def to_dict(self) -> dict:
        return {"miou": _json_float(self.miou),
                "per_class": {n: _json_float(v) for n, v in zip(self.class_names, self.iou)},
                "confusion": {"rows": list(self.class_names), "columns": [*self.class_names, "void"],
                              "pixels": self.confusion.tolist()},
                "top_confusions": [{"gt": g, "pred": p, "share": round(v, 6)} for g, p, v in self.top_confusions()]}


@dataclass(frozen=True)
class PQResult:
    """Panoptic quality over all images added to a :class:`PQAccumulator` (or one VPQ window size)."""

    all: PQGroupResult
    things: PQGroupResult
    stuff: PQGroupResult
    per_class: tuple[PQClassResult, ...]
    num_images: int
    miou: MIoUResult | None = None
    by_area: AreaResult | None = None  # segments and recall by area

    @classmethod
    def from_counts(cls, counts: PQCounts, class_table: ClassTable, num_images: int,
                    miou: MIoUResult | None = None, by_area: AreaCounts | None = None) -> "PQResult":
        per_class = []
        for info in class_table.classes:
            i = info.train_id
            tp, fp, fn, iou = int(counts.tp[i]), int(counts.fp[i]), int(counts.fn[i]), float(counts.iou_sum[i])
            if tp + fp + fn == 0:
                pq = sq = rq = math.nan
            else:
                denom = tp + 0.5 * fp + 0.5 * fn
                pq = iou / denom
                sq = iou / tp if tp != 0 else 0.0
                rq = tp / denom
            per_class.append(PQClassResult(i, info.name, info.is_thing, pq, sq, rq, tp, fp, fn, iou))

        def group(select: list[PQClassResult]) -> PQGroupResult:
            valid = [r for r in select if r.tp + r.fp + r.fn > 0]
            n = len(valid)
            if n == 0:
                return PQGroupResult(math.nan, math.nan, math.nan, 0)
            pq = sq = rq = 0.0
            for r in valid:  # same order of summation as panopticapi
                pq += r.pq
                sq += r.sq
                rq += r.rq
            return PQGroupResult(pq / n, sq / n, rq / n, n)

        return cls(all=group(per_class), things=group([r for r in per_class if r.is_thing]),
                   stuff=group([r for r in per_class if not r.is_thing]), per_class=tuple(per_class),
                   num_images=num_images, miou=miou,
                   by_area=by_area.result(class_table) if by_area is not None else None)

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (NaN -> null)."""
        out: dict = {"num_images": self.num_images}
        for name in ("all", "things", "stuff"):
            g: PQGroupResult = getattr(self, name)
            out[name] = {"pq": _json_float(g.pq), "sq": _json_float(g.sq), "rq": _json_float(g.rq), "n": g.n}
        out["per_class"] = [
            {"class_id": r.class_id, "name": r.name, "is_thing": r.is_thing, "pq": _json_float(r.pq),
             "sq": _json_float(r.sq), "rq": _json_float(r.rq), "tp": r.tp, "fp": r.fp, "fn": r.fn,
             "iou_sum": r.iou_sum}
            for r in self.per_class
        ]
        if self.miou is not None:
            out["miou"] = self.miou.to_dict()
        if self.by_area is not None:
            out["by_area"] = self.by_area.to_dict()
        return out

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_table(self, per_class: bool = True) -> str:
        """Fixed-width text table (percent), like panopticapi's printout plus per-class rows."""
        lines = [f"{'':14s}| {'PQ':>6s} {'SQ':>6s} {'RQ':>6s} {'N':>4s}", "-" * 43]
        for label, g in (("All", self.all), ("Things", self.things), ("Stuff", self.stuff)):
            lines.append(f"{label:14s}| {_pct(g.pq)} {_pct(g.sq)} {_pct(g.rq)} {g.n:4d}")
        if self.miou is not None:
            lines.append(f"{'mIoU':14s}| {_pct(self.miou.miou)}")
        if per_class:
            lines += ["", f"{'class':14s}| {'PQ':>6s} {'SQ':>6s} {'RQ':>6s} {'TP':>6s} {'FP':>6s} {'FN':>6s}"
                      + (f" {'IoU':>6s}" if self.miou is not None else ""), "-" * (64 if self.miou else 57)]
            for r in self.per_class:
                row = f"{r.name[:14]:14s}| {_pct(r.pq)} {_pct(r.sq)} {_pct(r.rq)} {r.tp:6d} {r.fp:6d} {r.fn:6d}"
                if self.miou is not None:
                    row += f" {_pct(self.miou.iou[r.class_id])}"
                lines.append(row)
        return "\n".join(lines)


def _pct(v: float) -> str:
    return f"{'n/a':>6s}" if not math.isfinite(v) else f"{100.0 * v:6.1f}"


def _json_float(v: float) -> float | None:
    return None if not math.isfinite(v) else float(v)


# --------------------------------------------------------------------------- uncertainty

@dataclass(frozen=True)
class PQInterval:
    """Percentile bootstrap intervals of PQ (all, things, stuff) over ``units`` resampled units.

    For :func:`bootstrap_pq_difference` the intervals are of (current - baseline). NaN where a group never
    occurs in the data.
    """

    level: float
    resamples: int
    units: int
    all: tuple[float, float]
    things: tuple[float, float]
    stuff: tuple[float, float]

    def excludes_zero(self) -> bool:
        """For a difference: the interval of all classes lies on one side of 0 (beyond resampling noise)."""
        return excludes_zero(self.all)

    def to_dict(self) -> dict:
        return {"level": self.level, "resamples": self.resamples, "units": self.units,
                **{g: [_json_float(v) for v in getattr(self, g)] for g in ("all", "things", "stuff")}}


def _group_pq(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, iou: np.ndarray,
              select: np.ndarray) -> np.ndarray:
    """PQ averaged over the selected classes that occur, for each row of (R, C) count arrays (NaN: none)."""
    tp, fp, fn, iou = tp[:, select], fp[:, select], fn[:, select], iou[:, select]
    denom = tp + 0.5 * fp + 0.5 * fn
    present = denom > 0
    pq = np.divide(iou, denom, out=np.zeros_like(iou), where=present)
    n = present.sum(axis=1)
    return np.divide(pq.sum(axis=1), n, out=np.full(len(n), np.nan), where=n > 0)


def thing_mask(class_table: ClassTable) -> np.ndarray:
    """(C,) bool, indexed by class id: which classes are things."""
    mask = np.zeros(len(class_table), dtype=bool)
    mask[list(class_table.thing_ids)] = True
    return mask


def _resampled_pq(units: Sequence[PQCounts], weights: np.ndarray, is_thing: np.ndarray) -> dict[str, np.ndarray]:
    """PQ of all / things / stuff for each resample: ``weights[r, u]`` = copies of unit u in resample r."""
    tp, fp, fn, iou = (weights @ np.stack([getattr(u, k) for u in units]).astype(np.float64)
                       for k in ("tp", "fp", "fn", "iou_sum"))
    thing = np.asarray(is_thing, dtype=bool)
    if thing.shape != (tp.shape[1],):
        raise ValueError(f"is_thing has {thing.size} classes, the counts {tp.shape[1]}")
    return {"all": _group_pq(tp, fp, fn, iou, np.ones_like(thing)), "things": _group_pq(tp, fp, fn, iou, thing),
            "stuff": _group_pq(tp, fp, fn, iou, ~thing)}


def bootstrap_pq(units: Sequence[PQCounts], is_thing: np.ndarray, resamples: int = RESAMPLES,
                 level: float = LEVEL, seed: int = 0) -> PQInterval:
    """Percentile intervals of PQ over ``units`` (each one unit's summed counts, e.g. a sequence's), resampled
    with replacement ``resamples`` times (seeded: the same data give the same interval); ``is_thing`` as
    :func:`thing_mask`. ValueError for fewer than two units."""
    weights = unit_weights(len(units), resamples, seed)
    pq = _resampled_pq(units, weights, is_thing)
    return PQInterval(level, resamples, len(units),
                      *(percentile_interval(pq[g], level) for g in ("all", "things", "stuff")))


def bootstrap_pq_difference(current: Sequence[PQCounts], baseline: Sequence[PQCounts], is_thing: np.ndarray,
                            resamples: int = RESAMPLES, level: float = LEVEL,
                            seed: int = 0) -> PQInterval:
    """Paired bootstrap of PQ(current) - PQ(baseline) over the same units, in the same order: each resample
    draws the same units for both runs, so what the units share (their difficulty) cancels."""
    if len(current) != len(baseline):
        raise ValueError(f"paired units differ in number: {len(current)} and {len(baseline)}")
    weights = unit_weights(len(current), resamples, seed)
    a, b = _resampled_pq(current, weights, is_thing), _resampled_pq(baseline, weights, is_thing)
    return PQInterval(level, resamples, len(current),
                      *(percentile_interval(a[g] - b[g], level) for g in ("all", "things", "stuff")))


# --------------------------------------------------------------------------- accumulators


class MIoUAccumulator:
    """Confusion matrix over images; void ground truth is ignored, void prediction is a miss."""

    def __init__(self, class_table: ClassTable = CITYSCAPES) -> None:
        self.class_table = class_table
        c = len(class_table)
        self.confusion = np.zeros((c, c + 1), dtype=np.int64)

    def add(self, gt_semantic: np.ndarray, pred_semantic: np.ndarray) -> None:
        gt = check_label_map(gt_semantic, None, "ground-truth")
        pred = check_label_map(pred_semantic, None, "predicted")
        same_shape(gt, pred)
        check_classes(np.flatnonzero(np.bincount(gt.semantic, minlength=256)), self.class_table, "ground-truth")
        check_classes(np.flatnonzero(np.bincount(pred.semantic, minlength=256)), self.class_table, "predicted")
        c = len(self.class_table)
        valid = gt.semantic != VOID
        pr = np.where(pred.semantic == VOID, c, pred.semantic)
        joint = gt.semantic[valid].astype(np.int64) * (c + 1) + pr[valid]
        self.confusion += np.bincount(joint, minlength=c * (c + 1)).reshape(c, c + 1)

    def add_overlap(self, overlap: SegmentOverlap) -> None:
        """Add an image from its segment overlap (same pixels, no second pass over them)."""
        c = len(self.class_table)
        g = key_class(overlap.gt_keys)
        p = key_class(overlap.pred_keys)
        valid = g >= 0
        p = np.where(p < 0, c, p)
        joint = g[valid] * (c + 1) + p[valid]
        self.confusion += np.bincount(joint, weights=overlap.counts[valid],
                                      minlength=c * (c + 1)).astype(np.int64).reshape(c, c + 1)

    def merge(self, other: "MIoUAccumulator") -> None:
        """Add the images another accumulator (same class table) has seen, e.g. another bag's."""
        if other.class_table != self.class_table:
            raise ValueError("cannot merge mIoU accumulators of different class tables")
        self.confusion += other.confusion

    def result(self) -> MIoUResult:
        c = len(self.class_table)
        tp = np.diag(self.confusion[:, :c]).astype(np.float64)
        gt_total = self.confusion.sum(axis=1).astype(np.float64)
        pred_total = self.confusion[:, :c].sum(axis=0).astype(np.float64)
        denom = gt_total + pred_total - tp
        iou = np.full(c, np.nan)
        ok = denom > 0
        iou[ok] = tp[ok] / denom[ok]
        miou = float(np.mean(iou[ok])) if ok.any() else math.nan
        return MIoUResult(miou=miou, iou=tuple(float(v) for v in iou), class_names=tuple(self.class_table.names),
                          confusion=self.confusion.copy())


class PQAccumulator:
    """Streaming PQ (and mIoU) over images: ``add`` each image, then ``result``."""

    def __init__(self, class_table: ClassTable = CITYSCAPES) -> None:
        self.class_table = class_table
        self.counts = PQCounts.zeros(len(class_table))
        self.by_area = AreaCounts.zeros(len(class_table))
        self.miou = MIoUAccumulator(class_table)
        self.num_images = 0
        self._workspace = Workspace()

    def add(self, gt_semantic: np.ndarray, gt_instance: np.ndarray, pred_semantic: np.ndarray,
            pred_instance: np.ndarray, gt_crowd_ids: Iterable[int] = ()) -> PQCounts:
        """Add one image; returns its own counts (handy for per-image reports).

        ``gt_crowd_ids``: ground-truth instance ids (of thing classes) that are
        crowd regions (``ObjectAnnotation.is_crowd``).
        """
        overlap = segment_overlap(gt_semantic, gt_instance, pred_semantic, pred_instance, self.class_table,
                                  gt_crowd_ids, self._workspace)
        counts = match_segments(overlap, self.class_table, self.by_area)
        self.counts += counts
        self.miou.add_overlap(overlap)
        self.num_images += 1
        return counts

    def merge(self, other: "PQAccumulator") -> None:
        """Add the images another accumulator (same class table) has seen: counts are sums over images, so
        accumulating parts (bags, processes) and merging them in a fixed order gives a reproducible total."""
        if other.class_table != self.class_table:
            raise ValueError("cannot merge PQ accumulators of different class tables")
        self.counts += other.counts
        self.by_area += other.by_area
        self.miou.merge(other.miou)
        self.num_images += other.num_images

    def result(self) -> PQResult:
        return PQResult.from_counts(self.counts, self.class_table, self.num_images, self.miou.result(), self.by_area)
