"""What the tracker hands back per frame: tracked objects and the track-id map.

The states and fields mirror ``msg/PanopticObject.msg`` so that the ROS layer
copies them field by field. Pixel quantities are in the panoptic result's
pixel grid (x right, y down, continuous coordinates with the origin at the
top-left corner of the top-left pixel, so pixel (row r, column c) has its
centre at (c + 0.5, r + 0.5)).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np


class TrackState(enum.IntEnum):
    """Published track states; values equal PanopticObject.STATE_* ."""

    NEW = 0  # confirmed this frame: the first frame this track id is published
    TRACKED = 1  # matched to a detection in this frame
    OCCLUDED = 2  # not detected, hidden behind another thing; box and centre are the prediction


@dataclass(slots=True)
class TrackedObject:
    """One confirmed track in one frame (tentative tracks are never published)."""

    track_id: int  # >= 1, owned by one Tracker, never reused in its run
    class_id: int  # train id (the class the track's detections voted for, weighted by score)
    score: float  # confidence of the last matched detection
    state: TrackState
    box_xyxy: np.ndarray  # float64 (4,): visible box when matched, predicted (amodal) box when occluded, px
    visible_area_px: int  # pixels of this track in ``TrackedFrame.track_map`` (0 when occluded)
    centroid_px: np.ndarray  # float64 (2,) x, y: visible-mask centre when matched (estimated on the
    #                          tracker's mask grid, within mask_stride / 2 px), predicted centre when occluded
    velocity_px_s: np.ndarray  # float64 (2,) x, y: image velocity of the box centre, px/s, with the
    #                            camera's own image motion removed when it is estimated
    age_frames: int  # frames since the track was first seen (its tentative frames included)
    age_s: float  # seconds since it was first seen, on the tracker's monotonic clock (see Tracker)
    frames_since_seen: int  # frames since the last matched detection, 0 when matched now
    last_seen_s: float  # the input stamp of the last frame with a matched detection
    occluder_track_id: int  # the confirmed track covering this one when OCCLUDED, else 0
    detection_index: int  # index into the frame's PanopticResult, -1 when not matched

    @property
    def is_visible(self) -> bool:
        return self.detection_index >= 0


@dataclass(frozen=True)
class CameraMotion:
    """The global image transform of one frame step, estimated from background points.

    ``affine_2x3`` maps a point of the previous frame to the current frame, in
    the panoptic result's pixel grid: ``[x', y'] = A[:, :2] @ [x, y] + A[:, 2]``.
    """

    affine_2x3: np.ndarray  # float64 (2, 3)
    num_points: int  # background points followed from the previous frame
    num_inliers: int  # points that agree with the transform (RANSAC)

    @property
    def translation_px(self) -> np.ndarray:
        """float64 (2,): where the previous frame's origin moved, px."""
        return self.affine_2x3[:, 2].copy()

    @property
    def scale(self) -> float:
        """Isotropic zoom of the step (1 = none)."""
        return float(np.sqrt(abs(np.linalg.det(self.affine_2x3[:, :2]))))


@dataclass
class TrackedFrame:
    """The tracker's output for one frame.

    ``track_map`` together with the result's ``class_map`` is the lossless
    panoptic image (``panoptic_ros.panoptic.encode_panoptic``): each pixel of a
    detection that belongs to a confirmed track carries that track's id; every
    other pixel, including those of detections not (yet) confirmed, is 0.
    """

    stamp_s: float  # the input stamp
    track_map: np.ndarray  # int32 (H, W)
    objects: list[TrackedObject]  # confirmed tracks that are NEW, TRACKED or OCCLUDED, by track id
    dt_s: float  # time step the motion model used for this frame (0 on the first frame)
    clock_jump: bool  # the stamp went backwards, repeated, or leapt forward more than
    #                   tracker.max_frame_gap_s: dt_s fell back to the recent frame period
    camera_motion: CameraMotion | None  # None when not estimated (off, no image, too few points)
    ended_track_ids: list[int] = field(default_factory=list)  # confirmed tracks deleted this frame
    num_tracks: int = 0  # all tracks the tracker holds after this frame, tentative and lost included
    reset: bool = False  # the tracker dropped every track first (the image size changed)

    def track_ids_by_detection(self, num_detections: int) -> np.ndarray:
        """int64 (N,): the confirmed track id each detection of the frame's result got, 0 for none.

        The per-detection view a comparison against box trackers, or a
        detection-level metric, needs.
        """
        ids = np.zeros(num_detections, np.int64)
        for o in self.objects:
            if 0 <= o.detection_index < num_detections:
                ids[o.detection_index] = o.track_id
        return ids

    def object_by_id(self, track_id: int) -> TrackedObject | None:
        for o in self.objects:
            if o.track_id == track_id:
                return o
        return None
