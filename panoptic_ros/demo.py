"""``panoptic-ros demo``: the whole product in one command, with no hardware and no downloads.

1. Generates a short synthetic drive (a held-out seed the demo model never
   trained on) as a rosbag2 with exact ground truth;
2. starts the real ``panoptic_node`` with the shipped model (GPU if present,
   else CPU) and plays the bag to it through DDS with real rclpy, recording
   everything the node publishes into an output bag and an overlay MP4;
3. scores the node's output against the ground truth (PQ, IDF1, HOTA, ID
   switches on occlusion events, latency) and writes the report with its
   pictures;
4. prints a one-screen summary.

On CUDA the bag is played at its recorded pace (``--rate``, default 1). A CPU
cannot keep that pace, and the node would drop to the newest frame, so there
the default is lock-step playback (``replay --lockstep``): each frame once the
node has answered the previous one, so every frame is processed, whatever the
machine, and the scores do not depend on its load. ``--rate R`` plays paced on
CPU too. The summary gives the node's own processing rate and latency.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DEMO_SEED = 424_242  # far outside the training seeds (0..4999)


@dataclass
class DemoResult:
    out: Path
    frames_published: int
    frames_processed: int
    occlusion_events: int
    summary: dict
    processing_fps: float | None
    files: list[Path]
    wall_s: float


def generate_drive(bag: Path, seed: int, frames: int, height: int, width: int, fps: float) -> int:
    """Write the synthetic drive as a bag with ground-truth topics; returns its full-occlusion event count."""
    from tqdm import tqdm

    from panoptic_ros.datasets.rosbag_io import RosbagWriter
    from panoptic_ros.synth import SynthConfig, SyntheticSequence

    seq = SyntheticSequence(seed=seed, num_frames=frames, config=SynthConfig(height=height, width=width, fps=fps))
    writer = RosbagWriter(bag, camera="camera", storage="mcap")
    try:
        for k in tqdm(range(frames), desc="synthesise drive", unit="frame"):
            writer.add(seq.render(k))
    finally:
        writer.close()
    return len(seq.occlusion_events())


def run_demo(out: Path, frames: int, size: tuple[int, int], seed: int, device: str, model: str, rate: float | None,
             fps: float = 10.0) -> DemoResult:
    import torch

    from panoptic_ros.evaluate import EvaluateOptions, evaluate
    from panoptic_ros.replay import ReplaySettings, replay_bag
    from panoptic_ros.report import write_report

    t0 = time.perf_counter()
    if out.exists():
        for name in ("input_bag", "replay", "report"):
            shutil.rmtree(out / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available() and device != "cpu"
    lockstep = rate is None and not cuda
    if rate is None:
        rate = 1.0
    print(f"[demo] 1/3 synthetic drive: {frames} frames at {size[0]}x{size[1]}, {fps:g} Hz, seed {seed}")
    events = generate_drive(out / "input_bag", seed, frames, size[0], size[1], fps)
    pace = "in lock-step (each frame once the node has answered the last)" if lockstep else f"at {rate:g}x"
    print(f"[demo] 2/3 panoptic_node over DDS ({'CUDA' if cuda else 'CPU'}), bag played {pace}")
    settings = ReplaySettings.create(model=model or None, device=device, live=True, rate=rate, lockstep=lockstep,
                                     video=True)
    replay = replay_bag(out / "input_bag", out / "replay", settings)
    if replay.error:
        raise RuntimeError(f"the node replay failed: {replay.error}")
    print("[demo] 3/3 evaluating against the ground truth")
    report = evaluate(replay.output_bag, out / "input_bag", EvaluateOptions(skip_missing=True))
    files = write_report(report, out / "report")
    summary = report.summary()
    p50 = summary.get("latency_p50_ms")
    result = DemoResult(out=out, frames_published=replay.frames_in, frames_processed=replay.frames_out,
                        occlusion_events=events, summary=summary,
                        processing_fps=(1000.0 / p50) if p50 else None,
                        files=[*replay.videos, *files], wall_s=time.perf_counter() - t0)
    (out / "demo_summary.json").write_text(json.dumps({
        "frames_published": result.frames_published, "frames_processed": result.frames_processed,
        "occlusion_events": events, "processing_fps": result.processing_fps, "wall_s": result.wall_s,
        "device": "cuda" if cuda else "cpu", "rate": None if lockstep else rate, "lockstep": lockstep, "seed": seed,
        "size": list(size),
        "summary": summary, "files": [str(f) for f in result.files]}, indent=2))
    return result


def summary_screen(r: DemoResult) -> str:
    s = r.summary

    def pct(key: str) -> str:
        v = s.get(key)
        return "n/a" if v is None else f"{100.0 * float(v):5.1f}"

    fps = f"{r.processing_fps:.1f}" if r.processing_fps else "n/a"
    p50 = s.get("latency_p50_ms")
    p99 = s.get("latency_p99_ms")
    lat = f"{p50:.0f} ms p50 / {p99:.0f} ms p99" if p50 is not None and p99 is not None else "n/a"
    occ = (f"{s.get('occlusion_events')} full occlusions: {s.get('occlusion_id_switches')} id switches"
           if s.get("occlusion_events") else f"{r.occlusion_events} full occlusions in the drive")
    lines = [
        "=" * 64,
        " panoptic_ros demo",
        "=" * 64,
        f" frames      {r.frames_processed} processed of {r.frames_published} published",
        f" quality     PQ {pct('pq')}   (things {pct('pq_things')}, stuff {pct('pq_stuff')})   mIoU {pct('miou')}",
        f" tracking    IDF1 {pct('idf1')}   HOTA {pct('hota')}   ID switches {s.get('id_switches')}",
        f" occlusion   {occ}",
        f" speed       {fps} frames/s in the node ({lat} per frame)",
        f" outputs     {r.out}/",
    ]
    for f in r.files:
        lines.append(f"               {Path(f).relative_to(r.out) if Path(f).is_relative_to(r.out) else f}")
    lines += [f" took        {r.wall_s:.0f} s", "=" * 64]
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="synthetic drive -> real node over DDS -> video, report, summary",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="panoptic_demo", help="output directory (default: ./panoptic_demo)")
    p.add_argument("--frames", type=int, default=60, help="frames of the synthetic drive (default 60 = 6 s)")
    p.add_argument("--size", default="256x512", help="frame size HxW (default 256x512)")
    p.add_argument("--seed", type=int, default=DEMO_SEED, help="generator seed of the drive")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    p.add_argument("--model", default="", help="model .safetensors (default: the shipped demo model)")
    p.add_argument("--rate", type=float, default=None,
                   help="playback speed relative to recorded time (default: 1 on CUDA; on CPU lock-step, each "
                        "frame once the node has answered the previous one)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from panoptic_ros.model.checkpoint import CheckpointError
    from panoptic_ros.argtypes import parse_size

    try:
        size = parse_size(args.size)
    except (argparse.ArgumentTypeError, ValueError) as exc:
        print(f"panoptic-ros demo: {exc}", file=sys.stderr)
        return 2
    if args.frames < 2:
        print("panoptic-ros demo: --frames must be at least 2", file=sys.stderr)
        return 2
    try:
        result = run_demo(Path(args.out), args.frames, size, args.seed, args.device, args.model, args.rate)
    except (CheckpointError, RuntimeError, ValueError) as exc:
        print(f"panoptic-ros demo: {exc}", file=sys.stderr)
        return 1
    print(summary_screen(result))
    return 0
