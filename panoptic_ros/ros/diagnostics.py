"""Counters, latency percentiles and the /diagnostics messages built from them.

One DiagnosticStatus per camera (input rate, latency p50/p99, drops, decode
errors by kind, CameraInfo problems, clock jumps, QoS incompatibilities) and
one for the model (id, device, precision, memory, batches). A status is WARN
while any error counter grew since the previous message, so a monitor sees
the problem while it happens and the totals stay readable in the values.
"""
from __future__ import annotations

import os
import resource
import threading
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from panoptic_ros.pipeline import StageTimings

# Counter keys; decode_errors.<kind> and qos_incompatible.<policy> carry a suffix.
RECEIVED, PROCESSED, DROPPED, SKIPPED_DISABLED = "frames_received", "frames_processed", "frames_dropped", \
    "frames_skipped_disabled"
DECODE_ERRORS, QOS_INCOMPATIBLE = "decode_errors", "qos_incompatible"
CAMERA_INFO_INVALID, CAMERA_INFO_UNMATCHED, CAMERA_INFO_SIZE = "camera_info_invalid", "camera_info_unmatched", \
    "camera_info_size_mismatch"
CAMERA_INFO_RECEIVED = "camera_info_received"
CLOCK_JUMPS, PROCESSING_ERRORS, CALLBACK_ERRORS = "clock_jumps", "processing_errors", "callback_errors"
ERROR_KEYS = (DECODE_ERRORS, QOS_INCOMPATIBLE, CAMERA_INFO_INVALID, CAMERA_INFO_UNMATCHED, CAMERA_INFO_SIZE,
              CLOCK_JUMPS, PROCESSING_ERRORS, CALLBACK_ERRORS)
# Model status: device faults during inference (pipeline.InferenceFault kinds and actions).
FAULT_KEYS = {"out_of_memory": "inference_out_of_memory", "device_error": "inference_device_errors",
              "split": "batch_splits", "fallback": "device_fallbacks", "gave_up": "frames_failed_on_device"}
LATENCY_WINDOW = 1000  # frames the percentiles are taken over
STAGES = ("decode", "preprocess", "network", "fusion", "tracking", "encode")  # StageTimings fields


class CameraStats:
    """Thread-safe counters and a latency window for one camera."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._latency_s: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.num_objects = 0

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n
            if "." in key:
                self._counts[key.split(".", 1)[0]] += n  # the total of a kind-split counter

    def record_latency(self, seconds: float) -> None:
        with self._lock:
            self._latency_s.append(seconds)

    def snapshot(self) -> tuple[Counter[str], np.ndarray]:
        with self._lock:
            return Counter(self._counts), np.array(self._latency_s, dtype=np.float64)

    def __getitem__(self, key: str) -> int:
        with self._lock:
            return self._counts[key]


@dataclass
class _Previous:
    time_s: float
    counts: Counter


def _kv(key: str, value: object) -> KeyValue:
    if isinstance(value, float):
        value = f"{value:.3f}"
    return KeyValue(key=key, value=str(value))


@dataclass
class ModelFaults:
    """Device faults so far: counts by pipeline.InferenceFault kind and action, the latest one described, and
    the device the model was configured on (a model running elsewhere has fallen back)."""

    counts: Counter
    last: str = ""
    configured_device: str = ""


class DiagnosticsBuilder:
    """Turns the stats into DiagnosticArray messages; remembers the last totals for rates and WARN levels."""

    def __init__(self, node_name: str) -> None:
        self.node_name = node_name
        self._previous: dict[str, _Previous] = {}
        self._previous_faults: Counter = Counter()

    def camera_status(self, camera: str, stats: CameraStats, now_s: float, enabled: bool) -> DiagnosticStatus:
        counts, latency = stats.snapshot()
        prev = self._previous.get(camera)
        self._previous[camera] = _Previous(now_s, counts)
        dt = (now_s - prev.time_s) if prev else 0.0
        prev_counts = prev.counts if prev else Counter()
        rate_in = (counts[RECEIVED] - prev_counts[RECEIVED]) / dt if dt > 0 else 0.0
        rate_out = (counts[PROCESSED] - prev_counts[PROCESSED]) / dt if dt > 0 else 0.0
        grew = sorted(k for k in counts if k.split(".")[0] in ERROR_KEYS and counts[k] > prev_counts[k])
        values = [_kv("enabled", str(enabled).lower()), _kv("input_rate_hz", rate_in), _kv("output_rate_hz", rate_out),
                  _kv("latency_p50_ms", _percentile_ms(latency, 50)),
                  _kv("latency_p99_ms", _percentile_ms(latency, 99)), _kv("objects", stats.num_objects)]
        for key in (RECEIVED, PROCESSED, DROPPED, SKIPPED_DISABLED, CAMERA_INFO_RECEIVED) + ERROR_KEYS:
            values.append(_kv(key, counts[key]))
        values += [_kv(k, counts[k]) for k in sorted(counts) if "." in k]
        if grew:
            level, message = DiagnosticStatus.WARN, "new problems: " + ", ".join(grew)
        elif not enabled:
            level, message = DiagnosticStatus.OK, "inference disabled"
        elif counts[RECEIVED] == 0:
            level, message = DiagnosticStatus.OK, "waiting for images"
        else:
            level, message = DiagnosticStatus.OK, "ok"
        return DiagnosticStatus(level=level, name=f"{self.node_name}: camera {camera}", message=message,
                                hardware_id=camera, values=values)

    def model_status(self, model_id: str, device: str, precision: str, batches: int, frames: int,
                     stages: list[StageTimings], faults: ModelFaults | None = None) -> DiagnosticStatus:
        """``stages``: the per-frame stage timings of recent frames (their medians are reported).

        WARN while device faults keep coming (any fault counter grew since the previous message) and for
        as long as the model runs on its fallback device; the message then says what happened.
        """
        rss, peak = process_memory_mb()
        faults = faults or ModelFaults(Counter())
        values = [_kv("model_id", model_id), _kv("device", device), _kv("precision", precision),
                  _kv("batches", batches), _kv("mean_batch_size", frames / batches if batches else 0.0)]
        for stage in STAGES:
            ms = np.array([getattr(t, f"{stage}_ms") for t in stages], dtype=np.float64)
            values.append(_kv(f"{stage}_ms_p50", float(np.median(ms)) if ms.size else 0.0))
        values += [_kv("rss_mb", rss), _kv("peak_rss_mb", peak)]
        values += [_kv(k, v) for k, v in cuda_memory_mb(device).items()]
        values += [_kv(key, faults.counts[fault]) for fault, key in FAULT_KEYS.items()]
        if faults.last:
            values.append(_kv("last_fault", faults.last))
        prev = self._previous_faults
        self._previous_faults = Counter(faults.counts)
        grew = any(faults.counts[k] > prev[k] for k in faults.counts)
        fell_back = bool(faults.configured_device) and device != faults.configured_device
        level, message = DiagnosticStatus.OK, model_id
        if fell_back:
            level, message = DiagnosticStatus.WARN, (f"{model_id}: running on fallback device {device} after "
                                                     f"inference failed on {faults.configured_device}")
        elif grew:
            level, message = DiagnosticStatus.WARN, f"{model_id}: {faults.last}"
        return DiagnosticStatus(level=level, name=f"{self.node_name}: model", message=message,
                                hardware_id=device, values=values)

    @staticmethod
    def array(stamp, statuses: list[DiagnosticStatus]) -> DiagnosticArray:
        msg = DiagnosticArray(status=statuses)
        msg.header.stamp = stamp
        return msg


def _percentile_ms(values_s: np.ndarray, q: float) -> float:
    return float(np.percentile(values_s, q) * 1e3) if values_s.size else 0.0


def process_memory_mb() -> tuple[float, float]:
    """(resident, peak resident) memory of this process in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    try:
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        rss = peak
    return rss, peak


def cuda_memory_mb(device: str) -> dict[str, float]:
    if not device.startswith("cuda"):
        return {}
    import torch

    return {"cuda_allocated_mb": torch.cuda.memory_allocated(device) / 2**20,
            "cuda_reserved_mb": torch.cuda.memory_reserved(device) / 2**20,
            "cuda_peak_allocated_mb": torch.cuda.max_memory_allocated(device) / 2**20}
