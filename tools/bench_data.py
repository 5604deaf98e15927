#!/usr/bin/env python3
"""Cost of the synthetic training data on one core: what a ``--data-workers`` process spends per pair.

On a GPU the renderer, not the model, can set the pace of training: N data
workers deliver about N / (seconds per pair) pairs per second. This times,
in one process with one thread, the parts of a training pair and then whole
chunks of step-keyed pairs exactly as a data worker renders them
(``train.step_samples`` over ``CHUNK_STEPS`` steps, the chunk's worlds built
once), and reports medians:

- ``world``: building one synthetic sequence (layout, traffic, occlusions);
- ``frame``: rendering one frame of it;
- ``targets``: one frame into training tensors (``frame_to_sample``);
- ``pair in a chunk``: a chunk's wall time divided by its pairs (two frames
  each), world building included; the figure to size ``--data-workers`` by.

    .venv/bin/python tools/bench_data.py                   # the demo preset, 8 pairs per step
    .venv/bin/python tools/bench_data.py --chunks 5 --json out/bench_data.json
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core, before numpy loads
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from panoptic_ros.model import train as T  # noqa: E402
from panoptic_ros.model.config import PRESETS  # noqa: E402
from panoptic_ros.model.targets import frame_to_sample  # noqa: E402
from panoptic_ros.synth import SyntheticSequence  # noqa: E402


def _median_ms(times_s: list[float]) -> float:
    return float(np.median(times_s) * 1e3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="demo", choices=sorted(PRESETS))
    ap.add_argument("--pairs-per-step", type=int, default=8)
    ap.add_argument("--worlds", type=int, default=8, help="sequences built for the world / frame / targets rows")
    ap.add_argument("--chunks", type=int, default=3, help="chunks of step-keyed pairs timed")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    cfg = PRESETS[args.preset]()
    s = T.TrainSettings(out="", preset=args.preset, pairs_per_step=args.pairs_per_step, seed=args.seed)
    synth = T.SyntheticPairs(cfg, s).synth_config  # the generator's settings at the network's input size

    world, frame, targets = [], [], []
    for i in range(args.worlds):
        t0 = time.perf_counter()
        seq = SyntheticSequence(s.train_seed_start + 7919 * i % s.train_sequences, s.frames_per_sequence, synth)
        world.append(time.perf_counter() - t0)
        for k in (0, s.frames_per_sequence // 2):
            t0 = time.perf_counter()
            f = seq.render(k)
            frame.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            frame_to_sample(f, cfg.classes, s.min_instance_area, bool(k), (cfg.input_height, cfg.input_width))
            targets.append(time.perf_counter() - t0)

    per_pair = []
    for chunk in range(args.chunks):
        source = T.SyntheticPairs(cfg, s, cache_size=len(T.world_pool(s, chunk)))  # a worker's cache: cold
        t0 = time.perf_counter()
        for step in range(chunk * T.CHUNK_STEPS, (chunk + 1) * T.CHUNK_STEPS):
            T.step_samples(source, s, cfg, step)
        per_pair.append((time.perf_counter() - t0) / (T.CHUNK_STEPS * s.pairs_per_step))

    rows = {"world": _median_ms(world), "frame": _median_ms(frame), "targets": _median_ms(targets),
            "pair in a chunk": _median_ms(per_pair)}
    print(f"{args.preset} preset, {synth.height}x{synth.width}, {s.pairs_per_step} pairs per step, chunks of "
          f"{T.CHUNK_STEPS} steps ({len(T.world_pool(s, 0))} worlds each), one core, "
          f"{platform.processor() or platform.machine()}")
    for name, ms in rows.items():
        print(f"{name:16s} {ms:8.1f} ms")
    print(f"one data worker: {1e3 / rows['pair in a chunk']:.1f} pairs/s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "median_ms": rows,
                                         "date": time.strftime("%Y-%m-%d"),
                                         "python": platform.python_version()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
