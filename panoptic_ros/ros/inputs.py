"""Per-camera input state shared by the subscription callbacks and the worker thread.

* :class:`FrameSlot`: a one-frame mailbox where the newest frame wins. The
  callback puts, the worker takes; a frame replaced before the worker took
  it is a drop, counted exactly. Stale frames are never queued.
* :class:`CameraInfoHistory`: the last CameraInfo messages of a camera, so
  that an image is matched with the calibration of its own stamp (within a
  tolerance) rather than whatever arrived last (no message_filters in rclpy).

Plain Python (threading only), so the node's bookkeeping is testable without
a ROS graph.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from panoptic_ros.camera import CameraIntrinsics


@dataclass(frozen=True)
class PendingFrame:
    msg: Any  # sensor_msgs/Image or sensor_msgs/CompressedImage, already cheaply checked
    received_s: float  # time.monotonic() when the callback got it
    stamp_s: float  # header stamp, seconds


class FrameSlot:
    """Newest-wins mailbox for one camera; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frame: PendingFrame | None = None

    def put(self, frame: PendingFrame) -> bool:
        """Store ``frame``; True when it replaced a frame nobody had taken (that one is dropped)."""
        with self._lock:
            dropped = self._frame is not None
            self._frame = frame
        return dropped

    def take(self) -> PendingFrame | None:
        with self._lock:
            frame, self._frame = self._frame, None
        return frame

    def clear(self) -> bool:
        """Discard the waiting frame; True if there was one."""
        return self.take() is not None

    @property
    def has_frame(self) -> bool:
        return self._frame is not None


class CameraInfoHistory:
    """The last ``size`` calibrations of one camera by stamp; thread-safe."""

    def __init__(self, size: int = 64) -> None:
        self._lock = threading.Lock()
        self._items: deque[tuple[float, CameraIntrinsics]] = deque(maxlen=size)

    def add(self, stamp_s: float, intrinsics: CameraIntrinsics) -> None:
        with self._lock:
            self._items.append((stamp_s, intrinsics))

    def match(self, stamp_s: float, tolerance_s: float) -> CameraIntrinsics | None:
        """The calibration whose stamp is nearest to ``stamp_s``, if within ``tolerance_s``."""
        with self._lock:
            items = list(self._items)
        best, best_gap = None, float("inf")
        for stamp, intrinsics in items:
            gap = abs(stamp - stamp_s)
            if gap < best_gap:
                best, best_gap = intrinsics, gap
        return best if best_gap <= tolerance_s else None

    def __len__(self) -> int:
        return len(self._items)
