"""Overload: frames at three times the processing rate. Latency stays bounded, the newest frame is processed,
and every frame is accounted for exactly.

In-process (the exact part): the real PanopticNode class with its worker thread; the test calls the image
subscription's own callback at three times the measured processing rate and records every frame the node
publishes. Sent = received = processed + dropped, frame by frame: the processed frames are a subset of the
sent ones in stamp order, the last one sent is processed, and the drop counter equals the frames that were
sent but never published.

Over DDS (best effort, as cameras publish): the same flood to a node process. The transport may lose
frames too, so "not received" (sent - frames_received) is told apart from "dropped by the node"
(frames_dropped), and the node's own books must still balance exactly.
"""
from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("panoptic_ros.msg")

from rclpy.context import Context  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.signals import SignalHandlerOptions  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from helpers_ros import discover_locally, random_domain_id  # noqa: E402
from panoptic_ros.ros import diagnostics  # noqa: E402
from helpers_report import record
from helpers_model import save_tiny_model

FULL = os.environ.get("PANOPTIC_RELIABILITY_SIZE", "ci") == "full"
FLOOD = 600 if FULL else 90  # frames sent in-process
DDS_FLOOD = 300 if FULL else 45
H, W = 64, 128
PARAMS = {"model.device": "cpu", "model.score_threshold": 0.05, "model.overlap_threshold": 0.0,
          "tracker.min_hits": 1, "tracker.high_score_threshold": 0.1, "tracker.low_score_threshold": 0.05,
          "tracker.new_track_score_threshold": 0.1}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch


    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_tiny_model(path)
    return path


def image_msg(seed: int, stamp_s: float) -> Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    m = Image(height=H, width=W, encoding="rgb8", step=3 * W, data=pixels.tobytes())
    m.header.frame_id = "overload_optical"
    m.header.stamp.sec, m.header.stamp.nanosec = int(stamp_s), int(round(stamp_s % 1 * 1e9))
    return m


class Published:
    """Every frame the node publishes: (stamp, processing latency); wraps the node's own _publish."""

    def __init__(self, node: Any) -> None:
        self.items: list[tuple[float, float]] = []
        self.cond = threading.Condition()
        original = node._publish

        def publish(cam: Any, pending: Any, out: Any) -> None:
            latency_s = time.monotonic() - pending.received_s
            original(cam, pending, out)
            with self.cond:
                self.items.append((round(pending.stamp_s, 6), latency_s))  # stamps as sent (6 decimals)
                self.cond.notify_all()

        node._publish = publish

    def wait_for(self, stamp_s: float, timeout_s: float) -> bool:
        stamp_s = round(stamp_s, 6)
        with self.cond:
            return self.cond.wait_for(lambda: any(s == stamp_s for s, _ in self.items), timeout_s)


@pytest.mark.timeout(600 if FULL else 150)
def test_three_times_the_processing_rate_in_process_counts_every_frame_exactly(model_path: Path) -> None:
    from panoptic_ros.ros.node import PanopticNode

    ctx = Context()
    rclpy.init(context=ctx, domain_id=random_domain_id(), signal_handler_options=SignalHandlerOptions.NO)
    node = PanopticNode(context=ctx, namespace=f"/overload_{uuid.uuid4().hex[:8]}",
                        parameter_overrides=[Parameter(k, value=v) for k, v in
                                             {**PARAMS, "model.path": str(model_path)}.items()])
    try:
        cam = node.cameras[0]
        on_image = cam.subs[0].callback
        published = Published(node)
        # The processing time of one frame with nothing else going on.
        for i in range(5):
            stamp = 1.0 + 0.1 * i
            on_image(image_msg(i, stamp))
            assert published.wait_for(stamp, 30)
        period_s = float(np.median([lat for _, lat in published.items[1:]]))
        before = {k: cam.stats[k] for k in (diagnostics.RECEIVED, diagnostics.PROCESSED, diagnostics.DROPPED)}
        first = len(published.items)
        interval = period_s / 3.0
        sent: list[float] = []
        start = time.monotonic()
        for i in range(FLOOD):
            stamp = round(10.0 + 0.01 * i, 6)
            on_image(image_msg(100 + i, stamp))
            sent.append(stamp)
            time.sleep(max(0.0, start + (i + 1) * interval - time.monotonic()))
        flood_s = time.monotonic() - start
        assert published.wait_for(sent[-1], 30), "the newest frame was never processed"
        deadline = time.monotonic() + 10
        while cam.slot.has_frame and time.monotonic() < deadline:  # nothing can wait behind the newest frame
            time.sleep(0.01)
        flood = published.items[first:]
        d = {k: cam.stats[k] - before[k] for k in before}
        done = [s for s, _ in flood]
        latencies = [lat for _, lat in flood]
        assert d[diagnostics.RECEIVED] == FLOOD
        assert d[diagnostics.PROCESSED] == len(done)
        assert d[diagnostics.DROPPED] == FLOOD - len(done) == len(set(sent) - set(done))  # exact, frame by frame
        assert done == sorted(done) and set(done) <= set(sent) and done[-1] == sent[-1]
        assert not cam.slot.has_frame and cam.stats[diagnostics.PROCESSING_ERRORS] == 0
        assert d[diagnostics.DROPPED] >= FLOOD // 2, (d, period_s)  # it really was overloaded
        # Newest-wins: a frame waits at most one cycle, then takes one: about two periods, never a queue.
        assert max(latencies) < 3.5 * period_s + 0.25, (max(latencies), period_s)
        third = max(1, len(latencies) // 3)
        assert np.median(latencies[-third:]) < 2.5 * period_s + 0.1, (latencies, period_s)  # no growth
        record(__file__, "overload.in_process", frames_sent=FLOOD, received=d[diagnostics.RECEIVED],
               processed=d[diagnostics.PROCESSED], dropped=d[diagnostics.DROPPED], lost=0,
               input_rate_hz=round(FLOOD / flood_s, 1), processing_rate_hz=round(1 / period_s, 1),
               period_ms=round(period_s * 1e3, 1), latency_p50_ms=round(float(np.median(latencies)) * 1e3, 1),
               latency_max_ms=round(max(latencies) * 1e3, 1), newest_processed=True)
    finally:
        node.close()
        node.destroy_node()
        rclpy.shutdown(context=ctx)


@pytest.mark.timeout(600 if FULL else 150)
def test_three_times_the_processing_rate_over_dds_tells_transport_loss_from_drops(model_path: Path,
                                                                                 tmp_path: Path) -> None:
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    from panoptic_ros.msg import PanopticObjectArray
    from test_node import Diagnostics, NodeProcess, Probe, counts, stamp_of

    mp = pytest.MonkeyPatch()
    discover_locally(mp)
    domain_id = random_domain_id()
    node = NodeProcess(model_path, [f"{k}:={v}" for k, v in PARAMS.items()] + ["diagnostics_period_s:=0.2"],
                       tmp_path / "node.log", domain_id)
    probe = Probe(domain_id)
    try:
        diag = Diagnostics(probe)
        objects = probe.inbox(PanopticObjectArray, "/panoptic/objects",
                              QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        pub = probe.publisher(Image, "/image", qos_profile_sensor_data)  # best effort, as a camera driver
        keys = (diagnostics.RECEIVED, diagnostics.PROCESSED, diagnostics.DROPPED, diagnostics.DECODE_ERRORS)

        def settled(v: dict[str, str]) -> bool:  # nothing waiting or in the model
            c = counts(v, *keys)
            return c[diagnostics.RECEIVED] == c[diagnostics.PROCESSED] + c[diagnostics.DROPPED] + \
                c[diagnostics.DECODE_ERRORS]

        solo = []
        for i in range(4):
            stamp = 1.0 + 0.1 * i
            msg = None
            for _ in range(4):  # until discovery has matched every endpoint a best-effort frame (or its
                pub.publish(image_msg(i, stamp))  # result) can be lost: send the same frame again
                msg = objects.wait(lambda m, s=stamp: stamp_of(m) == s, 15)
                if msg is not None:
                    break
            assert msg is not None, node.log()[-3000:]
            solo.append(msg.processing_time_s)
        period_s = float(np.median(solo[1:]))
        before = counts(diag.values("panoptic_node: camera camera",
                                    lambda v: settled(v) and int(v[diagnostics.PROCESSED]) >= 4), *keys)
        first = len(objects.items)
        sent = []
        start = time.monotonic()
        for i in range(DDS_FLOOD):
            stamp = round(10.0 + 0.01 * i, 6)
            pub.publish(image_msg(100 + i, stamp))
            sent.append(stamp)
            time.sleep(max(0.0, start + (i + 1) * period_s / 3 - time.monotonic()))
        last = objects.wait(lambda m: stamp_of(m) == sent[-1], 30)
        after = counts(diag.values("panoptic_node: camera camera", settled, timeout_s=30), *keys)
        d = {k: after[k] - before[k] for k in keys}
        outputs = [stamp_of(m) for m in objects.items[first:]]
        not_received = DDS_FLOOD - d[diagnostics.RECEIVED]
        assert d[diagnostics.DECODE_ERRORS] == 0
        assert 0 <= not_received <= DDS_FLOOD // 5, d  # best effort on one host loses little
        assert d[diagnostics.RECEIVED] == d[diagnostics.PROCESSED] + d[diagnostics.DROPPED]  # the node's books
        assert d[diagnostics.PROCESSED] == len(outputs) and set(outputs) <= set(sent)
        assert d[diagnostics.DROPPED] >= DDS_FLOOD // 3, d
        if last is not None:  # the newest frame arrived: then it was processed
            assert outputs[-1] == sent[-1]
        else:  # it was lost in transport, and the node processed the newest it received
            assert not_received > 0
        latencies = [m.processing_time_s for m in objects.items[first:]]
        assert max(latencies) < 3.5 * period_s + 0.25, (latencies, period_s)
        record(__file__, "overload.dds", frames_sent=DDS_FLOOD, not_received=not_received,
               received=d[diagnostics.RECEIVED], processed=d[diagnostics.PROCESSED],
               dropped_by_node=d[diagnostics.DROPPED], period_ms=round(period_s * 1e3, 1),
               latency_max_ms=round(max(latencies) * 1e3, 1), newest_processed=last is not None)
    finally:
        probe.close()
        node.stop()
        mp.undo()
