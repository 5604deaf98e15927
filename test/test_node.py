"""The ROS 2 node across processes: real rclpy over Fast DDS, the node in a child process.

One node process (two cameras, raw input) serves most checks in order; a
second one (one camera, compressed input, reliable input QoS) covers the
single-camera topic names, corrupt JPEGs and QoS mismatches. The test
process publishes frames and reads the outputs and /diagnostics.
"""
from __future__ import annotations

import math
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import pytest

from helpers_ros import REPO, discover_locally, random_domain_id, ros_env, stop_process

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("panoptic_ros.msg")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from rclpy.signals import SignalHandlerOptions  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402
from std_srvs.srv import SetBool  # noqa: E402

from panoptic_ros.classes import CITYSCAPES  # noqa: E402
from panoptic_ros.msg import PanopticClassInfo, PanopticObject, PanopticObjectArray  # noqa: E402
from panoptic_ros.panoptic import LABEL_DIVISOR, decode_panoptic  # noqa: E402
from panoptic_ros.ros.inputs import CameraInfoHistory, FrameSlot, PendingFrame  # noqa: E402
from panoptic_ros.ros.log_throttle import LogThrottle  # noqa: E402
from helpers_model import save_tiny_model

NODE = REPO / ".venv" / "bin" / "panoptic_node"
H, W = 120, 160
K = [100.0, 0.0, 79.5, 0.0, 100.0, 59.5, 0.0, 0.0, 1.0]
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# The tiny random model scores detections around 0.13: let them through so there are objects to check.
PERMISSIVE = ["model.score_threshold:=0.05", "model.overlap_threshold:=0.0", "tracker.min_hits:=1",
              "tracker.high_score_threshold:=0.1", "tracker.low_score_threshold:=0.05",
              "tracker.new_track_score_threshold:=0.1", "model.device:=cpu", "diagnostics_period_s:=0.2"]


# --------------------------------------------------------------------------- plumbing


def noise_rgb(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def image_msg(seed: int, stamp_s: float, frame_id: str = "front_optical", **fields: Any) -> Image:
    m = Image(height=H, width=W, encoding="rgb8", step=3 * W, data=noise_rgb(seed).tobytes())
    m.header.frame_id = frame_id
    m.header.stamp.sec, m.header.stamp.nanosec = int(stamp_s), int(round((stamp_s % 1) * 1e9))
    for k, v in fields.items():
        setattr(m, k, v)
    return m


def info_msg(stamp_s: float, k: list[float] = K) -> CameraInfo:
    m = CameraInfo(height=H, width=W, k=k)
    m.header.stamp.sec, m.header.stamp.nanosec = int(stamp_s), int(round((stamp_s % 1) * 1e9))
    return m


def stamp_of(msg: Any) -> float:
    return round(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9, 6)


class Inbox:
    def __init__(self) -> None:
        self.items: list[Any] = []
        self.cond = threading.Condition()

    def put(self, msg: Any) -> None:
        with self.cond:
            self.items.append(msg)
            self.cond.notify_all()

    def wait(self, predicate: Callable[[Any], bool], timeout_s: float, start: int = 0) -> Any | None:
        """The newest message (from index ``start`` on) satisfying ``predicate``, waiting up to timeout_s."""
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while True:
                for m in reversed(self.items[start:]):
                    if predicate(m):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)


class Probe:
    """The test's side of the graph: its own rclpy context on the node's domain, spun by a thread."""

    def __init__(self, domain_id: int) -> None:
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(f"panoptic_node_test_probe_{uuid.uuid4().hex[:8]}", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - an entity destroyed while waited on; shutdown ends the loop
                time.sleep(0.01)

    def inbox(self, msg_type: Any, topic: str, qos: Any = RELIABLE) -> Inbox:
        box = Inbox()
        self.node.create_subscription(msg_type, topic, box.put, qos)
        return box

    def publisher(self, msg_type: Any, topic: str, qos: Any = qos_profile_sensor_data, wait: bool = True) -> Any:
        """A publisher, returned once the node's subscription has matched it (unless ``wait`` is False)."""
        pub = self.node.create_publisher(msg_type, topic, qos)
        deadline = time.monotonic() + 20
        while wait and pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        return pub

    def call(self, srv_type: Any, name: str, request: Any, timeout_s: float = 10.0) -> Any:
        client = self.node.create_client(srv_type, name)
        assert client.wait_for_service(timeout_sec=timeout_s), f"service {name} did not appear"
        future = client.call_async(request)
        deadline = time.monotonic() + timeout_s
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert future.done(), f"service {name} did not answer"
        return future.result()

    def set_parameter(self, node_name: str, name: str, value: Any) -> Any:
        request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
        return self.call(SetParameters, f"/{node_name}/set_parameters", request).results[0]

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
        self._thread.join(timeout=5)


class Diagnostics:
    def __init__(self, probe: Probe) -> None:
        self.box = probe.inbox(DiagnosticArray, "/diagnostics")

    def values(self, status_name: str, predicate: Callable[[dict[str, str]], bool] = lambda v: True,
               timeout_s: float = 10.0) -> dict[str, str]:
        """Values of the first status built after this call (the next message may predate it) that satisfy
        ``predicate``."""
        found: dict[str, str] = {}
        start = len(self.box.items) + 1

        def match(msg: DiagnosticArray) -> bool:
            for s in msg.status:
                if s.name == status_name:
                    v = {kv.key: kv.value for kv in s.values}
                    v["__level__"], v["__message__"] = str(s.level[0] if isinstance(s.level, bytes) else s.level), \
                        s.message
                    if predicate(v):
                        found.update(v)
                        return True
            return False

        msg = self.box.wait(match, timeout_s, start)
        assert msg is not None, f"no diagnostics for {status_name!r} satisfying the condition within {timeout_s} s; " \
                                f"last: {self.last(status_name)}"
        return found

    def last(self, status_name: str) -> dict[str, str]:
        for msg in reversed(self.box.items):
            for s in msg.status:
                if s.name == status_name:
                    return {kv.key: kv.value for kv in s.values}
        return {}


def counts(values: dict[str, str], *keys: str) -> dict[str, int]:
    return {k: int(values.get(k, "0")) for k in keys}


class NodeProcess:
    def __init__(self, model_path: Path, args: list[str], log_path: Path, domain_id: int) -> None:
        command = [str(NODE), "--ros-args", "-p", f"model.path:={model_path}"]
        for a in args:
            command += ["-p", a]
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.process = subprocess.Popen(command, env=ros_env(domain_id), cwd=str(REPO), stdout=self._log,
                                        stderr=subprocess.STDOUT, text=True)

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        stop_process(self.process)
        self._log.close()
        return self.process.returncode


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:


    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_tiny_model(path, permissive=True)
    return path


@pytest.fixture(scope="module")
def env_for_dds():
    """The probe's discovery settings must match the child's (helpers_ros.ros_env); rmw reads them at init."""
    mp = pytest.MonkeyPatch()
    discover_locally(mp)
    yield
    mp.undo()


class Graph:
    """Node A (cameras front + rear, raw input) with the probe's publishers and inboxes."""

    def __init__(self, model_path: Path, tmp: Path) -> None:
        self.domain_id = random_domain_id()
        self.node = NodeProcess(model_path, ["cameras:=[front,rear]", "mount.height_m:=1.5"] + PERMISSIVE,
                                tmp / "node_a.log", self.domain_id)
        self.probe = Probe(self.domain_id)
        self.diag = Diagnostics(self.probe)
        self.class_info = self.probe.inbox(PanopticClassInfo, "/front/panoptic/class_info", LATCHED)
        self.objects = {c: self.probe.inbox(PanopticObjectArray, f"/{c}/panoptic/objects") for c in ("front", "rear")}
        self.panoptic = {c: self.probe.inbox(Image, f"/{c}/panoptic/image") for c in ("front", "rear")}
        self.semantic = self.probe.inbox(Image, "/front/panoptic/semantic")
        assert self.class_info.wait(lambda m: True, 90) is not None, f"node A did not come up:\n{self.node.log()}"
        self.image = {c: self.probe.publisher(Image, f"/{c}/image") for c in ("front", "rear")}
        self.info = {c: self.probe.publisher(CameraInfo, f"/{c}/camera_info") for c in ("front", "rear")}
        self.stamp = 1000.0

    def next_stamp(self) -> float:
        self.stamp = round(self.stamp + 0.1, 6)
        return self.stamp

    def send(self, camera: str, seed: int, with_info: bool = True, stamp: float | None = None) -> float:
        stamp = self.next_stamp() if stamp is None else stamp
        if with_info:
            self.info[camera].publish(info_msg(stamp))
            time.sleep(0.01)  # let the calibration arrive first, as drivers publish it
        self.image[camera].publish(image_msg(seed, stamp, frame_id=f"{camera}_optical"))
        return stamp

    def result(self, camera: str, stamp: float, timeout_s: float = 20.0) -> PanopticObjectArray:
        msg = self.objects[camera].wait(lambda m: stamp_of(m) == stamp, timeout_s)
        assert msg is not None, f"no objects for {camera} stamp {stamp} within {timeout_s} s\n{self.node.log()[-3000:]}"
        return msg

    def close(self) -> str:
        self.probe.close()
        self.node.stop()
        return self.node.log()


@pytest.fixture(scope="module")
def graph(model_path, env_for_dds, tmp_path_factory):
    g = Graph(model_path, tmp_path_factory.mktemp("node_a"))
    yield g
    g.close()


# --------------------------------------------------------------------------- node A


@pytest.mark.timeout(120)
def test_class_table_is_latched(graph):
    msg = graph.class_info.wait(lambda m: True, 1)
    assert list(msg.names) == CITYSCAPES.names and msg.label_divisor == LABEL_DIVISOR
    assert msg.model_id.startswith("tiny sha256:") and msg.panoptic_encoding == "32SC1"


@pytest.mark.timeout(90)
def test_outputs_carry_the_input_header_and_ids_agree_with_the_objects(graph):
    seen = 0
    positioned = 0
    for seed in range(4):
        stamp = graph.send("front", seed)
        objects = graph.result("front", stamp)
        pan = graph.panoptic["front"].wait(lambda m: stamp_of(m) == stamp, 10)
        sem = graph.semantic.wait(lambda m: stamp_of(m) == stamp, 10)
        assert pan is not None and sem is not None
        for m in (objects, pan, sem):
            assert m.header.frame_id == "front_optical" and stamp_of(m) == stamp
        assert objects.camera_name == "front" and (objects.image_width, objects.image_height) == (W, H)
        assert 0 < objects.processing_time_s < 10
        assert (pan.encoding, pan.height, pan.width, pan.step) == ("32SC1", H, W, 4 * W)
        classes, tracks = decode_panoptic(np.frombuffer(bytes(pan.data), "<i4").reshape(H, W))
        np.testing.assert_array_equal(np.frombuffer(bytes(sem.data), np.uint8).reshape(H, W), classes)
        visible = {o.track_id: o for o in objects.objects if o.state != PanopticObject.STATE_OCCLUDED}
        assert set(np.unique(tracks)) - {0} == set(visible)
        for tid, o in visible.items():
            assert int((tracks == tid).sum()) == o.visible_area_px
            assert o.label == CITYSCAPES.names[o.class_id]
            assert o.x_min_px < o.x_max_px and o.y_min_px < o.y_max_px
        for o in objects.objects:
            below = o.y_max_px - 0.5 > 59.5  # bottom edge below the horizon row of a level camera
            assert o.has_position == below
            if o.has_position:
                positioned += 1
                assert o.position_m.y == pytest.approx(1.5, abs=1e-6)  # on the ground, 1.5 m below the camera
                assert o.distance_m == pytest.approx(math.dist((0, 0, 0), (o.position_m.x, o.position_m.y,
                                                                           o.position_m.z)), rel=1e-5)
        seen += len(visible)
    frame_indices = [m.frame_index for m in graph.objects["front"].items]
    assert frame_indices == sorted(frame_indices) and len(set(frame_indices)) == len(frame_indices)
    assert seen > 0 and positioned > 0
    model = graph.diag.values("panoptic_node: model", lambda v: int(v["batches"]) >= 4)
    assert model["model_id"] == graph.class_info.items[0].model_id and model["device"] == "cpu"
    assert float(model["network_ms_p50"]) > 0 and float(model["tracking_ms_p50"]) > 0
    assert float(model["decode_ms_p50"]) > 0 and float(model["rss_mb"]) > 100


@pytest.mark.timeout(90)
def test_bad_input_is_counted_and_the_next_good_frame_is_served(graph):
    name = "panoptic_node: camera front"
    keys = ("decode_errors.layout", "decode_errors.encoding", "decode_errors.size", "camera_info_invalid",
            "camera_info_unmatched", "clock_jumps", "frames_processed", "callback_errors")
    before = counts(graph.diag.values(name), *keys)
    s = graph.next_stamp()
    for bad in (image_msg(0, s, step=100),  # step smaller than a row
                image_msg(0, s, data=noise_rgb(0).tobytes()[:-7]),  # truncated
                image_msg(0, s, encoding="32FC1", step=4 * W, data=bytes(4 * W * H)),  # no colour
                image_msg(0, s, encoding="not_an_encoding"),
                image_msg(0, s, height=0, width=0, step=0, data=b"")):
        graph.image["front"].publish(bad)
        time.sleep(0.02)  # within the subscription's depth-5 queue whatever the scheduler does
    graph.info["front"].publish(info_msg(s, k=[math.nan] * 9))
    time.sleep(0.2)
    good = graph.send("front", 7)
    graph.result("front", good)
    # No calibration within camera_info_tolerance_s (0.05 s) of this stamp, but no clock jump either.
    unmatched = graph.send("front", 8, with_info=False, stamp=good + 0.5)
    assert not any(o.has_position for o in graph.result("front", unmatched).objects)
    backwards = graph.send("front", 9, stamp=good - 50.0)  # the clock jumped back (a bag looped)
    graph.result("front", backwards)
    want = dict(before)
    for k, n in {"decode_errors.layout": 2, "decode_errors.encoding": 2, "decode_errors.size": 1,
                 "camera_info_invalid": 1, "camera_info_unmatched": 1, "clock_jumps": 1, "frames_processed": 3}.items():
        want[k] += n
    after = graph.diag.values(name, lambda v: counts(v, *keys) == want)
    assert after["decode_errors"] == str(sum(want[k] for k in keys if k.startswith("decode_errors.")))
    log = graph.node.log()
    assert "skipped an image (layout): step 100 is smaller than one row" in log
    assert "ignoring CameraInfo" in log and "non-finite" in log


@pytest.mark.timeout(120)
def test_three_times_the_processing_rate_keeps_latency_bounded_and_counts_drops(graph):
    name = "panoptic_node: camera front"
    # Processing time of one frame when nothing else is going on.
    solo = [graph.result("front", graph.send("front", 20 + i, with_info=False)).processing_time_s for i in range(3)]
    period_s = float(np.median(solo))
    keys = ("frames_received", "frames_processed", "frames_dropped", "decode_errors")
    before = counts(graph.diag.values(name), *keys)
    interval = period_s / 3.0
    first_output = len(graph.objects["front"].items)
    sent = []
    start = time.monotonic()
    for i in range(45):
        stamp = graph.next_stamp()
        graph.image["front"].publish(image_msg(i, stamp, frame_id="front_optical"))
        sent.append(stamp)
        time.sleep(max(0.0, start + (i + 1) * interval - time.monotonic()))
    last = graph.result("front", sent[-1], timeout_s=20)  # the newest frame is always processed
    flood = graph.objects["front"].items[first_output:]
    latencies = [m.processing_time_s for m in flood]

    def settled(v: dict[str, str]) -> bool:  # nothing waiting or in the model: every frame is accounted for
        c = counts(v, *keys)
        return c["frames_received"] - c["frames_processed"] - c["frames_dropped"] - c["decode_errors"] == \
            before["frames_received"] - before["frames_processed"] - before["frames_dropped"] - before["decode_errors"]

    after = graph.diag.values(name, settled)
    d = {k: int(after[k]) - before[k] for k in keys}
    assert d["decode_errors"] == 0
    assert d["frames_received"] == d["frames_processed"] + d["frames_dropped"], d  # nothing pending, nothing lost
    assert d["frames_processed"] == len(flood), (d, len(flood))
    assert d["frames_received"] >= 0.9 * len(sent)
    assert d["frames_dropped"] >= len(sent) // 3, (d, period_s)
    # Newest-wins: a frame waits at most one cycle, so latency stays near two processing times
    # (a queue would grow it to tens of periods by the end of the flood).
    assert last.processing_time_s < 3.5 * period_s + 0.2, (latencies, period_s)
    assert float(np.median(latencies)) < 2.5 * period_s + 0.1, (latencies, period_s)
    print(f"flood: period {period_s * 1e3:.0f} ms, latencies {[round(x * 1e3) for x in latencies]} ms, {d}")


@pytest.mark.timeout(90)
def test_two_cameras_keep_separate_track_ids(graph):
    front_before = max((o.track_id for m in graph.objects["front"].items for o in m.objects), default=0)
    assert front_before > 1, "earlier tests should have given the front camera several tracks"
    stamp = graph.next_stamp()
    graph.send("front", 3, stamp=stamp)
    graph.send("rear", 3, stamp=stamp)
    rear = graph.result("rear", stamp)
    front = graph.result("front", stamp)
    assert rear.camera_name == "rear" and front.camera_name == "front" and rear.frame_index == 0
    rear_ids = sorted(o.track_id for o in rear.objects)
    assert rear_ids == list(range(1, len(rear_ids) + 1)) and rear_ids, "rear's own counter starts at 1"
    assert all(o.state == PanopticObject.STATE_NEW for o in rear.objects)
    # Identical pixels: the same detections, so the same number of objects, under different ids.
    assert len(front.objects) >= 1 and max(o.track_id for o in front.objects) > len(rear_ids)


@pytest.mark.timeout(60)
def test_set_enabled_service_stops_and_resumes_inference(graph):
    name = "panoptic_node: camera front"
    response = graph.probe.call(SetBool, "/panoptic_node/set_enabled", SetBool.Request(data=False))
    assert response.success and response.message == "inference disabled"
    before = counts(graph.diag.values(name, lambda v: v["enabled"] == "false"), "frames_skipped_disabled")
    stamp = graph.send("front", 11)
    assert graph.objects["front"].wait(lambda m: stamp_of(m) == stamp, 1.5) is None
    graph.diag.values(name, lambda v: int(v["frames_skipped_disabled"]) == before["frames_skipped_disabled"] + 1)
    response = graph.probe.call(SetBool, "/panoptic_node/set_enabled", SetBool.Request(data=True))
    assert response.success and response.message == "inference enabled"
    graph.result("front", graph.send("front", 12))


@pytest.mark.timeout(60)
def test_parameter_changes_are_validated(graph):
    bad = graph.probe.set_parameter("panoptic_node", "tracker.match_threshold", 2.0)
    assert not bad.successful and "tracker.match_threshold" in bad.reason and "1.0" in bad.reason
    bad = graph.probe.set_parameter("panoptic_node", "mount.per_camera", ["front:low:0"])
    assert not bad.successful and "name:height_m:pitch_deg" in bad.reason
    bad = graph.probe.set_parameter("panoptic_node", "mount.per_camera", ["side:1.0:0"])
    assert not bad.successful and "side" in bad.reason and "not in cameras" in bad.reason
    bad = graph.probe.set_parameter("panoptic_node", "overlay_alpha", "opaque")
    assert not bad.successful and "overlay_alpha" in bad.reason
    fixed = graph.probe.set_parameter("panoptic_node", "model.path", "/tmp/other.safetensors")
    assert not fixed.successful and "read-only" in fixed.reason
    # A good live change: a 3 m mounting for the front camera moves its ground points to y = 3 m.
    ok = graph.probe.set_parameter("panoptic_node", "mount.per_camera", ["front:3.0:0.0"])
    assert ok.successful, ok.reason
    positioned = [o for o in graph.result("front", graph.send("front", 1)).objects if o.has_position]
    assert positioned and all(o.position_m.y == pytest.approx(3.0, abs=1e-6) for o in positioned)


@pytest.mark.timeout(60)
def test_overlay_is_published_to_a_subscriber_and_qos_mismatches_are_reported(graph):
    overlay = graph.probe.inbox(Image, "/front/panoptic/overlay")
    # A subscriber asking for transient-local results: the (volatile) publisher cannot serve it.
    graph.probe.inbox(Image, "/front/panoptic/semantic", LATCHED)
    deadline = time.monotonic() + 20
    msg = None
    while msg is None and time.monotonic() < deadline:
        stamp = graph.send("front", 5)
        msg = overlay.wait(lambda m: stamp_of(m) == stamp, 2.0)
    assert msg is not None and (msg.encoding, msg.height, msg.width) == ("rgb8", H, W)
    graph.diag.values("panoptic_node: camera front", lambda v: int(v.get("qos_incompatible.durability", 0)) >= 1)
    assert "requests durability" in graph.node.log()


# --------------------------------------------------------------------------- node B


@pytest.mark.timeout(150)
def test_single_camera_compressed_input_survives_corrupt_jpeg_and_reports_qos(model_path, env_for_dds, tmp_path):
    domain_id = random_domain_id()
    node = NodeProcess(model_path, ["cameras:=[cam]", "input_transport:=compressed", "input_qos:=DEFAULT",
                                    "mount.height_m:=1.2"] + PERMISSIVE, tmp_path / "node_b.log", domain_id)
    probe = Probe(domain_id)
    try:
        diag = Diagnostics(probe)
        objects = probe.inbox(PanopticObjectArray, "/panoptic/objects")  # one camera: no prefix
        assert probe.inbox(PanopticClassInfo, "/panoptic/class_info", LATCHED).wait(lambda m: True, 90), node.log()
        best_effort = probe.publisher(CompressedImage, "/image/compressed", qos_profile_sensor_data, wait=False)
        diag.values("panoptic_node: camera cam", lambda v: int(v.get("qos_incompatible.reliability", 0)) >= 1)
        probe.node.destroy_publisher(best_effort)
        pub = probe.publisher(CompressedImage, "/image/compressed", RELIABLE)
        info = probe.publisher(CameraInfo, "/camera_info", RELIABLE)
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(noise_rgb(4), cv2.COLOR_RGB2BGR))
        jpeg = jpeg.tobytes()

        def compressed(data: bytes, stamp: float, fmt: str = "jpeg") -> CompressedImage:
            m = CompressedImage(format=fmt, data=data)
            m.header.stamp.sec, m.header.stamp.nanosec = int(stamp), int(round((stamp % 1) * 1e9))
            m.header.frame_id = "cam_optical"
            return m

        pub.publish(compressed(jpeg[: len(jpeg) // 2], 1.0))  # truncated: no end-of-image marker
        time.sleep(0.3)
        pub.publish(compressed(b"\x00" * 64, 1.1))  # not a JPEG at all
        time.sleep(0.3)
        pub.publish(compressed(jpeg, 1.2, fmt="gif"))  # unknown format
        info.publish(info_msg(1.3, k=[math.nan] * 9))
        time.sleep(0.3)
        info.publish(info_msg(2.0))
        time.sleep(0.1)
        pub.publish(compressed(jpeg, 2.0))
        served = objects.wait(lambda m: stamp_of(m) == 2.0, 20)
        assert served is not None, f"{node.log()[-3000:]}\n{diag.last('panoptic_node: camera cam')}"
        assert served.camera_name == "cam" and served.header.frame_id == "cam_optical"
        assert all(o.position_m.y == pytest.approx(1.2, abs=1e-6) for o in served.objects if o.has_position)
        values = diag.values("panoptic_node: camera cam",
                             lambda v: counts(v, "decode_errors.corrupt", "decode_errors.format", "camera_info_invalid",
                                              "frames_processed") == {"decode_errors.corrupt": 2,
                                                                      "decode_errors.format": 1,
                                                                      "camera_info_invalid": 1, "frames_processed": 1})
        assert values["__level__"] in ("0", "1")
        assert "truncated JPEG" in node.log() and "unknown compressed image format 'gif'" in node.log()
    finally:
        probe.close()
        node.stop()


@pytest.mark.timeout(60)
def test_missing_model_exits_non_zero_with_the_reason(tmp_path):
    missing = tmp_path / "missing.safetensors"
    result = subprocess.run([str(NODE), "--ros-args", "-p", f"model.path:={missing}"], env=ros_env(random_domain_id()),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"model file {missing} does not exist" in result.stderr + result.stdout


# --------------------------------------------------------------------------- the node's plain-Python parts


def test_frame_slot_keeps_the_newest_frame_and_counts_replacements():
    slot = FrameSlot()
    frames = [PendingFrame(msg=i, received_s=float(i), stamp_s=float(i)) for i in range(3)]
    assert [slot.put(f) for f in frames] == [False, True, True]
    assert slot.take() is frames[2] and slot.take() is None and not slot.has_frame
    slot.put(frames[0])
    assert slot.clear() and not slot.clear()


def test_camera_info_history_matches_by_stamp_within_tolerance():
    from panoptic_ros.camera import CameraIntrinsics

    history = CameraInfoHistory(size=3)
    ks = [CameraIntrinsics(W, H, 100.0 + i, 100.0, 79.5, 59.5) for i in range(4)]
    for i, k in enumerate(ks):
        history.add(10.0 + i, k)
    assert len(history) == 3  # the oldest fell out
    assert history.match(11.02, 0.05) is ks[1] and history.match(12.96, 0.05) is ks[3]
    assert history.match(10.0, 0.05) is None and history.match(11.5, 0.05) is None


def test_log_throttle_is_per_key_and_reports_suppressed_lines():
    lines: list[str] = []
    now = [0.0]
    throttle = LogThrottle(5.0, lines.append, clock=lambda: now[0])
    assert throttle(("front", "layout"), "a") and throttle(("front", "encoding"), "b")
    assert not throttle(("front", "layout"), "a") and not throttle(("front", "layout"), "a")
    now[0] = 6.0
    assert throttle(("front", "layout"), "a")
    assert lines == ["a", "b", "a (2 more like this in the last 6.0 s)"]
