"""Video panoptic metrics: VPQ (Kim et al. 2020) and STQ (Weber et al. 2021).

Frames are labelled as in :mod:`panoptic_ros.metrics.pq`: a class map (train
ids, 255 = void) and an instance map (0 for stuff), for ground truth and
prediction alike. Instance ids must be consistent over a sequence: a track
keeps its id, which is what both metrics reward.

VPQ, as the reference ``eval_vpq.py`` of mcahny/vps (Cityscapes-VPS) computes it:
for each window size k, every run of k consecutive evaluated frames of a
sequence is one spatio-temporal "image"; segments are tubes (same class and
id across the window) and are matched with panopticapi's rules over the whole
tube (IoU > 0.5 with void left out of the union, crowd regions, void/crowd
absorbed false positives). TP / FP / FN and IoU sums add up over all windows of
all sequences, per class; PQ_k is their class average and VPQ the mean of PQ_k
over the window sizes (likewise for things and stuff). Windows slide by one
evaluated frame and never span two sequences. Feed only the evaluated frames:
Cityscapes-VPS annotates every 5th frame, so its window sizes 1..4 (k = 1..4
here) span 0, 5, 10 and 15 frames (the reference names them k = 0, 5, 10, 15).
The reference's later fix (deep copies of the per-frame segment records) is
what this follows: tube areas are the sums of per-frame pixel counts.

STQ, mirroring deeplab2's ``evaluation/numpy/segmentation_and_tracking_quality.py``:
- AQ (association quality) over ``thing`` pixels only. Ground-truth tracks are
  (class, id) of thing pixels that are not crowd (thing class, instance 0; here
  also ids listed in ``gt_crowd_ids``). Predicted tracks are (class, id) of
  predicted thing pixels, instance 0 included, outside the ground-truth crowd
  region; predicted thing pixels on void ground truth do count in a
  prediction's size. Per sequence,
  ``AQ = sum_g 1/|g| sum_p TPA(g,p) * TPA / (|g| + |p| - TPA)`` over all pairs
  that overlap (no class check: association is class-agnostic), divided by the
  number of ground-truth tracks; the overall AQ pools the sums and track counts
  of all sequences.
- SQ is deeplab2's IoU term: a confusion matrix with the void id as an extra
  row and column, the void row (void ground truth) dropped. Note the reference's
  quirk, kept here: pixels *predicted* void on non-void ground truth count as
  misses of their class *and* make the void column a "class" with IoU 0 in the
  mean (the mean runs over every index with a non-zero union).
- STQ = sqrt(AQ * SQ), overall and per sequence.
"""
from __future__ import annotations

import copy
import json
import math
from collections import OrderedDict, deque
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from panoptic_ros.classes import CITYSCAPES, VOID, ClassTable
from panoptic_ros.metrics.pq import (
    PQCounts,
    PQResult,
    SegmentOverlap,
    Workspace,
    check_classes,
    check_label_map,
    joint_counts,
    match_segments,
    merge_overlaps,
    overlap_of,
    pair_codes,
    same_shape,
    thing_lut,
)

DEFAULT_WINDOW_SIZES = (1, 2, 3, 4)
_EPSILON = 1e-15  # deeplab2's guard against empty denominators


# --------------------------------------------------------------------------- VPQ


@dataclass(frozen=True)
class VPQResult:
    """VPQ over window sizes; ``per_window[i]`` is the PQ of window size ``window_sizes[i]``.

    ``vpq`` / ``vpq_things`` / ``vpq_stuff`` are the means over window sizes of
    the all / things / stuff PQ (NaN when any window size has no class).
    """

    window_sizes: tuple[int, ...]
    per_window: tuple[PQResult, ...]
    vpq: float
    vpq_things: float
    vpq_stuff: float

    def to_dict(self) -> dict:
        def f(v: float) -> float | None:
            return None if not math.isfinite(v) else float(v)

        return {"vpq": f(self.vpq), "vpq_things": f(self.vpq_things), "vpq_stuff": f(self.vpq_stuff),
                "windows": {str(k): r.to_dict() for k, r in zip(self.window_sizes, self.per_window)}}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_table(self) -> str:
        def pct(v: float) -> str:
            return f"{'n/a':>6s}" if not math.isfinite(v) else f"{100.0 * v:6.1f}"

        lines = [f"{'window k':10s}| {'VPQ':>6s} {'things':>6s} {'stuff':>6s} {'windows':>8s}", "-" * 42]
        for k, r in zip(self.window_sizes, self.per_window):
            lines.append(f"{k:<10d}| {pct(r.all.pq)} {pct(r.things.pq)} {pct(r.stuff.pq)} {r.num_images:8d}")
        lines.append(f"{'mean':10s}| {pct(self.vpq)} {pct(self.vpq_things)} {pct(self.vpq_stuff)}")
        return "\n".join(lines)


class VPQAccumulator:
    """Streaming VPQ: ``add`` the evaluated frames of each sequence in order, then ``result``.

    Only the last ``max(window_sizes)`` frames' segment overlaps (a few hundred
    numbers each) are kept per sequence, never the images.
    """

    def __init__(self, class_table: ClassTable = CITYSCAPES,
                 window_sizes: Sequence[int] = DEFAULT_WINDOW_SIZES) -> None:
        sizes = tuple(int(k) for k in window_sizes)
        if not sizes or any(k < 1 for k in sizes) or len(set(sizes)) != len(sizes):
            raise ValueError(f"window_sizes must be distinct positive frame counts, got {tuple(window_sizes)}")
        self.class_table = class_table
        self.window_sizes = sizes
        self._counts = {k: PQCounts.zeros(len(class_table)) for k in sizes}
        self._num_windows = dict.fromkeys(sizes, 0)
        self._history: dict[Hashable, deque[SegmentOverlap]] = {}
        self._workspace = Workspace()

    def add(self, gt_semantic: np.ndarray, gt_instance: np.ndarray, pred_semantic: np.ndarray,
            pred_instance: np.ndarray, sequence_id: Hashable = 0, gt_crowd_ids: Iterable[int] = ()) -> None:
        """Add the next evaluated frame of ``sequence_id`` and score every window that ends on it."""
        gt = check_label_map(gt_semantic, gt_instance, "ground-truth")
        pred = check_label_map(pred_semantic, pred_instance, "predicted")
        overlap = overlap_of(gt, pred, self.class_table, gt_crowd_ids, self._workspace)
        history = self._history.setdefault(sequence_id, deque(maxlen=max(self.window_sizes)))
        history.append(overlap)
        for k in self.window_sizes:
            if len(history) >= k:
                window = merge_overlaps(list(history)[-k:])
                self._counts[k] += match_segments(window, self.class_table)
                self._num_windows[k] += 1

    def add_sequence(self, frames: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
                     sequence_id: Hashable = 0) -> None:
        """Add a whole sequence of (gt_semantic, gt_instance, pred_semantic, pred_instance) frames."""
        for gs, gi, ps, pi in frames:
            self.add(gs, gi, ps, pi, sequence_id=sequence_id)

    def merge(self, other: "VPQAccumulator") -> None:
        """Add another accumulator's windows (same classes and window sizes; its sequences must be new here).

        Windows never span sequences, so the per-class counts of disjoint
        sequence sets simply add up.
        """
        if other.class_table != self.class_table or other.window_sizes != self.window_sizes:
            raise ValueError("cannot merge VPQ accumulators of different class tables or window sizes")
        shared = set(self._history) & set(other._history)
        if shared:
            raise ValueError(f"cannot merge VPQ accumulators that both hold sequence(s) {sorted(map(str, shared))}")
        for k in self.window_sizes:
            self._counts[k] += other._counts[k]
            self._num_windows[k] += other._num_windows[k]
        for seq, history in other._history.items():
            self._history[seq] = deque(history, maxlen=history.maxlen)

    def result(self) -> VPQResult:
        per_window = tuple(PQResult.from_counts(self._counts[k], self.class_table, self._num_windows[k])
                           for k in self.window_sizes)

        def mean(values: list[float]) -> float:
            return math.nan if any(not math.isfinite(v) for v in values) else sum(values) / len(values)

        return VPQResult(window_sizes=self.window_sizes, per_window=per_window,
                         vpq=mean([r.all.pq for r in per_window]),
                         vpq_things=mean([r.things.pq for r in per_window]),
                         vpq_stuff=mean([r.stuff.pq for r in per_window]))


# --------------------------------------------------------------------------- STQ


@dataclass(frozen=True)
class STQSequenceResult:
    sequence_id: Hashable
    stq: float
    aq: float
    sq: float  # deeplab2's IoU term of this sequence
    num_frames: int
    num_gt_tracks: int


@dataclass(frozen=True)
class STQResult:
    """Segmentation and Tracking Quality, overall (pooled) and per sequence."""

    stq: float
    aq: float
    sq: float  # deeplab2's 'IoU'
    per_sequence: tuple[STQSequenceResult, ...]

    def to_dict(self) -> dict:
        def f(v: float) -> float | None:
            return None if not math.isfinite(v) else float(v)

        return {"stq": f(self.stq), "aq": f(self.aq), "sq": f(self.sq),
                "per_sequence": [{"sequence_id": str(s.sequence_id), "stq": f(s.stq), "aq": f(s.aq),
                                  "sq": f(s.sq), "num_frames": s.num_frames, "num_gt_tracks": s.num_gt_tracks}
                                 for s in self.per_sequence]}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_table(self) -> str:
        def pct(v: float) -> str:
            return f"{'n/a':>6s}" if not math.isfinite(v) else f"{100.0 * v:6.1f}"

        lines = [f"{'sequence':16s}| {'STQ':>6s} {'AQ':>6s} {'SQ':>6s} {'frames':>7s} {'tracks':>7s}", "-" * 56]
        for s in self.per_sequence:
            lines.append(f"{str(s.sequence_id)[:16]:16s}| {pct(s.stq)} {pct(s.aq)} {pct(s.sq)} "
                         f"{s.num_frames:7d} {s.num_gt_tracks:7d}")
        lines.append(f"{'all':16s}| {pct(self.stq)} {pct(self.aq)} {pct(self.sq)}")
        return "\n".join(lines)


class _SequenceStats:
    """Per-sequence accumulators of STQ: confusion matrix and track/intersection areas."""

    def __init__(self, num_classes: int) -> None:
        self.confusion = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)  # last: void
        self.gt_area: dict[int, int] = {}
        self.pred_area: dict[int, int] = {}
        self.intersection: dict[tuple[int, int], int] = {}
        self.num_frames = 0


def _add_counts(target: dict, keys: Iterable, counts: np.ndarray) -> None:
    for key, count in zip(keys, counts.tolist()):
        target[key] = target.get(key, 0) + count


def _track_keys(cls: np.ndarray, ins: np.ndarray) -> np.ndarray:
    return (cls.astype(np.int64) << 32) | ins.astype(np.int64)


class STQAccumulator:
    """Streaming STQ: ``add`` frames (any order of sequences; frames of a sequence in any order), then ``result``."""

    def __init__(self, class_table: ClassTable = CITYSCAPES) -> None:
        self.class_table = class_table
        self._sequences: OrderedDict[Hashable, _SequenceStats] = OrderedDict()
        self._is_thing = thing_lut(class_table)
        self._workspace = Workspace()

    def add(self, gt_semantic: np.ndarray, gt_instance: np.ndarray, pred_semantic: np.ndarray,
            pred_instance: np.ndarray, sequence_id: Hashable = 0, gt_crowd_ids: Iterable[int] = ()) -> None:
        gt = check_label_map(gt_semantic, gt_instance, "ground-truth")
        pred = check_label_map(pred_semantic, pred_instance, "predicted")
        same_shape(gt, pred)
        c = len(self.class_table)
        gs, ps = gt.semantic, pred.semantic
        check_classes(np.flatnonzero(np.bincount(gs, minlength=256)), self.class_table, "ground-truth")
        check_classes(np.flatnonzero(np.bincount(ps, minlength=256)), self.class_table, "predicted")
        crowd_ids = np.asarray(sorted({int(i) for i in gt_crowd_ids}), dtype=np.int64)
        if crowd_ids.size and crowd_ids.min() <= 0:
            raise ValueError(f"gt_crowd_ids must be positive instance ids, got {crowd_ids.tolist()}")
        stats = self._sequences.get(sequence_id)
        if stats is None:
            stats = self._sequences[sequence_id] = _SequenceStats(c)
        stats.num_frames += 1

        # Confusion over all pixels, 256 x 256 then folded to classes + void.
        ws = self._workspace
        joint = ws.get("joint", gs.size)
        np.copyto(joint, gs, casting="safe")
        np.left_shift(joint, 8, out=joint)
        np.bitwise_or(joint, ps, out=joint)
        full = np.bincount(joint, minlength=256 * 256).reshape(256, 256)
        index = np.concatenate([np.arange(c), [VOID]])
        stats.confusion += full[np.ix_(index, index)]

        # Association over thing pixels outside the ground-truth crowd region.
        gt_thing = self._is_thing[gs]
        crowd = gt_thing & (gt.instance == 0)
        if crowd_ids.size:
            crowd |= gt_thing & np.isin(gt.instance, crowd_ids)
        label_mask = gt_thing & ~crowd
        pred_mask = self._is_thing[ps] & ~crowd
        both = label_mask & pred_mask

        g = pair_codes(gs[label_mask], gt.instance[label_mask], ws, "g")
        _add_counts(stats.gt_area, _track_keys(g.present_class, g.present_instance).tolist(), g.present_count)
        p = pair_codes(ps[pred_mask], pred.instance[pred_mask], ws, "p")
        _add_counts(stats.pred_area, _track_keys(p.present_class, p.present_instance).tolist(), p.present_count)
        gb = pair_codes(gs[both], gt.instance[both], ws, "g")
        pb = pair_codes(ps[both], pred.instance[both], ws, "p")
        n_g, n_p = gb.present.size, pb.present.size
        if n_g and n_p:
            pair, counts = joint_counts(gb.gather(np.arange(n_g)), pb.gather(np.arange(n_p)), n_g, n_p)
            gk = _track_keys(gb.present_class, gb.present_instance)[pair // n_p].tolist()
            pk = _track_keys(pb.present_class, pb.present_instance)[pair % n_p].tolist()
            _add_counts(stats.intersection, zip(gk, pk), counts)

    def merge(self, other: "STQAccumulator") -> None:
        """Append another accumulator's sequences (same class table; sequence ids must be new here).

        The pooled STQ runs over sequences in insertion order, so merging
        parts in a fixed order reproduces the same numbers every time.
        """
        if other.class_table != self.class_table:
            raise ValueError("cannot merge STQ accumulators of different class tables")
        shared = set(self._sequences) & set(other._sequences)
        if shared:
            raise ValueError(f"cannot merge STQ accumulators that both hold sequence(s) {sorted(map(str, shared))}")
        for seq, stats in other._sequences.items():
            self._sequences[seq] = copy.deepcopy(stats)

    def result(self) -> STQResult:
        c = len(self.class_table)
        per_seq = []
        aq_sums, tube_counts = [], []
        total_confusion = np.zeros((c + 1, c + 1), dtype=np.int64)
        for seq_id, st in self._sequences.items():
            pred_by_gt: dict[int, list[tuple[int, int]]] = {}
            for (gk, pk), tpa in st.intersection.items():
                pred_by_gt.setdefault(gk, []).append((pk, tpa))
            outer = 0.0
            for gk, g_size in st.gt_area.items():
                inner = 0.0
                for pk, tpa in pred_by_gt.get(gk, ()):
                    fpa = st.pred_area[pk] - tpa
                    fna = g_size - tpa
                    inner += tpa * (tpa / (tpa + fpa + fna))
                outer += 1.0 / g_size * inner
            aq_sums.append(outer)
            tube_counts.append(len(st.gt_area))
            confusion = st.confusion.copy()
            confusion[c, :] = 0  # void ground truth is not evaluated
            total_confusion += confusion
            sq = _deeplab_iou(confusion)
            aq = outer / max(len(st.gt_area), _EPSILON)
            per_seq.append(STQSequenceResult(seq_id, math.sqrt(aq * sq) if math.isfinite(sq) else math.nan,
                                             aq, sq, st.num_frames, len(st.gt_area)))
        aq_all = float(np.sum(aq_sums)) / max(float(np.sum(tube_counts)), _EPSILON) if per_seq else math.nan
        sq_all = _deeplab_iou(total_confusion) if per_seq else math.nan
        stq = math.sqrt(aq_all * sq_all) if math.isfinite(aq_all) and math.isfinite(sq_all) else math.nan
        return STQResult(stq=stq, aq=aq_all, sq=sq_all, per_sequence=tuple(per_seq))


def _deeplab_iou(confusion: np.ndarray) -> float:
    """Mean IoU over every index (void column included) with a non-zero union; NaN when none."""
    tp = np.diag(confusion).astype(np.float64)
    fps = confusion.sum(axis=0) - np.diag(confusion)
    fns = confusion.sum(axis=1) - np.diag(confusion)
    unions = (tp + fps + fns).astype(np.float64)
    n = int(np.count_nonzero(unions))
    if n == 0:
        return math.nan
    return float(np.sum(tp / np.maximum(unions, _EPSILON)) / n)
