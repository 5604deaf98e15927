#!/usr/bin/env python3
"""Benchmark panoptic_node through DDS: image published -> object array received.

Three processes on one machine: the node (``panoptic_node``), a publisher
(this script with ``--publish``) that sends frames at a fixed rate with the
wall-clock send time in ``header.stamp``, and this script receiving the
node's PanopticObjectArray messages. Latency = receive time - send time
(same host clock); throughput = object arrays per second; drops from the
node's /diagnostics; node CPU from /proc. Each configuration runs
``--repeat`` times and the table shows the median run.

    .venv/bin/python tools/bench_node.py --sizes 256x512,512x1024 --rate 15 --seconds 8 --repeat 3
    .venv/bin/python tools/bench_node.py --demo-architecture   # untrained weights, shipped model's compute

Frames are synthetic street scenes (panoptic_ros.synth) when available.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


@dataclass
class RunResult:
    transport: str
    size: str
    rate_hz: float  # requested input rate
    sent: int
    sent_hz: float
    received: int  # object arrays received
    out_hz: float
    latency_p50_ms: float
    latency_p99_ms: float
    node_p50_ms: float  # processing_time_s reported by the node (frame received -> objects published)
    node_received: int  # frames that reached the node (best-effort DDS may lose large frames)
    dropped: int  # frames the node replaced before processing (newest-wins)
    node_cpu_pct: float  # node process CPU time / wall time (100 = one core)
    node_rss_mb: float


# --------------------------------------------------------------------------- frames


def make_frames(height: int, width: int, count: int = 8) -> list[np.ndarray]:
    try:
        from panoptic_ros.synth import SynthConfig, SyntheticSequence

        seq = SyntheticSequence(seed=11, num_frames=count, config=SynthConfig(height=height, width=width))
        return [seq.render(k).image for k in range(count)]
    except Exception as exc:  # noqa: BLE001 - the benchmark still runs on noise
        print(f"synthetic frames unavailable ({exc!r}); using noise", file=sys.stderr)
        rng = np.random.default_rng(0)
        return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


# --------------------------------------------------------------------------- publisher process


def publish(args: argparse.Namespace) -> int:
    import cv2
    import rclpy
    from sensor_msgs.msg import CompressedImage, Image

    from panoptic_ros.argtypes import parse_size
    from panoptic_ros.ros.qos import input_qos

    h, w = parse_size(args.size)
    frames = make_frames(h, w)
    rclpy.init()
    node = rclpy.create_node("bench_publisher")
    if args.transport == "compressed":
        msgs = [CompressedImage(format="jpeg", data=cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR),
                                                                   [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
                for f in frames]
        pub = node.create_publisher(CompressedImage, "image/compressed", input_qos(args.input_qos))
    else:
        msgs = [Image(height=h, width=w, encoding="rgb8", step=3 * w, data=f.tobytes()) for f in frames]
        pub = node.create_publisher(Image, "image", input_qos(args.input_qos))
    deadline = time.monotonic() + 20
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    print("READY", flush=True)
    time.sleep(0.5)
    period = 1.0 / args.rate
    start = time.monotonic()
    n = int(args.seconds * args.rate)
    for i in range(n):
        msg = msgs[i % len(msgs)]
        now = time.time()
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(now), int((now % 1) * 1e9)
        msg.header.frame_id = "bench_camera"
        pub.publish(msg)
        time.sleep(max(0.0, start + (i + 1) * period - time.monotonic()))
    elapsed = time.monotonic() - start
    print(json.dumps({"sent": n, "seconds": elapsed}), flush=True)
    node.destroy_node()
    rclpy.shutdown()
    return 0


# --------------------------------------------------------------------------- receiver (this process)


class Receiver:
    def __init__(self) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor

        from panoptic_ros.msg import PanopticClassInfo, PanopticObjectArray
        from panoptic_ros.ros import qos

        rclpy.init()
        self.node = rclpy.create_node("bench_receiver")
        self.lock = threading.Lock()
        self.records: list[tuple[float, float, float]] = []  # (receive time, latency s, node processing s)
        self.diag: dict[str, str] = {}
        self.ready = threading.Event()
        self.node.create_subscription(PanopticObjectArray, "panoptic/objects", self._on_objects, qos.result_qos())
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.node.create_subscription(PanopticClassInfo, "panoptic/class_info", lambda m: self.ready.set(),
                                      qos.latched_qos())
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - shutdown while waiting; the loop condition ends it
                time.sleep(0.01)

    def _on_objects(self, msg) -> None:
        now = time.time()
        sent = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        with self.lock:
            self.records.append((now, now - sent, msg.processing_time_s))

    def _on_diag(self, msg) -> None:
        for s in msg.status:
            if s.name.endswith("camera camera"):
                with self.lock:
                    self.diag = {kv.key: kv.value for kv in s.values}
            elif s.name.endswith(": model"):
                with self.lock:
                    self.diag.update({f"model.{kv.key}": kv.value for kv in s.values})

    def reset_diagnostics(self) -> None:
        with self.lock:
            self.diag = {}

    def take(self) -> tuple[list[tuple[float, float, float]], dict[str, str]]:
        with self.lock:
            records, self.records = self.records, []
            return records, dict(self.diag)

    def close(self) -> None:
        import rclpy

        # Stop and join the spinning thread before the node and the context go: a thread still waiting in
        # the middleware when the context is torn down aborts the process at exit.
        self._stop.set()
        self.thread.join(timeout=5.0)
        try:
            self.executor.shutdown(timeout_sec=1.0)
            self.node.destroy_node()
        finally:
            rclpy.try_shutdown()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_one(receiver: Receiver, node_pid: int, transport: str, size: str, args: argparse.Namespace) -> RunResult:
    time.sleep(2 * args.diagnostics_period_s)  # a diagnostics message of this node, after the last run
    diag_before = receiver.take()[1]
    cpu0, t0 = cpu_seconds(node_pid), time.monotonic()
    pub = subprocess.Popen([sys.executable, __file__, "--publish", "--transport", transport, "--size", size,
                            "--rate", str(args.rate), "--seconds", str(args.seconds), "--input-qos", args.input_qos],
                           stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    out, _ = pub.communicate(timeout=args.seconds + 120)
    time.sleep(max(1.5, 2 * args.diagnostics_period_s))  # last outputs and one diagnostics period
    cpu1, t1 = cpu_seconds(node_pid), time.monotonic()
    records, diag = receiver.take()
    sent = json.loads(out.strip().splitlines()[-1])
    lat = np.array([r[1] for r in records]) * 1e3
    proc = np.array([r[2] for r in records]) * 1e3
    span = (records[-1][0] - records[0][0]) if len(records) > 1 else float("nan")
    dropped = int(diag.get("frames_dropped", 0)) - int(diag_before.get("frames_dropped", 0))
    node_received = int(diag.get("frames_received", 0)) - int(diag_before.get("frames_received", 0))
    return RunResult(
        transport=transport, size=size, rate_hz=args.rate, sent=sent["sent"], sent_hz=sent["sent"] / sent["seconds"],
        received=len(records), out_hz=(len(records) - 1) / span if len(records) > 1 else 0.0,
        latency_p50_ms=float(np.percentile(lat, 50)) if lat.size else float("nan"),
        latency_p99_ms=float(np.percentile(lat, 99)) if lat.size else float("nan"),
        node_p50_ms=float(np.percentile(proc, 50)) if proc.size else float("nan"), node_received=node_received,
        dropped=dropped,
        node_cpu_pct=100.0 * (cpu1 - cpu0) / (t1 - t0), node_rss_mb=float(diag.get("model.rss_mb", "nan")))


def demo_architecture_model(directory: Path) -> Path:
    """The shipped model's architecture (demo_config) with untrained weights: same network cost."""
    import torch

    from panoptic_ros.model.checkpoint import ModelCard, save_model
    from panoptic_ros.model.config import demo_config
    from panoptic_ros.model.efficientps import build_model

    torch.manual_seed(0)
    cfg = demo_config(pretrained_backbone=False)
    return save_model(build_model(cfg).eval(), directory / "demo_untrained.safetensors",
                      ModelCard(name="demo-architecture-untrained", config=cfg))


def bench(args: argparse.Namespace) -> int:
    from panoptic_ros.pipeline import default_model_path

    tmp = Path(tempfile.mkdtemp(prefix="bench_node_"))
    model = Path(args.model) if args.model else (demo_architecture_model(tmp) if args.demo_architecture
                                                 else default_model_path())
    if not model.is_file():
        print(f"model {model} not found: pass --model PATH or --demo-architecture", file=sys.stderr)
        return 2
    os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 50))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.pop("ROS_LOCALHOST_ONLY", None)
    receiver = Receiver()
    results: list[RunResult] = []
    transports = ["raw", "compressed"] if args.transport == "both" else [args.transport]
    try:
        for transport in transports:
            log = open(tmp / f"node_{transport}.log", "w")
            node = subprocess.Popen(
                [str(REPO / ".venv" / "bin" / "panoptic_node"), "--ros-args", "-p", f"model.path:={model}",
                 "-p", f"model.device:={args.device}", "-p", f"input_transport:={transport}",
                 "-p", f"diagnostics_period_s:={args.diagnostics_period_s}", "-p", f"input_qos:={args.input_qos}"],
                stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
            try:
                receiver.ready.clear()
                receiver.reset_diagnostics()
                if not receiver.ready.wait(120):
                    print(f"node did not start; log in {log.name}", file=sys.stderr)
                    return 1
                for size in args.sizes.split(","):
                    runs = [run_one(receiver, node.pid, transport, size, args) for _ in range(args.repeat)]
                    runs.sort(key=lambda r: r.latency_p50_ms)
                    median = runs[len(runs) // 2]
                    results.append(median)
                    print(f"{transport} {size}: p50 {[round(r.latency_p50_ms) for r in runs]} ms over "
                          f"{len(runs)} runs", file=sys.stderr)
            finally:
                node.terminate()
                node.wait(timeout=30)
                log.close()
    finally:
        receiver.close()
    print_table(results, model, args)
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return 0


def print_table(results: list[RunResult], model: Path, args: argparse.Namespace) -> None:
    print(f"\npanoptic_node through DDS (Fast DDS, localhost), model {model.name}, device {args.device}, "
          f"{os.cpu_count()} CPUs; input {args.rate:g} Hz ({args.input_qos} QoS) for {args.seconds:g} s; "
          f"median of {args.repeat} runs")
    header = ("| transport | size (HxW) | sent Hz | out Hz | latency p50 ms | latency p99 ms | node p50 ms | "
              "sent / reached node / dropped by node | node CPU % | node RSS MB |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for r in results:
        print(f"| {r.transport} | {r.size} | {r.sent_hz:.1f} | {r.out_hz:.1f} | {r.latency_p50_ms:.0f} | "
              f"{r.latency_p99_ms:.0f} | {r.node_p50_ms:.0f} | {r.sent} / {r.node_received} / {r.dropped} | "
              f"{r.node_cpu_pct:.0f} | "
              f"{r.node_rss_mb:.0f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model .safetensors (default: the shipped demo model)")
    parser.add_argument("--demo-architecture", action="store_true",
                        help="benchmark an untrained model of the demo architecture (when no trained model exists)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="256x512", help="comma-separated HxW frame sizes")
    parser.add_argument("--size", default="256x512", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=10.0, help="input frames per second")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of one run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per configuration (the median is shown)")
    parser.add_argument("--transport", choices=("raw", "compressed", "both"), default="both")
    parser.add_argument("--input-qos", choices=("SENSOR_DATA", "DEFAULT"), default="SENSOR_DATA",
                        help="QoS of the image topic on both sides (the node's input_qos)")
    parser.add_argument("--diagnostics-period-s", type=float, default=0.5)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--publish", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    return publish(args) if args.publish else bench(args)


if __name__ == "__main__":
    sys.exit(main())
