"""Soak: many frames through the real Pipeline (tiny model, CPU) with memory flat and the track table bounded.

Eight cameras share one batched model, each with its own tracker; every camera sees a street of coloured
boxes that keep entering, crossing and leaving, over noise. The tiny model runs on every frame for real
(network, fusion, upsampling: the memory a deployment churns through), but its random weights see nothing,
so the scene's own boxes are handed to the tracker as the detections (:class:`SceneDetections`): tracks
are created and deleted all the time, exactly as objects come and go, and the track cap
(``tracker.max_tracks``) is reached again and again. Resident memory is sampled after ``gc.collect()`` at
regular intervals once warm-up is over; it must stay flat (growth under 5 %), and no camera may ever hold
more tracks than the cap.

Sizes: CI 1,200 frames (about a minute here); ``PANOPTIC_RELIABILITY_SIZE=full`` 20,000 frames.
"""
from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import psutil
import pytest
import torch

from panoptic_ros.params import NodeParams, build
from panoptic_ros.classes import CITYSCAPES
from panoptic_ros.panoptic import PanopticResult
from panoptic_ros.pipeline import CameraFrame, Pipeline, load_predictor
from helpers_report import record
from helpers_model import save_tiny_model

torch.set_num_threads(1)

FULL = os.environ.get("PANOPTIC_RELIABILITY_SIZE", "ci") == "full"
FRAMES = 20_000 if FULL else 1_200
CAMERAS = 8
MAX_TRACKS = 10
H, W = 64, 128
SAMPLES = 20  # RSS samples after warm-up
MAX_GROWTH = 0.05
CAR, PERSON = CITYSCAPES.by_name("car").train_id, CITYSCAPES.by_name("person").train_id


@dataclass
class Box:
    object_id: int
    x: float
    y: float
    w: int
    h: int
    vx: float
    colour: np.ndarray


@dataclass
class SceneFrame:
    image: np.ndarray  # uint8 (H, W, 3)
    boxes: list[Box]  # in drawing order: later boxes cover earlier ones


class ChurningStreet:
    """Boxes enter at one side, cross at their own speed and leave at the other; new ones keep coming."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.boxes: list[Box] = []
        self.next_id = 1
        yy, xx = np.mgrid[0:H, 0:W]
        self.background = np.stack([xx * 255 // W, yy * 255 // H, (xx + yy) * 255 // (W + H)], -1).astype(np.uint8)

    def _spawn(self) -> Box:
        r = self.rng
        w, h = int(r.integers(8, 40)), int(r.integers(8, 40))
        left = bool(r.integers(0, 2))
        speed = float(r.uniform(2.0, 9.0))
        self.next_id += 1
        return Box(self.next_id - 1, x=-w if left else W, y=float(r.integers(0, H - h)), w=w, h=h,
                   vx=speed if left else -speed, colour=r.integers(0, 256, 3).astype(np.uint8))

    def frame(self) -> SceneFrame:
        self.boxes = [b for b in self.boxes if -b.w <= b.x + b.vx <= W]  # those that left are gone
        for b in self.boxes:
            b.x += b.vx
        while len(self.boxes) < 6 or self.rng.random() < 0.3:
            self.boxes.append(self._spawn())
        image = self.background.copy()
        image += self.rng.integers(0, 24, image.shape, dtype=np.uint8)
        for b in self.boxes:
            x0, x1 = max(int(b.x), 0), min(int(b.x) + b.w, W)
            if x1 > x0:
                image[int(b.y):int(b.y) + b.h, x0:x1] = b.colour
        return SceneFrame(image, list(self.boxes))


class SceneDetections:
    """The real predictor runs on every frame; its instances are then replaced by the scene's visible boxes
    (class car or person by object id, score 0.9, a fixed appearance vector per object)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.truth: dict[int, list[Box]] = {}  # id(image) -> its boxes, set before each process() call

    @property
    def classes(self) -> Any:
        return self.inner.classes

    def with_fusion(self, **changes: float) -> None:
        self.inner.with_fusion(**changes)

    def predict(self, frames: list[np.ndarray]) -> list[PanopticResult]:
        results = self.inner.predict(frames)
        return [self._with_boxes(r, self.truth.pop(id(f))) for f, r in zip(frames, results)]

    @staticmethod
    def _with_boxes(result: PanopticResult, boxes: list[Box]) -> PanopticResult:
        instance_map = np.zeros((H, W), np.int32)
        for i, b in enumerate(boxes):
            x0, x1 = max(int(b.x), 0), min(int(b.x) + b.w, W)
            instance_map[int(b.y):int(b.y) + b.h, x0:x1] = i + 1
        visible = [i for i in range(len(boxes)) if (instance_map == i + 1).any()]
        remap = np.zeros(len(boxes) + 1, np.int32)
        remap[[i + 1 for i in visible]] = np.arange(1, len(visible) + 1)
        instance_map = remap[instance_map]
        classes = np.array([CAR if boxes[i].object_id % 3 else PERSON for i in visible], np.int64)
        class_map = result.class_map.copy()
        xyxy = np.zeros((len(visible), 4), np.float32)
        for k, i in enumerate(visible):
            ys, xs = np.nonzero(instance_map == k + 1)
            xyxy[k] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            class_map[instance_map == k + 1] = classes[k]
        emb = np.stack([np.random.default_rng(boxes[i].object_id).standard_normal(16) for i in visible]) \
            if visible else np.zeros((0, 16))
        emb = (emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-9)).astype(np.float32)
        return PanopticResult(class_map=class_map, instance_map=instance_map, classes=classes,
                              scores=np.full(len(visible), 0.9, np.float32), boxes_xyxy=xyxy, embeddings=emb,
                              timings_ms=result.timings_ms)


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_tiny_model(path)
    params = build(NodeParams, {"model.path": str(path), "model.device": "cpu", "model.max_detections": 12,
                                "model.rpn_post_nms_top_n": 30, "max_batch": CAMERAS,
                                "tracker.max_tracks": MAX_TRACKS})
    return Pipeline(SceneDetections(load_predictor(params.model)), tracker=params.tracker, max_batch=CAMERAS)


@pytest.mark.timeout(3600 if FULL else 300)
def test_soak_memory_stays_flat_and_the_track_table_bounded(pipeline: Pipeline) -> None:
    streets = [ChurningStreet(seed) for seed in range(CAMERAS)]
    names = [f"cam{c}" for c in range(CAMERAS)]
    batches = FRAMES // CAMERAS
    warm_up = max(25, batches // 5)
    every = max(1, (batches - warm_up) // SAMPLES)
    samples: list[tuple[int, float]] = []
    most_tracks = 0
    at_cap = 0
    mask_cells: list[int] = []
    ended = 0
    t0 = time.monotonic()
    scene: SceneDetections = pipeline.predictor  # type: ignore[assignment]
    for k in range(batches):
        frames = []
        for name, street in zip(names, streets):
            f = street.frame()
            scene.truth[id(f.image)] = f.boxes
            frames.append(CameraFrame(name, f.image, 0.1 * k))
        for out in pipeline.process(frames):
            tracks = out.tracked.num_tracks
            assert tracks <= MAX_TRACKS, (k, out.camera, tracks)
            most_tracks = max(most_tracks, tracks)
            at_cap += tracks == MAX_TRACKS
            ended += len(out.tracked.ended_track_ids)
        if k >= warm_up and (k - warm_up) % every == 0:
            gc.collect()
            samples.append(((k + 1) * CAMERAS, rss_mb()))
            mask_cells.append(max(pipeline.tracker(n).num_mask_cells for n in names))
    seconds = time.monotonic() - t0
    created = sum(pipeline.tracker(n).next_track_id - 1 for n in names)
    first = float(np.mean([mb for _, mb in samples[:3]]))
    last = float(np.mean([mb for _, mb in samples[-3:]]))
    growth = (last - first) / first
    peak = max(mb for _, mb in samples)
    objects = sum(s.next_id - 1 for s in streets)
    record(__file__, "soak", frames=batches * CAMERAS, cameras=CAMERAS, seconds=round(seconds, 1),
           frames_per_s=round(batches * CAMERAS / seconds, 1), warm_up_frames=warm_up * CAMERAS,
           rss_after_warm_up_mb=round(first, 1), rss_end_mb=round(last, 1), rss_peak_mb=round(peak, 1),
           rss_growth_mb=round(last - first, 1), rss_growth_pct=round(100 * growth, 2),
           rss_samples=[(n, round(mb, 1)) for n, mb in samples], track_cap=MAX_TRACKS, most_tracks=most_tracks,
           frames_at_cap=at_cap, scene_objects=objects, tracks_created=created, confirmed_tracks_ended=ended,
           mask_cells_max=max(mask_cells))
    assert len(samples) >= 6
    assert growth < MAX_GROWTH, (f"RSS grew {100 * growth:.1f}% ({last - first:.1f} MB) after warm-up", samples)
    # The cap was reached, often: the bound was exercised, not just never needed.
    assert most_tracks == MAX_TRACKS and at_cap >= batches * CAMERAS // 10, (most_tracks, at_cap)
    assert created >= objects // 2  # most objects that crossed a camera became a track: churn
    assert ended >= created // 4  # confirmed tracks end, not pile up
    quarter = max(1, len(mask_cells) // 4)
    assert max(mask_cells[-quarter:]) <= 2 * max(mask_cells[:quarter]), mask_cells  # stored masks bounded
