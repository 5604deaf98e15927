#!/usr/bin/env python3
"""What the host pays per camera frame at camera resolution, after the model: tracking, encoding, overlay.

On a GPU the network and fusion leave the CPU, but every frame still has to be
tracked, encoded into the panoptic image and (when someone watches) drawn as
an overlay at the camera's full resolution on the host. This times those
stages on real model output: the shipped model (or ``--model PATH``, whose
file the JSON report names) segments synthetic street frames at its own
input size and the predictor upsamples its maps to the frame size (1024x2048
by default), as the node does. Then, per stage, the
median over ``--repeats`` runs of the sequence:

- ``tracking``: ``Tracker.update`` (camera-motion estimation on, the default);
- ``encode``: ``encode_panoptic`` (the published int32 panoptic image);
- ``overlay``: ``render_overlay`` with an id tag per object;
- ``rig serial`` / ``rig threads``: a ``--cameras`` batch through the pipeline's per-camera finishing
  (tracking + encoding + ground positions) with ``tracking_threads`` 1 and 0.

    .venv/bin/python tools/bench_host.py --json out/bench_host.json
    .venv/bin/python tools/bench_host.py --json out/bench_host-12.json --model runs/demo-ft14-320r/model.safetensors
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from panoptic_ros.argtypes import parse_size  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=parse_size, default=(1024, 2048), metavar="HxW")
    ap.add_argument("--cameras", type=int, default=6)
    ap.add_argument("--frames", type=int, default=10, help="frames per camera")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=100_960)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--model", type=Path, default=None,
                    help="model file whose output is timed (default: the shipped demo model)")
    args = ap.parse_args()
    import torch

    from panoptic_ros.overlay import OverlayLabel, render_overlay
    from panoptic_ros.panoptic import encode_panoptic
    from panoptic_ros.params import TrackerParams
    from panoptic_ros.pipeline import CameraFrame, Pipeline, default_model_path
    from panoptic_ros.model.predictor import Predictor
    from panoptic_ros.synth import SynthConfig, SyntheticSequence
    from panoptic_ros.tracking.tracker import Tracker

    torch.set_num_threads(1)
    h, w = args.size
    model_path = args.model or default_model_path()
    predictor = Predictor.from_file(model_path, device="cpu")
    cams = [f"cam{c}" for c in range(args.cameras)]
    frames, results = [], []
    for c in range(args.cameras):
        seq = SyntheticSequence(seed=args.seed + c, num_frames=args.frames, config=SynthConfig(height=h, width=w))
        imgs = [seq.render(k).image for k in range(args.frames)]
        frames.append(imgs)
        results.append([predictor.predict([im])[0] for im in imgs])
    palette = predictor.classes.palette()
    stages: dict[str, list[float]] = {k: [] for k in ("tracking", "encode", "overlay", "rig serial", "rig threads")}
    objects = []
    for _ in range(args.repeats):
        tracker = Tracker(TrackerParams(), class_table=predictor.classes)
        for k in range(args.frames):
            im, r = frames[0][k], results[0][k]
            t0 = time.perf_counter()
            tracked = tracker.update(r, 0.1 * k, im)
            t1 = time.perf_counter()
            encode_panoptic(r.class_map, tracked.track_map)
            t2 = time.perf_counter()
            tags = [OverlayLabel(f"{o.track_id} car", *o.centroid_px) for o in tracked.objects]
            render_overlay(im, r.class_map, tracked.track_map, palette, 0.5, tags)
            t3 = time.perf_counter()
            stages["tracking"].append((t1 - t0) * 1e3)
            stages["encode"].append((t2 - t1) * 1e3)
            stages["overlay"].append((t3 - t2) * 1e3)
            objects.append(len(tracked.objects))
        for name, threads in (("rig serial", 1), ("rig threads", 0)):
            pipe = Pipeline(predictor, tracker=TrackerParams(), max_batch=args.cameras, tracking_threads=threads)
            for k in range(args.frames):
                chunk = [CameraFrame(cam, frames[c][k], 0.1 * k) for c, cam in enumerate(cams)]
                t0 = time.perf_counter()
                pipe.finish_batch(chunk, [results[c][k] for c in range(args.cameras)])
                stages[name].append((time.perf_counter() - t0) * 1e3)
            pipe.close()
    med = {k: float(np.median(v)) for k, v in stages.items()}
    report = {"model": str(model_path), "size": f"{h}x{w}", "cameras": args.cameras, "frames": args.frames, "repeats": args.repeats,
              "objects_median": float(np.median(objects)), "median_ms": med,
              "p90_ms": {k: float(np.percentile(v, 90)) for k, v in stages.items()},
              "machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}",
              "date": time.strftime("%Y-%m-%d")}
    for k, v in med.items():
        unit = f"per {args.cameras}-camera batch" if k.startswith("rig") else "per frame"
        print(f"{k:12s} {v:7.2f} ms {unit}")
    print(f"objects per frame (median): {report['objects_median']:.0f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
