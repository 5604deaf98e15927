#!/usr/bin/env python3
"""Seconds per training step of the demo model, through the real ``train`` loop.

Runs ``panoptic_ros.model.train.train`` for a few steps from a model file
(default: the shipped demo model), in a scratch directory, with the settings
of the CPU training runs (one pair of 256x512 frames per step, ``--threads``,
``--data-workers``), and reports the median, p90 and mean of the per-step
times that the run records (forward, backward, optimiser, weight average),
the first ``--skip`` steps left out (warm-up, the data worker's first chunk).
Repeats alternate with nothing in between; compare medians. To compare two
versions of the code, copy this script into a checkout of each (it imports
the package next to it) and run them one after the other, twice.

    .venv/bin/python tools/bench_train.py
    .venv/bin/python tools/bench_train.py --steps 60 --repeats 3 --json out/bench_train.json
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from panoptic_ros.model.train import TrainSettings, train  # noqa: E402


def step_times(init: str, steps: int, threads: int, data_workers: int, seed: int) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        s = TrainSettings(out=tmp, init=init, steps=steps, lr=1e-5, warmup_steps=1, seed=seed, threads=threads,
                          data_workers=data_workers, checkpoint_every=10 ** 9)
        train(s, progress=False)
        history = json.loads((Path(tmp) / "train_state" / "state.json").read_text())["state"]["history"]
    return [h["time_s"] for h in history]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--init", default=str(ROOT / "models" / "demo_lite0_256x512.safetensors"))
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--skip", type=int, default=8, help="first steps of each run left out")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-workers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args(argv)
    if args.steps <= args.skip:
        ap.error("--steps must exceed --skip")
    runs = [step_times(args.init, args.steps, args.threads, args.data_workers, args.seed)[args.skip:]
            for _ in range(args.repeats)]
    times = np.concatenate(runs)
    version = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                             text=True).stdout.strip() or "unknown"
    row = {"code": version, "median_s": float(np.median(times)), "p90_s": float(np.percentile(times, 90)),
           "mean_s": float(times.mean()), "run_medians_s": [float(np.median(r)) for r in runs],
           "steps_timed": int(times.size)}
    print(f"code {version}, {args.repeats} runs x {args.steps - args.skip} steps, {args.threads} threads, "
          f"{args.data_workers} data workers, {platform.processor() or platform.machine()}")
    print(f"s per step: median {row['median_s']:.3f}  p90 {row['p90_s']:.3f}  mean {row['mean_s']:.3f}  "
          f"(run medians {', '.join(f'{m:.3f}' for m in row['run_medians_s'])})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, **row}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
