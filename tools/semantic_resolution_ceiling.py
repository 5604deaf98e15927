#!/usr/bin/env python3
"""PQ of a perfect semantic labelling seen through a stride-s output (the resolution ceiling).

Ground-truth labels are turned into one-hot maps, average-pooled by the
stride (what logits at that stride can at best represent), upsampled
bilinearly as the model's head does, and arg-maxed; things keep their exact
ground-truth masks (so the bound concerns the semantic head alone). The PQ of that against the ground truth bounds what
any head classifying at that stride reaches on these frames.

    .venv/bin/python tools/semantic_resolution_ceiling.py --strides 1,2,4 --size 256x512
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from panoptic_ros.argtypes import parse_size
from panoptic_ros.classes import CITYSCAPES, VOID
from panoptic_ros.metrics.pq import PQAccumulator
from panoptic_ros.model.evaluation import synthetic_frames


def ceiling(frames, stride: int) -> dict:
    acc = PQAccumulator(CITYSCAPES)
    n = len(CITYSCAPES)
    for f in frames:
        labels = torch.from_numpy(np.where(f.semantic == VOID, n, f.semantic).astype(np.int64))
        onehot = F.one_hot(labels, n + 1).permute(2, 0, 1).float()[None]
        low = F.avg_pool2d(onehot, stride)
        up = F.interpolate(low, size=f.semantic.shape, mode="bilinear", align_corners=False)
        sem = up.argmax(1)[0].numpy().astype(np.uint8)
        sem[sem == n] = VOID
        # Things are exact (the instance head's job); thing labels the stride invents elsewhere are void,
        # as panoptic fusion makes them.
        sem[(f.instance == 0) & CITYSCAPES.is_thing_mask[np.minimum(sem, n - 1)] & (sem != VOID)] = VOID
        things = f.instance > 0
        sem[things] = f.semantic[things]
        acc.add(f.semantic, f.instance, sem, f.instance)
    return acc.result().to_dict()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strides", default="1,2,4")
    ap.add_argument("--size", type=parse_size, default=(256, 512), metavar="HxW")
    ap.add_argument("--seed", type=int, default=100_000, help="first held-out seed (as train's evaluation)")
    ap.add_argument("--sequences", type=int, default=4)
    ap.add_argument("--frames", type=int, default=10)
    args = ap.parse_args()
    h, w = args.size
    frames = list(synthetic_frames(args.seed, args.sequences, args.frames, h, w, 5))
    thin = ("pole", "traffic light", "traffic sign", "fence", "wall", "terrain")
    print("| stride | PQ | PQ stuff | " + " | ".join(thin) + " |")
    print("|---|---|---|" + "---|" * len(thin))
    for s in (int(v) for v in args.strides.split(",")):
        r = ceiling(frames, s)
        per = {c["name"]: c["pq"] for c in r["per_class"]}
        print(f"| {s} | {r['all']['pq']:.3f} | {r['stuff']['pq']:.3f} | "
              + " | ".join(f"{per[c]:.2f}" for c in thin) + " |")


if __name__ == "__main__":
    main()
