"""Camera motion compensation: the global image transform between consecutive frames.

When the camera pans or shakes, every object jumps in the image by the same
transform; a motion model that ignores this loses fast pans. Like BoT-SORT's
GMC ("sparseOptFlow"), background corners are followed with pyramidal
Lucas-Kanade flow and a similarity transform (rotation, zoom, shift) is fitted
with RANSAC. To stay cheap (well under a millisecond at 512x1024 on one core):

- the image is sub-sampled by an integer stride to about ``working_width_px``
  (a strided view, no resize pass over the full frame);
- points are *kept* from frame to frame (a KLT tracker) and corners are only
  detected again when too few survive, instead of on every frame;
- points on things (pixels of detected instances, which move on their own) are
  excluded, both when detecting and after following them.
"""
from __future__ import annotations

import cv2
import numpy as np

from panoptic_ros.tracking.types import CameraMotion

_LK_WINDOW = (15, 15)
_LK_LEVELS = 3
_LK_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03)


class CameraMotionEstimator:
    """Estimates, frame after frame, the transform that maps the previous frame onto the current one.

    One instance per camera: it keeps the previous frame's sub-sampled grey
    image and its followed points.
    """

    def __init__(self, working_width_px: int = 256, max_points: int = 150, min_inliers: int = 10,
                 ransac_threshold_px: float = 1.0) -> None:
        if working_width_px < 16:
            raise ValueError(f"working_width_px must be >= 16, got {working_width_px}")
        self.working_width_px = int(working_width_px)
        self.max_points = int(max_points)
        self.min_inliers = int(min_inliers)
        self.ransac_threshold_px = float(ransac_threshold_px)
        self._prev_grey: np.ndarray | None = None
        self._prev_points: np.ndarray | None = None  # float32 (P, 1, 2), working pixels
        self._stride = 1

    def reset(self) -> None:
        self._prev_grey = None
        self._prev_points = None

    def estimate(self, image: np.ndarray, map_hw: tuple[int, int],
                 thing_mask: np.ndarray | None = None) -> CameraMotion | None:
        """The previous-to-current transform in a ``map_hw`` pixel grid, or None (first frame, too few points).

        ``image``: uint8 (H, W) grey or (H, W, 3|4) colour. ``map_hw``: the
        grid the transform is expressed in (the panoptic result's), which may
        differ from the image's size. ``thing_mask``: any-size array, non-zero
        where things are; it is resampled to the working grid.
        """
        grey = self._working_grey(image)
        wh, ww = grey.shape
        exclude = None
        if thing_mask is not None:
            exclude = cv2.resize(np.ascontiguousarray(thing_mask, dtype=np.uint8), (ww, wh),
                                 interpolation=cv2.INTER_NEAREST)
        prev, prev_pts = self._prev_grey, self._prev_points
        motion: CameraMotion | None = None
        points = np.zeros((0, 1, 2), np.float32)
        if prev is not None and prev.shape == grey.shape and prev_pts is not None and len(prev_pts) >= 3:
            nxt, status, _ = cv2.calcOpticalFlowPyrLK(prev, grey, prev_pts, None, winSize=_LK_WINDOW,
                                                      maxLevel=_LK_LEVELS, criteria=_LK_CRITERIA)
            ok = status.ravel() == 1
            if exclude is not None and ok.any():
                xy = np.rint(nxt[:, 0, :]).astype(np.int64)
                inside = (xy[:, 0] >= 0) & (xy[:, 0] < ww) & (xy[:, 1] >= 0) & (xy[:, 1] < wh)
                ok &= inside
                on_thing = np.zeros_like(ok)
                on_thing[ok] = exclude[xy[ok, 1], xy[ok, 0]] > 0
                ok &= ~on_thing
            p0, p1 = prev_pts[ok], nxt[ok]
            if len(p0) >= self.min_inliers:
                affine, inliers = cv2.estimateAffinePartial2D(
                    p0, p1, method=cv2.RANSAC, ransacReprojThreshold=self.ransac_threshold_px,
                    maxIters=200, confidence=0.99, refineIters=5)
                n_in = int(inliers.sum()) if inliers is not None else 0
                if affine is not None and n_in >= self.min_inliers:
                    motion = CameraMotion(self._to_map(affine, image.shape[:2], map_hw), int(len(p0)), n_in)
                    points = p1[inliers.ravel() == 1]
        if len(points) < self.max_points // 2:
            points = self._add_corners(grey, points, exclude)
        self._prev_grey = grey
        self._prev_points = points.astype(np.float32).reshape(-1, 1, 2)
        return motion

    # ---------------------------------------------------------------- internals

    def _working_grey(self, image: np.ndarray) -> np.ndarray:
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
            raise ValueError(f"camera motion needs a uint8 (H, W) or (H, W, 1|3|4) image, got "
                             f"{image.dtype} {image.shape}; pass the frame as decoded, or image=None to skip")
        self._stride = max(1, int(round(image.shape[1] / self.working_width_px)))
        small = np.ascontiguousarray(image[::self._stride, ::self._stride])
        if small.ndim == 3:
            if small.shape[2] == 1:
                small = small[:, :, 0]
            else:
                # Channel order does not matter for following corners: RGB or BGR, either is fine.
                small = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY if small.shape[2] == 3 else cv2.COLOR_RGBA2GRAY)
        return np.ascontiguousarray(small)

    def _add_corners(self, grey: np.ndarray, kept: np.ndarray, exclude: np.ndarray | None) -> np.ndarray:
        mask = np.full(grey.shape, 255, np.uint8)
        if exclude is not None:
            mask[exclude > 0] = 0
        for x, y in kept.reshape(-1, 2):  # no new corner on top of a followed one
            cv2.circle(mask, (int(x), int(y)), 4, 0, -1)
        want = self.max_points - len(kept)
        found = cv2.goodFeaturesToTrack(grey, maxCorners=max(want, 1), qualityLevel=0.01, minDistance=6,
                                        mask=mask, blockSize=3)
        if found is None:
            return kept.reshape(-1, 1, 2)
        return np.concatenate([kept.reshape(-1, 1, 2), found.astype(np.float32).reshape(-1, 1, 2)], axis=0)

    def _to_map(self, affine_w: np.ndarray, image_hw: tuple[int, int], map_hw: tuple[int, int]) -> np.ndarray:
        """Working-grid transform (OpenCV: pixel centres at integers) -> map-grid transform (centres at +0.5)."""
        # A working point p (OpenCV convention) is image pixel stride*p, whose centre lies at
        # stride*p + 0.5 in continuous image coordinates; the map grid rescales those.
        fx, fy = map_hw[1] / image_hw[1], map_hw[0] / image_hw[0]
        d = np.diag([self._stride * fx, self._stride * fy])
        b = np.array([0.5 * fx, 0.5 * fy])
        m = affine_w[:, :2].astype(np.float64)
        t = affine_w[:, 2].astype(np.float64)
        d_inv = np.diag(1.0 / np.diag(d))
        m_map = d @ m @ d_inv
        t_map = d @ t + b - m_map @ b
        return np.concatenate([m_map, t_map[:, None]], axis=1)
