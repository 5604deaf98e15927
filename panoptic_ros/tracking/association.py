"""How tracks and detections are compared and matched.

Pure functions over arrays (no tracker state), so each can be tested alone and
a comparison tool can reuse them:

- :class:`DetectionSet` prepares one frame's detections once: exact visible
  areas, a sub-sampled instance map (every ``stride``-th pixel), and every
  detection's pixels on that grid, grouped by detection.
- :func:`region_overlap` answers, for every track at once, "which labels of
  this frame lie under the track's previous mask, shifted to where the track
  is predicted?" -- the mask IoU with every detection, on the sub-sampled
  grid with one ``bincount``; no full-resolution per-object pass.
- :func:`box_region_labels`: what covers each predicted box (occlusion evidence).
- :func:`box_iou`, :func:`box_gap` and :func:`assign` (Hungarian with a threshold).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from panoptic_ros.panoptic import PanopticResult

_INFEASIBLE = 1e6


@dataclass
class DetectionSet:
    """One frame's detections, prepared for association (N detections, grid of ``stride``)."""

    classes: np.ndarray  # int64 (N,)
    scores: np.ndarray  # float64 (N,)
    boxes_xyxy: np.ndarray  # float64 (N, 4), px
    embeddings: np.ndarray  # float32 (N, D)
    has_embedding: np.ndarray  # bool (N,): the model gave a unit vector (not D=0, not zeros)
    area_px: np.ndarray  # int64 (N,) exact visible pixel count
    centroid_px: np.ndarray  # float64 (N, 2) x, y: mask centre on the grid (box centre if the grid misses it)
    label_map_ds: np.ndarray  # int32 (h, w): instance_map sampled at every stride-th pixel
    ds_area: np.ndarray  # int64 (N,) pixels of each detection on the grid
    stride: int
    instance_map: np.ndarray  # int32 (H, W), the result's own (not copied)
    label_map_u8: np.ndarray | None  # uint8 copy of instance_map when N <= 255 (fast look-ups)
    grid_rows: np.ndarray  # int32: grid rows of all detection pixels, grouped by detection
    grid_cols: np.ndarray
    grid_starts: list[int]  # N + 1 offsets: detection i owns [grid_starts[i], grid_starts[i + 1])

    @property
    def n(self) -> int:
        return int(self.classes.shape[0])

    @property
    def map_hw(self) -> tuple[int, int]:
        return int(self.instance_map.shape[0]), int(self.instance_map.shape[1])

    def grid_pixels(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cols) int32 copies of detection ``i``'s pixels on the grid (at least one: its box centre)."""
        a, b = self.grid_starts[i], self.grid_starts[i + 1]
        if b > a:
            return self.grid_rows[a:b].copy(), self.grid_cols[a:b].copy()
        h, w = self.label_map_ds.shape
        x0, y0, x1, y1 = self.boxes_xyxy[i]
        off = self.stride // 2
        r = int(np.clip(round(((y0 + y1) * 0.5 - 0.5 - off) / self.stride), 0, h - 1))
        c = int(np.clip(round(((x0 + x1) * 0.5 - 0.5 - off) / self.stride), 0, w - 1))
        return np.array([r], np.int32), np.array([c], np.int32)

    @classmethod
    def from_result(cls, result: PanopticResult, stride: int) -> "DetectionSet":
        """Prepare ``result``; raises ValueError when its arrays disagree with each other."""
        inst = result.instance_map
        n = _check_result(result)
        # Exact areas. For up to 255 instances a uint8 copy makes the histogram and the
        # later id look-up (cv2.LUT) several times cheaper than numpy on int32.
        u8 = None
        if n <= 255:
            u8 = inst.astype(np.uint8)
            hist = cv2.calcHist([u8], [0], None, [256], [0, 256]).ravel()
            area = hist[1:n + 1].astype(np.int64)
        else:
            area = np.bincount(inst.ravel(), minlength=n + 1)[1:n + 1].astype(np.int64)
        off = stride // 2
        ds = np.ascontiguousarray(inst[off::stride, off::stride], dtype=np.int32)
        w = ds.shape[1]
        flat = ds.ravel()
        nz = (flat != 0).nonzero()[0]  # a bool nonzero is several times faster than an int32 one
        labels = flat[nz]
        ds_counts = np.bincount(labels, minlength=n + 1)
        rows_all = (nz // w).astype(np.int32)
        cols_all = (nz - rows_all.astype(np.int64) * w).astype(np.int32)
        # A stable sort on small integers is a radix sort: linear in the pixel count.
        order = np.argsort(labels.astype(np.int16) if n < 32767 else labels, kind="stable")
        starts = np.zeros(n + 1, np.int64)
        np.cumsum(ds_counts[1:], out=starts[1:])
        boxes = np.asarray(result.boxes_xyxy, dtype=np.float64).reshape(n, 4)
        centroid = np.stack([(boxes[:, 0] + boxes[:, 2]) * 0.5, (boxes[:, 1] + boxes[:, 3]) * 0.5], axis=1)
        if n and nz.size:
            sum_r = np.bincount(labels, weights=rows_all, minlength=n + 1)[1:]
            sum_c = np.bincount(labels, weights=cols_all, minlength=n + 1)[1:]
            cnt = ds_counts[1:]
            seen = cnt > 0
            centroid[seen, 0] = stride * (sum_c[seen] / cnt[seen]) + off + 0.5
            centroid[seen, 1] = stride * (sum_r[seen] / cnt[seen]) + off + 0.5
        emb = np.asarray(result.embeddings, dtype=np.float32)
        if emb.shape[1] > 0:
            has_emb = np.einsum("nd,nd->n", emb, emb) > 0.25
        else:
            has_emb = np.zeros(n, bool)
        return cls(classes=np.asarray(result.classes, dtype=np.int64).reshape(n),
                   scores=np.asarray(result.scores, dtype=np.float64).reshape(n),
                   boxes_xyxy=boxes, embeddings=emb, has_embedding=has_emb, area_px=area,
                   centroid_px=centroid, label_map_ds=ds, ds_area=ds_counts[1:n + 1].astype(np.int64),
                   stride=int(stride), instance_map=inst, label_map_u8=u8,
                   grid_rows=rows_all[order], grid_cols=cols_all[order], grid_starts=starts.tolist())


def _check_result(result: PanopticResult) -> int:
    """Number of instances, after checking the arrays agree; a ValueError names what does not."""
    inst = result.instance_map
    if not isinstance(inst, np.ndarray) or inst.ndim != 2 or inst.dtype.kind not in "iu":
        raise ValueError(f"instance_map must be an integer (H, W) array, got "
                         f"{getattr(inst, 'dtype', type(inst))} {getattr(inst, 'shape', '')}")
    cm = result.class_map
    if not isinstance(cm, np.ndarray) or cm.shape != inst.shape:
        raise ValueError(f"class_map shape {getattr(cm, 'shape', None)} differs from instance_map shape {inst.shape}")
    n = int(np.asarray(result.classes).shape[0])
    for name, arr, tail in (("scores", result.scores, ()), ("boxes_xyxy", result.boxes_xyxy, (4,))):
        shape = np.asarray(arr).shape
        if shape != (n, *tail):
            raise ValueError(f"PanopticResult.{name} has shape {shape}, expected {(n, *tail)} for {n} instances")
    emb_shape = np.asarray(result.embeddings).shape
    if len(emb_shape) != 2 or emb_shape[0] != n:
        raise ValueError(f"PanopticResult.embeddings has shape {emb_shape}, expected ({n}, D) (D may be 0)")
    if inst.size:
        lo, hi, _, _ = cv2.minMaxLoc(inst if inst.dtype == np.int32 else inst.astype(np.int32))
        if lo < 0 or hi > n:
            raise ValueError(f"instance_map holds labels {int(lo)}..{int(hi)} but the result has {n} instances; "
                             f"labels must be 0 (none) or 1 + the instance index")
    return n


@dataclass
class RegionOverlap:
    """What lies under each track's shifted mask on the grid (T tracks, N detections)."""

    counts: np.ndarray  # int64 (T, N + 1): grid pixels of the region showing label j (0 = no thing)
    in_view: np.ndarray  # int64 (T,): region pixels inside the image
    total: np.ndarray  # int64 (T,): region pixels

    def mask_iou(self, det_area_ds: np.ndarray) -> np.ndarray:
        """float64 (T, N) IoU of each shifted (in-view) track region with each detection mask."""
        inter = self.counts[:, 1:].astype(np.float64)
        union = self.in_view[:, None] + det_area_ds[None, :] - inter
        return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def region_overlap(rows: list[np.ndarray], cols: list[np.ndarray], shift_rc_t2: np.ndarray,
                   label_map_ds: np.ndarray, num_detections: int) -> RegionOverlap:
    """Histogram of ``label_map_ds`` under each region ``(rows[t], cols[t]) + shift_rc_t2[t]``."""
    t = len(rows)
    n1 = num_detections + 1
    if t == 0:
        z = np.zeros(0, np.int64)
        return RegionOverlap(np.zeros((0, n1), np.int64), z, z)
    h, w = label_map_ds.shape
    lens = np.fromiter((len(r) for r in rows), dtype=np.int64, count=t)
    shift = np.asarray(shift_rc_t2, dtype=np.int64)
    r = np.concatenate(rows).astype(np.int64) + np.repeat(shift[:, 0], lens)
    c = np.concatenate(cols).astype(np.int64) + np.repeat(shift[:, 1], lens)
    owner = np.repeat(np.arange(t, dtype=np.int64), lens)
    ok = (r >= 0) & (r < h) & (c >= 0) & (c < w)
    labels = label_map_ds.ravel()[(r * w + c)[ok]]
    counts = np.bincount(owner[ok] * n1 + labels, minlength=t * n1).reshape(t, n1)
    return RegionOverlap(counts=counts, in_view=counts.sum(axis=1), total=lens)


def box_region_labels(label_map_ds: np.ndarray, boxes_xyxy: np.ndarray, stride: int,
                      num_detections: int) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of ``label_map_ds`` inside each (amodal) box: ((K, N + 1) counts, (K,) cells in the image).

    Occlusion reasoning asks what covers the *whole* predicted extent of an
    object, not just the part that was visible when it was last seen.
    """
    k = boxes_xyxy.shape[0]
    n1 = num_detections + 1
    counts = np.zeros((k, n1), np.int64)
    h, w = label_map_ds.shape
    off = stride // 2 + 0.5  # grid cell c samples pixel centre stride * c + off
    for i in range(k):
        x0, y0, x1, y1 = boxes_xyxy[i]
        c0, c1 = math.ceil((x0 - off) / stride), math.ceil((x1 - off) / stride)
        r0, r1 = math.ceil((y0 - off) / stride), math.ceil((y1 - off) / stride)
        if c1 <= c0:  # narrower than a cell: the nearest cell
            c0 = round((0.5 * (x0 + x1) - off) / stride)
            c1 = c0 + 1
        if r1 <= r0:
            r0 = round((0.5 * (y0 + y1) - off) / stride)
            r1 = r0 + 1
        crop = label_map_ds[max(r0, 0):max(min(r1, h), 0), max(c0, 0):max(min(c1, w), 0)]
        if crop.size:
            counts[i] = np.bincount(crop.ravel(), minlength=n1)
    return counts, counts.sum(axis=1)


def blocked_sides(label_map: np.ndarray, boxes_xyxy: np.ndarray, labels: np.ndarray,
                  fraction: float) -> np.ndarray:
    """bool (K, 4): is each box's left, top, right, bottom side cut off?

    A side is cut off when the image ends there, or when pixels of *other*
    things (labels other than 0 and the box's own ``labels[k]``) fill at least
    ``fraction`` of the one-pixel line just outside it: something in front
    hides the rest of the object. All lines of all boxes are read in one
    gather (no per-box Python loop). ``label_map`` must be C-contiguous.
    """
    h, w = label_map.shape
    x0 = np.floor(boxes_xyxy[:, 0]).astype(np.int64)
    y0 = np.floor(boxes_xyxy[:, 1]).astype(np.int64)
    x1 = np.ceil(boxes_xyxy[:, 2]).astype(np.int64)
    y1 = np.ceil(boxes_xyxy[:, 3]).astype(np.int64)
    out = np.stack([x0 <= 0, y0 <= 0, x1 >= w, y1 >= h], axis=1)
    ys0, ys1 = np.clip(y0, 0, h), np.clip(y1, 0, h)
    xs0, xs1 = np.clip(x0, 0, w), np.clip(x1, 0, w)
    fixed = np.stack([x0 - 1, y0 - 1, x1, y1], axis=1)  # the line's column (left/right) or row (top/bottom)
    lo = np.stack([ys0, xs0, ys0, xs0], axis=1)  # its span along the side
    hi = np.stack([ys1, xs1, ys1, xs1], axis=1)
    ks, sides = np.nonzero(~out & (hi > lo))
    if ks.size == 0:
        return out
    length = hi[ks, sides] - lo[ks, sides]
    owner = np.repeat(np.arange(ks.size), length)
    along = (np.arange(int(length.sum())) - np.repeat(np.cumsum(length) - length, length)
             + np.repeat(lo[ks, sides], length))
    across = np.repeat(fixed[ks, sides], length)
    vertical = np.repeat(sides % 2 == 0, length)
    values = label_map.ravel()[np.where(vertical, along * w + across, across * w + along)]
    other = (values != 0) & (values != np.repeat(labels[ks], length))
    hits = np.bincount(owner, weights=other, minlength=ks.size)
    out[ks, sides] = hits >= fraction * length
    return out


def box_iou(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> np.ndarray:
    """float64 (A, B) IoU of two box sets."""
    a = a_xyxy[:, None, :]
    b = b_xyxy[None, :, :]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def box_gap(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> np.ndarray:
    """float64 (A, B) Euclidean gap between boxes, px (0 where they touch or overlap)."""
    a = a_xyxy[:, None, :]
    b = b_xyxy[None, :, :]
    gx = np.clip(np.maximum(a[..., 0], b[..., 0]) - np.minimum(a[..., 2], b[..., 2]), 0, None)
    gy = np.clip(np.maximum(a[..., 1], b[..., 1]) - np.minimum(a[..., 3], b[..., 3]), 0, None)
    return np.hypot(gx, gy)


def box_sizes(boxes_xyxy: np.ndarray) -> np.ndarray:
    """float64 (N,) sqrt(area), floored at 1 px: the length scale of the gates."""
    w = np.clip(boxes_xyxy[:, 2] - boxes_xyxy[:, 0], 1.0, None)
    h = np.clip(boxes_xyxy[:, 3] - boxes_xyxy[:, 1], 1.0, None)
    return np.sqrt(w * h)


def assign(affinity: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian matching maximising total affinity; only pairs with affinity >= threshold are kept.

    Returns (rows, cols) int64 index arrays into ``affinity``, rows ascending.
    """
    empty = np.zeros(0, np.int64)
    if affinity.size == 0:
        return empty, empty
    feasible = affinity >= threshold
    rows_ok = np.flatnonzero(feasible.any(axis=1))
    cols_ok = np.flatnonzero(feasible.any(axis=0))
    if rows_ok.size == 0:
        return empty, empty
    sub = affinity[np.ix_(rows_ok, cols_ok)]
    cost = np.where(sub >= threshold, 1.0 - sub, _INFEASIBLE)
    r, c = linear_sum_assignment(cost)
    keep = sub[r, c] >= threshold
    return rows_ok[r[keep]].astype(np.int64), cols_ok[c[keep]].astype(np.int64)
