"""Camera motion compensation: the global image transform between consecutive frames.

When the camera pans or shakes, every object jumps in the image by the same
transform; a motion model that ignores this loses fast pans. Like BoT-SORT's
GMC ("sparseOptFlow"), background corners are followed with pyramidal
Lucas-Kanade flow and a similarity transform (rotation, zoom, shift) is fitted
with RANSAC. To stay cheap (well under a millisecond at 512x1024 on one core):

- the image is sub-sampled (nearest pixel, no filtering pass over the full
  frame) to about ``working_width_px``, and followed with a small window;
- points are *kept* from frame to frame (a KLT tracker) and corners are only
  detected again when too few survive, instead of on every frame;
- points on things (pixels of detected instances, which move on their own) are
  excluded, both when detecting and after following them.
"""
from __future__ import annotations

import cv2
import numpy as np

from panoptic_ros.tracking.types import CameraMotion

# A 9x9 window over 4 pyramid levels follows shifts of some 30 working pixels (about 120 px per
# frame at 1024 wide) at under a third of the cost of OpenCV's customary 21x21.
_LK_WINDOW = (9, 9)
_LK_LEVELS = 3
_LK_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 10, 0.03)


def check_image(image: np.ndarray) -> None:
    """Raise ValueError unless ``image`` is a uint8 (H, W) or (H, W, 1|3|4) array."""
    if (not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim not in (2, 3)
            or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)) or min(image.shape[:2]) < 1):
        raise ValueError(f"camera motion needs a uint8 (H, W) or (H, W, 1|3|4) image, got "
                         f"{getattr(image, 'dtype', type(image).__name__)} {getattr(image, 'shape', '')}; "
                         f"pass the frame as decoded, or image=None to skip camera motion")


class CameraMotionEstimator:
    """Estimates, frame after frame, the transform that maps the previous frame onto the current one.

    One instance per camera: it keeps the previous frame's sub-sampled grey
    image and its followed points.
    """

    def __init__(self, working_width_px: int = 256, max_points: int = 100, min_inliers: int = 10,
                 ransac_threshold_px: float = 1.0) -> None:
        if working_width_px < 16:
            raise ValueError(f"working_width_px must be >= 16, got {working_width_px}")
        self.working_width_px = int(working_width_px)
        self.max_points = int(max_points)
        self.min_inliers = int(min_inliers)
        self.ransac_threshold_px = float(ransac_threshold_px)
        self._prev_grey: np.ndarray | None = None
        self._prev_points: np.ndarray | None = None  # float32 (P, 1, 2), working pixels
        self._scale_xy = (1.0, 1.0)  # image pixels per working pixel

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
            exclude = np.ascontiguousarray(thing_mask, dtype=np.uint8)
            if exclude.shape != grey.shape:
                exclude = cv2.resize(exclude, (ww, wh), interpolation=cv2.INTER_NEAREST)
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
            points = self._detect_corners(grey, exclude)
        self._prev_grey = grey
        self._prev_points = points.astype(np.float32).reshape(-1, 1, 2)
        return motion

    # ---------------------------------------------------------------- internals

    def _working_grey(self, image: np.ndarray) -> np.ndarray:
        check_image(image)
        h, w = image.shape[:2]
        stride = max(1, int(round(w / self.working_width_px)))
        size = (max(1, int(round(w / stride))), max(1, int(round(h / stride))))
        self._scale_xy = (w / size[0], h / size[1])
        # Nearest-pixel resize: one read per output pixel (a numpy strided copy is 5x slower on colour).
        small = cv2.resize(image, size, interpolation=cv2.INTER_NEAREST) if size != (w, h) else image
        if small.ndim == 3:
            if small.shape[2] == 1:
                small = small[:, :, 0]
            else:
                # Channel order does not matter for following corners: RGB or BGR, either is fine.
                small = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY if small.shape[2] == 3 else cv2.COLOR_RGBA2GRAY)
        return np.ascontiguousarray(small)

    def _detect_corners(self, grey: np.ndarray, exclude: np.ndarray | None) -> np.ndarray:
        """A fresh set of background corners (float32 (P, 1, 2), working pixels).

        Corners are looked for at half the working resolution (a quarter of
        the cost); LK then follows them at full working resolution.
        """
        half = np.ascontiguousarray(grey[::2, ::2]) if min(grey.shape) >= 32 else grey
        factor = grey.shape[1] / half.shape[1]
        mask = None
        if exclude is not None:
            mask = np.where(exclude[::2, ::2] > 0, 0, 255).astype(np.uint8) if half is not grey else \
                np.where(exclude > 0, 0, 255).astype(np.uint8)
        found = cv2.goodFeaturesToTrack(half, maxCorners=self.max_points, qualityLevel=0.01, minDistance=3,
                                        mask=mask, blockSize=3)
        if found is None:
            return np.zeros((0, 1, 2), np.float32)
        return (found.reshape(-1, 1, 2) * factor).astype(np.float32)

    def _to_map(self, affine_w: np.ndarray, image_hw: tuple[int, int], map_hw: tuple[int, int]) -> np.ndarray:
        """Working-grid transform (OpenCV: pixel centres at integers) -> map-grid transform (centres at +0.5)."""
        # A working point p (OpenCV convention) is image pixel scale*p (nearest resize), whose centre
        # lies at scale*p + 0.5 in continuous image coordinates; the map grid rescales those:
        # x_map = d * p + b per axis, so A_map = [D M D^-1 | D t + b - D M D^-1 b].
        fx, fy = map_hw[1] / image_hw[1], map_hw[0] / image_hw[0]
        dx, dy = self._scale_xy[0] * fx, self._scale_xy[1] * fy
        bx, by = 0.5 * fx, 0.5 * fy
        (m00, m01, tx), (m10, m11, ty) = affine_w.tolist()
        n00, n01, n10, n11 = m00, m01 * dx / dy, m10 * dy / dx, m11
        return np.array([[n00, n01, dx * tx + bx - (n00 * bx + n01 * by)],
                         [n10, n11, dy * ty + by - (n10 * bx + n11 * by)]])
