"""A constant-velocity Kalman filter on boxes, batched over tracks.

State per track: ``mean_t8`` rows ``[cx, cy, w, h, vx, vy, vw, vh]`` -- box
centre and size in pixels, their rates in pixels per **second** (not per
frame), so that frames arriving at uneven intervals, or dropped, are
predicted correctly from their stamps.

The four axes (cx, cy, w, h) are independent: with the diagonal noise that
ByteTrack and OC-SORT use and a measurement of all four, the 8x8 covariance
never couples them, so it is kept as four 2x2 blocks, ``cov_t43`` rows
``[var(position), cov(position, rate), var(rate)]`` per axis. Every step is
then a few element-wise array operations for the whole track table -- the
tracker's budget (about 2 ms for 50 objects) has no room for batches of
small matrix products. Only a camera rotation would couple x and y; its
inter-frame angle is tiny, and :func:`warp` drops that correlation.

The noise follows ByteTrack / BoT-SORT in scaling every standard deviation by
the box size (width for the x and w axes, height for y and h), so one setting
serves a distant pedestrian and a nearby bus. Process noise is the discrete
white-noise-acceleration model: acceleration (in box sizes per second
squared) integrated over the step ``dt``.
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


def _scale_t4(mean_t8: np.ndarray) -> np.ndarray:
    """(T, 4) length scale per axis: w for x and w, h for y and h."""
    wh = np.maximum(mean_t8[:, 2:4], _MIN_SIZE_PX)
    return np.concatenate([wh, wh], axis=1)


def initiate(boxes_cxcywh: np.ndarray, noise: MotionNoise = MotionNoise()) -> tuple[np.ndarray, np.ndarray]:
    """New tracks at rest from (T, 4) measurements -> ((T, 8) mean, (T, 4, 3) covariance)."""
    z = np.asarray(boxes_cxcywh, dtype=np.float64).reshape(-1, MEASURE_DIM)
    mean = np.zeros((z.shape[0], STATE_DIM))
    mean[:, :4] = z
    scale = _scale_t4(mean)
    cov = np.zeros((z.shape[0], 4, 3))
    cov[:, :, 0] = (noise.initial_position_std * scale) ** 2
    cov[:, :, 2] = (noise.initial_velocity_std_s * scale) ** 2
    return mean, cov


def predict(mean_t8: np.ndarray, cov_t43: np.ndarray, dt_s: float,
            noise: MotionNoise = MotionNoise()) -> tuple[np.ndarray, np.ndarray]:
    """Advance every track by ``dt_s`` seconds (new arrays; inputs untouched)."""
    if mean_t8.shape[0] == 0 or dt_s <= 0.0:
        return mean_t8.copy(), cov_t43.copy()
    mean = mean_t8.copy()
    mean[:, :4] += dt_s * mean_t8[:, 4:]
    np.maximum(mean[:, 2:4], _MIN_SIZE_PX, out=mean[:, 2:4])  # a size never shrinks through zero
    q = (_scale_t4(mean_t8) * np.array([noise.acceleration_std_s2, noise.acceleration_std_s2,
                                        noise.size_rate_std_s2, noise.size_rate_std_s2])) ** 2
    pp, pv, vv = cov_t43[:, :, 0], cov_t43[:, :, 1], cov_t43[:, :, 2]
    cov = np.empty_like(cov_t43)
    cov[:, :, 0] = pp + 2.0 * dt_s * pv + dt_s * dt_s * vv + q * (dt_s ** 4 / 4.0)
    cov[:, :, 1] = pv + dt_s * vv + q * (dt_s ** 3 / 2.0)
    cov[:, :, 2] = vv + q * (dt_s ** 2)
    return mean, cov


def update(mean_t8: np.ndarray, cov_t43: np.ndarray, z_t4: np.ndarray,
           noise: MotionNoise = MotionNoise()) -> tuple[np.ndarray, np.ndarray]:
    """Correct every track with its (T, 4) ``[cx, cy, w, h]`` measurement (new arrays)."""
    if mean_t8.shape[0] == 0:
        return mean_t8.copy(), cov_t43.copy()
    r = (noise.measurement_std * _scale_t4(mean_t8)) ** 2
    pp, pv, vv = cov_t43[:, :, 0], cov_t43[:, :, 1], cov_t43[:, :, 2]
    s = pp + r
    k_pos, k_vel = pp / s, pv / s
    innovation = np.asarray(z_t4, dtype=np.float64) - mean_t8[:, :4]
    mean = mean_t8.copy()
    mean[:, :4] += k_pos * innovation
    mean[:, 4:] += k_vel * innovation
    np.maximum(mean[:, 2:4], _MIN_SIZE_PX, out=mean[:, 2:4])
    cov = np.empty_like(cov_t43)
    cov[:, :, 0] = pp * (1.0 - k_pos)
    cov[:, :, 1] = pv * (1.0 - k_pos)
    cov[:, :, 2] = vv - k_vel * pv
    return mean, cov


def warp(mean_t8: np.ndarray, cov_t43: np.ndarray, affine_2x3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Move every track by a global image transform (camera motion), as BoT-SORT's GMC does.

    The centre goes through the full transform, the velocity through its
    linear part, and sizes and size rates scale by the transform's zoom. The
    velocity then describes the object's own motion in the new frame.
    """
    if mean_t8.shape[0] == 0:
        return mean_t8.copy(), cov_t43.copy()
    (m00, m01, tx), (m10, m11, ty) = np.asarray(affine_2x3, dtype=np.float64).tolist()
    s = abs(m00 * m11 - m01 * m10) ** 0.5
    mean = mean_t8.copy()
    x, y, vx, vy = mean_t8[:, 0], mean_t8[:, 1], mean_t8[:, 4], mean_t8[:, 5]
    mean[:, 0] = m00 * x + m01 * y + tx
    mean[:, 1] = m10 * x + m11 * y + ty
    mean[:, 4] = m00 * vx + m01 * vy
    mean[:, 5] = m10 * vx + m11 * vy
    mean[:, 2:4] *= s
    mean[:, 6:8] *= s
    # Variances of the x and y axes mix by the squared coefficients (their correlation is dropped).
    cov = cov_t43 * (s * s)
    cov[:, 0] = (m00 * m00) * cov_t43[:, 0] + (m01 * m01) * cov_t43[:, 1]
    cov[:, 1] = (m10 * m10) * cov_t43[:, 0] + (m11 * m11) * cov_t43[:, 1]
    return mean, cov


def boxes_xyxy(mean_t8: np.ndarray) -> np.ndarray:
    """(T, 4) ``[x_min, y_min, x_max, y_max]`` of the states' boxes."""
    half = 0.5 * mean_t8[:, 2:4]
    return np.concatenate([mean_t8[:, 0:2] - half, mean_t8[:, 0:2] + half], axis=1)


def xyxy_to_cxcywh(boxes_xyxy_n4: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes_xyxy_n4, dtype=np.float64).reshape(-1, 4)
    out = np.empty_like(b)
    out[:, 0:2] = 0.5 * (b[:, 0:2] + b[:, 2:4])
    out[:, 2:4] = b[:, 2:4] - b[:, 0:2]
    return out
