"""How tracks and detections are compared and matched.

Pure functions over arrays (no tracker state), so each can be tested alone and
a comparison tool can reuse them:

- :class:`DetectionSet` prepares one frame's detections once: exact visible
  areas (fusion's, or one histogram), a sub-sampled instance map (every
  ``stride``-th pixel), and every detection's cells on that grid, grouped by
  detection.
- :func:`region_overlap` answers, for every track at once, "which labels of
  this frame lie under the track's previous mask, shifted to where the track
  is predicted?" -- the mask IoU with every detection, on the sub-sampled
  grid with one ``bincount``; no full-resolution per-object pass.
- :func:`box_region_labels`: what covers each predicted box (occlusion evidence).
- :func:`blocked_sides`: which sides of a detection's box another thing (or
  the image border) cuts off, for measuring partly hidden objects.
- :func:`box_iou`, :func:`paired_box_iou`, :func:`box_gap`, :func:`box_sizes`,
  :func:`ragged_index` and :func:`assign` (Hungarian with a threshold).
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
    grid_rows: np.ndarray  # int32: grid rows of the detections' pixels, grouped by detection
    grid_cols: np.ndarray  # int32: their grid columns
    grid_start: np.ndarray  # int64 (N,): detection i owns grid_rows[grid_start[i]:grid_end[i]] (at least
    grid_end: np.ndarray  # one cell: a detection too small for the grid gets its box centre's cell)

    @property
    def n(self) -> int:
        return int(self.classes.shape[0])

    @property
    def map_hw(self) -> tuple[int, int]:
        return int(self.instance_map.shape[0]), int(self.instance_map.shape[1])

    @property
    def label_map_contiguous(self) -> np.ndarray:
        """The instance labels as a C-contiguous array (the uint8 copy when there is one)."""
        return self.label_map_u8 if self.label_map_u8 is not None else np.ascontiguousarray(self.instance_map)

    @classmethod
    def from_result(cls, result: PanopticResult, stride: int) -> "DetectionSet":
        """Prepare ``result``; raises ValueError when its arrays disagree with each other."""
        inst = result.instance_map
        n = _check_result(result)
        # Exact areas. For up to 255 instances a uint8 copy makes the histogram and the
        # later id look-up (cv2.LUT) several times cheaper than numpy on int32.
        u8 = inst.astype(np.uint8) if n <= 255 else None
        if result.areas_px is not None:
            area = np.asarray(result.areas_px, dtype=np.int64).reshape(n)
        elif u8 is not None:
            area = cv2.calcHist([u8], [0], None, [256], [0, 256]).ravel()[1:n + 1].astype(np.int64)
        else:
            area = np.bincount(inst.ravel(), minlength=n + 1)[1:n + 1].astype(np.int64)
        off = stride // 2
        # Sampled from the uint8 copy when there is one: a quarter of the bytes to pull through the cache.
        ds = (u8 if u8 is not None else inst)[off::stride, off::stride].astype(np.int32)
        # Labels are checked where the tracker computes with them -- the grid, and the uint8 copy
        # that feeds the look-ups -- not by another pass over the full image (fusion is trusted).
        if ds.size:
            lo, hi = int(ds.min()), max(int(ds.max()), int(u8.max()) if u8 is not None else 0)
            if lo < 0 or hi > n:
                raise ValueError(f"instance_map holds labels {lo}..{hi} but the result has {n} instances; labels "
                                 f"must be 0 (none) or 1 + the instance index")
        h, w = ds.shape
        flat = ds.ravel()
        nz = (flat != 0).nonzero()[0]  # a bool nonzero is several times faster than an int32 one
        labels = flat[nz]
        ds_counts = np.bincount(labels, minlength=n + 1)[:n + 1]
        rows_all = (nz // w).astype(np.int32)
        cols_all = (nz - rows_all.astype(np.int64) * w).astype(np.int32)
        # A stable sort on small integers is a radix sort: linear in the pixel count.
        order = (labels.astype(np.int16) if n < 32767 else labels).argsort(kind="stable")
        grid_rows, grid_cols = rows_all[order], cols_all[order]
        grid_end = ds_counts[1:].cumsum()
        grid_start = grid_end - ds_counts[1:]
        boxes = np.asarray(result.boxes_xyxy, dtype=np.float64).reshape(n, 4)
        centroid = 0.5 * (boxes[:, 0:2] + boxes[:, 2:4])
        cnt = ds_counts[1:]
        if n and nz.size:
            sum_r = np.bincount(labels, weights=rows_all, minlength=n + 1)[1:n + 1]
            sum_c = np.bincount(labels, weights=cols_all, minlength=n + 1)[1:n + 1]
            seen = cnt > 0
            centroid[seen, 0] = stride * (sum_c[seen] / cnt[seen]) + off + 0.5
            centroid[seen, 1] = stride * (sum_r[seen] / cnt[seen]) + off + 0.5
        missed = (cnt == 0).nonzero()[0]
        if missed.size:  # too small for the grid: one cell at the box centre stands for the mask
            r = np.minimum(np.maximum(np.rint((centroid[missed, 1] - off - 0.5) / stride), 0), h - 1).astype(np.int32)
            c = np.minimum(np.maximum(np.rint((centroid[missed, 0] - off - 0.5) / stride), 0), w - 1).astype(np.int32)
            grid_start[missed] = grid_rows.size + np.arange(missed.size)
            grid_end[missed] = grid_start[missed] + 1
            grid_rows = np.concatenate([grid_rows, r])
            grid_cols = np.concatenate([grid_cols, c])
        emb = np.asarray(result.embeddings, dtype=np.float32)
        if emb.shape[1] > 0:
            has_emb = np.einsum("nd,nd->n", emb, emb) > 0.25
        else:
            has_emb = np.zeros(n, bool)
        return cls(classes=np.asarray(result.classes, dtype=np.int64).reshape(n),
                   scores=np.asarray(result.scores, dtype=np.float64).reshape(n),
                   boxes_xyxy=boxes, embeddings=emb, has_embedding=has_emb, area_px=area,
                   centroid_px=centroid, label_map_ds=ds, ds_area=cnt.astype(np.int64),
                   stride=int(stride), instance_map=inst, label_map_u8=u8,
                   grid_rows=grid_rows, grid_cols=grid_cols, grid_start=grid_start, grid_end=grid_end)


def ragged_index(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(starts[i], starts[i] + lengths[i])`` over i, without a Python loop."""
    lengths = np.asarray(lengths, np.int64)
    total = int(lengths.sum())
    return (np.arange(total, dtype=np.int64) - (lengths.cumsum() - lengths).repeat(lengths)
            + np.asarray(starts, np.int64).repeat(lengths))


def _check_result(result: PanopticResult) -> int:
    """Number of instances, after checking the arrays agree; a ValueError names what does not."""
    inst = result.instance_map
    if not isinstance(inst, np.ndarray) or inst.ndim != 2 or inst.dtype.kind not in "iu":
        raise ValueError(f"instance_map must be an integer (H, W) array, got "
                         f"{getattr(inst, 'dtype', type(inst))} {getattr(inst, 'shape', '')}")
    cm = result.class_map
    if not isinstance(cm, np.ndarray) or cm.shape != inst.shape:
        raise ValueError(f"class_map shape {getattr(cm, 'shape', None)} differs from instance_map shape {inst.shape}")
    classes_shape = np.asarray(result.classes).shape
    if len(classes_shape) != 1:
        raise ValueError(f"PanopticResult.classes must be a 1-D array of train ids, got shape {classes_shape}")
    n = classes_shape[0]
    for name, arr, tail in (("scores", result.scores, ()), ("boxes_xyxy", result.boxes_xyxy, (4,))):
        shape = np.asarray(arr).shape
        if shape != (n, *tail):
            raise ValueError(f"PanopticResult.{name} has shape {shape}, expected {(n, *tail)} for {n} instances")
    if result.areas_px is not None and np.asarray(result.areas_px).shape != (n,):
        raise ValueError(f"PanopticResult.areas_px has shape {np.asarray(result.areas_px).shape}, expected ({n},); "
                         f"leave it None to have the areas counted")
    emb_shape = np.asarray(result.embeddings).shape
    if len(emb_shape) != 2 or emb_shape[0] != n:
        raise ValueError(f"PanopticResult.embeddings has shape {emb_shape}, expected ({n}, D) (D may be 0)")
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


def region_overlap(rows: np.ndarray, cols: np.ndarray, owner: np.ndarray, num_tracks: int,
                   shift_rc_t2: np.ndarray, label_map_ds: np.ndarray, num_detections: int) -> RegionOverlap:
    """Histogram of ``label_map_ds`` under each track's region shifted by ``shift_rc_t2[track]``.

    ``rows``/``cols`` are the grid cells of all regions, ``owner`` the track
    each cell belongs to (0..num_tracks-1).
    """
    n1 = num_detections + 1
    if num_tracks == 0:
        z = np.zeros(0, np.int64)
        return RegionOverlap(np.zeros((0, n1), np.int64), z, z)
    h, w = label_map_ds.shape
    shift = np.asarray(shift_rc_t2, dtype=np.int64)
    r = rows + shift[owner, 0]
    c = cols + shift[owner, 1]
    ok = (r >= 0) & (r < h) & (c >= 0) & (c < w)
    labels = label_map_ds.ravel()[(r * w + c)[ok]]
    counts = np.bincount(owner[ok] * n1 + labels, minlength=num_tracks * n1).reshape(num_tracks, n1)
    return RegionOverlap(counts=counts, in_view=counts.sum(axis=1),
                         total=np.bincount(owner, minlength=num_tracks))


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
                  fraction: float, reach_px: int = 1, label_boxes_xyxy: np.ndarray | None = None) -> np.ndarray:
    """bool (K, 4): is each box's left, top, right, bottom side cut off?

    A side is cut off when the image ends within ``reach_px`` of it, or when
    pixels of *other* things (labels other than 0 and the box's own
    ``labels[k]``) fill at least ``fraction`` of the band of ``reach_px``
    pixels just outside it (a position counts when any pixel of the band
    across it is another thing): something in front hides the rest of the
    object. The band, not just the adjacent line, because a segmenter's masks
    are not pixel-tight: an object and the bus in front of it are often
    separated by a pixel or two of background. All lines of all boxes are
    read in one gather per band pixel (no per-box Python loop).
    ``label_map`` must be C-contiguous.

    With ``label_boxes_xyxy`` (the box of every label ``v`` at row ``v - 1``)
    only a thing *nearer* than the box's own object hides it: its bottom edge
    as low or lower in the image (ground contact closer to the camera), or its
    box larger. A parked car behind the next one in a row does not cut the
    nearer one off, however close their masks sit.
    """
    if reach_px < 1:
        raise ValueError(f"reach_px must be at least 1, got {reach_px}")
    h, w = label_map.shape
    x0 = np.floor(boxes_xyxy[:, 0]).astype(np.int64)
    y0 = np.floor(boxes_xyxy[:, 1]).astype(np.int64)
    x1 = np.ceil(boxes_xyxy[:, 2]).astype(np.int64)
    y1 = np.ceil(boxes_xyxy[:, 3]).astype(np.int64)
    r = reach_px - 1
    out = np.stack([x0 <= r, y0 <= r, x1 >= w - r, y1 >= h - r], axis=1)
    ys0, ys1 = np.minimum(np.maximum(y0, 0), h), np.minimum(np.maximum(y1, 0), h)
    xs0, xs1 = np.minimum(np.maximum(x0, 0), w), np.minimum(np.maximum(x1, 0), w)
    fixed = np.stack([x0 - 1, y0 - 1, x1, y1], axis=1)  # the line's column (left/right) or row (top/bottom)
    outward = np.array([-1, -1, 1, 1])  # the direction away from the box, per side
    lo = np.stack([ys0, xs0, ys0, xs0], axis=1)  # its span along the side
    hi = np.stack([ys1, xs1, ys1, xs1], axis=1)
    ks, sides = np.nonzero(~out & (hi > lo))
    if ks.size == 0:
        return out
    length = hi[ks, sides] - lo[ks, sides]
    owner = np.arange(ks.size).repeat(length)
    along = ragged_index(lo[ks, sides], length)
    vertical = (sides % 2 == 0).repeat(length)
    own = labels[ks].repeat(length)
    limit = np.where(vertical, w, h)
    other = np.zeros(along.size, bool)
    for d in range(reach_px):
        across = (fixed[ks, sides] + d * outward[sides]).repeat(length)
        inside = (across >= 0) & (across < limit)
        across = np.where(inside, across, 0)
        values = label_map.ravel()[np.where(vertical, along * w + across, across * w + along)]
        hit = inside & (values != 0) & (values != own)
        if label_boxes_xyxy is not None and hit.any():
            ob = label_boxes_xyxy[values[hit] - 1]
            me = boxes_xyxy[ks[owner[hit]]]
            me_h = me[:, 3] - me[:, 1]
            nearer = ((ob[:, 3] >= me[:, 3] - 0.1 * me_h)
                      | ((ob[:, 2] - ob[:, 0]) * (ob[:, 3] - ob[:, 1]) >= (me[:, 2] - me[:, 0]) * me_h))
            hit[hit] = nearer
        other |= hit
    hits = np.bincount(owner, weights=other, minlength=ks.size)
    out[ks, sides] = hits >= fraction * length
    return out


def box_iou(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> np.ndarray:
    """float64 (A, B) IoU of two box sets."""
    a = a_xyxy[:, None, :]
    b = b_xyxy[None, :, :]
    iw = np.maximum(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0)
    ih = np.maximum(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def paired_box_iou(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> np.ndarray:
    """float64 (P,) IoU of a_xyxy[p] with b_xyxy[p]."""
    iw = np.maximum(np.minimum(a_xyxy[:, 2], b_xyxy[:, 2]) - np.maximum(a_xyxy[:, 0], b_xyxy[:, 0]), 0)
    ih = np.maximum(np.minimum(a_xyxy[:, 3], b_xyxy[:, 3]) - np.maximum(a_xyxy[:, 1], b_xyxy[:, 1]), 0)
    inter = iw * ih
    union = ((a_xyxy[:, 2] - a_xyxy[:, 0]) * (a_xyxy[:, 3] - a_xyxy[:, 1])
             + (b_xyxy[:, 2] - b_xyxy[:, 0]) * (b_xyxy[:, 3] - b_xyxy[:, 1]) - inter)
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def box_gap(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> np.ndarray:
    """float64 (A, B) Euclidean gap between boxes, px (0 where they touch or overlap)."""
    a = a_xyxy[:, None, :]
    b = b_xyxy[None, :, :]
    gx = np.maximum(np.maximum(a[..., 0], b[..., 0]) - np.minimum(a[..., 2], b[..., 2]), 0)
    gy = np.maximum(np.maximum(a[..., 1], b[..., 1]) - np.minimum(a[..., 3], b[..., 3]), 0)
    return np.hypot(gx, gy)


def box_sizes(boxes_xyxy: np.ndarray) -> np.ndarray:
    """float64 (N,) sqrt(area), floored at 1 px: the length scale of the gates."""
    w = np.maximum(boxes_xyxy[:, 2] - boxes_xyxy[:, 0], 1.0)
    h = np.maximum(boxes_xyxy[:, 3] - boxes_xyxy[:, 1], 1.0)
    return np.sqrt(w * h)


def assign(affinity: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian matching maximising total affinity; only pairs with affinity >= threshold are kept.

    Returns (rows, cols) int64 index arrays into ``affinity``, rows ascending.
    """
    empty = np.zeros(0, np.int64)
    if affinity.size == 0:
        return empty, empty
    feasible = affinity >= threshold
    rows_ok = feasible.any(axis=1).nonzero()[0]
    cols_ok = feasible.any(axis=0).nonzero()[0]
    if rows_ok.size == 0:
        return empty, empty
    sub = affinity[np.ix_(rows_ok, cols_ok)]
    cost = np.where(sub >= threshold, 1.0 - sub, _INFEASIBLE)
    r, c = linear_sum_assignment(cost)
    keep = sub[r, c] >= threshold
    return rows_ok[r[keep]].astype(np.int64), cols_ok[c[keep]].astype(np.int64)
