#!/usr/bin/env python3
"""A model's PQ on frames it was trained on next to the same sampling of held-out seeds (an overfitting check).

Training renders sequence seeds 0..4999 as ``--frames-per-sequence``-frame
worlds (the world depends on the seed *and* that length, so the same length
gives the very frames training drew from); this scores frames 0, s, 2s, ...
of the first ``--sequences`` training seeds and of as many held-out seeds.
Training PQ well above held-out PQ means the model memorised its data (more
data would help); about equal means it is under-fitting (capacity or
optimisation limits it, not data).

    .venv/bin/python tools/train_vs_heldout.py --model models/demo_lite0_256x512.safetensors
"""
from __future__ import annotations

import argparse
import json

import torch

from panoptic_ros.argtypes import parse_size
from panoptic_ros.model.evaluation import evaluate_frames, synthetic_frames
from panoptic_ros.model.predictor import Predictor


def score(predictor: Predictor, frames) -> dict:
    res = evaluate_frames(predictor, frames, batch=1).pq
    return {"pq": res.all.pq, "pq_things": res.things.pq, "pq_stuff": res.stuff.pq, "frames": res.num_images}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/demo_lite0_256x512.safetensors")
    ap.add_argument("--train-seed", type=int, default=0, help="first training seed (train --train-seed-start)")
    ap.add_argument("--heldout-seed", type=int, default=100_000)
    ap.add_argument("--sequences", type=int, default=20)
    ap.add_argument("--frames", type=int, default=10, help="frames per sequence")
    ap.add_argument("--frames-per-sequence", type=int, default=80, help="train --frames-per-sequence")
    ap.add_argument("--size", type=parse_size, default=None, metavar="HxW",
                    help="HxW the frames are rendered at (default: the model's training render size, as its card "
                         "records it, else its input size)")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.frames_per_sequence % args.frames:
        ap.error("--frames-per-sequence must be a multiple of --frames")
    if args.threads:
        torch.set_num_threads(args.threads)
    predictor = Predictor.from_file(args.model, device="cpu")
    if args.size:
        h, w = args.size
    else:
        h, w = predictor.card.training.get("settings", {}).get("render_size") or predictor.input_size
    stride = args.frames_per_sequence // args.frames
    out = {name: score(predictor, synthetic_frames(seed, args.sequences, args.frames, h, w, stride))
           for name, seed in (("train", args.train_seed), ("heldout", args.heldout_seed))}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
