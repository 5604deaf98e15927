"""The pipeline: camera frames in, tracked panoptic outputs out; what the node and replay both run.

One :class:`Pipeline` serves every camera of a node with one model: the
newest frame of each camera goes through the predictor as one batch, then
each camera's own :class:`~panoptic_ros.tracking.tracker.Tracker` (own id
counter) turns its panoptic result into tracks. Each output carries the
lossless panoptic image (``class_id * LABEL_DIVISOR + track_id``), the
semantic image, the tracked objects with their class names and, when the
camera's intrinsics and mounting are known, a ground-plane position per
object, and the time each stage took. The colour overlay is rendered only
on demand (:meth:`Pipeline.overlay`), because nobody may be looking.

Pure core: no ROS here. Time is the frames' stamps (tracking velocities
and ages follow the source clock, simulated time included), never the wall
clock.
"""
from __future__ import annotations

import math
import os
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from panoptic_ros.camera import CameraIntrinsics, CameraModel, CameraMounting
from panoptic_ros.classes import ClassTable
from panoptic_ros.overlay import OverlayLabel, render_overlay
from panoptic_ros.panoptic import PanopticResult, encode_panoptic
from panoptic_ros.params import CameraMountParams, ModelParams, NodeParams, TrackerParams
from panoptic_ros.tracking.tracker import Tracker
from panoptic_ros.tracking.types import TrackedFrame, TrackedObject, TrackState

DEMO_MODEL_FILE = "demo_lite0_256x512.safetensors"
PACKAGE_NAME = "panoptic_ros"
MIN_IMAGE_SIDE_PX = 32
"""Smallest image height and width the pipeline takes: the network's coarsest stride, and more than the
tracker's sampling grid needs (it samples every ``tracker.mask_stride``-th pixel from half a stride in;
a 2-pixel image at stride 4 leaves it nothing)."""


class PanopticPredictor(Protocol):
    """What the pipeline needs of a model (``panoptic_ros.model.predictor.Predictor`` is one)."""

    @property
    def classes(self) -> ClassTable: ...

    def predict(self, frames: Sequence[np.ndarray]) -> list[PanopticResult]: ...

    def with_fusion(self, **changes: float) -> None: ...


# --------------------------------------------------------------------------- inputs and outputs


@dataclass(frozen=True)
class CameraFrame:
    """One camera image ready for the model."""

    camera: str  # a camera name; each name gets its own tracker
    image_rgb: np.ndarray  # uint8 (H, W, 3)
    stamp_s: float  # source stamp (header.stamp), seconds; tracking runs on these
    intrinsics: CameraIntrinsics | None = None  # the CameraInfo matched to this image, if any
    decode_ms: float = 0.0  # time the caller spent decoding the message, reported with the stage timings


@dataclass
class ObjectEstimate:
    """A tracked object with what the pipeline adds: its class name and ground position."""

    track: TrackedObject
    label: str  # class name from the model's class table
    position_m: np.ndarray | None  # float64 (3,) ground contact point, optical frame, metres; None if unknown

    @property
    def distance_m(self) -> float | None:
        return None if self.position_m is None else float(np.linalg.norm(self.position_m))


@dataclass
class StageTimings:
    """Milliseconds per stage for one frame (batched stages are split evenly over the batch)."""

    decode_ms: float = 0.0
    preprocess_ms: float = 0.0
    network_ms: float = 0.0
    fusion_ms: float = 0.0
    tracking_ms: float = 0.0
    encode_ms: float = 0.0

    @property
    def total_ms(self) -> float:
        return (self.decode_ms + self.preprocess_ms + self.network_ms + self.fusion_ms + self.tracking_ms
                + self.encode_ms)


@dataclass
class FrameOutput:
    """Everything one frame produced. Pixel arrays are at the input image's size."""

    camera: str
    frame_index: int  # processed frames of this camera before this one
    stamp_s: float
    image_rgb: np.ndarray  # the input, kept for the on-demand overlay
    panoptic: np.ndarray  # int32 (H, W): class_id * LABEL_DIVISOR + track_id (0 for stuff, void, untracked)
    semantic: np.ndarray  # uint8 (H, W): class ids, VOID (255) where no class
    objects: list[ObjectEstimate]  # confirmed tracks, NEW / TRACKED / OCCLUDED, by track id
    tracked: TrackedFrame
    result: PanopticResult
    camera_model: CameraModel | None  # the geometry positions came from (None: no positions)
    timings: StageTimings = field(default_factory=StageTimings)


@dataclass(frozen=True)
class FrameFailure:
    """A frame that could not be inferred even alone, after every recovery (see :meth:`Pipeline.process_each`)."""

    frame: CameraFrame
    error: BaseException


class InferenceError(RuntimeError):
    """Raised by :meth:`Pipeline.process` when frames failed on the device after every recovery; the cause is
    the device's error."""


# --------------------------------------------------------------------------- device faults

OUT_OF_MEMORY, DEVICE_ERROR = "out_of_memory", "device_error"
SPLIT, FALLBACK, GAVE_UP = "split", "fallback", "gave_up"
# What accelerator runtimes say when the device, not our code or the input, failed.
_DEVICE_ERROR_MARKERS = ("CUDA error", "CUDA out of memory", "device-side assert", "CUBLAS_STATUS", "CUDNN_STATUS",
                         "cuDNN error", "illegal memory access", "HIP error", "misaligned address",
                         "unspecified launch failure")


def classify_inference_error(exc: BaseException) -> str | None:
    """OUT_OF_MEMORY, DEVICE_ERROR, or None for anything else (a bug or bad input: never retried).

    By type name and message, so the core needs no torch import: ``torch.cuda.OutOfMemoryError`` (a
    RuntimeError), CPU allocation failures ("can't allocate memory"), and CUDA/cuBLAS/cuDNN runtime errors.
    """
    text = str(exc)
    if type(exc).__name__ == "OutOfMemoryError" or "out of memory" in text.lower() \
            or "can't allocate memory" in text:
        return OUT_OF_MEMORY
    if isinstance(exc, RuntimeError) and any(marker in text for marker in _DEVICE_ERROR_MARKERS):
        return DEVICE_ERROR
    return None


@dataclass(frozen=True)
class InferenceFault:
    """One failed model call on the device and what the pipeline did about it."""

    kind: str  # OUT_OF_MEMORY or DEVICE_ERROR
    device: str  # where the call failed
    batch_size: int  # frames in the failed call
    action: str  # SPLIT: retried in two halves; FALLBACK: model moved to fallback_device, retried; GAVE_UP
    message: str  # the error's first line

    def describe(self) -> str:
        what = {OUT_OF_MEMORY: "out of memory", DEVICE_ERROR: "device error"}[self.kind]
        did = {SPLIT: f"retrying the batch of {self.batch_size} in two halves",
               FALLBACK: "moved the model to the fallback device and retrying",
               GAVE_UP: f"{self.batch_size} frame(s) skipped (no fallback_device, or it failed too)"}[self.action]
        return f"inference on {self.device}: {what} ({self.message}); {did}"


# --------------------------------------------------------------------------- configuration helpers


def parse_mount_overrides(entries: Sequence[str]) -> dict[str, CameraMountParams]:
    """``['rear:1.2:5.0', ...]`` -> {camera: mounting}; ValueError names the bad entry and the format."""
    out: dict[str, CameraMountParams] = {}
    for entry in entries:
        parts = [p.strip() for p in str(entry).split(":")]
        try:
            if len(parts) != 3 or not parts[0]:
                raise ValueError
            height, pitch = float(parts[1]), float(parts[2])
        except ValueError:
            raise ValueError(f"mount.per_camera entry {entry!r} is not 'name:height_m:pitch_deg' "
                             "(e.g. 'rear:1.2:5.0')") from None
        if not (math.isfinite(height) and 0.0 <= height <= 100.0):
            raise ValueError(f"mount.per_camera entry {entry!r}: height must be 0..100 m, got {height}")
        if not (math.isfinite(pitch) and -89.0 <= pitch <= 89.0):
            raise ValueError(f"mount.per_camera entry {entry!r}: pitch must be -89..89 deg, got {pitch}")
        if parts[0] in out:
            raise ValueError(f"mount.per_camera names camera {parts[0]!r} twice")
        out[parts[0]] = CameraMountParams(height_m=height, pitch_deg=pitch, per_camera=[])
    return out


def default_model_path() -> Path:
    """Where the shipped demo model is: ``<checkout>/models/`` or ``<prefix>/share/panoptic_ros/models/``.

    The source checkout wins (a developer's tree); an installed package is
    found through AMENT_PREFIX_PATH (plain path search, no ROS import). When
    neither holds the file, the checkout path is returned so the error names
    a concrete place.
    """
    here = Path(__file__).resolve().parents[1] / "models" / DEMO_MODEL_FILE
    if here.is_file():
        return here
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        candidate = Path(prefix) / "share" / PACKAGE_NAME / "models" / DEMO_MODEL_FILE
        if candidate.is_file():
            return candidate
    return here


def resolve_model_path(path: str) -> Path:
    """``model.path``: empty means the shipped demo model; ``~`` is expanded."""
    return default_model_path() if not path.strip() else Path(path).expanduser()


def load_predictor(model: ModelParams) -> PanopticPredictor:
    """The predictor ``model.*`` describes; CheckpointError for a missing or bad file, ValueError for a bad device."""
    from panoptic_ros.model.predictor import FusionSettings, Predictor

    input_size = None
    if model.input_height or model.input_width:
        if not (model.input_height and model.input_width):
            raise ValueError("model.input_height and model.input_width must both be set (multiples of 32) "
                             f"or both be 0, got {model.input_height}x{model.input_width}")
        input_size = (model.input_height, model.input_width)
    return Predictor.from_file(
        resolve_model_path(model.path), device=model.device, precision=model.precision,
        fusion=FusionSettings(score_threshold=model.score_threshold, overlap_threshold=model.overlap_threshold,
                              min_stuff_area=model.min_stuff_area),
        max_detections=model.max_detections, rpn_post_nms_top_n=model.rpn_post_nms_top_n, input_size=input_size,
        dense_mode=model.dense_mode, fusion_mode=model.fusion_mode, detection_mode=model.detection_mode,
        test_time_flip=model.test_time_flip)


# --------------------------------------------------------------------------- the pipeline


@dataclass
class _CameraState:
    tracker: Tracker
    frames: int = 0
    geometry_key: tuple | None = None
    camera_model: CameraModel | None = None


class Pipeline:
    """Batched inference + per-camera tracking + encoding; one instance per node or replay.

    Not thread-safe: call :meth:`process` and :meth:`set_params` from one thread. With
    ``tracking_threads`` != 1 the cameras of one batch are tracked and encoded in a thread pool
    (trackers are per camera, so they share nothing; each camera's frames keep their order);
    :meth:`close` stops the pool.
    """

    FAULT_HISTORY = 100  # fault events kept for take_faults(); the counts are kept forever

    def __init__(self, predictor: PanopticPredictor, tracker: TrackerParams | None = None,
                 mount: CameraMountParams | None = None, max_batch: int = 6, fallback_device: str = "",
                 tracking_threads: int = 0) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if tracking_threads < 0:
            raise ValueError(f"tracking_threads must be >= 0, got {tracking_threads}")
        self.tracking_threads = int(tracking_threads)
        self._pool: ThreadPoolExecutor | None = None
        self.predictor = predictor
        self.max_batch = int(max_batch)
        self.fallback_device = fallback_device
        self.fault_counts: Counter[str] = Counter()  # "<kind>" and "<action>" totals
        self._faults: deque[InferenceFault] = deque(maxlen=self.FAULT_HISTORY)
        self._tracker_params = tracker if tracker is not None else TrackerParams()
        self._mount = mount if mount is not None else CameraMountParams()
        self._mount_overrides = parse_mount_overrides(self._mount.per_camera)
        self._cameras: dict[str, _CameraState] = {}
        self._names = list(predictor.classes.names)

    @classmethod
    def from_params(cls, params: NodeParams) -> "Pipeline":
        """Loads the model named by ``params.model`` (CheckpointError if it cannot be loaded)."""
        return cls(load_predictor(params.model), tracker=params.tracker, mount=params.mount,
                   max_batch=params.max_batch, fallback_device=params.model.fallback_device,
                   tracking_threads=params.tracking_threads)

    @property
    def classes(self) -> ClassTable:
        return self.predictor.classes

    @property
    def device(self) -> str:
        """Where the model runs now (after a fallback, the fallback device)."""
        return str(getattr(self.predictor, "device", "cpu"))

    def take_faults(self) -> list[InferenceFault]:
        """The fault events since the last call (at most FAULT_HISTORY), oldest first."""
        faults = list(self._faults)
        self._faults.clear()
        return faults

    @property
    def cameras(self) -> list[str]:
        """Cameras seen so far, in order of first appearance."""
        return list(self._cameras)

    def tracker(self, camera: str) -> Tracker:
        return self._state(camera).tracker

    def set_params(self, params: NodeParams) -> None:
        """Apply the run-time (dynamic) parameters: fusion thresholds, tracker thresholds, mountings.

        ValueError (naming the parameter) leaves everything unchanged.
        """
        overrides = parse_mount_overrides(params.mount.per_camera)
        for state in self._cameras.values():
            state.tracker.set_params(params.tracker)  # validates; identical for every camera
        self._tracker_params = params.tracker
        self._mount, self._mount_overrides = params.mount, overrides
        self.max_batch = params.max_batch
        m = params.model
        self.predictor.with_fusion(score_threshold=m.score_threshold, overlap_threshold=m.overlap_threshold,
                                   min_stuff_area=m.min_stuff_area)

    def mounting(self, camera: str) -> CameraMounting | None:
        """The camera's mounting from the parameters; None while its height is 0 (unknown)."""
        m = self._mount_overrides.get(camera, self._mount)
        if m.height_m <= 0:
            return None
        return CameraMounting(height_m=m.height_m, pitch_rad=math.radians(m.pitch_deg))

    def reset(self, camera: str | None = None) -> None:
        """Forget the tracks of one camera (or all); track ids are still never reused."""
        for name, state in self._cameras.items():
            if camera is None or name == camera:
                state.tracker.reset()

    def process(self, frames: Sequence[CameraFrame]) -> list[FrameOutput]:
        """Run frames (any cameras, in time order per camera) through the model in batches of max_batch.

        ValueError (before anything runs) for a frame that is not an (H, W, 3) uint8 image at least
        MIN_IMAGE_SIDE_PX on each side.
        """
        outputs = self.process_each(frames)
        failures = [o for o in outputs if isinstance(o, FrameFailure)]
        if failures:
            cameras = ", ".join(sorted({f.frame.camera for f in failures}))
            raise InferenceError(f"{len(failures)} of {len(frames)} frame(s) ({cameras}) failed on the device: "
                                 f"{failures[0].error!r}") from failures[0].error
        return outputs  # type: ignore[return-value]

    def process_each(self, frames: Sequence[CameraFrame]) -> list[FrameOutput | FrameFailure]:
        """Like :meth:`process`, but device failures cost only the frames they hit: one entry per frame.

        A model call that fails with out-of-memory or a device error (see
        :func:`classify_inference_error`) is retried in two halves, down to
        single frames; a single frame that still fails moves the model to
        ``fallback_device`` (once, for good: a GPU that failed this way is not
        trusted again) and is retried there; without one it becomes a
        :class:`FrameFailure`. Every step is an :class:`InferenceFault` (see
        :meth:`take_faults`). Any other exception propagates.
        """
        for f in frames:
            check_frame(f)
        outputs: list[FrameOutput | FrameFailure] = []
        for start in range(0, len(frames), self.max_batch):
            chunk = list(frames[start:start + self.max_batch])
            outputs += self.finish_batch(chunk, self._predict(chunk))
        return outputs

    def close(self) -> None:
        """Stop the tracking threads, if any (the pipeline still works afterwards, serially)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self.tracking_threads = 1

    def overlay(self, output: FrameOutput, alpha: float = 0.5, labels: bool = True) -> np.ndarray:
        """uint8 (H, W, 3) RGB: class colours over the image, object outlines, ``#id label`` tags."""
        tags = []
        if labels:
            for o in output.objects:
                if o.track.state != TrackState.OCCLUDED:
                    x, y = o.track.centroid_px
                    tags.append(OverlayLabel(f"{o.track.track_id} {o.label}", float(x), float(y)))
        return render_overlay(output.image_rgb, output.semantic, output.tracked.track_map,
                              self.classes.palette(), alpha, tags)

    def finish_batch(self, chunk: Sequence[CameraFrame],
                     results: Sequence[PanopticResult | FrameFailure]) -> list[FrameOutput | FrameFailure]:
        """The host half of :meth:`process_each` for results already computed: tracking and outputs.

        ``results[i]`` belongs to ``chunk[i]`` (a :class:`FrameFailure` passes
        through). The cameras of the batch are tracked in parallel threads
        unless ``tracking_threads`` is 1. ``tools/bench_host.py`` times this
        stage alone.
        """
        if len(results) != len(chunk):
            raise ValueError(f"finish_batch got {len(results)} results for {len(chunk)} frames")
        out: list[FrameOutput | FrameFailure | None] = list(results)
        by_camera: dict[str, list[int]] = {}
        for i, (frame, result) in enumerate(zip(chunk, results)):
            if not isinstance(result, FrameFailure):
                by_camera.setdefault(frame.camera, []).append(i)
                self._state(frame.camera)  # created here, not in the pool

        def finish(indices: list[int]) -> None:
            for i in indices:
                out[i] = self._finish(chunk[i], results[i])  # type: ignore[arg-type]

        if self.tracking_threads != 1 and len(by_camera) > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.tracking_threads or self.max_batch,
                                                thread_name_prefix="panoptic-tracking")
            list(self._pool.map(finish, by_camera.values()))  # re-raises the first error
        else:
            for indices in by_camera.values():
                finish(indices)
        return out  # type: ignore[return-value]

    # ------------------------------------------------------------------ internals

    def _predict(self, chunk: list[CameraFrame]) -> list[PanopticResult | FrameFailure]:
        try:
            results = self.predictor.predict([f.image_rgb for f in chunk])
        except Exception as exc:  # noqa: BLE001 - sorted below: device faults are recovered, the rest re-raised
            kind = classify_inference_error(exc)
            if kind is None:
                raise
            return self._recover(chunk, exc, kind)
        if len(results) != len(chunk):
            raise RuntimeError(f"the predictor returned {len(results)} results for {len(chunk)} frames")
        return list(results)

    def _recover(self, chunk: list[CameraFrame], exc: BaseException, kind: str) -> list[PanopticResult | FrameFailure]:
        device = self.device
        release = getattr(self.predictor, "release_cached_memory", None)
        if release is not None:
            release()  # what the failed call left cached; a smaller batch may fit now
        if len(chunk) > 1:
            self._fault(kind, device, len(chunk), SPLIT, exc)
            half = (len(chunk) + 1) // 2
            return self._predict(chunk[:half]) + self._predict(chunk[half:])
        move = getattr(self.predictor, "to_device", None)
        if self.fallback_device and move is not None and device != self.fallback_device:
            self._fault(kind, device, 1, FALLBACK, exc)
            try:
                move(self.fallback_device)
            except Exception as move_exc:  # noqa: BLE001 - a broken device may not even let the weights go
                self._fault(classify_inference_error(move_exc) or kind, device, 1, GAVE_UP, move_exc)
                return [FrameFailure(chunk[0], move_exc)]
            return self._predict(chunk)
        self._fault(kind, device, 1, GAVE_UP, exc)
        return [FrameFailure(chunk[0], exc)]

    def _fault(self, kind: str, device: str, batch_size: int, action: str, exc: BaseException) -> None:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        self._faults.append(InferenceFault(kind, device, batch_size, action, first_line))
        self.fault_counts[kind] += 1
        self.fault_counts[action] += 1

    def _state(self, camera: str) -> _CameraState:
        state = self._cameras.get(camera)
        if state is None:
            state = _CameraState(Tracker(self._tracker_params, class_table=self.classes))
            self._cameras[camera] = state
        return state

    def _camera_model(self, state: _CameraState, frame: CameraFrame) -> CameraModel | None:
        mounting = self.mounting(frame.camera)
        if frame.intrinsics is None or mounting is None:
            return None
        h, w = frame.image_rgb.shape[:2]
        key = (frame.intrinsics, mounting, w, h)
        if key != state.geometry_key:
            k = frame.intrinsics
            if (k.width, k.height) != (w, h):
                k = k.scaled(w, h)  # CameraInfo of the full sensor, image resized upstream
            state.geometry_key, state.camera_model = key, CameraModel(k, mounting)
        return state.camera_model

    def _finish(self, frame: CameraFrame, result: PanopticResult) -> FrameOutput:
        state = self._state(frame.camera)
        t0 = time.perf_counter()
        tracked = state.tracker.update(result, frame.stamp_s, frame.image_rgb)
        t1 = time.perf_counter()
        panoptic = encode_panoptic(result.class_map, tracked.track_map)
        camera_model = self._camera_model(state, frame)
        positions = ground_positions(camera_model, [o.box_xyxy for o in tracked.objects])
        objects = [ObjectEstimate(o, self._label(o.class_id), p) for o, p in zip(tracked.objects, positions)]
        t2 = time.perf_counter()
        tm = result.timings_ms
        timings = StageTimings(decode_ms=frame.decode_ms, preprocess_ms=tm.get("preprocess", 0.0),
                               network_ms=tm.get("network", 0.0), fusion_ms=tm.get("fusion", 0.0),
                               tracking_ms=(t1 - t0) * 1e3, encode_ms=(t2 - t1) * 1e3)
        out = FrameOutput(camera=frame.camera, frame_index=state.frames, stamp_s=frame.stamp_s,
                          image_rgb=frame.image_rgb, panoptic=panoptic, semantic=result.class_map, objects=objects,
                          tracked=tracked, result=result, camera_model=camera_model, timings=timings)
        state.frames += 1
        return out

    def _label(self, class_id: int) -> str:
        return self._names[class_id] if 0 <= class_id < len(self._names) else f"class_{class_id}"


def check_frame(frame: CameraFrame) -> None:
    """ValueError naming the camera and the problem when ``frame.image_rgb`` is no image the pipeline takes."""
    image = frame.image_rgb
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3):
        raise ValueError(f"camera {frame.camera}: image must be an (H, W, 3) uint8 RGB array, got "
                         f"{getattr(image, 'dtype', type(image).__name__)} {getattr(image, 'shape', '')}")
    h, w = image.shape[:2]
    if h < MIN_IMAGE_SIDE_PX or w < MIN_IMAGE_SIDE_PX:
        raise ValueError(f"camera {frame.camera}: image of {w}x{h} px is smaller than {MIN_IMAGE_SIDE_PX} px on a "
                         "side; nothing can be segmented in it (is the driver's resolution set?)")


def ground_positions(camera: CameraModel | None, boxes_xyxy: Sequence[np.ndarray]) -> list[np.ndarray | None]:
    """Ground contact point (optical frame, metres) of each box's bottom centre; None where there is none.

    Boxes are in continuous pixel coordinates (origin at the top-left
    corner of the top-left pixel, x2/y2 the far edges), as the tracker and
    the predictor give them; the camera model uses CameraInfo's convention
    (integer coordinates at pixel centres), hence the half-pixel shift. The
    bottom edge is where a standing object meets the ground; a box whose
    bottom lies on or above the horizon has no ground point (None).
    """
    if camera is None or not len(boxes_xyxy):
        return [None] * len(boxes_xyxy)
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    u = (boxes[:, 0] + boxes[:, 2]) / 2.0 - 0.5
    v = boxes[:, 3] - 0.5
    points = camera.ground_points(u, v)
    return [p.copy() if np.all(np.isfinite(p)) and p[2] > 0 else None for p in points]


__all__ = ["MIN_IMAGE_SIDE_PX", "CameraFrame", "FrameFailure", "FrameOutput", "InferenceError", "InferenceFault",
           "ObjectEstimate", "PanopticPredictor", "Pipeline", "StageTimings", "check_frame",
           "classify_inference_error", "default_model_path", "ground_positions", "load_predictor",
           "parse_mount_overrides", "resolve_model_path"]
