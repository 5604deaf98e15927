"""``panoptic_node``: camera topics in; panoptic images, tracked objects, overlay and diagnostics out.

Threads. The executor thread runs the subscription callbacks, services,
the parameter callback and the diagnostics timer; all of them return in
microseconds. A callback only checks a frame's fields and puts it in its
camera's one-frame slot (the newest frame wins; a frame replaced before it
was processed is counted as dropped). One worker thread takes every slot
that holds a frame, decodes, runs the pipeline on all of them as one batch
and publishes. Nothing queues, so the output never lags the cameras by more
than one processing cycle.

Topics (relative to the node's namespace; with one camera there is no
prefix, with several each camera ``c`` has its own under ``c/``):
inputs ``image`` or ``image/compressed`` (``input_transport``) and
``camera_info``; outputs ``panoptic/image`` (32SC1 lossless ids),
``panoptic/semantic`` (mono8), ``panoptic/objects`` (PanopticObjectArray),
``panoptic/overlay`` (rgb8, rendered only while subscribed),
``panoptic/markers`` (MarkerArray, only while subscribed),
``panoptic/class_info`` (latched); ``panoptic/detections`` and
``panoptic/label_info`` (vision_msgs) where vision_msgs is installed; and
``/diagnostics``. Service ``~/set_enabled`` (std_srvs/SetBool).
"""
from __future__ import annotations

import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_srvs.srv import SetBool
from visualization_msgs.msg import MarkerArray

from panoptic_ros.model.checkpoint import CheckpointError
from panoptic_ros.msg import PanopticClassInfo, PanopticObjectArray
from panoptic_ros.params import NodeParams
from panoptic_ros.pipeline import (CameraFrame, FrameFailure, FrameOutput, Pipeline, StageTimings,
                                   parse_mount_overrides)
from panoptic_ros.ros import convert, diagnostics, parameters, qos, topics
from panoptic_ros.ros.diagnostics import CameraStats, DiagnosticsBuilder
from panoptic_ros.ros.inputs import CameraInfoHistory, FrameSlot, PendingFrame
from panoptic_ros.ros.log_throttle import LogThrottle

NODE_NAME = "panoptic_node"
_ASPECT_TOLERANCE = 0.01


class StartupError(RuntimeError):
    """The node cannot start with this configuration; the message says why and what to change."""


@dataclass
class CameraPorts:
    """One camera's topics, slot, calibration history and counters."""

    name: str
    prefix: str  # "" with one camera, "<name>/" with several
    slot: FrameSlot = field(default_factory=FrameSlot)
    info: CameraInfoHistory = field(default_factory=CameraInfoHistory)
    stats: CameraStats = field(default_factory=CameraStats)
    pubs: dict[str, Publisher] = field(default_factory=dict)
    subs: list[Any] = field(default_factory=list)

    def topic(self, relative: str) -> str:
        return self.prefix + relative


def check_mount_cameras(params: NodeParams) -> None:
    unknown = sorted(set(parse_mount_overrides(params.mount.per_camera)) - set(params.cameras))
    if unknown:
        raise ValueError(f"mount.per_camera names camera(s) {', '.join(unknown)} not in cameras {params.cameras}")


class PanopticNode(Node):
    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        log = self.get_logger()
        try:
            self.params: NodeParams = parameters.declare(self)
            check_mount_cameras(self.params)
            prefixes = topics.camera_prefixes(self.params.cameras)
        except ValueError as exc:
            raise StartupError(f"bad parameter: {exc}") from None
        p = self.params
        self.pipeline = Pipeline.from_params(p)  # CheckpointError / ValueError for the model and device
        predictor = self.pipeline.predictor
        card = getattr(predictor, "card", None)
        self.model_id = f"{card.name} sha256:{card.weights_sha256[:16]}" if card else type(predictor).__name__
        self.device = str(getattr(predictor, "device", "cpu"))
        self.precision = str(getattr(predictor, "dtype", "")).replace("torch.", "")
        self._warm_up()

        self._enabled = p.enabled
        self._overlay_alpha = p.overlay_alpha
        self._pending_params: NodeParams | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._warn = LogThrottle(p.log_throttle_s, log.warning)
        self._batches = 0
        self._batched_frames = 0
        self._stage_ms: deque[StageTimings] = deque(maxlen=diagnostics.LATENCY_WINDOW)
        self._faults: Counter[str] = Counter()  # device faults by kind and by action (pipeline.InferenceFault)
        self._last_fault = ""
        self._configured_device = self.device
        self._rr = 0
        self._vision = convert.vision_msgs_available()

        in_qos = qos.input_qos(p.input_qos)
        now = self.get_clock().now().to_msg()
        self.cameras: list[CameraPorts] = []
        for name in p.cameras:
            cam = CameraPorts(name, prefixes[name])
            self._create_ports(cam, in_qos, now)
            self.cameras.append(cam)

        self._guard = parameters.ParameterGuard(p, self._apply_params)
        self.add_on_set_parameters_callback(self._guard)
        self.create_service(SetBool, topics.SET_ENABLED_SERVICE, self._on_set_enabled)
        self._diag_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)
        self._diag = DiagnosticsBuilder(self.get_name())
        # Steady clock: diagnostics keep coming when use_sim_time is set and no /clock is published.
        self.create_timer(p.diagnostics_period_s, self._publish_diagnostics,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._worker = threading.Thread(target=self._work, name="panoptic_worker", daemon=True)
        self._worker.start()
        image_topic = topics.IMAGE_COMPRESSED if p.input_transport == "compressed" else topics.IMAGE_RAW
        input_topics = ", ".join(self._resolved(c.topic(image_topic)) for c in self.cameras)
        log.info(f"ready: model {self.model_id} on {self.device} ({self.precision}); inputs {input_topics} "
                 f"({qos.describe(in_qos)}); inference {'enabled' if self._enabled else 'disabled'}")

    # ------------------------------------------------------------------ setup

    def _warm_up(self) -> None:
        """One inference before any frame arrives, so the first frame's latency is not the model's start-up."""
        h, w = getattr(self.pipeline.predictor, "input_size", (64, 64))
        self.pipeline.predictor.predict([np.zeros((h, w, 3), np.uint8)])

    def _create_ports(self, cam: CameraPorts, in_qos, stamp) -> None:
        p = self.params

        def on_sub(policy: str, n: int, c: CameraPorts = cam) -> None:
            self._on_incompatible(c, "subscription", policy, n)

        def on_pub(policy: str, n: int, c: CameraPorts = cam) -> None:
            self._on_incompatible(c, "publisher", policy, n)

        pub_events = qos.publisher_events(on_pub)
        if p.input_transport == "compressed":
            cam.subs.append(self.create_subscription(CompressedImage, cam.topic(topics.IMAGE_COMPRESSED),
                                                     lambda m, c=cam: self._on_image(c, m, compressed=True), in_qos,
                                                     event_callbacks=qos.subscription_events(on_sub)))
        else:
            cam.subs.append(self.create_subscription(Image, cam.topic(topics.IMAGE_RAW),
                                                     lambda m, c=cam: self._on_image(c, m, compressed=False), in_qos,
                                                     event_callbacks=qos.subscription_events(on_sub)))
        cam.subs.append(self.create_subscription(CameraInfo, cam.topic(topics.CAMERA_INFO),
                                                 lambda m, c=cam: self._on_camera_info(c, m), in_qos,
                                                 event_callbacks=qos.subscription_events(on_sub)))
        out_qos = qos.result_qos()

        def pub(key: str, msg_type: Any, relative: str, profile=out_qos) -> None:
            cam.pubs[key] = self.create_publisher(msg_type, cam.topic(relative), profile, event_callbacks=pub_events)

        pub("objects", PanopticObjectArray, topics.OBJECTS)
        pub("panoptic", Image, topics.PANOPTIC)
        if p.publish_semantic:
            pub("semantic", Image, topics.SEMANTIC)
        pub("overlay", Image, topics.OVERLAY)
        pub("markers", MarkerArray, topics.MARKERS)
        pub("class_info", PanopticClassInfo, topics.CLASS_INFO, qos.latched_qos())
        cam.pubs["class_info"].publish(convert.class_info_msg(self.pipeline.classes, self.model_id, stamp))
        if self._vision:
            from vision_msgs.msg import Detection2DArray, LabelInfo

            pub("detections", Detection2DArray, topics.DETECTIONS)
            pub("label_info", LabelInfo, topics.LABEL_INFO, qos.latched_qos())
            cam.pubs["label_info"].publish(convert.label_info_msg(self.pipeline.classes, stamp,
                                                                  p.model.score_threshold))

    # ------------------------------------------------------------------ callbacks (executor thread)

    def _on_image(self, cam: CameraPorts, msg: Image | CompressedImage, compressed: bool) -> None:
        stats = cam.stats
        try:
            stats.add(diagnostics.RECEIVED)
            if not self._enabled:
                stats.add(diagnostics.SKIPPED_DISABLED)
                return
            if compressed:
                convert.check_compressed(msg)
            else:
                convert.check_image(msg)
            stamp_s = convert.stamp_to_s(msg.header.stamp)
            if cam.slot.put(PendingFrame(msg, time.monotonic(), stamp_s)):
                stats.add(diagnostics.DROPPED)
            self._wake.set()
        except convert.InputRejected as exc:
            self._decode_error(cam, exc)
        except Exception as exc:  # noqa: BLE001 - a callback must never raise into the executor
            stats.add(diagnostics.CALLBACK_ERRORS)
            self._warn((cam.name, "callback"), f"camera {cam.name}: image callback failed: {exc!r}")

    def _on_camera_info(self, cam: CameraPorts, msg: CameraInfo) -> None:
        try:
            cam.stats.add(diagnostics.CAMERA_INFO_RECEIVED)
            intrinsics = convert.camera_info_intrinsics(msg)
        except ValueError as exc:
            cam.stats.add(diagnostics.CAMERA_INFO_INVALID)
            self._warn((cam.name, "camera_info"), f"camera {cam.name}: ignoring CameraInfo on "
                       f"{self._resolved(cam.topic(topics.CAMERA_INFO))}: {exc}")
            return
        except Exception as exc:  # noqa: BLE001
            cam.stats.add(diagnostics.CALLBACK_ERRORS)
            self._warn((cam.name, "callback"), f"camera {cam.name}: camera_info callback failed: {exc!r}")
            return
        cam.info.add(convert.stamp_to_s(msg.header.stamp), intrinsics)

    def _on_incompatible(self, cam: CameraPorts, side: str, policy: str, count: int) -> None:
        cam.stats.add(f"{diagnostics.QOS_INCOMPATIBLE}.{policy}", count)
        if side == "subscription":
            hint = (f"a publisher feeding camera {cam.name} offers QoS this node's input_qos={self.params.input_qos} "
                    f"subscription cannot accept ({policy}); no frames will arrive from it. Set input_qos to match "
                    "the publisher (SENSOR_DATA = best effort, DEFAULT = reliable)")
        else:
            hint = (f"a subscriber of camera {cam.name}'s outputs requests {policy} these publishers do not offer "
                    f"({qos.describe(qos.result_qos())}, class_info transient local); it will receive nothing")
        self._warn((cam.name, "qos", side, policy), hint)

    def _on_set_enabled(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        """Goes through the parameter ``enabled``, so `ros2 param get` and the service always agree."""
        try:
            result = self.set_parameters([Parameter("enabled", Parameter.Type.BOOL, bool(request.data))])[0]
        except Exception as exc:  # noqa: BLE001 - a service callback must answer, not raise
            response.success, response.message = False, f"could not set enabled: {exc!r}"
            return response
        response.success = bool(result.successful)
        response.message = ("inference " + ("enabled" if request.data else "disabled")) if result.successful \
            else result.reason
        return response

    def _apply_params(self, new: NodeParams) -> None:
        """Called by the parameter guard with a validated set; takes effect before the next batch."""
        check_mount_cameras(new)
        with self._lock:
            self._pending_params = new
        self._overlay_alpha = new.overlay_alpha
        self._warn.period_s = new.log_throttle_s
        if self._enabled and not new.enabled:
            for cam in self.cameras:
                if cam.slot.clear():
                    cam.stats.add(diagnostics.SKIPPED_DISABLED)
        self._enabled = new.enabled
        self.params = new

    def diagnostics_array(self) -> DiagnosticArray:
        """The /diagnostics message as of now: one status per camera and one for the model."""
        now = time.monotonic()
        statuses = [self._diag.camera_status(c.name, c.stats, now, self._enabled) for c in self.cameras]
        with self._lock:
            stages = list(self._stage_ms)
            batches, frames = self._batches, self._batched_frames
            faults = diagnostics.ModelFaults(Counter(self._faults), self._last_fault, self._configured_device)
            device = self.device
        statuses.append(self._diag.model_status(self.model_id, device, self.precision, batches, frames, stages,
                                                faults))
        return self._diag.array(self.get_clock().now().to_msg(), statuses)

    def _publish_diagnostics(self) -> None:
        try:
            self._diag_pub.publish(self.diagnostics_array())
        except Exception as exc:  # noqa: BLE001
            self._warn(("diagnostics",), f"diagnostics failed: {exc!r}")

    # ------------------------------------------------------------------ worker thread

    def _work(self) -> None:
        while not self._stop.is_set():
            if not self._wake.wait(timeout=0.25):
                continue
            self._wake.clear()
            try:
                self._cycle()
            except Exception as exc:  # noqa: BLE001 - the worker must outlive any one bad cycle
                self._warn(("worker",), f"processing cycle failed: {exc!r}")

    def _cycle(self) -> None:
        with self._lock:
            pending_params, self._pending_params = self._pending_params, None
        if pending_params is not None:
            self.pipeline.set_params(pending_params)
        n = len(self.cameras)
        order = [self.cameras[(self._rr + i) % n] for i in range(n)]
        self._rr = (self._rr + 1) % n
        taken: list[tuple[CameraPorts, PendingFrame]] = []
        for cam in order:
            if len(taken) == self.pipeline.max_batch:
                break
            frame = cam.slot.take()
            if frame is not None:
                taken.append((cam, frame))
        if any(cam.slot.has_frame for cam in self.cameras):
            self._wake.set()  # more cameras than max_batch: go round again at once
        owners, frames = [], []
        for cam, pending in taken:
            frame = self._decode(cam, pending)
            if frame is not None:
                owners.append((cam, pending))
                frames.append(frame)
        if not frames:
            return
        try:
            results = self.pipeline.process_each(frames)  # device faults: split, fall back, or fail single frames
        except Exception as exc:  # noqa: BLE001 - anything else; the next batch may work
            for cam, _ in owners:
                cam.stats.add(diagnostics.PROCESSING_ERRORS)
            self._warn(("pipeline",), f"inference failed for {len(frames)} frame(s) of "
                       f"{', '.join(c.name for c, _ in owners)}: {exc!r}")
            return
        finally:
            self._note_faults()
        outputs = [r for r in results if isinstance(r, FrameOutput)]
        with self._lock:
            self._batches += 1
            self._batched_frames += len(outputs)
            self._stage_ms.extend(o.timings for o in outputs)
        for (cam, pending), output in zip(owners, results):
            if isinstance(output, FrameFailure):
                cam.stats.add(diagnostics.PROCESSING_ERRORS)
                self._warn((cam.name, "inference"), f"camera {cam.name}: frame skipped, inference failed on the "
                           f"device: {output.error!r}")
                continue
            try:
                self._publish(cam, pending, output)
            except Exception as exc:  # noqa: BLE001 - e.g. publishing during shutdown
                cam.stats.add(diagnostics.PROCESSING_ERRORS)
                self._warn((cam.name, "publish"), f"camera {cam.name}: publishing failed: {exc!r}")

    def _note_faults(self) -> None:
        """Device faults of the last batch: counted for /diagnostics, logged (throttled per kind and action)."""
        faults = self.pipeline.take_faults()
        if not faults:
            return
        with self._lock:
            for f in faults:
                self._faults[f.kind] += 1
                self._faults[f.action] += 1
            self._last_fault = faults[-1].describe()
            self.device = self.pipeline.device
            self.precision = str(getattr(self.pipeline.predictor, "dtype", "")).replace("torch.", "")
        for f in faults:
            self._warn(("fault", f.kind, f.action), f.describe())

    def _decode(self, cam: CameraPorts, pending: PendingFrame) -> CameraFrame | None:
        """The frame ready for the pipeline, or None (counted: a decode error of its kind, or a processing
        error when something unforeseen failed, so every taken frame is accounted for)."""
        t0 = time.perf_counter()
        msg = pending.msg
        try:
            if isinstance(msg, CompressedImage):
                rgb = convert.compressed_rgb(msg)
            else:
                rgb = convert.image_rgb(msg)
            decode_ms = (time.perf_counter() - t0) * 1e3
            return CameraFrame(cam.name, rgb, pending.stamp_s, self._intrinsics(cam, pending.stamp_s, rgb.shape),
                               decode_ms=decode_ms)
        except convert.InputRejected as exc:
            self._decode_error(cam, exc)
        except Exception as exc:  # noqa: BLE001 - a bug here costs this frame, not the whole cycle
            cam.stats.add(diagnostics.PROCESSING_ERRORS)
            self._warn((cam.name, "decode_failed"), f"camera {cam.name}: preparing an image failed: {exc!r}")
        return None

    def _intrinsics(self, cam: CameraPorts, stamp_s: float, shape: tuple[int, ...]):
        if not len(cam.info):
            return None  # no CameraInfo published: positions are simply unavailable
        intrinsics = cam.info.match(stamp_s, self.params.camera_info_tolerance_s)
        if intrinsics is None:
            cam.stats.add(diagnostics.CAMERA_INFO_UNMATCHED)
            self._warn((cam.name, "camera_info_unmatched"),
                       f"camera {cam.name}: no CameraInfo within camera_info_tolerance_s="
                       f"{self.params.camera_info_tolerance_s} s of image stamp {stamp_s:.3f}; no positions")
            return None
        h, w = shape[:2]
        if abs(intrinsics.width / intrinsics.height - w / h) > _ASPECT_TOLERANCE * (w / h):
            cam.stats.add(diagnostics.CAMERA_INFO_SIZE)
            self._warn((cam.name, "camera_info_size"),
                       f"camera {cam.name}: CameraInfo is for {intrinsics.width}x{intrinsics.height} but the image "
                       f"is {w}x{h} (another aspect ratio); no positions")
            return None
        return intrinsics

    def _publish(self, cam: CameraPorts, pending: PendingFrame, out: FrameOutput) -> None:
        header = pending.msg.header
        pubs = cam.pubs
        if out.tracked.clock_jump:
            cam.stats.add(diagnostics.CLOCK_JUMPS)
            self._warn((cam.name, "clock"), f"camera {cam.name}: image stamp {out.stamp_s:.3f} jumped (backwards, "
                       "repeated or a long gap); tracking stepped by the recent frame period")
        processing_s = time.monotonic() - pending.received_s
        pubs["objects"].publish(convert.objects_msg(header, out, cam.name, processing_s))
        pubs["panoptic"].publish(convert.panoptic_image_msg(header, out.panoptic))
        if "semantic" in pubs:
            pubs["semantic"].publish(convert.semantic_image_msg(header, out.semantic))
        if pubs["overlay"].get_subscription_count() > 0:
            pubs["overlay"].publish(convert.image_msg(header, self.pipeline.overlay(out, self._overlay_alpha),
                                                      "rgb8"))
        if pubs["markers"].get_subscription_count() > 0:
            pubs["markers"].publish(convert.markers_msg(header, out, cam.name))
        if "detections" in pubs:
            pubs["detections"].publish(convert.detections_msg(header, out))
        cam.stats.num_objects = len(out.objects)
        cam.stats.record_latency(processing_s)
        cam.stats.add(diagnostics.PROCESSED)

    # ------------------------------------------------------------------ helpers

    def _decode_error(self, cam: CameraPorts, exc: convert.InputRejected) -> None:
        cam.stats.add(f"{diagnostics.DECODE_ERRORS}.{exc.kind}")
        self._warn((cam.name, "decode", exc.kind), f"camera {cam.name}: skipped an image ({exc.kind}): {exc}")

    def _resolved(self, relative: str) -> str:
        return self.resolve_topic_name(relative)

    def close(self) -> None:
        """Stop the worker (it finishes the batch in hand) before the node is destroyed."""
        self._stop.set()
        self._wake.set()
        self._worker.join(timeout=30.0)
        if not self._worker.is_alive():
            self.pipeline.close()


def main(argv: list[str] | None = None) -> int:
    rclpy.init(args=sys.argv if argv is None else argv)
    logger = rclpy.logging.get_logger(NODE_NAME)
    try:
        node = PanopticNode()
    except (StartupError, CheckpointError, ValueError, OSError, RuntimeError) as exc:
        logger.fatal(f"cannot start: {exc}")
        rclpy.try_shutdown()
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        rclpy.try_shutdown()
        return 0
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.close()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
