#!/usr/bin/env python3
"""Choose panoptic fusion's thresholds on validation frames, then score the choice once on held-out ones.

    python tools/tune_fusion.py --out out/tune-fusion            # ~10 min on 2 CPU cores

The network runs once per frame (its detections kept down to the lowest score
threshold of the grid); every combination of ``--score``, ``--overlap`` and
``--min-stuff-area`` then re-runs only the fusion and the PQ accumulation. The
combination with the best PQ on the *validation* seeds (``--val-seed``, a range
that neither training (0..4999) nor the held-out set (100000..) uses) is then
scored on the held-out seeds next to the current defaults, so the held-out
figure is not the one the choice was made on. Frames are rendered at ``--size``
(default: the size the model card's held-out PQ was measured at, e.g. 256x512
for the shipped 320x640 network) and go through the predictor as in the node:
enlarged to the network input, fused on their own pixel grid
(``Predictor.fusion_inputs``). Writes ``tune_fusion.json`` and ``tune_fusion.md``
(the grid, best first, and the held-out comparison).
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from panoptic_ros.argtypes import parse_size  # noqa: E402


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def cached_outputs(predictor, frames, min_score: float) -> list:
    """(frame, semantic logits, detections, fusion-grid pixels per network pixel) per frame, on the frame's
    fusion grid, detections down to ``min_score``."""
    from tqdm import tqdm

    predictor.with_fusion(score_threshold=min_score)  # the RoI heads then keep everything the grid may keep
    out = []
    for f in tqdm(frames, desc="network", unit="frame"):
        logits, det, area_scale = predictor.fusion_inputs(f.image)
        out.append((f, logits.half(), det, area_scale))
    return out


def score(predictor, cached: list, score_t: float, overlap_t: float, min_area: int) -> dict:
    from panoptic_ros.metrics.pq import PQAccumulator
    from panoptic_ros.model.fusion import panoptic_fusion
    from panoptic_ros.model.predictor import grid_min_stuff_area

    acc = PQAccumulator(predictor.classes)
    lut = predictor._thing_lut
    for f, logits, det, area_scale in cached:
        fused = panoptic_fusion(logits.float(), det.boxes, lut[det.labels - 1], det.scores, det.mask_logits,
                                thing_ids=predictor._thing_ids, stuff_ids=predictor._stuff_ids,
                                score_threshold=score_t, overlap_threshold=overlap_t,
                                min_stuff_area=grid_min_stuff_area(min_area, area_scale))
        acc.add(f.semantic, f.instance, fused.class_map.numpy(), fused.instance_map.numpy(),
                gt_crowd_ids=[o.track_id for o in f.objects if o.is_crowd])
    r = acc.result()
    return {"score_threshold": score_t, "overlap_threshold": overlap_t, "min_stuff_area": min_area,
            "pq": r.all.pq, "pq_things": r.things.pq, "pq_stuff": r.stuff.pq}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", default="", help="model .safetensors (default: the shipped demo model)")
    ap.add_argument("--val-seed", type=int, default=90_000)
    ap.add_argument("--heldout-seed", type=int, default=100_000)
    ap.add_argument("--sequences", type=int, default=20)
    ap.add_argument("--frames", type=int, default=4, help="frames per sequence (every 5th)")
    ap.add_argument("--score", type=floats, default=floats("0.3,0.4,0.5,0.6,0.7"))
    ap.add_argument("--overlap", type=floats, default=floats("0.3,0.5,0.7"))
    ap.add_argument("--min-stuff-area", type=floats, default=floats("0,32,64,128,256,512"))
    ap.add_argument("--size", type=parse_size, default=None,
                    help="HxW frames are rendered at (default: the model card's held-out size, else its input)")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    import torch

    from panoptic_ros.model.evaluation import synthetic_frames
    from panoptic_ros.model.predictor import FusionSettings, Predictor
    from panoptic_ros.pipeline import resolve_model_path

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    predictor = Predictor.from_file(resolve_model_path(args.model), device="cpu")
    h, w = args.size or predictor.card.metrics.get("held_out", {}).get("size") or predictor.input_size
    lowest = min(args.score)
    val = cached_outputs(predictor, list(synthetic_frames(args.val_seed, args.sequences, args.frames, h, w, 5)),
                         lowest)
    grid = []
    for s, o, a in itertools.product(args.score, args.overlap, args.min_stuff_area):
        grid.append(score(predictor, val, s, o, int(a)))
        print(json.dumps(grid[-1]), flush=True)
    grid.sort(key=lambda r: -r["pq"])
    best = grid[0]
    del val
    held = cached_outputs(predictor, list(synthetic_frames(args.heldout_seed, args.sequences, args.frames, h, w, 5)),
                          lowest)
    d = FusionSettings()
    default = score(predictor, held, d.score_threshold, d.overlap_threshold, d.min_stuff_area)
    chosen = score(predictor, held, best["score_threshold"], best["overlap_threshold"], best["min_stuff_area"])
    n = args.sequences * args.frames
    report = {"model": str(resolve_model_path(args.model)), "validation_seeds": [args.val_seed,
                                                                                  args.val_seed + args.sequences - 1],
              "heldout_seeds": [args.heldout_seed, args.heldout_seed + args.sequences - 1], "frames": n,
              "size": [h, w],
              "grid": grid, "heldout_default": default, "heldout_chosen": chosen, "seconds": time.time() - t0,
              "command": "python tools/tune_fusion.py " + " ".join(sys.argv[1:])}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tune_fusion.json").write_text(json.dumps(report, indent=2))
    rows = ["| score | overlap | min stuff area | PQ | PQ things | PQ stuff |", "|---|---|---|---|---|---|"]
    rows += [f"| {r['score_threshold']} | {r['overlap_threshold']} | {r['min_stuff_area']} | {r['pq']:.4f} | "
             f"{r['pq_things']:.4f} | {r['pq_stuff']:.4f} |" for r in grid]
    md = (f"Validation ({n} frames, seeds {args.val_seed}..), best first:\n\n" + "\n".join(rows) +
          f"\n\nHeld-out ({n} frames, seeds {args.heldout_seed}..): defaults PQ {default['pq']:.4f}, "
          f"chosen PQ {chosen['pq']:.4f} ({chosen['pq'] - default['pq']:+.4f}).\n")
    (args.out / "tune_fusion.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
