"""Multi-object tracking metrics: CLEAR MOT, identity (IDF1), HOTA, and ID switches at occlusions.

Input is a sequence of :class:`TrackingFrame`: per frame, the ground-truth ids,
the hypothesis (tracker) ids and their similarity matrix (IoU of boxes or of
masks, in [0, 1]). Frame index = position in the sequence.

Definitions, each mirroring the reference library the tests compare against:

- CLEAR MOT as py-motmetrics (``MOTAccumulator`` + ``mota``, ``motp``,
  ``num_switches``): a pair may match when IoU >= threshold. Per frame, pairs
  matched at an earlier frame are kept first (in ground-truth order) when still
  allowed; the rest are assigned by minimum total distance (1 - IoU) among the
  assignments with the most matches. A match is an ID switch when the
  ground truth's previous match (at any earlier frame) was another hypothesis.
  MOTA = 1 - (misses + switches + false positives) / ground-truth objects.
  ``motp_iou`` is the mean IoU of matched pairs (MOTChallenge's MOTP);
  ``motp_distance`` = mean (1 - IoU), py-motmetrics' ``motp``.
- Identity metrics as py-motmetrics' ID measures (Ristani et al. 2016): a
  one-to-one mapping of whole tracks maximising the frames where the pair
  overlaps with IoU >= threshold (IDTP); IDFN / IDFP are the ground-truth /
  hypothesis detections left over; IDF1 = 2 IDTP / (GT + hypothesis detections).
- HOTA as TrackEval's ``HOTA.eval_sequence`` (Luiten et al. 2020): alphas
  0.05, 0.10, ..., 0.95 (``np.arange(0.05, 0.99, 0.05)``); per frame a Hungarian
  matching on IoU weighted by the global alignment score; DetA, AssA, LocA per
  alpha, and their means over alphas. Sequences combine as TrackEval does
  (sums, and AssA / LocA weighted by true positives).

ID switches at occlusion events (:func:`id_switches_in_events`) are defined
below the CLEAR matching they reuse. Whether one tracker's IDF1 beats
another's on the same sequences is a paired bootstrap over the sequences
(:func:`bootstrap_idf1_difference`, see :mod:`~panoptic_ros.metrics.bootstrap`).
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from panoptic_ros.metrics.bootstrap import LEVEL, RESAMPLES, percentile_interval, unit_weights
from panoptic_ros.panoptic import unique_inverse

HOTA_ALPHAS = np.arange(0.05, 0.99, 0.05)
"""The 19 localisation thresholds of HOTA, exactly as TrackEval builds them."""

_EPS = float(np.finfo("float").eps)


# --------------------------------------------------------------------------- similarity


def box_iou_matrix(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> np.ndarray:
    """IoU of boxes (x0, y0, x1, y1) in pixels, continuous areas (no +1); 0 where the union is empty."""
    a = np.asarray(a_xyxy, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b_xyxy, dtype=np.float64).reshape(-1, 4)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("boxes must be finite (x0, y0, x1, y1) pixel coordinates")
    if (a[:, 2] < a[:, 0]).any() or (a[:, 3] < a[:, 1]).any() or (b[:, 2] < b[:, 0]).any() or (b[:, 3] < b[:, 1]).any():
        raise ValueError("boxes must be (x0, y0, x1, y1) with x1 >= x0 and y1 >= y0; convert (x, y, w, h) boxes first")
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.maximum(iw, 0.0) * np.maximum(ih, 0.0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    out = np.zeros_like(inter)
    ok = union > 0
    out[ok] = inter[ok] / union[ok]
    return out


def mask_iou_matrix(a_nhw: np.ndarray, b_mhw: np.ndarray) -> np.ndarray:
    """IoU of boolean masks (N, H, W) x (M, H, W); 0 where both masks are empty."""
    a = np.asarray(a_nhw, dtype=bool)
    b = np.asarray(b_mhw, dtype=bool)
    if a.ndim != 3 or b.ndim != 3 or a.shape[1:] != b.shape[1:]:
        raise ValueError(f"masks must be (N, H, W) and (M, H, W) of one image size, got {a.shape} and {b.shape}")
    af = a.reshape(a.shape[0], -1).astype(np.float64)
    bf = b.reshape(b.shape[0], -1).astype(np.float64)
    inter = af @ bf.T  # exact: integer counts far below 2**53
    union = af.sum(1)[:, None] + bf.sum(1)[None, :] - inter
    out = np.zeros_like(inter)
    ok = union > 0
    out[ok] = inter[ok] / union[ok]
    return out


def id_map_iou(gt_ids_hw: np.ndarray, hyp_ids_hw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ids present in two id maps (0 = background) and their mask IoU matrix, by one joint count."""
    g = np.asarray(gt_ids_hw)
    h = np.asarray(hyp_ids_hw)
    if g.shape != h.shape or g.ndim != 2:
        raise ValueError(f"id maps must be 2-D and of one shape, got {g.shape} and {h.shape}")
    if not (np.issubdtype(g.dtype, np.integer) and np.issubdtype(h.dtype, np.integer)):
        raise ValueError(f"id maps must hold integer ids, got {g.dtype} and {h.dtype}")
    g_ids, g_idx = unique_inverse(g)
    h_ids, h_idx = unique_inverse(h)
    joint = np.bincount(g_idx * h_ids.size + h_idx, minlength=g_ids.size * h_ids.size)
    inter = joint.reshape(g_ids.size, h_ids.size).astype(np.float64)
    g_area, h_area = inter.sum(1), inter.sum(0)
    gk, hk = g_ids != 0, h_ids != 0
    inter = inter[np.ix_(gk, hk)]
    union = g_area[gk][:, None] + h_area[hk][None, :] - inter
    return g_ids[gk].astype(np.int64), h_ids[hk].astype(np.int64), inter / union


# --------------------------------------------------------------------------- input


@dataclass(frozen=True, eq=False)
class TrackingFrame:
    """One frame: ground-truth ids (N,), hypothesis ids (M,), similarity (N, M) in [0, 1]."""

    gt_ids: np.ndarray
    hyp_ids: np.ndarray
    similarity: np.ndarray

    def __post_init__(self) -> None:
        gt = np.asarray(self.gt_ids).reshape(-1)
        hyp = np.asarray(self.hyp_ids).reshape(-1)
        for name, ids in (("gt_ids", gt), ("hyp_ids", hyp)):
            if ids.size and not np.issubdtype(ids.dtype, np.integer):
                raise ValueError(f"{name} must be integers, got dtype {ids.dtype}")
            if np.unique(ids).size != ids.size:
                raise ValueError(f"{name} holds a repeated id {ids.tolist()}; one entry per object and frame")
        sim = np.asarray(self.similarity, dtype=np.float64)
        if sim.size == 0:
            sim = np.zeros((gt.size, hyp.size))
        if sim.shape != (gt.size, hyp.size):
            raise ValueError(f"similarity has shape {sim.shape}, expected ({gt.size}, {hyp.size}) = (gt, hyp)")
        if not np.isfinite(sim).all() or (sim < 0).any() or (sim > 1).any():
            raise ValueError("similarity must be an IoU-like score in [0, 1] with no NaN")
        object.__setattr__(self, "gt_ids", gt.astype(np.int64))
        object.__setattr__(self, "hyp_ids", hyp.astype(np.int64))
        object.__setattr__(self, "similarity", sim)

    @classmethod
    def from_boxes(cls, gt_ids: Sequence[int] | np.ndarray, gt_boxes_xyxy: np.ndarray,
                   hyp_ids: Sequence[int] | np.ndarray, hyp_boxes_xyxy: np.ndarray) -> "TrackingFrame":
        return cls(np.asarray(gt_ids, dtype=np.int64), np.asarray(hyp_ids, dtype=np.int64),
                   box_iou_matrix(gt_boxes_xyxy, hyp_boxes_xyxy))

    @classmethod
    def from_masks(cls, gt_ids: Sequence[int] | np.ndarray, gt_masks_nhw: np.ndarray,
                   hyp_ids: Sequence[int] | np.ndarray, hyp_masks_mhw: np.ndarray) -> "TrackingFrame":
        return cls(np.asarray(gt_ids, dtype=np.int64), np.asarray(hyp_ids, dtype=np.int64),
                   mask_iou_matrix(gt_masks_nhw, hyp_masks_mhw))

    @classmethod
    def from_id_maps(cls, gt_ids_hw: np.ndarray, hyp_ids_hw: np.ndarray) -> "TrackingFrame":
        """Segmentation tracking: per-pixel track ids (0 = none) of ground truth and tracker."""
        return cls(*id_map_iou(gt_ids_hw, hyp_ids_hw))


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ClearMOTResult:
    """CLEAR MOT counts (py-motmetrics' names in comments)."""

    num_frames: int
    num_objects: int  # ground-truth detections
    num_predictions: int  # hypothesis detections
    num_matches: int  # matches that are not switches
    num_switches: int
    num_false_positives: int
    num_misses: int
    iou_sum: float  # over matches and switches

    @property
    def num_detections(self) -> int:
        return self.num_matches + self.num_switches

    @property
    def mota(self) -> float:
        if self.num_objects == 0:
            return math.nan
        return 1.0 - (self.num_misses + self.num_switches + self.num_false_positives) / self.num_objects

    @property
    def motp_iou(self) -> float:
        return self.iou_sum / self.num_detections if self.num_detections else math.nan

    @property
    def motp_distance(self) -> float:
        return (self.num_detections - self.iou_sum) / self.num_detections if self.num_detections else math.nan

    @property
    def recall(self) -> float:
        return self.num_detections / self.num_objects if self.num_objects else math.nan

    @property
    def precision(self) -> float:
        return self.num_detections / self.num_predictions if self.num_predictions else math.nan


@dataclass(frozen=True)
class IdentityResult:
    idtp: int
    idfp: int
    idfn: int

    @property
    def idf1(self) -> float:
        d = 2 * self.idtp + self.idfp + self.idfn
        return 2 * self.idtp / d if d else math.nan

    @property
    def idp(self) -> float:
        d = self.idtp + self.idfp
        return self.idtp / d if d else math.nan

    @property
    def idr(self) -> float:
        d = self.idtp + self.idfn
        return self.idtp / d if d else math.nan


@dataclass(frozen=True, eq=False)
class HOTAResult:
    """HOTA per alpha (arrays over :data:`HOTA_ALPHAS`) and their means (properties)."""

    tp_per_alpha: np.ndarray  # float64 (A,), counts
    fn_per_alpha: np.ndarray
    fp_per_alpha: np.ndarray
    ass_a_per_alpha: np.ndarray
    ass_re_per_alpha: np.ndarray
    ass_pr_per_alpha: np.ndarray
    loc_a_per_alpha: np.ndarray
    alphas: np.ndarray = field(default_factory=lambda: HOTA_ALPHAS.copy())

    @property
    def det_re_per_alpha(self) -> np.ndarray:
        return self.tp_per_alpha / np.maximum(1, self.tp_per_alpha + self.fn_per_alpha)

    @property
    def det_pr_per_alpha(self) -> np.ndarray:
        return self.tp_per_alpha / np.maximum(1, self.tp_per_alpha + self.fp_per_alpha)

    @property
    def det_a_per_alpha(self) -> np.ndarray:
        return self.tp_per_alpha / np.maximum(1, self.tp_per_alpha + self.fn_per_alpha + self.fp_per_alpha)

    @property
    def hota_per_alpha(self) -> np.ndarray:
        return np.sqrt(self.det_a_per_alpha * self.ass_a_per_alpha)

    @property
    def hota(self) -> float:
        return float(np.mean(self.hota_per_alpha))

    @property
    def det_a(self) -> float:
        return float(np.mean(self.det_a_per_alpha))

    @property
    def ass_a(self) -> float:
        return float(np.mean(self.ass_a_per_alpha))

    @property
    def loc_a(self) -> float:
        return float(np.mean(self.loc_a_per_alpha))

    @property
    def det_re(self) -> float:
        return float(np.mean(self.det_re_per_alpha))

    @property
    def det_pr(self) -> float:
        return float(np.mean(self.det_pr_per_alpha))

    @property
    def ass_re(self) -> float:
        return float(np.mean(self.ass_re_per_alpha))

    @property
    def ass_pr(self) -> float:
        return float(np.mean(self.ass_pr_per_alpha))


@dataclass(frozen=True, eq=False)
class TrackingResult:
    clear: ClearMOTResult
    identity: IdentityResult
    hota: HOTAResult

    def to_dict(self) -> dict:
        def f(v: float) -> float | None:
            return None if not math.isfinite(v) else float(v)

        c, i, h = self.clear, self.identity, self.hota
        return {
            "mota": f(c.mota), "motp_iou": f(c.motp_iou), "idf1": f(i.idf1), "idp": f(i.idp), "idr": f(i.idr),
            "hota": f(h.hota), "deta": f(h.det_a), "assa": f(h.ass_a), "loca": f(h.loc_a),
            "num_switches": c.num_switches, "num_false_positives": c.num_false_positives,
            "num_misses": c.num_misses, "num_objects": c.num_objects, "num_predictions": c.num_predictions,
            "num_frames": c.num_frames, "idtp": i.idtp, "idfp": i.idfp, "idfn": i.idfn,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_table(self) -> str:
        def pct(v: float) -> str:
            return f"{'n/a':>6s}" if not math.isfinite(v) else f"{100.0 * v:6.1f}"

        c, i, h = self.clear, self.identity, self.hota
        head = ["HOTA", "DetA", "AssA", "LocA", "MOTA", "MOTP", "IDF1", "IDP", "IDR"]
        vals = [h.hota, h.det_a, h.ass_a, h.loc_a, c.mota, c.motp_iou, i.idf1, i.idp, i.idr]
        counts = ["IDsw", "FP", "FN", "GT", "frames"]
        cvals = [c.num_switches, c.num_false_positives, c.num_misses, c.num_objects, c.num_frames]
        return "\n".join([" ".join(f"{x:>6s}" for x in head) + " " + " ".join(f"{x:>7s}" for x in counts),
                          " ".join(pct(v) for v in vals) + " " + " ".join(f"{v:7d}" for v in cvals)])


# --------------------------------------------------------------------------- CLEAR MOT


def _valid(similarity: np.ndarray, iou_threshold: float) -> np.ndarray:
    return similarity >= iou_threshold


def _min_cost_max_matching(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """py-motmetrics' solver: NaN = forbidden; forbidden edges get a cost that no optimum can afford."""
    from scipy.optimize import linear_sum_assignment

    valid = np.isfinite(cost)
    if cost.size == 0 or not valid.any():
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    if valid.all():
        finite = cost.copy()
    else:
        c = np.abs(cost[valid]).max() + 1
        finite = np.where(valid, cost, 2 * min(cost.shape) * c + 1)
    rows, cols = linear_sum_assignment(finite)
    keep = valid[rows, cols]
    return rows[keep], cols[keep]


@dataclass(frozen=True)
class _ClearRun:
    result: ClearMOTResult
    matches: tuple[dict[int, int], ...]  # per frame, gt id -> hyp id


def _clear_mot(frames: Sequence[TrackingFrame], iou_threshold: float) -> _ClearRun:
    last_match: dict[int, int] = {}  # gt id -> hyp id of its latest match (motmetrics' ``m``)
    n_obj = n_pred = n_match = n_switch = n_fp = n_miss = 0
    iou_sum = 0.0
    per_frame = []
    for fr in frames:
        gt, hyp, sim = fr.gt_ids, fr.hyp_ids, fr.similarity
        n_obj += gt.size
        n_pred += hyp.size
        valid = _valid(sim, iou_threshold)
        gt_done = np.zeros(gt.size, dtype=bool)
        hyp_done = np.zeros(hyp.size, dtype=bool)
        matches: dict[int, int] = {}
        if gt.size and hyp.size:
            hyp_pos = {int(h): j for j, h in enumerate(hyp)}
            for i, o in enumerate(gt.tolist()):  # 1. keep earlier correspondences
                prev = last_match.get(o)
                j = hyp_pos.get(prev) if prev is not None else None
                if j is None or hyp_done[j] or not valid[i, j]:
                    continue
                gt_done[i] = hyp_done[j] = True
                matches[o] = prev
                n_match += 1
                iou_sum += float(sim[i, j])
            cost = np.where(valid, 1.0 - sim, np.nan)  # 2. the rest by minimum distance
            cost[gt_done, :] = np.nan
            cost[:, hyp_done] = np.nan
            rows, cols = _min_cost_max_matching(cost)
            for i, j in zip(rows.tolist(), cols.tolist()):
                o, h = int(gt[i]), int(hyp[j])
                if o in last_match and last_match[o] != h:
                    n_switch += 1
                else:
                    n_match += 1
                gt_done[i] = hyp_done[j] = True
                matches[o] = h
                last_match[o] = h
                iou_sum += float(sim[i, j])
        n_miss += int((~gt_done).sum())
        n_fp += int((~hyp_done).sum())
        per_frame.append(matches)
    res = ClearMOTResult(num_frames=len(frames), num_objects=n_obj, num_predictions=n_pred, num_matches=n_match,
                         num_switches=n_switch, num_false_positives=n_fp, num_misses=n_miss, iou_sum=iou_sum)
    return _ClearRun(res, tuple(per_frame))


def clear_mot_matches(frames: Sequence[TrackingFrame], iou_threshold: float = 0.5) -> tuple[dict[int, int], ...]:
    """Per frame, the CLEAR MOT matching as ``{gt id: hyp id}``."""
    return _clear_mot(frames, _check_threshold(iou_threshold)).matches


# --------------------------------------------------------------------------- identity


def _identity(frames: Sequence[TrackingFrame], iou_threshold: float) -> IdentityResult:
    from scipy.optimize import linear_sum_assignment

    gt_index: dict[int, int] = {}
    hyp_index: dict[int, int] = {}
    pairs: dict[tuple[int, int], int] = {}
    n_obj = n_pred = 0
    for fr in frames:
        n_obj += fr.gt_ids.size
        n_pred += fr.hyp_ids.size
        for o in fr.gt_ids.tolist():
            gt_index.setdefault(o, len(gt_index))
        for h in fr.hyp_ids.tolist():
            hyp_index.setdefault(h, len(hyp_index))
        ii, jj = np.nonzero(_valid(fr.similarity, iou_threshold))
        for i, j in zip(ii.tolist(), jj.tolist()):
            key = (gt_index[int(fr.gt_ids[i])], hyp_index[int(fr.hyp_ids[j])])
            pairs[key] = pairs.get(key, 0) + 1
    idtp = 0
    if pairs:
        overlap = np.zeros((len(gt_index), len(hyp_index)), dtype=np.int64)
        for (g, h), n in pairs.items():
            overlap[g, h] = n
        rows, cols = linear_sum_assignment(overlap, maximize=True)
        idtp = int(overlap[rows, cols].sum())
    return IdentityResult(idtp=idtp, idfp=n_pred - idtp, idfn=n_obj - idtp)


# --------------------------------------------------------------------------- HOTA


def _hota(frames: Sequence[TrackingFrame]) -> HOTAResult:
    from scipy.optimize import linear_sum_assignment

    n_alpha = HOTA_ALPHAS.size
    zeros = np.zeros(n_alpha)
    gt_index: dict[int, int] = {}
    hyp_index: dict[int, int] = {}
    gt_rows, hyp_cols = [], []
    for fr in frames:
        gt_rows.append(np.array([gt_index.setdefault(o, len(gt_index)) for o in fr.gt_ids.tolist()], dtype=np.intp))
        hyp_cols.append(np.array([hyp_index.setdefault(h, len(hyp_index)) for h in fr.hyp_ids.tolist()],
                                 dtype=np.intp))
    n_gt_dets = sum(r.size for r in gt_rows)
    n_hyp_dets = sum(c.size for c in hyp_cols)
    if n_hyp_dets == 0 or n_gt_dets == 0:  # TrackEval's early returns: nothing to match, LocA 1
        return HOTAResult(tp_per_alpha=zeros.copy(),
                          fn_per_alpha=zeros + (n_gt_dets if n_hyp_dets == 0 else 0),
                          fp_per_alpha=zeros + (n_hyp_dets if n_hyp_dets > 0 else 0),
                          ass_a_per_alpha=zeros.copy(), ass_re_per_alpha=zeros.copy(), ass_pr_per_alpha=zeros.copy(),
                          loc_a_per_alpha=np.ones(n_alpha))

    potential = np.zeros((len(gt_index), len(hyp_index)))
    gt_count = np.zeros((len(gt_index), 1))
    hyp_count = np.zeros((1, len(hyp_index)))
    for fr, g, h in zip(frames, gt_rows, hyp_cols):
        sim = fr.similarity
        denom = sim.sum(0)[np.newaxis, :] + sim.sum(1)[:, np.newaxis] - sim
        sim_iou = np.zeros_like(sim)
        ok = denom > 0 + _EPS
        sim_iou[ok] = sim[ok] / denom[ok]
        potential[g[:, np.newaxis], h[np.newaxis, :]] += sim_iou
        gt_count[g] += 1
        hyp_count[0, h] += 1
    alignment = potential / (gt_count + hyp_count - potential)

    tp, fn, fp, loc = zeros.copy(), zeros.copy(), zeros.copy(), zeros.copy()
    match_counts = np.zeros((n_alpha, len(gt_index), len(hyp_index)))
    for fr, g, h in zip(frames, gt_rows, hyp_cols):
        if g.size == 0:
            fp += h.size
            continue
        if h.size == 0:
            fn += g.size
            continue
        sim = fr.similarity
        score = alignment[g[:, np.newaxis], h[np.newaxis, :]] * sim
        rows, cols = linear_sum_assignment(-score)
        matched_sim = sim[rows, cols]
        for a, alpha in enumerate(HOTA_ALPHAS):
            keep = matched_sim >= alpha - _EPS
            n = int(keep.sum())
            tp[a] += n
            fn[a] += g.size - n
            fp[a] += h.size - n
            if n:
                loc[a] += sum(matched_sim[keep])
                match_counts[a, g[rows[keep]], h[cols[keep]]] += 1

    ass_a, ass_re, ass_pr = zeros.copy(), zeros.copy(), zeros.copy()
    for a in range(n_alpha):
        mc = match_counts[a]
        ass_a[a] = np.sum(mc * (mc / np.maximum(1, gt_count + hyp_count - mc))) / np.maximum(1, tp[a])
        ass_re[a] = np.sum(mc * (mc / np.maximum(1, gt_count))) / np.maximum(1, tp[a])
        ass_pr[a] = np.sum(mc * (mc / np.maximum(1, hyp_count))) / np.maximum(1, tp[a])
    loc_a = np.maximum(1e-10, loc) / np.maximum(1e-10, tp)
    return HOTAResult(tp_per_alpha=tp, fn_per_alpha=fn, fp_per_alpha=fp, ass_a_per_alpha=ass_a,
                      ass_re_per_alpha=ass_re, ass_pr_per_alpha=ass_pr, loc_a_per_alpha=loc_a)


# --------------------------------------------------------------------------- entry points


def _check_threshold(iou_threshold: float) -> float:
    t = float(iou_threshold)
    if not (0.0 < t <= 1.0):
        raise ValueError(f"iou_threshold must lie in (0, 1], got {iou_threshold}")
    return t


def evaluate_tracking(frames: Sequence[TrackingFrame], iou_threshold: float = 0.5) -> TrackingResult:
    """CLEAR MOT, identity and HOTA metrics of one sequence (``iou_threshold`` for CLEAR and identity)."""
    frames = list(frames)
    for k, fr in enumerate(frames):
        if not isinstance(fr, TrackingFrame):
            raise TypeError(f"frame {k} is a {type(fr).__name__}, expected TrackingFrame")
    t = _check_threshold(iou_threshold)
    return TrackingResult(clear=_clear_mot(frames, t).result, identity=_identity(frames, t), hota=_hota(frames))


def combine_tracking_results(results: Sequence[TrackingResult]) -> TrackingResult:
    """Pool sequences: CLEAR and identity counts add (py-motmetrics' overall row), HOTA as TrackEval's
    ``combine_sequences`` (sums, AssA/AssRe/AssPr and LocA weighted by true positives)."""
    results = list(results)
    if not results:
        raise ValueError("combine_tracking_results needs at least one result")
    cs = [r.clear for r in results]
    clear = ClearMOTResult(*(sum(getattr(c, f) for c in cs) for f in (
        "num_frames", "num_objects", "num_predictions", "num_matches", "num_switches", "num_false_positives",
        "num_misses", "iou_sum")))
    identity = IdentityResult(idtp=sum(r.identity.idtp for r in results), idfp=sum(r.identity.idfp for r in results),
                              idfn=sum(r.identity.idfn for r in results))
    hs = [r.hota for r in results]
    tp = sum(h.tp_per_alpha for h in hs)

    def weighted(name: str) -> np.ndarray:
        return sum(getattr(h, name) * h.tp_per_alpha for h in hs) / np.maximum(1.0, tp)

    loc = np.maximum(1e-10, sum(h.loc_a_per_alpha * h.tp_per_alpha for h in hs)) / np.maximum(1e-10, tp)
    hota = HOTAResult(tp_per_alpha=tp, fn_per_alpha=sum(h.fn_per_alpha for h in hs),
                      fp_per_alpha=sum(h.fp_per_alpha for h in hs), ass_a_per_alpha=weighted("ass_a_per_alpha"),
                      ass_re_per_alpha=weighted("ass_re_per_alpha"), ass_pr_per_alpha=weighted("ass_pr_per_alpha"),
                      loc_a_per_alpha=loc)
    return TrackingResult(clear=clear, identity=identity, hota=hota)


def bootstrap_idf1_difference(current: Sequence[IdentityResult], baseline: Sequence[IdentityResult],
                              resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0) -> tuple[float, float]:
    """Paired percentile interval of IDF1(current) - IDF1(baseline), both over the same sequences in the same
    order (each a sequence's identity counts), the sequences resampled with replacement."""
    if len(current) != len(baseline):
        raise ValueError(f"paired sequences differ in number: {len(current)} and {len(baseline)}")
    weights = unit_weights(len(current), resamples, seed)

    def idf1(results: Sequence[IdentityResult]) -> np.ndarray:
        tp, fp, fn = (weights @ np.array([getattr(r, k) for r in results], dtype=np.float64)
                      for k in ("idtp", "idfp", "idfn"))
        d = 2.0 * tp + fp + fn
        return np.divide(2.0 * tp, d, out=np.full(len(d), np.nan), where=d > 0)

    return percentile_interval(idf1(current) - idf1(baseline), level)


# --------------------------------------------------------------------------- occlusion events


@dataclass(frozen=True)
class OcclusionEvent:
    """Ground-truth track ``track_id`` is fully hidden on frames ``start_frame..end_frame`` (both inclusive)."""

    track_id: int
    start_frame: int
    end_frame: int


@dataclass(frozen=True)
class EventOutcome:
    """What the tracker did across one occlusion event.

    ``outcome``: ``"kept"`` (same hypothesis id before and after), ``"switched"``
    (another id), ``"lost"`` (matched before, not re-matched in the search
    window after), ``"untracked_before"`` (never matched before the occlusion:
    nothing to keep, not evaluated).
    """

    event: OcclusionEvent
    outcome: str
    hyp_before: int | None
    frame_before: int | None
    hyp_after: int | None
    frame_after: int | None


@dataclass(frozen=True)
class EventSwitchResult:
    outcomes: tuple[EventOutcome, ...]

    def _count(self, outcome: str) -> int:
        return sum(1 for o in self.outcomes if o.outcome == outcome)

    @property
    def num_events(self) -> int:
        return len(self.outcomes)

    @property
    def num_switches(self) -> int:
        return self._count("switched")

    @property
    def num_kept(self) -> int:
        return self._count("kept")

    @property
    def num_lost(self) -> int:
        return self._count("lost")

    @property
    def num_untracked_before(self) -> int:
        return self._count("untracked_before")

    @property
    def num_evaluated(self) -> int:
        """Events with a match on both sides (kept + switched)."""
        return self.num_kept + self.num_switches

    @property
    def switch_rate(self) -> float:
        """Switches per evaluated event (NaN when none was evaluated)."""
        return self.num_switches / self.num_evaluated if self.num_evaluated else math.nan

    @property
    def keep_rate(self) -> float:
        """Events whose id survived, over events tracked before the occlusion (lost ones count as failures)."""
        d = self.num_kept + self.num_switches + self.num_lost
        return self.num_kept / d if d else math.nan

    def to_dict(self) -> dict:
        return {"num_events": self.num_events, "num_switches": self.num_switches, "num_kept": self.num_kept,
                "num_lost": self.num_lost, "num_untracked_before": self.num_untracked_before,
                "switch_rate": None if math.isnan(self.switch_rate) else self.switch_rate,
                "keep_rate": None if math.isnan(self.keep_rate) else self.keep_rate}


def id_switches_in_events(frames: Sequence[TrackingFrame],
                          events: Iterable[OcclusionEvent | tuple[int, int, int]],
                          iou_threshold: float = 0.5,
                          reacquire_within_frames: int | None = None) -> EventSwitchResult:
    """ID switches of ground-truth tracks across full-occlusion events.

    For an event (t, s, e), with the CLEAR MOT matching of :func:`clear_mot_matches`:

    - *before*: the hypothesis matched to t at the last frame < s where t is matched
      (any earlier frame; none -> ``"untracked_before"``);
    - *after*: the hypothesis matched to t at the first frame > e where t is matched,
      searched up to frame ``e + reacquire_within_frames`` when given and, in any
      case, before the start of t's next event (none -> ``"lost"``);
    - ``"switched"`` when the two differ, else ``"kept"``.

    A switched event is also a CLEAR ID switch on the re-appearance frame, so
    ``num_switches`` here never exceeds ``evaluate_tracking(...).clear.num_switches``.
    """
    frames = list(frames)
    n = len(frames)
    evs = [e if isinstance(e, OcclusionEvent) else OcclusionEvent(*(int(v) for v in e)) for e in events]
    for e in evs:
        if not (0 <= e.start_frame <= e.end_frame < n):
            raise ValueError(f"event {e} must satisfy 0 <= start_frame <= end_frame < {n} (the number of frames)")
    if reacquire_within_frames is not None and reacquire_within_frames < 1:
        raise ValueError(f"reacquire_within_frames must be >= 1 or None, got {reacquire_within_frames}")
    matches = clear_mot_matches(frames, iou_threshold)
    starts: dict[int, list[int]] = {}
    for e in evs:
        starts.setdefault(e.track_id, []).append(e.start_frame)
    outcomes = []
    for e in evs:
        t = e.track_id
        f_before = next((f for f in range(e.start_frame - 1, -1, -1) if t in matches[f]), None)
        if f_before is None:
            outcomes.append(EventOutcome(e, "untracked_before", None, None, None, None))
            continue
        h_before = matches[f_before][t]
        stop = n
        later = [s for s in starts[t] if s > e.end_frame]
        if later:
            stop = min(later)
        if reacquire_within_frames is not None:
            stop = min(stop, e.end_frame + reacquire_within_frames + 1)
        f_after = next((f for f in range(e.end_frame + 1, stop) if t in matches[f]), None)
        if f_after is None:
            outcomes.append(EventOutcome(e, "lost", h_before, f_before, None, None))
            continue
        h_after = matches[f_after][t]
        outcomes.append(EventOutcome(e, "kept" if h_after == h_before else "switched", h_before, f_before,
                                     h_after, f_after))
    return EventSwitchResult(tuple(outcomes))
