#!/usr/bin/env python3
"""Frames per second of the synthetic scene generator on ONE core.

    python tools/bench_synth.py --size 512x1024 --frames 200 --repeats 5

Each repeat builds one sequence (seed = --seed + repeat; world simulation timed apart)
and renders its frames in order, image and labels and annotations included. Prints the
median frames/s over the repeats (wall clock and process CPU time) for --size and for
256x512, plus the time of occlusion_events() (a labels-only pass over all frames).
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import cv2  # noqa: E402

from panoptic_ros.argtypes import parse_size  # noqa: E402
from panoptic_ros.synth import SynthConfig, SyntheticSequence  # noqa: E402


@dataclass(frozen=True)
class BenchResult:
    size: str
    fps_wall: float  # median over repeats
    fps_cpu: float
    fps_wall_min: float
    fps_wall_max: float
    build_s: float  # median world simulation time
    labels_only_ms: float  # median per-frame cost of the labels-only pass used by occlusion_events()


def bench(height: int, width: int, frames: int, repeats: int, seed: int, events: bool) -> BenchResult:
    cfg = SynthConfig(height=height, width=width)
    walls, cpus, builds, labels = [], [], [], []
    for r in range(repeats):
        t0 = time.perf_counter()
        seq = SyntheticSequence(seed + r, frames, cfg)
        builds.append(time.perf_counter() - t0)
        w0, c0 = time.perf_counter(), time.process_time()
        for k in range(frames):
            seq.render(k)
        walls.append(frames / (time.perf_counter() - w0))
        cpus.append(frames / (time.process_time() - c0))
        if events:
            fresh = SyntheticSequence(seed + r, frames, cfg)
            t0 = time.perf_counter()
            fresh.occlusion_events()
            labels.append((time.perf_counter() - t0) / frames * 1e3)
    return BenchResult(f"{height}x{width}", statistics.median(walls), statistics.median(cpus), min(walls), max(walls),
                       statistics.median(builds), statistics.median(labels) if labels else float("nan"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=parse_size, default=(512, 1024), help="HEIGHTxWIDTH (default 512x1024)")
    p.add_argument("--frames", type=int, default=200, help="frames per sequence (default 200)")
    p.add_argument("--repeats", type=int, default=5, help="sequences timed; the median is reported (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first sequence (default 0)")
    p.add_argument("--no-events", action="store_true", help="skip timing occlusion_events()")
    args = p.parse_args(argv)
    if args.frames < 1 or args.repeats < 1:
        p.error("--frames and --repeats must be positive")
    cv2.setNumThreads(1)
    sizes = [args.size] + ([(256, 512)] if args.size != (256, 512) else [])
    print(f"synthetic generator, 1 core (cv2.setNumThreads(1)), {args.frames} frames x {args.repeats} repeats, "
          f"seeds {args.seed}..{args.seed + args.repeats - 1}")
    for h, w in sizes:
        r = bench(h, w, args.frames, args.repeats, args.seed, not args.no_events)
        print(f"{r.size:>9s}: median {r.fps_wall:6.1f} frames/s wall (min {r.fps_wall_min:.1f}, max {r.fps_wall_max:.1f}),"
              f" {r.fps_cpu:6.1f} frames/s CPU; world build {r.build_s:.2f} s;"
              f" labels-only pass {r.labels_only_ms:.1f} ms/frame")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
