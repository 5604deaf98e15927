"""The ROS half of ``panoptic-ros replay --live``: a bag through real rclpy to a node, its outputs into a bag.

1. Start ``panoptic_node`` as a child process (its log in ``DIR/node.log``),
   configured for the bag's cameras: with one camera the node runs in the
   camera's namespace (``-r __ns:=/front``), with several at the root with
   ``cameras:=[front, rear]``, so that its inputs are ``{ns}/image`` (or
   ``{ns}/image/compressed``) and ``{ns}/camera_info`` and its outputs
   ``{ns}/panoptic/...``. With ``--node-running`` a node the user started
   serves those topics instead.
2. Wait until it is up: its latched class table has arrived and every
   publisher and subscription on both sides has matched.
3. Publish the bag's images and CameraInfo messages, deserialized from the
   bag's own CDR bytes (so stamps, frame ids and pixels are the recording's),
   at the recorded pace scaled by ``--rate``; or, with ``--lockstep``, each
   image as soon as every earlier one has all its outputs (or the node has
   been quiet for a while), so that a node of any speed sees every frame.
   No ``/clock``: the node tracks on header stamps, which are the bag's.
4. Record what the node publishes (objects, panoptic and semantic images,
   overlay, class table): each message is serialized with
   ``rclpy.serialization.serialize_message`` and written with the ``rosbags``
   writer under the node's topic and type, logged at the input image's log
   time, exactly as the offline replay lays it out.
5. Drain: wait until every published frame has its output, or until the
   node has been quiet for a while; then report drops (frames published
   without an output: the node keeps only the newest frame per camera, so a
   rate it cannot keep up with drops frames by design).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from panoptic_ros.image_codec import ImageDecodeError, image_to_rgb
from panoptic_ros.msg import PanopticClassInfo, PanopticObjectArray
from panoptic_ros.replay import (
    CAMERA_INFO_TYPE,
    close_outputs,
    CLASS_INFO_TYPE,
    IMAGE_TYPE,
    MODE_KEY,
    MODEL_KEY,
    NODE_LOG_NAME,
    OBJECTS_TYPE,
    OUTPUT_BAG_NAME,
    SEQUENCE_KEY,
    SOURCE_KEY,
    TIMINGS_NAME,
    BagError,
    BagSource,
    CameraCounts,
    CameraStream,
    OutputBag,
    OverlayVideo,
    ReplayResult,
    ReplaySettings,
    ReplaySetupError,
    find_cameras,
    param_text,
    video_path,
    write_timings,
)
from panoptic_ros.ros import topics as node_topics

NODE_MODULE = "panoptic_ros.ros.node"
PUBLISH_QOS = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
RECORD_QOS = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.VOLATILE)
LATCHED_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
SETTLE_S = 0.5  # after discovery, time for the node to see our overlay subscription too
QUIET_S = 3.0  # drain: give up waiting for outputs after this long without one ...
FIRST_ANSWER_S = 30.0  # ... (lock-step, before the node's first answer, which may carry its lazy start-up) ...
DRAIN_LIMIT_S = 60.0  # ... or after this long in all


class LiveReplayError(ReplaySetupError):
    """The live graph could not be set up (node did not start, topics never matched); the message says why."""


# --------------------------------------------------------------------------- the node process


class NodeProcess:
    """A ``panoptic_node`` child process serving ``streams``; stopped with SIGINT (then SIGTERM, SIGKILL)."""

    def __init__(self, streams: list[CameraStream], settings: ReplaySettings, log_path: Path) -> None:
        command = [sys.executable, "-m", NODE_MODULE, "--ros-args"]
        if len(streams) == 1:
            if streams[0].namespace:
                command += ["-r", f"__ns:={streams[0].namespace}"]
        elif any(not s.namespace for s in streams):
            raise LiveReplayError("with several cameras every image topic needs its own namespace (/front/image, "
                                  f"/rear/image); got {[s.image_topic for s in streams]}")
        transports = {s.compressed for s in streams}
        if len(transports) != 1:
            raise LiveReplayError("the node takes one input transport: choose raw or compressed image topics with "
                                  f"--topics (got {[s.image_topic for s in streams]})")
        chosen = dict(settings.param_values)
        chosen["cameras"] = param_text([s.name for s in streams])
        chosen["input_transport"] = param_text("compressed" if streams[0].compressed else "raw")
        for name, value in chosen.items():
            command += ["-p", f"{name}:={value}"]
        self.command = command
        self.log_path = log_path
        self._log = log_path.open("w")
        env = dict(os.environ, PYTHONUNBUFFERED="1", RCUTILS_LOGGING_BUFFERED_STREAM="0")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                        stdin=subprocess.DEVNULL)

    def running(self) -> bool:
        return self.process.poll() is None

    def tail(self, lines: int = 3) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text[-lines:])

    def stop(self, timeout_s: float = 10.0) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.terminate()
                try:
                    self.process.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        self._log.close()
        return self.process.returncode


# --------------------------------------------------------------------------- our side of the graph


@dataclass
class _Received:
    wall_s: float
    topic: str
    msgtype: str
    msg: Any


@dataclass
class _Ports:
    stream: CameraStream
    image_pub: Any
    info_pub: Any
    outputs: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (topic, msgtype)
    subscriptions: list[Any] = field(default_factory=list)


class _Graph:
    """The replayer's rclpy node in its own context, spun by a background thread."""

    def __init__(self, streams: list[CameraStream], settings: ReplaySettings) -> None:
        self.context = Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(f"panoptic_replay_{os.getpid()}", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._lock = threading.Lock()
        self.inbox: deque[_Received] = deque()
        self.ports: list[_Ports] = []
        record = [("objects", node_topics.OBJECTS, PanopticObjectArray, OBJECTS_TYPE),
                  ("panoptic", node_topics.PANOPTIC, Image, IMAGE_TYPE)]
        if settings.params.publish_semantic:
            record.append(("semantic", node_topics.SEMANTIC, Image, IMAGE_TYPE))
        if settings.overlay or settings.video:
            record.append(("overlay", node_topics.OVERLAY, Image, IMAGE_TYPE))
        for s in streams:
            image_type, image_topic = ((CompressedImage, node_topics.IMAGE_COMPRESSED) if s.compressed
                                       else (Image, node_topics.IMAGE_RAW))
            ports = _Ports(s, self.node.create_publisher(image_type, s.topic(image_topic), PUBLISH_QOS),
                           self.node.create_publisher(CameraInfo, s.topic(node_topics.CAMERA_INFO), PUBLISH_QOS))
            for key, relative, msg_class, msgtype in record:
                self._subscribe(ports, key, s.topic(relative), msg_class, msgtype, RECORD_QOS)
            self._subscribe(ports, "class_info", s.topic(node_topics.CLASS_INFO), PanopticClassInfo, CLASS_INFO_TYPE,
                            LATCHED_QOS)
            self.ports.append(ports)
        self._thread = threading.Thread(target=self._spin, name="live_replay_spin", daemon=True)
        self._thread.start()

    def _subscribe(self, ports: _Ports, key: str, topic: str, msg_class: Any, msgtype: str, qos: QoSProfile) -> None:
        def callback(msg: Any, topic: str = topic, msgtype: str = msgtype) -> None:
            with self._lock:
                self.inbox.append(_Received(time.monotonic(), topic, msgtype, msg))

        ports.subscriptions.append(self.node.create_subscription(msg_class, topic, callback, qos))
        ports.outputs[key] = (topic, msgtype)

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - shutdown while waiting; the loop condition ends it
                time.sleep(0.01)

    def take(self) -> list[_Received]:
        with self._lock:
            items = list(self.inbox)
            self.inbox.clear()
        return items

    def matched(self) -> list[str]:
        """Topics (ours or the node's) still waiting for their counterpart."""
        missing = []
        for p in self.ports:
            for pub in (p.image_pub, p.info_pub):
                if pub.get_subscription_count() == 0:
                    missing.append(pub.topic_name)
            for sub in p.subscriptions:
                if sub.get_publisher_count() == 0:  # matched, not merely seen in the graph
                    missing.append(sub.topic_name)
        return missing

    def close(self) -> None:
        try:
            self.executor.shutdown(timeout_sec=1.0)
            self.node.destroy_node()
        finally:
            rclpy.try_shutdown(context=self.context)
            self._thread.join(timeout=5.0)


# --------------------------------------------------------------------------- the replay


class LiveReplay:
    """One bag through a live node; see the module docstring."""

    def __init__(self, bag: Path, out_dir: Path, settings: ReplaySettings) -> None:
        self.bag = bag
        self.out_dir = out_dir
        self.settings = settings
        self.result = ReplayResult(bag, out_dir, "live")
        self._rows: list[dict[str, Any]] = []
        self._log_time: dict[tuple[str, int], int] = {}  # (topic prefix, stamp) -> input log time
        self._published_at: dict[tuple[str, int], float] = {}
        self._received: dict[tuple[str, int], set[str]] = {}  # (topic prefix, stamp) -> output topics recorded
        self._class_infos: list[_Received] = []
        self._first_log_ns: int | None = None
        self._last_output_s = 0.0
        self._slowest_s = 0.0  # the longest processing_time_s the node has reported
        self._start_wall: float | None = None  # monotonic time of the first publish

    def run(self) -> ReplayResult:
        t0 = time.perf_counter()
        try:
            source = BagSource(self.bag)
        except BagError as exc:
            return self.result.failed(exc, time.perf_counter() - t0)
        node: NodeProcess | None = None
        graph: _Graph | None = None
        try:
            try:
                self.streams = find_cameras(source.topics, self.bag, self.settings.topics)
            except BagError as exc:
                return self.result.failed(exc, time.perf_counter() - t0)
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.counts = {s.name: CameraCounts(s.name) for s in self.streams}
            self.result.cameras = list(self.counts.values())
            self._by_prefix = {s.namespace: s for s in self.streams}
            if not self.settings.node_running:
                node = NodeProcess(self.streams, self.settings, self.out_dir / NODE_LOG_NAME)
            graph = _Graph(self.streams, self.settings)
            self._wait_ready(graph, node)
            self._open_outputs(source)
            interrupted = False
            try:
                self._publish_all(source, graph, node)
                self._drain(graph, node)
            except BagError as exc:
                self.result.error, self.result.error_kind = str(exc), exc.kind
                self._drain(graph, node)
            except KeyboardInterrupt:
                interrupted = True
            finally:
                self._record(graph)
                if self._start_wall is not None:
                    self.result.active_s = max(self._last_output_s, self._start_wall) - self._start_wall
                self._close(time.perf_counter() - t0)
            if interrupted:
                raise KeyboardInterrupt
        finally:
            if graph is not None:
                graph.close()
            if node is not None:
                node.stop()
            source.close()
        return self.result

    # ------------------------------------------------------------------ setup

    def _wait_ready(self, graph: _Graph, node: NodeProcess | None) -> None:
        deadline = time.monotonic() + self.settings.startup_timeout_s
        waiting_for = "its class table"
        while time.monotonic() < deadline:
            if node is not None and not node.running():
                raise LiveReplayError(f"panoptic_node exited with code {node.process.returncode} before it was "
                                      f"ready: {node.tail()} (log: {node.log_path})")
            self._class_infos += [r for r in graph.take() if r.msgtype == CLASS_INFO_TYPE]
            got = {r.topic for r in self._class_infos}
            missing = [p.outputs["class_info"][0] for p in graph.ports if p.outputs["class_info"][0] not in got]
            if not missing:
                missing = graph.matched()
                if not missing:
                    time.sleep(SETTLE_S)
                    return
                waiting_for = "topics " + ", ".join(missing)
            else:
                waiting_for = "class table on " + ", ".join(missing)
            time.sleep(0.1)
        where = f"; its log: {node.log_path}: {node.tail()}" if node is not None else \
            " (--node-running: is a panoptic_node serving these cameras, on this ROS_DOMAIN_ID?)"
        raise LiveReplayError(f"panoptic_node was not ready within {self.settings.startup_timeout_s:.0f} s (waiting "
                              f"for {waiting_for}){where}")

    def _open_outputs(self, source: BagSource) -> None:
        self.outbag = OutputBag(self.out_dir / OUTPUT_BAG_NAME, self.settings.storage, source.typestore)
        model_ids = sorted({str(r.msg.model_id) for r in self._class_infos})
        for key, value in ((SOURCE_KEY, self.bag.name), (MODE_KEY, "live"), (MODEL_KEY, ", ".join(model_ids)),
                           (SEQUENCE_KEY, source.custom_data.get(SEQUENCE_KEY, self.bag.name))):
            self.outbag.set_custom_data(key, value)
        self.model_ids = model_ids
        self.videos = {s.namespace: OverlayVideo(video_path(self.out_dir, self.streams, s))
                       for s in self.streams} if self.settings.video else {}

    # ------------------------------------------------------------------ publishing and recording

    def _publish_all(self, source: BagSource, graph: _Graph, node: NodeProcess | None) -> None:
        plan: dict[str, tuple[_Ports, bool]] = {}
        for p in graph.ports:
            plan[p.stream.image_topic] = (p, True)
            if p.stream.camera_info_topic:
                plan[p.stream.camera_info_topic] = (p, False)
        for message in source.messages(set(plan)):
            ports, is_image = plan[message.topic]
            if self._start_wall is None:
                self._start_wall, self._first_log_ns = time.monotonic(), message.log_time_ns
                self._write_class_infos()
            if self.settings.lockstep:
                if is_image:
                    self._drain(graph, node)
            else:
                due = self._start_wall + (message.log_time_ns - self._first_log_ns) / 1e9 / self.settings.rate
                while True:
                    self._record(graph)
                    left = due - time.monotonic()
                    if left <= 0:
                        break
                    time.sleep(min(left, 0.02))
            if node is not None and not node.running():
                raise BagError("unreadable", f"panoptic_node exited (code {node.process.returncode}) during the "
                                             f"replay of {self.bag}: {node.tail()}")
            s = ports.stream
            if is_image:
                msg = deserialize_message(bytes(message.raw), CompressedImage if s.compressed else Image)
                stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                self._log_time[(s.namespace, stamp)] = message.log_time_ns
                self._published_at[(s.namespace, stamp)] = time.monotonic()
                ports.image_pub.publish(msg)
                self.counts[s.name].frames_in += 1
            else:
                ports.info_pub.publish(deserialize_message(bytes(message.raw), CameraInfo))
                self.outbag.write(s.topic(node_topics.CAMERA_INFO), CAMERA_INFO_TYPE, message.log_time_ns,
                                  bytes(message.raw))

    def _drain(self, graph: _Graph, node: NodeProcess | None) -> None:
        """Record until every published frame has all its outputs, the node is quiet, or time is up (at the end;
        with --lockstep also before each image)."""
        start = time.monotonic()
        expected = {topic for p in graph.ports for key, (topic, _) in p.outputs.items() if key != "class_info"}
        while time.monotonic() - start < DRAIN_LIMIT_S:
            self._record(graph)
            if len(self._received) == len(self._log_time) and all(
                    got >= {t for t in expected if t.startswith(prefix + "/panoptic/")}
                    for (prefix, _), got in self._received.items()):
                return
            quiet_s = max(QUIET_S, 3.0 * self._slowest_s)  # a slow model gets time for its last frame
            if self.settings.lockstep and not self._rows:
                quiet_s = FIRST_ANSWER_S
            if time.monotonic() - max(self._last_output_s, start) > quiet_s or \
                    (node is not None and not node.running()):
                return
            time.sleep(0.05)

    def _write_class_infos(self) -> None:
        for r in self._class_infos:
            self.outbag.write(r.topic, CLASS_INFO_TYPE, self._first_log_ns or 0, serialize_message(r.msg),
                              latched=True)
        self._class_infos = []

    def _record(self, graph: _Graph) -> None:
        for r in graph.take():
            if r.msgtype == CLASS_INFO_TYPE:
                if self._first_log_ns is None:
                    self._class_infos.append(r)
                continue  # latched: written once, at the start
            prefix = r.topic.rsplit("/panoptic/", 1)[0]
            stream = self._by_prefix.get(prefix)
            stamp = r.msg.header.stamp.sec * 1_000_000_000 + r.msg.header.stamp.nanosec
            log_ns = self._log_time.get((prefix, stamp))
            if stream is None or log_ns is None:
                continue  # not an answer to a frame we published (a late one from an earlier run)
            self.outbag.write(r.topic, r.msgtype, log_ns, serialize_message(r.msg))
            self._received.setdefault((prefix, stamp), set()).add(r.topic)
            self._last_output_s = r.wall_s
            if r.topic.endswith("/" + node_topics.OBJECTS):
                self.counts[stream.name].frames_out += 1
                self._slowest_s = max(self._slowest_s, float(r.msg.processing_time_s))
                sent = self._published_at.get((prefix, stamp), r.wall_s)
                self._rows.append({"camera": stream.name, "stamp_ns": stamp, "frame_index": int(r.msg.frame_index),
                                   "processing_ms": float(r.msg.processing_time_s) * 1e3,
                                   "latency_ms": (r.wall_s - sent) * 1e3, "num_objects": len(r.msg.objects)})
            elif r.topic.endswith("/" + node_topics.OVERLAY) and prefix in self.videos:
                try:
                    rgb = image_to_rgb(r.msg.height, r.msg.width, r.msg.encoding, r.msg.step, r.msg.data)
                except ImageDecodeError as exc:
                    self.result.warnings.append(f"overlay at {stamp} ns not decodable: {exc}")
                    continue
                self.videos[prefix].add(rgb, stamp / 1e9)

    def _close(self, wall_s: float) -> None:
        close_outputs(self.result, wall_s, self.outbag, self.videos.values())
        dropped = self.result.frames_dropped
        if dropped:
            why = ("the node did not answer them: see its log and /diagnostics for the input it rejected"
                   if self.settings.lockstep else
                   "the node keeps only the newest frame per camera; a lower --rate or --lockstep lets it process "
                   "every frame")
            self.result.warnings.append(
                f"bag {self.bag}: {dropped} of {self.result.frames_in} published frame(s) got no output ({why})")
        self.result.timings = write_timings(self.out_dir / TIMINGS_NAME, self.result, self._rows, {
            "model": ", ".join(self.model_ids), "rate": None if self.settings.lockstep else self.settings.rate,
            "lockstep": self.settings.lockstep,
            "frames_published": self.result.frames_in, "frames_dropped": dropped})


def replay_live(bag: Path, out_dir: Path, settings: ReplaySettings) -> ReplayResult:
    """Replay one bag through a live node (see the module docstring). Bad bags come back as a result
    with ``error`` set; LiveReplayError when the node cannot be started or reached."""
    return LiveReplay(Path(bag), Path(out_dir), settings).run()


__all__ = ["LiveReplay", "LiveReplayError", "NodeProcess", "replay_live"]
