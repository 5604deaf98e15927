"""A constant-velocity Kalman filter on boxes, batched over tracks.

State per track: ``[cx, cy, w, h, vx, vy, vw, vh]`` -- box centre and size in
pixels, their rates in pixels per **second** (not per frame), so that frames
arriving at uneven intervals, or dropped, are predicted correctly from their
stamps. Every function works on a whole table at once: ``mean_t8`` (T, 8) and
``cov_t88`` (T, 8, 8), because the tracker's per-frame budget (about 2 ms for
50 objects) leaves no room for a Python loop of small matrix products.

The noise follows ByteTrack / BoT-SORT's idea of scaling every standard
deviation by the box size (width for x and w terms, height for y and h terms),
so one setting serves a distant pedestrian and a nearby bus. Process noise is
the discrete white-noise-acceleration model: acceleration (in box sizes per
second squared) integrated over the step ``dt``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STATE_DIM = 8
MEASURE_DIM = 4
_MIN_SIZE_PX = 2.0  # floor for sizes used to scale noise and for predicted boxes


@dataclass(frozen=True)
class MotionNoise:
    """Noise settings of the box model, each relative to the box size."""

    measurement_std: float = 0.05  # detector jitter of centre and size, fraction of the size
    acceleration_std_s2: float = 2.0  # unmodelled centre acceleration, sizes / s^2
    size_rate_std_s2: float = 0.5  # unmodelled change of the size rate, sizes / s^2
    initial_position_std: float = 0.1  # first-sighting uncertainty of centre and size, sizes
    initial_velocity_std_s: float = 1.0  # first-sighting uncertainty of the velocity, sizes / s


def _sizes_t4(mean_t8: np.ndarray) -> np.ndarray:
    """(T, 4) scale per measured axis: w for x and w, h for y and h."""
    w = np.maximum(mean_t8[:, 2], _MIN_SIZE_PX)
    h = np.maximum(mean_t8[:, 3], _MIN_SIZE_PX)
    return np.stack([w, h, w, h], axis=1)


def initiate(boxes_cxcywh: np.ndarray, noise: MotionNoise = MotionNoise()) -> tuple[np.ndarray, np.ndarray]:
    """New tracks at rest from (T, 4) measurements -> ((T, 8) mean, (T, 8, 8) covariance)."""
    z = np.asarray(boxes_cxcywh, dtype=np.float64).reshape(-1, MEASURE_DIM)
    t = z.shape[0]
    mean = np.zeros((t, STATE_DIM))
    mean[:, :4] = z
    scale = _sizes_t4(mean)
    std = np.concatenate([noise.initial_position_std * scale, noise.initial_velocity_std_s * scale], axis=1)
    cov = np.zeros((t, STATE_DIM, STATE_DIM))
    idx = np.arange(STATE_DIM)
    cov[:, idx, idx] = std ** 2
    return mean, cov


def predict(mean_t8: np.ndarray, cov_t88: np.ndarray, dt_s: float,
            noise: MotionNoise = MotionNoise()) -> tuple[np.ndarray, np.ndarray]:
    """Advance every track by ``dt_s`` seconds (new arrays; inputs untouched)."""
    t = mean_t8.shape[0]
    if t == 0 or dt_s <= 0.0:
        return mean_t8.copy(), cov_t88.copy()
    f = np.eye(STATE_DIM)
    f[:4, 4:] = np.eye(4) * dt_s
    mean = mean_t8 @ f.T
    cov = f @ cov_t88 @ f.T
    scale = _sizes_t4(mean_t8)
    accel = scale * np.array([noise.acceleration_std_s2, noise.acceleration_std_s2,
                              noise.size_rate_std_s2, noise.size_rate_std_s2])
    q = accel ** 2  # (T, 4)
    i = np.arange(4)
    cov[:, i, i] += q * (dt_s ** 4 / 4.0)
    cov[:, i, i + 4] += q * (dt_s ** 3 / 2.0)
    cov[:, i + 4, i] += q * (dt_s ** 3 / 2.0)
    cov[:, i + 4, i + 4] += q * (dt_s ** 2)
    # A size never shrinks through zero, whatever the rate said.
    np.maximum(mean[:, 2:4], _MIN_SIZE_PX, out=mean[:, 2:4])
    return mean, cov


def update(mean_t8: np.ndarray, cov_t88: np.ndarray, z_t4: np.ndarray,
           noise: MotionNoise = MotionNoise()) -> tuple[np.ndarray, np.ndarray]:
    """Correct every track with its (T, 4) ``[cx, cy, w, h]`` measurement (new arrays)."""
    if mean_t8.shape[0] == 0:
        return mean_t8.copy(), cov_t88.copy()
    z = np.asarray(z_t4, dtype=np.float64)
    r = (noise.measurement_std * _sizes_t4(mean_t8)) ** 2  # (T, 4)
    s = cov_t88[:, :4, :4].copy()
    i = np.arange(4)
    s[:, i, i] += r
    ph = cov_t88[:, :, :4]  # P H^T, (T, 8, 4)
    # K = P H^T S^-1; S is symmetric, so K^T = S^-1 (H P).
    gain = np.linalg.solve(s, np.transpose(ph, (0, 2, 1))).transpose(0, 2, 1)  # (T, 8, 4)
    innovation = z - mean_t8[:, :4]
    mean = mean_t8 + np.einsum("tij,tj->ti", gain, innovation)
    cov = cov_t88 - gain @ cov_t88[:, :4, :]
    cov = 0.5 * (cov + np.transpose(cov, (0, 2, 1)))  # keep it symmetric against round-off
    np.maximum(mean[:, 2:4], _MIN_SIZE_PX, out=mean[:, 2:4])
    return mean, cov


def warp(mean_t8: np.ndarray, cov_t88: np.ndarray, affine_2x3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Move every track by a global image transform (camera motion), as BoT-SORT's GMC does.

    The centre goes through the full transform, the velocity through its
    linear part, and sizes and size rates scale by the transform's zoom. The
    velocity then describes the object's own motion in the new frame.
    """
    if mean_t8.shape[0] == 0:
        return mean_t8.copy(), cov_t88.copy()
    m = np.asarray(affine_2x3, dtype=np.float64)[:, :2]
    t = np.asarray(affine_2x3, dtype=np.float64)[:, 2]
    s = float(np.sqrt(abs(np.linalg.det(m))))
    mean = mean_t8.copy()
    mean[:, 0:2] = mean_t8[:, 0:2] @ m.T + t
    mean[:, 4:6] = mean_t8[:, 4:6] @ m.T
    mean[:, 2:4] *= s
    mean[:, 6:8] *= s
    j = np.zeros((STATE_DIM, STATE_DIM))
    j[0:2, 0:2] = m
    j[2:4, 2:4] = np.eye(2) * s
    j[4:6, 4:6] = m
    j[6:8, 6:8] = np.eye(2) * s
    cov = j @ cov_t88 @ j.T
    return mean, cov


def boxes_xyxy(mean_t8: np.ndarray) -> np.ndarray:
    """(T, 4) ``[x_min, y_min, x_max, y_max]`` of the states' boxes."""
    half = 0.5 * mean_t8[:, 2:4]
    return np.concatenate([mean_t8[:, 0:2] - half, mean_t8[:, 0:2] + half], axis=1)


def xyxy_to_cxcywh(boxes_xyxy_n4: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes_xyxy_n4, dtype=np.float64).reshape(-1, 4)
    return np.stack([(b[:, 0] + b[:, 2]) * 0.5, (b[:, 1] + b[:, 3]) * 0.5,
                     b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)
