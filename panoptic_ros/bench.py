"""``panoptic-ros bench``: end-to-end pipeline speed, our variants against a stock baseline, in one run.

Each variant runs the whole pipeline the node runs (upload, network, fusion,
tracking, panoptic-image encoding) over synthetic street frames, batch 1 and
a camera-rig batch, after warm-up, and reports per-batch latency (p50/p99),
aggregate frames/s, CPU use (process CPU seconds per wall second), resident
memory and peak GPU memory. Ratios are printed against our own model in
plain fp32 eager mode and against the baseline (torchvision Mask R-CNN
R50-FPN + semantic FPN head, fp32 eager), all measured in the same run, since
absolute times drift between machines and days.

Variants:
- ``ours``: the deployment setting, the node's defaults (channels-last activations; on CUDA also fp16
  autocast, the dense part as replayed CUDA graphs, static detections and the batched fusion, so one
  host synchronisation per batch; on CPU fp32 eager, torchvision's detections, per-instance fusion);
- ``ours-eager``: as ``ours`` without CUDA graphs (what the graphs buy);
- ``ours-graphall``: as ``ours`` with the part after the dense graph (static detections, batched fusion,
  resizing) replayed as a second CUDA graph (experimental: off in ``ours`` until this measures it);
- ``ours-compile``: as ``ours`` with the dense part through ``torch.compile`` instead of CUDA graphs;
- ``ours-dynamic``: as ``ours`` with torchvision's dynamic RPN / RoI heads (what static detections buy);
- ``ours-hostfusion``: as ``ours-dynamic`` with the per-instance fusion that decides on the host (what
  the batched fusion buys on top);
- ``ours-serial``: as ``ours`` with the cameras of a batch tracked and encoded one after another
  (``tracking_threads: 1``; what the threads buy where the host's per-frame work limits a camera rig);
- ``ours-flip``: as ``ours`` with the test-time flip (``model.test_time_flip``: the dense part also on each
  frame's mirror image, stuff logits averaged; what the accuracy costs in speed);
- ``ours-fp32``: the same model, fp32, eager, default memory format, per-instance fusion;
- ``baseline``: see panoptic_ros/model/baseline.py (random weights: timing only).

Accuracy (``--accuracy-frames``): every variant of ours also segments the same
held-out synthetic frames (seeds the demo model never trained on) at the
model's own input size, and the table gives its PQ and its difference to
``ours-fp32``; an optimisation that costs more than ``--max-pq-drop`` (half a
PQ point) fails the run (exit 1).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from panoptic_ros.argtypes import parse_sizes
from panoptic_ros.params import TrackerParams
from panoptic_ros.pipeline import CameraFrame, Pipeline, resolve_model_path


@dataclass
class BenchRow:
    variant: str
    size: str  # HxW
    batch: int
    p50_ms: float  # per batch (all cameras' frames processed)
    p99_ms: float
    frames_per_s: float
    cpu_util: float  # process CPU seconds per wall second (2.0 = two cores busy)
    rss_mb: float
    gpu_mem_mb: float | None
    iterations: int
    stage_ms: dict  # median per-frame stage times


def synthetic_frames(height: int, width: int, count: int, seed: int = 300_000) -> list[np.ndarray]:
    from panoptic_ros.synth import SynthConfig, SyntheticSequence

    seq = SyntheticSequence(seed=seed, num_frames=count, config=SynthConfig(height=height, width=width))
    return [seq.render(k).image for k in range(count)]


def make_predictor(variant: str, model_path: str, device: str, size: tuple[int, int] | None):
    """A predictor for ``variant`` (``run`` has checked the name); ``size`` None = the model card's input size."""
    from panoptic_ros.model.predictor import Predictor

    if variant == "baseline":
        from panoptic_ros.model.baseline import BaselinePredictor
        return BaselinePredictor(device=device, input_size=size)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    settings = {k: v for k, v in OUR_VARIANTS[variant].items() if k != "tracking_threads"}
    return Predictor.from_file(resolve_model_path(model_path), device=str(dev), input_size=size, **settings)


# variant -> Predictor settings (channels_last None = on) and the pipeline's tracking_threads
_DEFAULTS = dict(precision="auto", dense_mode="auto", channels_last=None, fusion_mode="auto", detection_mode="auto",
                 sparse_graph=False, test_time_flip=False, tracking_threads=0)
OUR_VARIANTS = {
    "ours": _DEFAULTS,
    "ours-eager": {**_DEFAULTS, "dense_mode": "eager"},
    "ours-graphall": {**_DEFAULTS, "sparse_graph": True},
    "ours-compile": {**_DEFAULTS, "dense_mode": "compile"},
    "ours-dynamic": {**_DEFAULTS, "detection_mode": "dynamic"},
    "ours-hostfusion": {**_DEFAULTS, "detection_mode": "dynamic", "fusion_mode": "per_instance"},
    "ours-serial": {**_DEFAULTS, "tracking_threads": 1},
    "ours-flip": {**_DEFAULTS, "test_time_flip": True},
    "ours-fp32": {**_DEFAULTS, "precision": "fp32", "dense_mode": "eager", "channels_last": False,
                  "fusion_mode": "per_instance", "detection_mode": "dynamic", "tracking_threads": 1},
}


@dataclass
class AccuracyRow:
    variant: str
    pq: float
    pq_things: float
    pq_stuff: float
    delta_pq: float | None  # against ours-fp32, measured in the same run
    frames: int


def accuracy(variants: list[str], model_path: str, device: str, frames: int, seed: int = 100_700) -> list[AccuracyRow]:
    """PQ of each of our variants on the same held-out synthetic frames at the model's own input size."""
    from panoptic_ros.metrics.pq import PQAccumulator
    from panoptic_ros.model.evaluation import synthetic_frames as heldout_frames

    ours = [v for v in variants if v in OUR_VARIANTS]
    if "ours-fp32" not in ours:
        ours.append("ours-fp32")
    per_sequence = 4
    sequences = max(1, -(-frames // per_sequence))
    results = {}
    for v in ours:
        predictor = make_predictor(v, model_path, device, None)
        h, w = predictor.input_size
        acc = PQAccumulator(predictor.classes)
        for f in heldout_frames(seed, sequences, per_sequence, h, w, stride=5):
            (r,) = predictor.predict([f.image])
            acc.add(f.semantic, f.instance, r.class_map, r.instance_map)
        results[v] = acc.result()
    ref = results["ours-fp32"].all.pq
    return [AccuracyRow(v, q.all.pq, q.things.pq, q.stuff.pq, None if v == "ours-fp32" else q.all.pq - ref,
                        sequences * per_sequence) for v, q in results.items()]


def accuracy_markdown(rows: list[AccuracyRow], max_drop: float) -> str:
    lines = ["| variant | PQ | PQ things | PQ stuff | vs ours-fp32 | within budget |", "|---|---|---|---|---|---|"]
    for r in rows:
        delta = "-" if r.delta_pq is None else f"{r.delta_pq:+.4f}"
        ok = "-" if r.delta_pq is None else ("yes" if r.delta_pq >= -max_drop else f"**no** (> {max_drop})")
        lines.append(f"| {r.variant} | {r.pq:.4f} | {r.pq_things:.4f} | {r.pq_stuff:.4f} | {delta} | {ok} |")
    return "\n".join(lines) + "\n"


def _sync(device: str) -> None:
    if torch.cuda.is_available() and device != "cpu":
        torch.cuda.synchronize()


def run_variant(variant: str, model_path: str, device: str, size: tuple[int, int], batch: int,
                frames: list[np.ndarray], iterations: int, warmup: int) -> tuple[BenchRow, list[float]]:
    predictor = make_predictor(variant, model_path, device, size)
    threads = OUR_VARIANTS[variant]["tracking_threads"] if variant in OUR_VARIANTS else 0
    pipeline = Pipeline(predictor, tracker=TrackerParams(), max_batch=batch, tracking_threads=threads)
    cams = [f"cam{c}" for c in range(batch)]
    if torch.cuda.is_available() and device != "cpu":
        torch.cuda.reset_peak_memory_stats()
    times, stages = [], []
    t_stamp = 0.0
    cpu0 = wall0 = 0.0
    for it in range(warmup + iterations):
        if it == warmup:
            cpu0, wall0 = time.process_time(), time.perf_counter()
        batch_frames = [CameraFrame(cam, frames[(it * batch + c) % len(frames)], t_stamp)
                        for c, cam in enumerate(cams)]
        t_stamp += 0.1
        _sync(device)
        t0 = time.perf_counter()
        outs = pipeline.process(batch_frames)
        _sync(device)
        dt = (time.perf_counter() - t0) * 1e3
        if it >= warmup:
            times.append(dt)
            stages += [asdict(o.timings) for o in outs]
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    pipeline.close()
    gpu = (torch.cuda.max_memory_allocated() / 2 ** 20) if torch.cuda.is_available() and device != "cpu" else None
    stage_ms = {k: float(np.median([s[k] for s in stages])) for k in stages[0]}
    row = BenchRow(variant, f"{size[0]}x{size[1]}", batch, float(np.percentile(times, 50)),
                   float(np.percentile(times, 99)), batch * len(times) / (sum(times) / 1e3), cpu / wall,
                   resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, gpu, len(times), stage_ms)
    return row, times


def markdown(rows: list[BenchRow]) -> str:
    ref = {(r.size, r.batch): r for r in rows if r.variant == "ours-fp32"}
    base = {(r.size, r.batch): r for r in rows if r.variant == "baseline"}
    lines = ["| variant | size | batch | p50 ms | p99 ms | frames/s | vs ours-fp32 | vs baseline | CPU (cores) "
             "| RSS MB | GPU MB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        k = (r.size, r.batch)
        vs_ref = f"{r.frames_per_s / ref[k].frames_per_s:.2f}x" if k in ref else "-"
        vs_base = f"{r.frames_per_s / base[k].frames_per_s:.2f}x" if k in base else "-"
        gpu = f"{r.gpu_mem_mb:.0f}" if r.gpu_mem_mb is not None else "-"
        lines.append(f"| {r.variant} | {r.size} | {r.batch} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | "
                     f"{r.frames_per_s:.2f} | {vs_ref} | {vs_base} | {r.cpu_util:.2f} | {r.rss_mb:.0f} | {gpu} |")
    return "\n".join(lines) + "\n"


def plot_latency(all_times: dict[str, list[float]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for name, t in all_times.items():
        ax.hist(t, bins=30, alpha=0.55, label=name)
    ax.set_xlabel("latency per batch (ms)")
    ax.set_ylabel("batches")
    ax.set_xscale("log")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="time the pipeline: our variants vs a torchvision baseline, one run",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="", help="model .safetensors (default: the shipped demo model)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--sizes", type=parse_sizes, default=None, metavar="HxW[,HxW...]",
                   help="comma-separated HxW (default: 1024x2048,512x1024 on CUDA, 256x512 on CPU)")
    p.add_argument("--batches", default="1,6", help="comma-separated batch sizes (6 = a six-camera rig)")
    p.add_argument("--variants", default=None, help="comma-separated, from ours, ours-eager, ours-graphall, "
                                                     "ours-compile, ours-dynamic, ours-hostfusion, ours-serial, "
                                                     "ours-flip, ours-fp32, baseline (default: all on CUDA; "
                                                     "ours,ours-fp32,baseline on CPU, where graphs do not apply)")
    p.add_argument("--accuracy-frames", type=int, default=12,
                   help="held-out frames each variant of ours is scored on (0 = skip the accuracy check)")
    p.add_argument("--max-pq-drop", type=float, default=0.005,
                   help="largest PQ an optimised variant may lose against ours-fp32 before the run fails")
    p.add_argument("--iterations", type=int, default=20,
                   help="timed batches per variant, size and batch size (p50 / p99 are over these)")
    p.add_argument("--warmup", type=int, default=3,
                   help="untimed batches run first (allocation, CUDA graph capture, compilation)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--out", default="bench_out", help="directory for bench.json, bench.md, latency.png")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available() and args.device != "cpu"
    sizes_hw = args.sizes or parse_sizes("1024x2048,512x1024" if cuda else "256x512")
    batches = [int(b) for b in args.batches.split(",")]
    cuda_default = ("ours,ours-eager,ours-graphall,ours-compile,ours-dynamic,ours-hostfusion,ours-serial,ours-fp32,"
                    "baseline")
    variants = [v.strip() for v in (args.variants or (cuda_default if cuda else "ours,ours-fp32,baseline")).split(",")]
    for v in variants:
        if v not in OUR_VARIANTS and v != "baseline":
            print(f"panoptic-ros bench: unknown variant {v!r}; known: {', '.join((*OUR_VARIANTS, 'baseline'))}",
                  file=sys.stderr)
            return 2
    rows, all_times = [], {}
    for h, w in sizes_hw:
        frames = synthetic_frames(h, w, 12)
        for b in batches:
            for v in variants:
                row, times = run_variant(v, args.model, args.device, (h, w), b, frames, args.iterations,
                                         args.warmup)
                rows.append(row)
                all_times[f"{v} {h}x{w} b{b}"] = times
                print(f"{v:10s} {h}x{w} batch {b}: p50 {row.p50_ms:.1f} ms, p99 {row.p99_ms:.1f} ms, "
                      f"{row.frames_per_s:.2f} frames/s", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device_name = torch.cuda.get_device_name(0) if cuda else f"CPU ({platform.processor() or platform.machine()}, " \
                                                             f"{torch.get_num_threads()} threads)"
    meta = {"date": time.strftime("%Y-%m-%d"), "device": device_name, "torch": torch.__version__,
            "command": "panoptic-ros bench " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                                                        if k not in ("func", "command") and v not in (None, ""))}
    acc_rows = accuracy(variants, args.model, args.device, args.accuracy_frames) if args.accuracy_frames > 0 else []
    (out / "bench.json").write_text(json.dumps({"meta": meta, "rows": [asdict(r) for r in rows],
                                                "accuracy": [asdict(r) for r in acc_rows],
                                                "max_pq_drop": args.max_pq_drop}, indent=2))
    table = markdown(rows)
    if acc_rows:
        table += (f"\nAccuracy on {acc_rows[0].frames} held-out synthetic frames at the model's input size:\n\n"
                  + accuracy_markdown(acc_rows, args.max_pq_drop))
    (out / "bench.md").write_text(f"Device: {meta['device']}; date {meta['date']}; torch {meta['torch']}\n\n{table}")
    plot_latency(all_times, out / "latency.png")
    print(table)
    over = [r.variant for r in acc_rows if r.delta_pq is not None and r.delta_pq < -args.max_pq_drop]
    if over:
        print(f"panoptic-ros bench: {', '.join(over)} lose more than {args.max_pq_drop} PQ against ours-fp32")
        return 1
    return 0
