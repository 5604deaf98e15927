"""Pinhole camera with a known mounting over a flat ground plane.

Conventions: the camera optical frame has x right, y down, z forward (ROS
REP 103 ``*_optical_frame``). The camera sits ``height_m`` above a flat
ground and is pitched down by ``pitch_rad`` (positive looks down), with no
roll. Positions are in metres in the optical frame.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CameraIntrinsics:
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    def __post_init__(self) -> None:
        values = (self.fx, self.fy, self.cx, self.cy)
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"camera intrinsics must be finite, got fx={self.fx} fy={self.fy} cx={self.cx} cy={self.cy}")
        if self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"focal lengths must be positive, got fx={self.fx} fy={self.fy}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")

    @property
    def k(self) -> np.ndarray:
        """3x3 intrinsic matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def scaled(self, width: int, height: int) -> "CameraIntrinsics":
        """The same camera seen at another resolution (pixel-centre convention)."""
        sx, sy = width / self.width, height / self.height
        return CameraIntrinsics(width, height, self.fx * sx, self.fy * sy,
                                (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5)

    @classmethod
    def from_k(cls, k: list[float] | np.ndarray, width: int, height: int) -> "CameraIntrinsics":
        """From a row-major 3x3 K (as in sensor_msgs/CameraInfo.k)."""
        m = np.asarray(k, dtype=np.float64).reshape(3, 3)
        return cls(int(width), int(height), float(m[0, 0]), float(m[1, 1]), float(m[0, 2]), float(m[1, 2]))


@dataclass(frozen=True)
class CameraMounting:
    height_m: float  # optical centre above the ground plane
    pitch_rad: float  # downward pitch, positive looks down

    def __post_init__(self) -> None:
        if not (math.isfinite(self.height_m) and self.height_m > 0):
            raise ValueError(f"camera height must be a positive number of metres, got {self.height_m}")
        if not (math.isfinite(self.pitch_rad) and abs(self.pitch_rad) < math.pi / 2):
            raise ValueError(f"camera pitch must lie in (-pi/2, pi/2) radians, got {self.pitch_rad}")

    def rotation_level_to_camera(self) -> np.ndarray:
        """R with p_camera = R @ p_level; the level frame shares x and has y straight down."""
        c, s = math.cos(self.pitch_rad), math.sin(self.pitch_rad)
        return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


@dataclass(frozen=True)
class CameraModel:
    intrinsics: CameraIntrinsics
    mounting: CameraMounting

    def ground_points(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Pixels (u, v) -> (N, 3) ground-plane points in the optical frame, metres.

        Pixels on or above the horizon have no ground intersection and give NaN.
        """
        k = self.intrinsics
        u = np.asarray(u, dtype=np.float64).ravel()
        v = np.asarray(v, dtype=np.float64).ravel()
        rays = np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u)], axis=1)
        c, s = math.cos(self.mounting.pitch_rad), math.sin(self.mounting.pitch_rad)
        down = c * rays[:, 1] + s * rays[:, 2]  # y of the ray in the level frame
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(down > 1e-9, self.mounting.height_m / down, np.nan)
        return rays * t[:, None]

    def project(self, points_cam: np.ndarray) -> np.ndarray:
        """(N, 3) optical-frame points -> (N, 2) pixels; points behind the camera give NaN."""
        p = np.asarray(points_cam, dtype=np.float64).reshape(-1, 3)
        k = self.intrinsics
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(p[:, 2] > 1e-9, p[:, 2], np.nan)
            return np.stack([k.fx * p[:, 0] / z + k.cx, k.fy * p[:, 1] / z + k.cy], axis=1)

    def level_to_camera(self, points_level: np.ndarray) -> np.ndarray:
        """(N, 3) points in the level frame (origin at the optical centre) -> optical frame."""
        return np.asarray(points_level, dtype=np.float64) @ self.mounting.rotation_level_to_camera().T

    def horizon_v(self) -> float:
        """Image row of the horizon (may lie outside the image)."""
        k = self.intrinsics
        return k.cy - k.fy * math.tan(self.mounting.pitch_rad)
