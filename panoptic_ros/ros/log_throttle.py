"""Throttled warnings keyed by (camera, kind): a flood of bad frames makes one line per period, not thousands.

rclpy's own ``throttle_duration_sec`` throttles per call site, so two
different problems logged from one place would hide each other; here each
key has its own clock and the next line says how many were suppressed.
"""
from __future__ import annotations

import threading
import time
from typing import Callable


class LogThrottle:
    def __init__(self, period_s: float, log: Callable[[str], None], clock: Callable[[], float] = time.monotonic):
        self.period_s = period_s
        self._log = log
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[tuple[str, ...], float] = {}
        self._suppressed: dict[tuple[str, ...], int] = {}

    def __call__(self, key: tuple[str, ...], message: str) -> bool:
        """Log ``message`` unless ``key`` was logged less than period_s ago; True when it was logged."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.period_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            message += f" ({suppressed} more like this in the last {now - last:.1f} s)"  # type: ignore[operator]
        self._log(message)
        return True
