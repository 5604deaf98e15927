"""The occlusion-aware panoptic tracker: stable ids through occlusion, one instance per camera.

Per frame, :meth:`Tracker.update` runs these steps (each a method below):

1. **Predict.** Every track's box moves by its constant-velocity Kalman
   filter (:mod:`.kalman`), after the camera's own image motion, estimated
   from background points (:mod:`.camera_motion`), has been applied to it.
2. **Compare.** Each track's last visible mask, shifted to its predicted
   place, is laid over this frame's instance map on a sub-sampled grid
   (:func:`.association.region_overlap`): one histogram gives its mask IoU
   with every detection.
3. **Associate**, Hungarian on a combined affinity (that mask IoU -- box
   IoU where a mask is too small for the grid -- blended with the appearance
   cosine of the track's moving-average embedding, behind a centre-distance
   gate and class compatibility), in a cascade: confirmed tracks with high-score detections; the rest of them
   with low-score detections (ByteTrack's second stage); occluded and lost
   tracks by re-identification with relaxed gating (near the prediction,
   within the uncertainty it has gathered while unseen, *or* touching the
   occluder; same class, similar appearance, no larger than the object may
   have grown); tentative tracks
   with what is left. Re-identification comes before tentative tracks on
   purpose: a confirmed identity outranks an unconfirmed one, otherwise an
   object that re-emerges and is missed by re-identification once starts a
   tentative track that then claims it on every later frame.
4. **Update** matched tracks. A partially hidden detection (its box shorter
   than the prediction on a side where a nearer thing, or the image border,
   lies within a few pixels) is measured by its free edges and the track's
   size, so the state
   stays amodal and the velocity does not sag while an object slides behind
   a bus.
5. **Occlusion reasoning** for unmatched confirmed tracks: if more than
   ``occlusion_threshold`` of the predicted (amodal) box shows another, nearer
   thing (lower bottom edge or larger box), the track is OCCLUDED by that
   thing's track and lives ``max_occluded_frames``; otherwise it is lost
   and lives ``max_lost_frames`` (unpublished meanwhile); a predicted box
   wholly outside the image ends the track at once. A thing first seen after
   the track vanished, sitting where the track is predicted, is taken for the
   same object under another class, not an occluder. When an occluded track's
   own motion would have brought it back into view but it is not there,
   riding along with the occluder (a cyclist hidden beside a bus) is tried:
   if that keeps it covered, it stays OCCLUDED (published where riding puts
   it) while its own motion state is kept, so a parked car is not dragged
   away by every bus that passes in front of it.
6. **Birth and confirmation.** Unmatched confident detections start
   tentative tracks; a track gets its id from this tracker's own counter
   when it reaches ``min_hits`` matches, so ids are dense, start at 1, and
   one-frame false positives never get one.

Time: velocities are in px/s from the input stamps. A stamp that goes
backwards, repeats, or leaps forward by more than ``max_frame_gap_s`` is a
clock jump: the step falls back to the last good frame period (the tracker
keeps going; ``TrackedFrame.clock_jump`` says so). Ages run on the tracker's
own monotonic clock (the sum of the steps used), so they never go negative.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from panoptic_ros.classes import CITYSCAPES, VOID, ClassTable
from panoptic_ros.panoptic import MAX_TRACK_ID, PanopticResult
from panoptic_ros.params import TrackerParams, iter_params, validate_value
from panoptic_ros.tracking import kalman
from panoptic_ros.tracking.association import (DetectionSet, RegionOverlap, assign, blocked_sides, box_gap,
                                               box_region_labels, box_sizes, paired_box_iou,
                                               ragged_index, region_overlap)
from panoptic_ros.tracking.camera_motion import CameraMotionEstimator, check_image
from panoptic_ros.tracking.kalman import MotionNoise
from panoptic_ros.tracking.types import CameraMotion, TrackedFrame, TrackedObject, TrackState

# Internal track status (published state is derived from it).
_MATCHED, _OCCLUDED, _LOST = 0, 1, 2
_DEFAULT_PERIOD_S = 0.1  # frame period assumed before two good stamps have been seen
_NUM_CLASS_SLOTS = 256
_PARTIAL = 0.95  # a detection narrower/shorter than this fraction of the prediction may be cut off
_SIDE_BLOCKED = 0.3  # fraction of another thing's pixels just outside a box side that marks it cut off
_SIDE_REACH_PX = 3  # how far outside a box side that other thing may start (masks are not pixel-tight)
_REID_SIGMAS = 3.0  # re-identification: how many standard deviations a detection may stick out of the prediction


class _TrackTable:
    """All tracks as parallel arrays (row = track), so each step is a few vectorised operations."""

    _ARRAYS = {  # name: (dtype, trailing shape)
        "key": (np.int64, ()), "track_id": (np.int64, ()), "hits": (np.int64, ()),
        "first_frame": (np.int64, ()), "first_clock_s": (np.float64, ()),
        "confirmed_frame": (np.int64, ()), "last_seen_stamp_s": (np.float64, ()),
        "frames_since_seen": (np.int64, ()),
        "frames_lost": (np.int64, ()), "status": (np.int8, ()), "score": (np.float64, ()),
        "class_id": (np.int64, ()), "det_index": (np.int64, ()), "occluder_key": (np.int64, ()),
        "moves_with_occluder": (bool, ()), "occluder_offset_xy": (np.float64, (2,)),
        "mean": (np.float64, (8,)), "cov": (np.float64, (4, 3)),
        "ref_xy": (np.float64, (2,)), "vis_box": (np.float64, (4,)),
        "class_votes": (np.float32, (_NUM_CLASS_SLOTS,)), "emb_ok": (bool, ()),
        # The last visible mask: cells [mask_start, mask_end) of frame mask_frame in the _MaskStore.
        "mask_frame": (np.int64, ()), "mask_start": (np.int64, ()), "mask_end": (np.int64, ()),
    }

    def __init__(self) -> None:
        for name, (dtype, tail) in self._ARRAYS.items():
            setattr(self, name, np.zeros((0, *tail), dtype))
        self.emb = np.zeros((0, 0), np.float32)  # (T, D) appearance, L2-normalised where emb_ok

    def __len__(self) -> int:
        return int(self.key.shape[0])

    def append(self, rows: dict[str, np.ndarray], emb: np.ndarray) -> None:
        n = emb.shape[0]
        if emb.shape[1] != self.emb.shape[1]:
            self.set_embedding_dim(emb.shape[1])
        for name, (dtype, tail) in self._ARRAYS.items():
            new = rows.get(name)
            if new is None:
                new = np.zeros((n, *tail), dtype)
            setattr(self, name, np.concatenate([getattr(self, name), np.asarray(new, dtype).reshape(n, *tail)]))
        self.emb = np.concatenate([self.emb, emb.astype(np.float32, copy=False)])

    def keep(self, keep: np.ndarray) -> None:
        for name in self._ARRAYS:
            setattr(self, name, getattr(self, name)[keep])
        self.emb = self.emb[keep]

    def set_embedding_dim(self, d: int) -> None:
        """A model with another embedding size: stored appearance is no longer comparable."""
        self.emb = np.zeros((len(self), d), np.float32)
        self.emb_ok[:] = False

    def rows_of_keys(self, keys: np.ndarray) -> np.ndarray:
        """Row of each key, -1 where no such track (keys are ascending: tracks are appended in key order)."""
        keys = np.asarray(keys, np.int64)
        pos = np.searchsorted(self.key, keys)
        pos = np.minimum(pos, max(len(self) - 1, 0))
        found = (len(self) > 0) & (keys > 0)
        if len(self):
            found = found & (self.key[pos] == keys)
        return np.where(found, pos, -1)


class _MaskStore:
    """Grid cells of the tracks' last visible masks, kept per frame.

    A matched track just points at its detection's slice of that frame's
    cells (three integers), so remembering 50 masks costs no per-track copy.
    Frames no track points at are dropped, and an old frame that few tracks
    still use is repacked, so memory stays bounded by the masks in use.
    """

    def __init__(self) -> None:
        self._frames: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def add(self, frame: int, rows: np.ndarray, cols: np.ndarray) -> None:
        self._frames[frame] = (rows, cols)

    def gather(self, tb: _TrackTable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, cols, owner row) of every track's mask cells, concatenated."""
        length = tb.mask_end - tb.mask_start
        parts = []
        for f in np.unique(tb.mask_frame).tolist():
            sel = (tb.mask_frame == f).nonzero()[0]
            idx = ragged_index(tb.mask_start[sel], length[sel])
            rows, cols = self._frames[f]
            parts.append((rows[idx], cols[idx], sel.repeat(length[sel])))
        if not parts:
            z = np.zeros(0, np.int64)
            return z, z, z
        if len(parts) == 1:
            return parts[0]
        rows, cols, owner = (np.concatenate(x) for x in zip(*parts))
        return rows, cols, owner

    def compact(self, tb: _TrackTable, current_frame: int) -> None:
        """Drop frames no track points at; repack an old frame when less than half of it is in use."""
        used = set(np.unique(tb.mask_frame).tolist())
        for f in [f for f in self._frames if f not in used]:
            del self._frames[f]
        for f in used:
            rows, cols = self._frames[f]
            sel = (tb.mask_frame == f).nonzero()[0]
            length = tb.mask_end[sel] - tb.mask_start[sel]
            if f == current_frame or 2 * int(length.sum()) >= rows.size:
                continue
            idx = ragged_index(tb.mask_start[sel], length)
            self._frames[f] = (rows[idx], cols[idx])
            tb.mask_start[sel] = length.cumsum() - length
            tb.mask_end[sel] = tb.mask_start[sel] + length

    def clear(self) -> None:
        self._frames.clear()

    @property
    def num_cells(self) -> int:
        """Grid cells held (for checking that memory stays bounded)."""
        return sum(r.size for r, _ in self._frames.values())


class Tracker:
    """Occlusion-aware multi-object tracker over panoptic results; one instance per camera.

    The instance owns its id counter (starting at 1, never reused, never
    shared with another instance) and all track state; nothing lives at class
    level.
    """

    def __init__(self, params: TrackerParams | None = None, class_table: ClassTable = CITYSCAPES,
                 noise: MotionNoise | None = None) -> None:
        self._class_table = class_table
        self.noise = noise if noise is not None else MotionNoise()
        self._next_id = 1
        self._next_key = 1
        self._table = _TrackTable()
        self._masks = _MaskStore()
        self._frame = 0
        self._clock_s = 0.0
        self._last_stamp_s: float | None = None
        self._period_s = _DEFAULT_PERIOD_S
        self._map_hw: tuple[int, int] | None = None
        self._cmc: CameraMotionEstimator | None = None
        self.set_params(params if params is not None else TrackerParams())

    # ------------------------------------------------------------------ public

    @property
    def params(self) -> TrackerParams:
        return self._params

    def set_params(self, params: TrackerParams) -> None:
        """Validate and apply parameters (the dynamic ones may change between frames)."""
        for p in iter_params(TrackerParams):
            _, err = validate_value(p, getattr(params, p.name))
            if err:
                raise ValueError(f"tracker.{err}")
        self._compat = self._compatibility(params.compatible_classes)
        if self._cmc is None or self._cmc.working_width_px != params.camera_motion_width_px:
            self._cmc = CameraMotionEstimator(working_width_px=params.camera_motion_width_px)
        old = getattr(self, "_params", None)
        if old is not None and old.mask_stride != params.mask_stride:
            self.reset()  # stored masks live on the old grid
        self._params = params

    @property
    def num_tracks(self) -> int:
        """All tracks held: tentative, tracked, occluded and lost."""
        return len(self._table)

    @property
    def next_track_id(self) -> int:
        return self._next_id

    @property
    def num_mask_cells(self) -> int:
        """Grid cells held for the tracks' last masks (bounded: unused frames are dropped or repacked)."""
        return self._masks.num_cells

    def reset(self) -> None:
        """Forget every track (ids already given are still never reused) and the previous frame."""
        self._table = _TrackTable()
        self._masks.clear()
        self._last_stamp_s = None
        self._map_hw = None
        if self._cmc is not None:
            self._cmc.reset()

    def update(self, result: PanopticResult, stamp_s: float, image: np.ndarray | None = None) -> TrackedFrame:
        """Track one frame. ``image`` (uint8 grey or colour, any size) enables camera-motion compensation.

        Raises ValueError for a non-finite stamp or a result whose arrays
        disagree (the message names which); never for odd stamp sequences.
        """
        try:
            stamp = float(stamp_s)
        except (TypeError, ValueError):
            raise ValueError(f"stamp_s must be a number of seconds, got {stamp_s!r}") from None
        if not math.isfinite(stamp):
            raise ValueError(f"stamp_s must be finite, got {stamp_s!r}")
        if image is not None:
            check_image(image)
        p = self._params
        dets = DetectionSet.from_result(result, p.mask_stride)
        if dets.n and (dets.classes.min() < 0 or dets.classes.max() >= VOID):
            raise ValueError(f"PanopticResult.classes must be train ids in 0..{VOID - 1}, got "
                             f"{int(dets.classes.min())}..{int(dets.classes.max())}")
        ended: list[int] = []
        reset = False
        if self._map_hw is not None and dets.map_hw != self._map_hw:
            ended = sorted(int(i) for i in self._table.track_id if i > 0)
            self.reset()
            reset = True
        self._map_hw = dets.map_hw
        dt_s, jump = self._advance_clock(stamp)
        self._frame += 1

        motion: CameraMotion | None = None
        if p.camera_motion_compensation and image is not None:
            motion = self._cmc.estimate(image, dets.map_hw, (dets.label_map_ds > 0).view(np.uint8))
        tb = self._table
        tb.det_index[:] = -1
        if tb.emb.shape[1] != dets.embeddings.shape[1]:
            tb.set_embedding_dim(dets.embeddings.shape[1])
        if len(tb):
            self._predict(dt_s, motion)
        self._masks.add(self._frame, dets.grid_rows, dets.grid_cols)
        cell_rows, cell_cols, owner = self._masks.gather(tb)
        overlap = region_overlap(cell_rows, cell_cols, owner, len(tb),
                                 self._grid_shift(tb.mean[:, :2] - tb.ref_xy), dets.label_map_ds, dets.n)
        rows, cols = self._associate(dets, overlap)
        matched = np.zeros(len(tb), bool)
        matched[rows] = True
        if rows.size:
            self._apply_matches(dets, rows, cols, stamp)
        det_row = np.full(dets.n, -1, np.int64)
        det_row[cols] = rows
        self._spawn(dets, det_row, stamp)
        matched = np.concatenate([matched, np.ones(len(self._table) - matched.size, bool)])
        drop = self._unmatched(dets, ~matched, det_row)
        self._confirm(matched)
        ended += self._prune(drop)
        self._masks.compact(self._table, self._frame)
        return self._publish(dets, stamp, dt_s, jump, motion, ended, reset)

    # ------------------------------------------------------------------ steps

    def _advance_clock(self, stamp: float) -> tuple[float, bool]:
        last = self._last_stamp_s
        self._last_stamp_s = stamp
        if last is None:
            return 0.0, False
        step = stamp - last
        if 0.0 < step <= self._params.max_frame_gap_s:
            self._period_s = step
            self._clock_s += step
            return step, False
        self._clock_s += self._period_s
        return self._period_s, True

    def _predict(self, dt_s: float, motion: CameraMotion | None) -> None:
        tb = self._table
        if motion is not None:
            a = motion.affine_2x3
            tb.mean, tb.cov = kalman.warp(tb.mean, tb.cov, a)
            tb.occluder_offset_xy = tb.occluder_offset_xy @ a[:, :2].T
        # A track that is not being measured keeps its size (ByteTrack zeroes the height rate of lost tracks).
        tb.mean[tb.status != _MATCHED, 6:8] = 0.0
        tb.mean, tb.cov = kalman.predict(tb.mean, tb.cov, dt_s, self.noise)

    def _grid_shift(self, shift_xy_t2: np.ndarray) -> np.ndarray:
        """Pixel shifts (x, y) -> whole grid shifts (row, col)."""
        return np.rint(shift_xy_t2[:, ::-1] / self._params.mask_stride).astype(np.int64)

    def _associate(self, dets: DetectionSet, overlap: RegionOverlap) -> tuple[np.ndarray, np.ndarray]:
        """The cascade. Returns matched (track rows, detection indices)."""
        tb, p = self._table, self._params
        t, n = len(tb), dets.n
        empty = np.zeros(0, np.int64)
        if t == 0 or n == 0:
            return empty, empty
        aff_geo, aff_full = self._affinity(dets, overlap)
        track_free = np.ones(t, bool)
        det_free = np.ones(n, bool)
        high = dets.scores >= p.high_score_threshold
        low = (dets.scores >= p.low_score_threshold) & ~high
        confirmed = tb.track_id > 0
        out_r: list[np.ndarray] = []
        out_c: list[np.ndarray] = []

        def run(track_sel: np.ndarray, det_sel: np.ndarray, aff: np.ndarray | None) -> None:
            tr = (track_sel & track_free).nonzero()[0]
            dc = (det_sel & det_free).nonzero()[0]
            if tr.size == 0 or dc.size == 0:
                return
            block = self._reid_affinity(dets, tr, dc) if aff is None else aff[np.ix_(tr, dc)]
            r, c = assign(block, p.match_threshold)
            if r.size:
                track_free[tr[r]] = False
                det_free[dc[c]] = False
                out_r.append(tr[r])
                out_c.append(dc[c])

        active = confirmed & (tb.status != _OCCLUDED)
        run(active, high, aff_full)  # 1. confirmed tracks, confident detections
        run(active, low, aff_geo)  # 2. the rest of them, weak detections (appearance unreliable)
        run(confirmed, high, None)  # 3. occluded / lost / just missed: re-identification
        run(~confirmed, high, aff_full)  # 4. tentative tracks
        if not out_r:
            return empty, empty
        return np.concatenate(out_r), np.concatenate(out_c)

    def _affinity(self, dets: DetectionSet, overlap: RegionOverlap) -> tuple[np.ndarray, np.ndarray]:
        """(T, N) gated affinities: geometric only, and geometric blended with appearance.

        Only pairs whose shifted mask touches the detection (or where either
        mask is too small for the grid, judged by box IoU instead) can score,
        so everything is computed on that short pair list, not on T x N.
        """
        tb, p = self._table, self._params
        t, n = len(tb), dets.n
        inter = overlap.counts[:, 1:]
        tiny_t = overlap.total < 4
        tiny_d = dets.ds_area < 4
        cand = inter > 0
        if tiny_t.any():
            cand[tiny_t] = True
        if tiny_d.any():
            cand[:, tiny_d] = True
        ti, di = np.nonzero(cand)
        aff_geo = np.zeros((t, n))
        aff_full = np.zeros((t, n))
        if ti.size == 0:
            return aff_geo, aff_full
        inter_p = inter[ti, di]
        union = overlap.in_view[ti] + dets.ds_area[di] - inter_p
        geo = inter_p / np.maximum(union, 1)
        shift = tb.mean[ti, :2] - tb.ref_xy[ti]
        vis_pred = tb.vis_box[ti] + np.concatenate([shift, shift], axis=1)
        det_box = dets.boxes_xyxy[di]
        tiny = tiny_t[ti] | tiny_d[di]
        if tiny.any():
            geo[tiny] = paired_box_iou(vis_pred[tiny], det_box[tiny])
        # Gate: centre distance within max_center_distance sizes (sqrt of the larger box area).
        d = 0.5 * (vis_pred[:, :2] + vis_pred[:, 2:] - det_box[:, :2] - det_box[:, 2:])
        area = np.maximum(np.prod(vis_pred[:, 2:] - vis_pred[:, :2], axis=1),
                          np.prod(det_box[:, 2:] - det_box[:, :2], axis=1))
        gate = ((geo > 0) & self._compat[tb.class_id[ti], dets.classes[di]]
                & (np.einsum("pi,pi->p", d, d) <= p.max_center_distance ** 2 * area))
        geo = np.where(gate, geo, 0.0)
        aff_geo[ti, di] = geo
        full = geo
        if dets.embeddings.shape[1] and tb.emb.shape[1] == dets.embeddings.shape[1]:
            ok = gate & tb.emb_ok[ti] & dets.has_embedding[di]
            if ok.any():
                cos = np.einsum("pd,pd->p", tb.emb[ti[ok]], dets.embeddings[di[ok]])
                w = p.embedding_weight
                full = geo.copy()
                full[ok] = (1.0 - w) * geo[ok] + w * np.minimum(np.maximum(cos, 0.0), 1.0)
        aff_full[ti, di] = full
        return aff_geo, aff_full

    def _reid_affinity(self, dets: DetectionSet, tr: np.ndarray, dc: np.ndarray) -> np.ndarray:
        """Relaxed affinity for tracks not matched normally: near the prediction OR touching the occluder.

        "Near" is judged against what the filter knows: a detection may be the
        visible part of the predicted (amodal) box, so only how far it sticks
        out of that box counts, in units of the uncertainty of the box's edges
        (position and size, grown every frame the track went unseen, plus the
        detector's jitter), at most ``_REID_SIGMAS`` of them, and never more than
        ``reid_max_distance`` track sizes away. A track missed for one frame
        thus takes back only a detection where it must be -- not the next car
        that just came out from behind it -- while one hidden for two seconds
        may come back well away from where it was expected. Where both sides
        carry appearance embeddings, the appearance gate decides identity and
        ``reid_max_distance`` alone bounds the distance.
        """
        tb, p = self._table, self._params
        pred = kalman.boxes_xyxy(tb.mean[tr])
        size = box_sizes(pred)
        boxes = dets.boxes_xyxy[dc]
        gap = box_gap(pred, boxes) / size[:, None]
        out_x = np.maximum(np.maximum(boxes[None, :, 2] - pred[:, None, 2], pred[:, None, 0] - boxes[None, :, 0]), 0.0)
        out_y = np.maximum(np.maximum(boxes[None, :, 3] - pred[:, None, 3], pred[:, None, 1] - boxes[None, :, 1]), 0.0)
        jitter = self.noise.measurement_std * np.maximum(tb.mean[tr, 2:4], 1.0)
        edge_sd = np.sqrt(tb.cov[tr, 0:2, 0] + 0.25 * tb.cov[tr, 2:4, 0] + jitter * jitter)  # (T, 2): x, y
        sigmas = np.hypot(out_x / edge_sd[:, 0:1], out_y / edge_sd[:, 1:2])
        within = gap <= p.reid_max_distance
        near = within & (sigmas <= _REID_SIGMAS)
        near_score = np.where(near, 1.0 - sigmas / _REID_SIGMAS, 0.0)
        seen_alike = np.zeros_like(near)  # both sides carry appearance, which then decides (gated below)
        if dets.embeddings.shape[1] and tb.emb.shape[1] == dets.embeddings.shape[1]:
            seen_alike = tb.emb_ok[tr][:, None] & dets.has_embedding[dc][None, :]
            # Appearance confirms identity, so geometry may be as loose as reid_max_distance alone: a
            # prediction that drifted while the object was half hidden still finds it.
            loose = seen_alike & within & ~near
            near_score = np.where(loose, 1.0 - gap / max(p.reid_max_distance, 1e-6), near_score)
            near |= loose
        adjacent = np.zeros_like(near)
        occ = tb.rows_of_keys(tb.occluder_key[tr])
        has_occ = (occ >= 0).nonzero()[0]
        if has_occ.size:
            o = occ[has_occ]
            shift = tb.mean[o, :2] - tb.ref_xy[o]
            occ_box = tb.vis_box[o] + np.concatenate([shift, shift], axis=1)
            seen = tb.det_index[o] >= 0
            occ_box[seen] = dets.boxes_xyxy[tb.det_index[o][seen]]
            margin = 0.25 * size[has_occ] + dets.stride
            adjacent[has_occ] = box_gap(occ_box, boxes) <= margin[:, None]
        # The visible part of an object is never much larger than the object -- whose size is known only to
        # within the filter's uncertainty, and that grows while it is unseen: a car hidden for two seconds
        # while the camera drives towards it comes back half again or twice as large.
        slack = 2.0 * dets.stride
        max_wh = 1.5 * tb.mean[tr, 2:4] + 2.0 * np.sqrt(tb.cov[tr, 2:4, 0]) + slack
        fits = (((boxes[None, :, 2] - boxes[None, :, 0]) <= max_wh[:, 0][:, None])
                & ((boxes[None, :, 3] - boxes[None, :, 1]) <= max_wh[:, 1][:, None]))
        compat = self._compat[tb.class_id[tr][:, None], dets.classes[dc][None, :]]
        gate = (near | adjacent) & fits & compat
        geo = np.maximum(near_score, np.where(adjacent, 0.5, 0.0))
        aff = geo
        if seen_alike.any():
            c = tb.emb[tr] @ dets.embeddings[dc].T
            gate &= ~seen_alike | (c >= p.reid_min_similarity)
            aff = np.where(seen_alike, 0.5 * geo + 0.5 * np.minimum(np.maximum(c, 0.0), 1.0), geo)
        return np.where(gate, aff, 0.0)

    def _apply_matches(self, dets: DetectionSet, rows: np.ndarray, cols: np.ndarray, stamp: float) -> None:
        tb, p = self._table, self._params
        pred = tb.mean[rows]
        z = kalman.xyxy_to_cxcywh(dets.boxes_xyxy[cols])
        cut = ((z[:, 2] < _PARTIAL * pred[:, 2]) | (z[:, 3] < _PARTIAL * pred[:, 3])).nonzero()[0]
        anchored = None
        if cut.size:
            z[cut], anchored = _amodal_measurements(dets.boxes_xyxy[cols[cut]], cols[cut] + 1, pred[cut],
                                                    dets.label_map_contiguous, dets.boxes_xyxy)
        # After a gap the covariance has grown with every coasted step, so the update trusts the
        # measurement and re-learns the velocity within a few frames (even after a reversal).
        tb.mean[rows], tb.cov[rows] = kalman.update(pred, tb.cov[rows], z, self.noise)
        if anchored is not None and anchored.any():
            # An axis measured by its free edge and the predicted size says nothing about the size: the
            # track keeps its size there, as an unseen one does. A size rate left running would grow the
            # box frame after frame -- each anchored measurement confirming the grown size -- and drag the
            # centre away from the visible part with it.
            r_cut = rows[cut]
            for axis in (0, 1):
                tb.mean[r_cut[anchored[:, axis]], 6 + axis] = 0.0
        tb.ref_xy[rows] = tb.mean[rows, :2]
        tb.vis_box[rows] = dets.boxes_xyxy[cols]
        tb.hits[rows] += 1
        tb.frames_since_seen[rows] = 0
        tb.frames_lost[rows] = 0
        tb.status[rows] = _MATCHED
        tb.last_seen_stamp_s[rows] = stamp
        tb.score[rows] = dets.scores[cols]
        tb.det_index[rows] = cols
        tb.occluder_key[rows] = 0
        tb.moves_with_occluder[rows] = False
        np.add.at(tb.class_votes, (rows, dets.classes[cols]), dets.scores[cols].astype(np.float32))
        tb.class_id[rows] = tb.class_votes[rows].argmax(axis=1)
        has = dets.has_embedding[cols]
        if has.any() and tb.emb.shape[1] == dets.embeddings.shape[1]:
            r, c = rows[has], cols[has]
            new = dets.embeddings[c]
            m = np.where(tb.emb_ok[r], np.float32(p.embedding_momentum), np.float32(0.0))[:, None]
            e = m * tb.emb[r] + (1.0 - m) * new
            e /= np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
            tb.emb[r] = e
            tb.emb_ok[r] = True
        tb.mask_frame[rows] = self._frame
        tb.mask_start[rows] = dets.grid_start[cols]
        tb.mask_end[rows] = dets.grid_end[cols]

    def _spawn(self, dets: DetectionSet, det_row: np.ndarray, stamp: float) -> None:
        """Tentative tracks for confident detections nobody claimed."""
        p = self._params
        new = ((det_row < 0) & (dets.scores >= p.new_track_score_threshold)
               & (dets.scores >= p.low_score_threshold)).nonzero()[0]
        if new.size == 0:
            return
        k = new.size
        z = kalman.xyxy_to_cxcywh(dets.boxes_xyxy[new])
        mean, cov = kalman.initiate(z, self.noise)
        keys = np.arange(self._next_key, self._next_key + k, dtype=np.int64)
        self._next_key += k
        votes = np.zeros((k, _NUM_CLASS_SLOTS), np.float32)
        votes[np.arange(k), dets.classes[new]] = dets.scores[new]
        d = dets.embeddings.shape[1]
        emb = np.zeros((k, d), np.float32)
        ok = dets.has_embedding[new]
        if d:
            e = dets.embeddings[new]
            emb[ok] = e[ok] / np.linalg.norm(e[ok], axis=1, keepdims=True)
        rows = {
            "key": keys, "hits": np.ones(k), "first_frame": np.full(k, self._frame),
            "first_clock_s": np.full(k, self._clock_s), "last_seen_stamp_s": np.full(k, stamp),
            "status": np.full(k, _MATCHED),
            "score": dets.scores[new], "class_id": dets.classes[new], "det_index": new,
            "mean": mean, "cov": cov, "ref_xy": mean[:, :2],
            "vis_box": dets.boxes_xyxy[new], "class_votes": votes, "emb_ok": ok,
            "mask_frame": np.full(k, self._frame), "mask_start": dets.grid_start[new],
            "mask_end": dets.grid_end[new],
        }
        self._table.append(rows, emb)
        det_row[new] = np.arange(len(self._table) - k, len(self._table))

    def _unmatched(self, dets: DetectionSet, unmatched: np.ndarray, det_row: np.ndarray) -> np.ndarray:
        """Occlusion reasoning and ageing of unmatched tracks; returns the rows to delete."""
        tb, p = self._table, self._params
        h, w = dets.map_hw
        drop = np.zeros(len(tb), bool)
        um = unmatched.nonzero()[0]
        if um.size == 0:
            return drop
        tb.frames_since_seen[um] += 1
        box = kalman.boxes_xyxy(tb.mean[um])
        outside = (box[:, 2] <= 0) | (box[:, 0] >= w) | (box[:, 3] <= 0) | (box[:, 1] >= h)
        drop[um[outside]] = True
        confirmed = tb.track_id[um] > 0
        tent = um[~confirmed]
        tb.status[tent] = _LOST
        drop[tent[tb.frames_since_seen[tent] > p.max_tentative_missed_frames]] = True
        cu = um[confirmed & ~outside]
        if cu.size:
            self._reason_occlusion(dets, cu, det_row)
            lost = cu[tb.status[cu] == _LOST]
            occluded = cu[tb.status[cu] == _OCCLUDED]
            drop[lost[tb.frames_lost[lost] > p.max_lost_frames]] = True
            drop[occluded[tb.frames_since_seen[occluded] > p.max_occluded_frames]] = True
        return drop

    def _reason_occlusion(self, dets: DetectionSet, cu: np.ndarray, det_row: np.ndarray) -> None:
        """OCCLUDED (by which track) or LOST, for each unmatched confirmed track row in ``cu``."""
        tb, p = self._table, self._params
        pred = kalman.boxes_xyxy(tb.mean[cu])
        counts, in_view = box_region_labels(dets.label_map_ds, pred, dets.stride, dets.n)
        things = counts[:, 1:]
        is_occ = (in_view > 0) & (things.sum(axis=1) >= p.occlusion_threshold * np.maximum(in_view, 1))
        occ_det = things.argmax(axis=1) if dets.n else np.zeros(cu.size, np.int64)
        if dets.n:
            # The coverer must be nearer: its bottom edge lower in the image (ground contact closer to the
            # camera) or its box larger. A thing *behind* a missed detection does not hide it.
            ob = dets.boxes_xyxy[occ_det]
            area_o = (ob[:, 2] - ob[:, 0]) * (ob[:, 3] - ob[:, 1])
            area_t = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
            is_occ &= (ob[:, 3] >= pred[:, 3] - 0.1 * (pred[:, 3] - pred[:, 1])) | (area_o >= area_t)
            # A thing first seen after this track was last seen, sitting right where the track is
            # predicted, is most likely the same object detected as another class, not an occluder.
            o_rows = det_row[occ_det]
            last_seen_frame = self._frame - tb.frames_since_seen[cu]
            newcomer = (o_rows < 0) | (tb.first_frame[np.maximum(o_rows, 0)] > last_seen_frame)
            same_place = paired_box_iou(pred, ob) >= 0.5
            is_occ &= ~(newcomer & same_place)
        for i, row in enumerate(cu.tolist()):
            if is_occ[i]:
                o_row = int(det_row[occ_det[i]])
                o_key = int(tb.key[o_row]) if o_row >= 0 else 0
                if (tb.status[row] != _OCCLUDED or tb.occluder_key[row] != o_key) and o_row >= 0:
                    tb.occluder_offset_xy[row] = tb.mean[row, :2] - tb.mean[o_row, :2]  # onset, or a new occluder
                tb.moves_with_occluder[row] = False  # its own motion explains why it is hidden
                tb.status[row] = _OCCLUDED
                tb.occluder_key[row] = o_key
                tb.frames_lost[row] = 0
                continue
            if tb.status[row] == _OCCLUDED and self._hidden_beside_occluder(dets, row):
                tb.moves_with_occluder[row] = True
                continue
            tb.moves_with_occluder[row] = False
            tb.status[row] = _LOST
            tb.frames_lost[row] += 1

    def _hidden_beside_occluder(self, dets: DetectionSet, row: int) -> bool:
        """Would the track still be hidden had it moved with its occluder since the occlusion began?

        Its own motion predicts it visible, yet it is not detected. If riding
        along with the occluder keeps it covered (a cyclist hidden beside a
        bus), that explains the frame, and the track stays OCCLUDED. Only the
        bookkeeping follows that explanation: the track's own motion state is
        left as it was. Copying the occluder's motion into it would drag a
        parked car or a pedestrian along with every bus that passes in front
        of it, far from where it re-emerges; re-identification next to the
        occluder (see :meth:`_reid_affinity`) finds an object that did ride along.
        """
        tb, p = self._table, self._params
        o = int(tb.rows_of_keys(np.array([tb.occluder_key[row]]))[0])
        if o < 0:
            return False
        moved = tb.mean[row].copy()
        moved[:2] = tb.mean[o, :2] + tb.occluder_offset_xy[row]
        counts, in_view = box_region_labels(dets.label_map_ds, kalman.boxes_xyxy(moved[None]), dets.stride, dets.n)
        return bool(in_view[0] > 0 and counts[0, 1:].sum() >= p.occlusion_threshold * in_view[0])

    def _confirm(self, matched: np.ndarray) -> None:
        """Tentative tracks with enough hits get the next ids, in detection order."""
        tb, p = self._table, self._params
        ready = (matched & (tb.track_id == 0) & (tb.hits >= p.min_hits)).nonzero()[0]
        if ready.size == 0:
            return
        ready = ready[tb.det_index[ready].argsort(kind="stable")]
        if self._next_id + ready.size - 1 > MAX_TRACK_ID:
            raise OverflowError(f"track ids exhausted ({MAX_TRACK_ID} fit the panoptic encoding); "
                                f"create a new Tracker")
        tb.track_id[ready] = np.arange(self._next_id, self._next_id + ready.size)
        tb.confirmed_frame[ready] = self._frame
        self._next_id += int(ready.size)

    def _prune(self, drop: np.ndarray) -> list[int]:
        """Delete dropped tracks and enforce max_tracks; returns the confirmed ids that ended."""
        tb, p = self._table, self._params
        keep = ~drop
        if int(keep.sum()) > p.max_tracks:
            # Keep, in order: confirmed and seen now, occluded, the rest by recency.
            rank = np.where(tb.track_id > 0, 0, 2) + np.where(tb.status == _MATCHED, 0, 1)
            order = np.lexsort((tb.frames_since_seen, rank))
            order = order[keep[order]]
            keep = np.zeros(len(tb), bool)
            keep[order[:p.max_tracks]] = True
        if keep.all():
            return []
        ended = sorted(int(i) for i in tb.track_id[~keep] if i > 0)
        tb.keep(keep)
        return ended

    def _publish(self, dets: DetectionSet, stamp: float, dt_s: float, jump: bool,
                 motion: CameraMotion | None, ended: list[int], reset: bool) -> TrackedFrame:
        tb = self._table
        confirmed = tb.track_id > 0
        seen = confirmed & (tb.det_index >= 0)
        shown = (seen | (confirmed & (tb.status == _OCCLUDED))).nonzero()[0]
        shown = shown[tb.track_id[shown].argsort(kind="stable")]
        lut = np.zeros(256 if dets.label_map_u8 is not None else dets.n + 1, np.int32)
        lut[tb.det_index[seen] + 1] = tb.track_id[seen]
        if dets.label_map_u8 is not None:
            track_map = cv2.LUT(dets.label_map_u8, lut)
        else:
            track_map = np.take(lut, dets.instance_map, mode="clip")
        # Gather every field as arrays first, then build the objects from plain lists and row views
        # (each object gets rows of fresh arrays, never views of the tracker's own state).
        det = tb.det_index[shown]
        vis = det >= 0
        state = tb.mean[shown].copy()
        # Hidden beside its occluder (see _hidden_beside_occluder): shown where riding along puts it.
        riding = (~vis & tb.moves_with_occluder[shown]).nonzero()[0]
        if riding.size:
            o = tb.rows_of_keys(tb.occluder_key[shown[riding]])
            ok = o >= 0
            state[riding[ok], 0:2] = tb.mean[o[ok], 0:2] + tb.occluder_offset_xy[shown[riding[ok]]]
            state[riding[ok], 4:6] = tb.mean[o[ok], 4:6]
        box = kalman.boxes_xyxy(state)
        box[vis] = dets.boxes_xyxy[det[vis]]
        centroid = state[:, :2].copy()
        centroid[vis] = dets.centroid_px[det[vis]]
        velocity = state[:, 4:6].copy()
        area = np.zeros(shown.size, np.int64)
        area[vis] = dets.area_px[det[vis]]
        state = np.where(vis, np.where(tb.confirmed_frame[shown] == self._frame, int(TrackState.NEW),
                                       int(TrackState.TRACKED)), int(TrackState.OCCLUDED))
        occ_rows = tb.rows_of_keys(tb.occluder_key[shown])
        occluder = np.where(~vis & (occ_rows >= 0), tb.track_id[np.maximum(occ_rows, 0)], 0)
        states = tuple(TrackState)
        objects = [
            TrackedObject(track_id=i, class_id=c, score=sc, state=states[st], box_xyxy=box[k], visible_area_px=ar,
                          centroid_px=centroid[k], velocity_px_s=velocity[k], age_frames=af, age_s=ag,
                          frames_since_seen=fs, last_seen_s=ls, occluder_track_id=oc, detection_index=d)
            for k, (i, c, sc, st, ar, af, ag, fs, ls, oc, d) in enumerate(zip(
                tb.track_id[shown].tolist(), tb.class_id[shown].tolist(), tb.score[shown].tolist(),
                state.tolist(), area.tolist(), (self._frame - tb.first_frame[shown]).tolist(),
                (self._clock_s - tb.first_clock_s[shown]).tolist(), tb.frames_since_seen[shown].tolist(),
                tb.last_seen_stamp_s[shown].tolist(), occluder.tolist(), det.tolist()))]
        return TrackedFrame(stamp_s=stamp, track_map=track_map, objects=objects, dt_s=dt_s, clock_jump=jump,
                            camera_motion=motion, ended_track_ids=ended, num_tracks=len(tb), reset=reset)

    # ------------------------------------------------------------------ helpers

    def _compatibility(self, pairs: list[str]) -> np.ndarray:
        """bool (256, 256): which track class may match which detection class."""
        compat = np.eye(_NUM_CLASS_SLOTS, dtype=bool)
        for pair in pairs:
            parts = [s.strip() for s in str(pair).split(":")]
            if len(parts) != 2 or not all(parts):
                raise ValueError(f"tracker.compatible_classes entry {pair!r} must look like 'person:rider'")
            a, b = (self._class_id(s, pair) for s in parts)
            compat[a, b] = compat[b, a] = True
        return compat

    def _class_id(self, token: str, pair: str) -> int:
        if token.isdigit():
            cid = int(token)
            if cid >= VOID:
                raise ValueError(f"tracker.compatible_classes entry {pair!r}: class id {cid} is not below {VOID}")
            return cid
        try:
            return self._class_table.by_name(token).train_id
        except KeyError:
            raise ValueError(f"tracker.compatible_classes entry {pair!r}: unknown class {token!r}; known: "
                             f"{', '.join(self._class_table.names)}") from None


def _amodal_measurements(boxes_xyxy: np.ndarray, labels: np.ndarray, pred_t8: np.ndarray,
                         label_map: np.ndarray, label_boxes_xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, 4) ``[cx, cy, w, h]`` measurements of detections that may be partially hidden, and (K, 2) anchored.

    On an axis where the visible box is shorter than the prediction and one
    side is cut off (another thing or the image border just beyond it), the
    free edge plus the predicted size locates the object (``anchored`` is True
    there: the size was not measured); with both sides cut, that axis keeps
    the prediction. Otherwise the visible box is the measurement.
    """
    z = kalman.xyxy_to_cxcywh(boxes_xyxy)
    blocked = blocked_sides(label_map, boxes_xyxy, labels, _SIDE_BLOCKED, _SIDE_REACH_PX, label_boxes_xyxy)
    anchored_k2 = np.zeros((z.shape[0], 2), bool)
    for axis in (0, 1):
        size = pred_t8[:, 2 + axis]
        low, high = blocked[:, axis], blocked[:, axis + 2]
        anchored = (z[:, 2 + axis] < _PARTIAL * size) & (low | high)
        centre = np.where(low & high, pred_t8[:, axis],
                          np.where(high, boxes_xyxy[:, axis] + 0.5 * size, boxes_xyxy[:, axis + 2] - 0.5 * size))
        z[anchored, axis] = centre[anchored]
        z[anchored, 2 + axis] = size[anchored]
        anchored_k2[:, axis] = anchored
    return z, anchored_k2
