#!/usr/bin/env python3
"""Per-frame cost of the tracker on one CPU core: 50 moving ellipses at 512x1024.

The scene is synthetic: ellipses of random size drift and bounce around the
image (nearer ones -- lower bottom edge -- cover farther ones, so some are
partly or wholly hidden), over a multi-scale texture that the camera pans
across. Results are built once, outside the timing, and carry each
instance's pixel count as fusion hands it on (``PanopticResult.areas_px``);
only ``Tracker.update`` is timed, over several runs of the sequence with a
fresh tracker each run. Reported: the median (and p90 / p99) per-frame time
without camera-motion estimation, with it, without the areas (the tracker
then histograms the instance map itself), and the camera-motion estimator
alone. The machine's other load shows in p90 / p99; compare medians.

    .venv/bin/python tools/bench_tracker.py                # the 2 ms target setting
    .venv/bin/python tools/bench_tracker.py --objects 100 --json out.json
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core, before numpy loads
    os.environ[_var] = "1"

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from panoptic_ros.classes import CITYSCAPES  # noqa: E402
from panoptic_ros.panoptic import PanopticResult  # noqa: E402
from panoptic_ros.params import TrackerParams  # noqa: E402
from panoptic_ros.tracking import CameraMotionEstimator, Tracker  # noqa: E402

THING_CLASSES = CITYSCAPES.thing_ids
ROAD = CITYSCAPES.by_name("road").train_id


@dataclass
class Frame:
    result: PanopticResult
    image: np.ndarray  # uint8 (H, W, 3)
    stamp_s: float


@dataclass
class Timing:
    name: str
    median_ms: float
    p90_ms: float
    p99_ms: float
    frames: int


def make_sequence(num_frames: int, num_objects: int, hw: tuple[int, int], pan_px: float, seed: int,
                  emb_dim: int = 64, fps: float = 10.0) -> list[Frame]:
    """Moving, overlapping ellipses over a panned texture, as panoptic results with images."""
    h, w = hw
    rng = np.random.default_rng(seed)
    width = int(w + abs(pan_px) * num_frames + 8)
    texture = np.zeros((h, width), np.float32)
    for cell, weight in ((64, 0.5), (16, 0.3), (4, 0.2)):
        noise = rng.random((h // cell + 2, width // cell + 2)).astype(np.float32)
        texture += weight * cv2.resize(noise, (width, h), interpolation=cv2.INTER_CUBIC)[:h, :width]
    texture = np.clip(texture * 255, 0, 255).astype(np.uint8)
    centre = rng.uniform([40, 40], [w - 40, h - 40], (num_objects, 2))
    axes = rng.uniform(8, 40, (num_objects, 2))
    velocity = rng.uniform(-6, 6, (num_objects, 2))
    classes = rng.choice(THING_CLASSES, num_objects)
    colours = rng.integers(0, 255, (num_objects, 3))
    identity = rng.normal(size=(num_objects, emb_dim)).astype(np.float32)
    frames = []
    for f in range(num_frames):
        pan = int(round(pan_px * f))
        image = cv2.cvtColor(np.ascontiguousarray(texture[:, pan:pan + w]), cv2.COLOR_GRAY2RGB)
        canvas = np.zeros((h, w), np.int32)
        order = np.argsort(centre[:, 1] + axes[:, 1])  # farther (higher bottom edge) first
        for k in order:
            c = (int(centre[k, 0]), int(centre[k, 1]))
            ax = (int(axes[k, 0]), int(axes[k, 1]))
            cv2.ellipse(canvas, c, ax, 0, 0, 360, int(k + 1), -1)
            cv2.ellipse(image, c, ax, 0, 0, 360, tuple(int(v) for v in colours[k]), -1)
        frames.append(Frame(_result(canvas, classes, identity, axes, rng), image, f / fps))
        centre += velocity
        for d, lim in ((0, w), (1, h)):  # bounce off the borders
            out = (centre[:, d] < 20) | (centre[:, d] > lim - 20)
            velocity[out, d] *= -1
            centre[:, d] = np.clip(centre[:, d], 20, lim - 20)
    return frames


def _result(canvas: np.ndarray, classes: np.ndarray, identity: np.ndarray, axes: np.ndarray,
            rng: np.random.Generator) -> PanopticResult:
    h, w = canvas.shape
    flat = canvas.ravel()
    nz = np.flatnonzero(flat)
    obj = flat[nz] - 1
    counts = np.bincount(obj, minlength=len(classes))
    full = np.pi * axes[:, 0] * axes[:, 1]
    keep = np.flatnonzero(counts >= 0.25 * full)  # a detector misses slivers
    remap = np.zeros(len(classes) + 1, np.int32)
    remap[keep + 1] = np.arange(1, keep.size + 1)
    inst = remap[canvas]
    ys, xs = nz // w, nz % w
    boxes = np.zeros((keep.size, 4), np.float32)
    for i, k in enumerate(keep):
        sel = obj == k
        boxes[i] = [xs[sel].min(), ys[sel].min(), xs[sel].max() + 1, ys[sel].max() + 1]
    emb = identity[keep] + 0.1 * rng.normal(size=(keep.size, identity.shape[1])).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    class_map = np.full((h, w), ROAD, np.uint8)
    lut = np.concatenate([[ROAD], classes[keep]]).astype(np.uint8)
    class_map[:] = lut[inst]
    scores = rng.uniform(0.55, 0.99, keep.size).astype(np.float32)
    # Fusion counts each instance's pixels anyway (its overlap test needs them) and hands them on.
    return PanopticResult(class_map=class_map, instance_map=inst, classes=classes[keep].astype(np.int64),
                          scores=scores, boxes_xyxy=boxes, embeddings=emb, areas_px=counts[keep].astype(np.int64))


def _stats(name: str, times_s: list[float]) -> Timing:
    ms = np.asarray(times_s) * 1e3
    return Timing(name, float(np.median(ms)), float(np.percentile(ms, 90)), float(np.percentile(ms, 99)), ms.size)


def time_tracker(frames: list[Frame], repeats: int, params: TrackerParams, with_image: bool,
                 with_areas: bool = True) -> list[float]:
    results = [fr.result if with_areas else dataclasses.replace(fr.result, areas_px=None) for fr in frames]
    times = []
    for _ in range(repeats):
        tracker = Tracker(params)
        for fr, result in zip(frames, results):
            image = fr.image if with_image else None
            t0 = time.perf_counter()
            tracker.update(result, fr.stamp_s, image)
            times.append(time.perf_counter() - t0)
    return times


def time_camera_motion(frames: list[Frame], repeats: int, width_px: int) -> list[float]:
    times = []
    for _ in range(repeats):
        est = CameraMotionEstimator(working_width_px=width_px)
        for fr in frames:
            stride = 4
            mask = (fr.result.instance_map[stride // 2::stride, stride // 2::stride] > 0).view(np.uint8)
            t0 = time.perf_counter()
            est.estimate(fr.image, fr.result.instance_map.shape, mask)
            times.append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--objects", type=int, default=50)
    ap.add_argument("--height", type=int, default=512)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--pan", type=float, default=3.0, help="camera pan, px per frame")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cmc-width", type=int, default=None,
                    help="tracker.camera_motion_width_px (default: the schema's)")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    frames = make_sequence(args.frames, args.objects, (args.height, args.width), args.pan, args.seed)
    dets = [fr.result.num_instances for fr in frames]
    base = TrackerParams()
    if args.cmc_width is not None:
        base = dataclasses.replace(base, camera_motion_width_px=args.cmc_width)
    # Warm-up (imports, first-call allocations) outside the numbers.
    time_tracker(frames[:5], 1, base, True)
    rows = [
        _stats("update, no camera motion", time_tracker(frames, args.repeats, base, with_image=False)),
        _stats("update, with camera motion", time_tracker(frames, args.repeats, base, with_image=True)),
        _stats("update, no cmc, areas counted", time_tracker(frames, args.repeats, base, with_image=False,
                                                             with_areas=False)),
        _stats("camera motion alone", time_camera_motion(frames, args.repeats, base.camera_motion_width_px)),
    ]
    probe = Tracker(base)
    published = [len(probe.update(fr.result, fr.stamp_s, fr.image).objects) for fr in frames]
    print(f"{args.height}x{args.width}, {args.objects} objects ({min(dets)}-{max(dets)} detected per frame, "
          f"{int(np.median(published))} published), {args.frames} frames x {args.repeats} runs, one core "
          f"(cv2 threads {cv2.getNumThreads()}), {platform.processor() or platform.machine()}")
    print("(results carry fusion's instance areas unless 'areas counted': then the tracker histograms the map)")
    print(f"{'':30s} {'median':>8s} {'p90':>8s} {'p99':>8s}   (ms per frame)")
    for r in rows:
        print(f"{r.name:30s} {r.median_ms:8.3f} {r.p90_ms:8.3f} {r.p99_ms:8.3f}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "timings": [dataclasses.asdict(r) for r in rows]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
