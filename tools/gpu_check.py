#!/usr/bin/env python3
"""The one GPU check: correctness of the CUDA-only paths, then every speed variant, in one run.

Written for the lent GPU machine (one short run; see docs/PERFORMANCE.md, "GPU"):

    python tools/gpu_check.py --out "$OUT"            # several minutes on an H100/H200
    python tools/gpu_check.py --out "$OUT" --steps graphs,fusion,bench   # a part of it

1. CUDA graphs: the demo model's dense part captured per shape (batch 1 and 6, 1024x2048 and
   512x1024) must agree with eager (the runner's own first-replay check passed, no fallback) and
   the predictor's panoptic output with graphs must equal eager's on held-out frames.
2. Static detections + batched fusion (the CUDA defaults): on the same frames the panoptic output
   must equal torchvision's dynamic RPN/RoI heads + per-instance fusion, Cluster-NMS must have
   converged, and everything after the dense part (proposals, detections, masks, fusion,
   upsampling, boxes, areas, the copies to the host) must not synchronise with the host except the
   one explicit synchronisation per batch (``torch.cuda.set_sync_debug_mode``: zero warnings); the
   same part replayed as a CUDA graph (``sparse_graph``, experimental) must give the same output,
   captured without falling back.
3. ``panoptic-ros bench`` at 1024x2048 and 512x1024, batch 1 and 6, every variant but
   torch.compile (ours, ours-eager, ours-graphall, ours-dynamic, ours-hostfusion, ours-serial,
   ours-fp32, the torchvision baseline) with the PQ check of each optimisation; its bench.md /
   bench.json / latency.png land in --out/bench.
4. ``tools/bench_host.py``: the host's per-frame work at 1024x2048 (tracking, encoding, overlay) and a
   6-camera batch finished serially and with ``tracking_threads: 0``, on this machine's many cores.
5. ``ours-compile`` against ``ours`` at 1024x2048 batch 1 only (torch.compile's first call per shape
   is slow; last, so that a time limit costs only this), in --out/bench_compile.

6. ``train`` (not in the default steps; issue 4): continue the shipped demo model on this GPU for
   ``--train-budget-s`` seconds of training (8 pairs per step, frames rendered at the held-out frames'
   256x512 and enlarged to the network input, by ``--data-workers`` processes, bf16 autocast, the learning-rate schedule run over the budget), then score it on the 200
   held-out frames of docs/PERFORMANCE.md (seeds 100000..100019) on this GPU. Its
   ``train/model.safetensors`` (fp16, < 16 MiB), ``model.json``, ``loss_curves.png`` and
   ``heldout_eval/report.json`` come back; the held-out PQ is in ``gpu_check.json``. One call:
   ``python tools/gpu_check.py --out "$OUT" --steps train`` (about --train-budget-s + 2 minutes).

``gpu_check.json`` is rewritten after every step, so a run stopped at its limit keeps what it measured.

Exit status 0 only if every check passed. Nothing here downloads anything.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def check_graphs(out: dict) -> bool:
    import numpy as np
    import torch

    from panoptic_ros.model.evaluation import synthetic_frames
    from panoptic_ros.model.predictor import Predictor
    from panoptic_ros.pipeline import default_model_path

    ok = True
    for h, w in ((1024, 2048), (512, 1024)):
        frames = [f.image for f in synthetic_frames(100_900, 6, 1, h, w)]
        eager = Predictor.from_file(default_model_path(), device="cuda", input_size=(h, w), dense_mode="eager")
        graph = Predictor.from_file(default_model_path(), device="cuda", input_size=(h, w), dense_mode="cuda_graph")
        for batch in (1, 6):
            t0 = time.perf_counter()
            a, b = eager.predict(frames[:batch]), graph.predict(frames[:batch])
            same_class = float(np.mean([(x.class_map == y.class_map).mean() for x, y in zip(a, b)]))
            same_inst = float(np.mean([(x.instance_map == y.instance_map).mean() for x, y in zip(a, b)]))
            row = {"size": f"{h}x{w}", "batch": batch, "fallback": graph.dense.fallback_reason,
                   "graphs": graph.dense.captured_graphs,
                   "same_class_px": same_class, "same_instance_px": same_inst,
                   "instances": [x.num_instances for x in a], "instances_graph": [y.num_instances for y in b],
                   "first_call_s": time.perf_counter() - t0}
            row["ok"] = row["fallback"] is None and same_class > 0.999 and same_inst > 0.99
            ok &= row["ok"]
            out.setdefault("cuda_graphs", []).append(row)
            print(json.dumps(row), flush=True)
        del eager, graph
        torch.cuda.empty_cache()
    return ok


def check_fusion(out: dict, device: str = "cuda", size: tuple[int, int] = (1024, 2048)) -> bool:
    """(On a CPU, ``device="cpu"``, only the parity part means anything; it is how this was tried here.)"""
    import warnings

    import numpy as np
    import torch

    from panoptic_ros.model.evaluation import synthetic_frames
    from panoptic_ros.model.predictor import Predictor
    from panoptic_ros.pipeline import default_model_path

    ok = True
    h, w = size
    frames = [f.image for f in synthetic_frames(100_950, 6, 1, h, w)]
    batch = Predictor.from_file(default_model_path(), device=device, input_size=(h, w), fusion_mode="batch",
                                detection_mode="static")
    host = Predictor.from_file(default_model_path(), device=device, input_size=(h, w), fusion_mode="per_instance",
                               detection_mode="dynamic")
    a, b = batch.predict(frames), host.predict(frames)
    row = {"size": f"{h}x{w}", "batch": len(frames),
           "same_class_px": float(np.mean([(x.class_map == y.class_map).mean() for x, y in zip(a, b)])),
           "same_instance_px": float(np.mean([(x.instance_map == y.instance_map).mean() for x, y in zip(a, b)])),
           "instances": [x.num_instances for x in a], "instances_host": [y.num_instances for y in b]}
    # Only the part after the RoI heads is ours to keep free of synchronisation (torchvision's NMS syncs).
    x = batch.model.normalize(torch.stack([torch.from_numpy(f).permute(2, 0, 1) for f in frames]).to(device))
    if batch.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    p, sem = batch.dense(x, batch.dtype)
    cuda = batch.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if cuda:
            torch.cuda.set_sync_debug_mode("warn")
        try:
            with torch.autocast(batch.device.type, dtype=batch.dtype, enabled=batch.dtype != torch.float32):
                static = batch.static.detections(p, (h, w))
            results = batch._collect(batch._fuse_static(sem, static), static.per_image(), [(h, w)] * len(frames))
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
    row["same_as_predict"] = bool(all((r.instance_map == y.instance_map).all() for r, y in zip(results, a)))
    row["sync_warnings"] = [str(c.message)[:200] for c in caught]
    row["nms_converged"] = static.converged.cpu().tolist()
    if cuda:
        graphed = Predictor(batch.model, batch.card, device=device, input_size=(h, w), fusion_mode="batch",
                            detection_mode="static", sparse_graph=True, dense_mode="cuda_graph")
        for _ in range(2):  # capture + checked first replay, then a plain replay
            g = graphed.predict(frames)
        row["sparse_graph_same"] = bool(all((x.instance_map == y.instance_map).all() and
                                            (x.class_map == y.class_map).all() for x, y in zip(a, g)))
        row["sparse_graph_fallback"] = graphed.sparse_graph.fallback_reason
        row["sparse_graphs_captured"] = graphed.sparse_graph.captured_graphs
    row["ok"] = (row["same_class_px"] > 0.999 and row["same_instance_px"] > 0.999 and row["same_as_predict"]
                 and not row["sync_warnings"] and all(row["nms_converged"]))
    row["sparse_graph_ok"] = (not cuda) or (row["sparse_graph_same"] and row["sparse_graphs_captured"] == 1)
    ok &= row["ok"]
    out["static_detections_batched_fusion"] = row
    print(json.dumps(row, default=bool), flush=True)
    del batch, host
    if cuda:
        torch.cuda.empty_cache()
    return ok


HELDOUT_SIZE = "256x512"  # the frames of docs/PERFORMANCE.md's held-out set


def train_on_gpu(out: dict, out_dir: Path, budget_s: float, workers: int, device: str = "cuda") -> bool:
    """Continue the shipped demo model for ``budget_s`` seconds of GPU training; score it on held-out frames."""
    import os
    import shutil

    from panoptic_ros.cli import main as cli
    from panoptic_ros.pipeline import default_model_path

    run = out_dir / "train"
    workers = workers or max(1, (os.cpu_count() or 2) - 2)
    t0 = time.perf_counter()
    rc = cli(["train", "--out", str(run), "--preset", "demo", "--init", str(default_model_path()), "--device", device,
              "--pairs-per-step", "8", "--data-workers", str(workers), "--time-budget-s", str(budget_s),
              "--steps", "1000000", "--lr", "0.0005", "--warmup-steps", "100", "--seed", "3",
              "--checkpoint-every", "500", "--no-eval",
              # frames as the held-out set has them, enlarged to the network input as the predictor enlarges
              # them (frames rendered at the input size are sharper and cost stuff PQ: docs/PERFORMANCE.md)
              "--render-size", HELDOUT_SIZE])
    row: dict = {"rc": rc, "budget_s": budget_s, "data_workers": workers, "wall_s": time.perf_counter() - t0}
    if rc == 0:
        card = json.loads((run / "model.json").read_text())
        row.update(steps=card["training"]["steps_done"], final_loss=card["training"]["final_loss"],
                   command=card["training"]["command"])
        gt, pred, ev = out_dir / "heldout_gt", out_dir / "heldout_pred", out_dir / "heldout_eval"
        rc = cli(["synth", "--out", str(gt), "--sequences", "20", "--frames", "10", "--seed", "100000",
                  "--size", HELDOUT_SIZE, "--format", "coco"])
        rc = rc or cli(["predict", "--input", str(gt), "--out", str(pred), "--model", str(run / "model.safetensors"),
                        "--device", device])
        rc = rc or cli(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(ev)])
        row["eval_rc"] = rc
        if rc == 0:
            report = json.loads((ev / "report.json").read_text())
            row["heldout"] = {k: report["summary"][k] for k in ("pq", "sq", "rq", "pq_things", "pq_stuff", "miou")}
            row["heldout_per_class_pq"] = {c["name"]: c["pq"] for c in report["pq"]["per_class"]}
            row["heldout_recall_by_area"] = {"edges_px": report["pq"]["by_area"]["edges_px"],
                                             **{g: report["pq"]["by_area"][g] for g in ("things", "stuff")}}
        # At most 8 files come back from the GPU machine: keep the model, its card, the pictures and the reports.
        for d in (gt, pred, run / "train_state"):
            shutil.rmtree(d, ignore_errors=True)
        for picture in ev.glob("*.png"):  # one picture comes back; the numbers behind the others are in report.json
            if picture.name != "per_class_pq.png":
                picture.unlink()
    out["train"] = row
    print(json.dumps(row, default=str)[:2000], flush=True)
    return row.get("rc") == 0 and row.get("eval_rc") == 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--steps", default="graphs,fusion,bench,host,compile",
                    help="comma-separated subset, in this order (compile last: torch.compile's first call per shape "
                         "takes a minute or more); 'train' (issue 4) only when named")
    ap.add_argument("--train-budget-s", type=float, default=420.0, help="seconds of training for the train step")
    ap.add_argument("--data-workers", type=int, default=0, help="frame-rendering processes for the train step "
                                                                "(0: all cores but two)")
    args = ap.parse_args()
    import torch

    from panoptic_ros.cli import main as cli

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here", file=sys.stderr)
        return 2
    steps = set(args.steps.split(","))
    args.out.mkdir(parents=True, exist_ok=True)
    out: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                 "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "steps": {}}
    t_start = time.perf_counter()

    def record(step: str, passed: bool) -> None:
        # Written after every step: a run stopped at its time limit still leaves what it measured.
        out["steps"][step] = {"passed": passed, "at_s": round(time.perf_counter() - t_start, 1)}
        out["ok"] = all(v["passed"] for v in out["steps"].values())
        (args.out / "gpu_check.json").write_text(json.dumps(out, indent=2, default=str))
        print(f"gpu_check: {step} {'passed' if passed else 'FAILED'} at {out['steps'][step]['at_s']} s", flush=True)

    if "graphs" in steps:
        record("graphs", check_graphs(out))
    if "fusion" in steps:
        record("fusion", check_fusion(out))
    if "bench" in steps:
        rc = cli(["bench", "--device", "cuda", "--sizes", "1024x2048,512x1024", "--batches", "1,6",
                  "--variants", "ours,ours-eager,ours-graphall,ours-dynamic,ours-hostfusion,ours-serial,ours-flip,"
                                "ours-fp32,baseline",
                  "--iterations", str(args.iterations), "--warmup", "5", "--accuracy-frames", "24",
                  "--out", str(args.out / "bench")])
        record("bench", rc == 0)
    if "host" in steps:
        import subprocess
        host = subprocess.run([sys.executable, str(REPO / "tools" / "bench_host.py"), "--json",
                               str(args.out / "bench_host.json")], capture_output=True, text=True)
        print(host.stdout[-2000:], host.stderr[-2000:], flush=True)
        record("host", host.returncode == 0)
    if "compile" in steps:
        rc = cli(["bench", "--device", "cuda", "--sizes", "1024x2048", "--batches", "1",
                  "--variants", "ours,ours-compile", "--iterations", str(args.iterations), "--warmup", "5",
                  "--accuracy-frames", "0", "--out", str(args.out / "bench_compile")])
        record("compile", rc == 0)
    if "train" in steps:
        record("train", train_on_gpu(out, args.out, args.train_budget_s, args.data_workers))
    print("gpu_check:", "all checks passed" if out.get("ok") else "FAILED (see gpu_check.json)")
    return 0 if out.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
