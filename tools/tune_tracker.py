#!/usr/bin/env python3
"""Tracker settings on the demo model's own detections: chosen on validation sequences, scored once on held-out ones.

    python tools/tune_tracker.py --out out/tune-tracker                 # ~15 min on 2 CPU cores

The model runs once per frame and its results are cached (``--out/cache``,
npz per sequence, reused by later runs with the same model and seeds); every
tracker setting in ``--variants`` then re-runs only the tracker and the scoring
of ``panoptic-ros track-compare`` (IDF1, HOTA, MOTA, ID switches, and what
happened across each full-occlusion event of 10-40 frames). The variant with
the best IDF1 on the *validation* seeds (``--val-seed``: a range that neither
training (0..4999), the held-out PQ set (100000..) nor track-compare
(200000..) uses) is then scored on the held-out seeds (``--test-seed``,
track-compare's) next to the defaults, so the held-out figure is not the one
the choice was made on. Writes ``tune_tracker.json`` and ``tune_tracker.md``.

A variant is ``name=field:value[,field:value...]`` over ``TrackerParams``
fields (``default`` is always scored); e.g.
``--variants "reid06=reid_min_similarity:0.6" "w05=embedding_weight:0.5"``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from panoptic_ros.argtypes import parse_size  # noqa: E402
from panoptic_ros.metrics.mot import (EventSwitchResult, OcclusionEvent,  # noqa: E402
                                      combine_tracking_results, evaluate_tracking, id_switches_in_events)
from panoptic_ros.panoptic import PanopticResult  # noqa: E402
from panoptic_ros.params import TrackerParams, iter_params, validate_value  # noqa: E402
from panoptic_ros.tracking.compare import DetectionOverlap, ignore_mask, tracker_score  # noqa: E402
from panoptic_ros.tracking.tracker import Tracker  # noqa: E402

FPS = 10.0
_FIELDS = ("class_map", "instance_map", "classes", "scores", "boxes_xyxy", "embeddings", "areas_px")


def parse_variant(text: str) -> tuple[str, dict]:
    """``name=field:value[,field:value...]`` -> (name, {field: value}), each value checked by the schema."""
    name, _, body = text.partition("=")
    if not name or not body:
        raise ValueError(f"variant {text!r}: expected name=field:value[,field:value...]")
    defs = {d.name: d for d in iter_params(TrackerParams)}
    changes = {}
    for item in body.split(","):
        key, _, raw = item.partition(":")
        if key not in defs:
            raise ValueError(f"variant {name}: unknown tracker parameter {key!r}; known: {', '.join(defs)}")
        value, reason = validate_value(defs[key], raw)
        if reason:
            raise ValueError(f"variant {name}: {key}: {reason}")
        changes[key] = value
    return name, changes


def cache_sequence(path: Path, seed: int, frames: int, size: tuple[int, int], predictor, min_visible: float) -> None:
    from panoptic_ros.synth import SynthConfig, SyntheticSequence

    cfg = SynthConfig(height=size[0], width=size[1], fps=FPS, occlusion_events_per_100_frames=4.0)
    seq = SyntheticSequence(seed, frames, cfg)
    arrays: dict[str, np.ndarray] = {}
    for k in range(frames):
        fr = seq.render(k)
        hidden = [o.track_id for o in fr.objects if o.area_px > 0 and o.visible_fraction < min_visible]
        ignore = ignore_mask(fr.instance, hidden)
        r = predictor.predict([fr.image])[0]
        arrays[f"{k}_image"] = fr.image
        arrays[f"{k}_gt"] = fr.instance.astype(np.int32)
        arrays[f"{k}_ignore"] = ignore if ignore is not None else np.zeros(fr.instance.shape, bool)
        arrays[f"{k}_stamp"] = np.array(fr.stamp_ns * 1e-9)
        for f in _FIELDS:
            v = getattr(r, f)
            arrays[f"{k}_{f}"] = np.asarray(v) if v is not None else np.zeros(0)
    ev = [(e.track_id, e.start_frame, e.end_frame) for e in seq.occlusion_events() if 10 <= e.length <= 40]
    arrays["events"] = np.array(ev, np.int64).reshape(-1, 3)
    arrays["frames"] = np.array(frames)
    np.savez_compressed(path, **arrays)


@dataclasses.dataclass
class CachedSequence:
    images: list[np.ndarray]
    stamps: list[float]
    results: list[PanopticResult]
    overlaps: list[DetectionOverlap]
    events: list[OcclusionEvent]


def load_sequence(path: Path) -> CachedSequence:
    z = np.load(path)
    n = int(z["frames"])
    images, stamps, results, overlaps = [], [], [], []
    for k in range(n):
        kw = {f: z[f"{k}_{f}"] for f in _FIELDS}
        kw["instance_map"] = kw["instance_map"].astype(np.int32)
        r = PanopticResult(**kw)
        results.append(r)
        images.append(z[f"{k}_image"])
        stamps.append(float(z[f"{k}_stamp"]))
        ign = z[f"{k}_ignore"]
        overlaps.append(DetectionOverlap.build(z[f"{k}_gt"], r.instance_map, r.num_instances,
                                               ign if ign.any() else None))
    events = [OcclusionEvent(int(t), int(s), int(e)) for t, s, e in z["events"]]
    return CachedSequence(images, stamps, results, overlaps, events)


def score(seqs: list[CachedSequence], params: TrackerParams) -> dict:
    """Track every cached sequence afresh and score it as track-compare does (``TrackerScore`` fields)."""
    results, outcomes = [], []
    seconds, frames = 0.0, 0
    for s in seqs:
        tracker = Tracker(params)
        tf = []
        for img, stamp, r, ov in zip(s.images, s.stamps, s.results, s.overlaps):
            t0 = time.perf_counter()
            out = tracker.update(r, stamp, img)
            seconds += time.perf_counter() - t0
            frames += 1
            tf.append(ov.tracking_frame(out.track_ids_by_detection(r.num_instances)))
        results.append(evaluate_tracking(tf, 0.5))
        outcomes.extend(id_switches_in_events(tf, s.events, 0.5).outcomes)
    row = tracker_score(("model", "ours"), combine_tracking_results(results), EventSwitchResult(tuple(outcomes)),
                        1e3 * seconds / max(frames, 1))
    return {k: v for k, v in dataclasses.asdict(row).items() if k not in ("input", "tracker")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", default="", help="model .safetensors (default: the shipped demo model)")
    ap.add_argument("--val-seed", type=int, default=300_000)
    ap.add_argument("--val-sequences", type=int, default=5)
    ap.add_argument("--test-seed", type=int, default=200_000)
    ap.add_argument("--test-sequences", type=int, default=10)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--size", default="256x512")
    ap.add_argument("--threads", type=int, default=0, help="torch threads for the model (0: torch's default)")
    ap.add_argument("--variants", nargs="*", default=[])
    ap.add_argument("--no-test", action="store_true", help="validation only (no held-out scoring)")
    args = ap.parse_args(argv)
    from tqdm import tqdm

    from panoptic_ros.model.checkpoint import file_sha256
    from panoptic_ros.params import ModelParams
    from panoptic_ros.pipeline import load_predictor, resolve_model_path

    h, w = parse_size(args.size)
    model_path = resolve_model_path(args.model)
    sha = file_sha256(model_path)[:12]
    cache = args.out / "cache" / f"{sha}_{h}x{w}_{args.frames}"
    cache.mkdir(parents=True, exist_ok=True)
    val_seeds = list(range(args.val_seed, args.val_seed + args.val_sequences))
    test_seeds = [] if args.no_test else list(range(args.test_seed, args.test_seed + args.test_sequences))
    missing = [s for s in val_seeds + test_seeds if not (cache / f"{s}.npz").is_file()]
    if missing:
        import torch
        if args.threads > 0:
            torch.set_num_threads(args.threads)
        predictor = load_predictor(ModelParams(path=str(model_path)))
        for s in tqdm(missing, desc="detect", unit="seq"):
            cache_sequence(cache / f"{s}.npz", s, args.frames, (h, w), predictor, 0.15)
    variants = [("default", {})] + [parse_variant(v) for v in args.variants]
    val = [load_sequence(cache / f"{s}.npz") for s in tqdm(val_seeds, desc="load val", unit="seq")]
    rows = []
    for name, changes in tqdm(variants, desc="validation", unit="variant"):
        row = {"variant": name, "changes": changes, **score(val, dataclasses.replace(TrackerParams(), **changes))}
        rows.append(row)
        print(json.dumps(row), flush=True)
    del val
    rows.sort(key=lambda r: -r["idf1"])
    best = rows[0]
    report = {"model": str(model_path), "model_sha256_12": sha, "validation_seeds": val_seeds,
              "test_seeds": test_seeds, "frames": args.frames, "size": args.size, "validation": rows}
    if test_seeds:
        test = [load_sequence(cache / f"{s}.npz") for s in tqdm(test_seeds, desc="load test", unit="seq")]
        chosen = {"default": {}, best["variant"]: best["changes"]}
        report["test"] = [{"variant": n, "changes": c, **score(test, dataclasses.replace(TrackerParams(), **c))}
                          for n, c in chosen.items()]
    (args.out / "tune_tracker.json").write_text(json.dumps(report, indent=2))
    cols = ("idf1", "hota", "mota", "id_switches", "event_switches", "event_kept", "event_lost",
            "event_untracked_before", "ms_per_frame")
    lines = [f"# Tracker settings on model detections ({model_path.name}, {sha})", "",
             f"Validation seeds {val_seeds[0]}..{val_seeds[-1]}, {args.frames} frames at {args.size}.", "",
             "| variant | changes | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for table in ("validation", "test"):
        if table == "test":
            if not test_seeds:
                break
            lines += ["", f"Held-out seeds {test_seeds[0]}..{test_seeds[-1]}:", "",
                      "| variant | changes | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
        for r in report[table]:
            cells = [f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols]
            lines.append(f"| {r['variant']} | {r['changes'] or '-'} | " + " | ".join(cells) + " |")
    (args.out / "tune_tracker.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
