"""Helpers for tests that run real rclpy across processes.

Tests import this module (pytest puts test/ on sys.path); a publisher child
process runs it as a script:

    python test/helpers_ros.py publish --kind objects --topic /t --seconds 30

Every child gets its own ROS_DOMAIN_ID (see :func:`ros_env`) so parallel test
runs and other engineers' nodes on this machine never see each other.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

REPO = Path(__file__).resolve().parents[1]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"


def python_executable() -> str:
    """The venv's interpreter (the one with rclpy and our messages), else the running one."""
    return str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable


def random_domain_id() -> int:
    """A DDS domain for one test: 1..200 keeps clear of 0 (everyone's default) and of 232, Fast DDS's limit."""
    return random.SystemRandom().randint(1, 200)


def unique_topic(stem: str) -> str:
    return f"/panoptic_test/{stem}_{uuid.uuid4().hex[:8]}"


def ros_env(domain_id: int, **extra: str) -> dict[str, str]:
    """Environment for a ROS child process: its own domain, discovery on this host only."""
    env = dict(os.environ)
    env.update({
        "ROS_DOMAIN_ID": str(domain_id),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "PYTHONNOUSERSITE": "1",
        "PYTHONUNBUFFERED": "1",
        "RCUTILS_LOGGING_BUFFERED_STREAM": "0",
    })
    env.pop("ROS_LOCALHOST_ONLY", None)  # deprecated; conflicts with the discovery range
    env.update(extra)
    return env


def discover_locally(mp: Any, domain_id: int | None = None) -> None:
    """This test process's discovery settings as a child's (:func:`ros_env`), through ``mp`` (a pytest
    MonkeyPatch, undone after the test); rmw reads them when rclpy initialises."""
    if domain_id is not None:
        mp.setenv("ROS_DOMAIN_ID", str(domain_id))
    mp.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    mp.delenv("ROS_LOCALHOST_ONLY", raising=False)


@contextlib.contextmanager
def own_context() -> Iterator[Any]:
    """An rclpy context of our own on a random domain, discovery limited to this host."""
    import pytest
    import rclpy
    from rclpy.context import Context
    from rclpy.signals import SignalHandlerOptions

    mp = pytest.MonkeyPatch()
    discover_locally(mp)
    ctx = Context()
    rclpy.init(context=ctx, domain_id=random_domain_id(), signal_handler_options=SignalHandlerOptions.NO)
    try:
        yield ctx
    finally:
        rclpy.shutdown(context=ctx)
        mp.undo()


def latched_qos() -> Any:
    """Reliable, transient-local, depth 1: a late subscriber still gets the last message."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


# --------------------------------------------------------------------------- sample messages


def sample_object_array() -> Any:
    """A PanopticObjectArray whose every field holds a distinctive, float32-exact value.

    Values are exactly representable in float32 so that equality after a DDS
    round trip is exact; each object differs from the others in every field
    where the type allows, and every field differs from its default in at
    least one object (checked by test_messages_rclpy).
    """
    from builtin_interfaces.msg import Time
    from geometry_msgs.msg import Point
    from std_msgs.msg import Header

    from panoptic_ros.msg import PanopticObject, PanopticObjectArray

    def make(i: int, state: int, has_position: bool) -> PanopticObject:
        return PanopticObject(
            track_id=1000 + 7 * i, class_id=11 + i, label=["person", "rider", "car"][i], state=state,
            score=0.5 + 0.125 * i,
            x_min_px=10.5 + i, y_min_px=20.25 + i, x_max_px=110.75 + i, y_max_px=220.125 + i,
            visible_area_px=4321 + i, centroid_x_px=60.5 + i, centroid_y_px=120.25 + i,
            velocity_x_px_s=-3.5 - i, velocity_y_px_s=1.75 + i,
            age_frames=42 + i, age_s=1.375 + i, frames_since_seen=3 * i,
            last_seen=Time(sec=1_700_000_000 + i, nanosec=123_456_789 + i),
            has_position=has_position,
            position_m=Point(x=1.5 + i, y=-0.25 - i, z=12.75 + i) if has_position else Point(),
            distance_m=12.875 + i if has_position else 0.0,
        )

    return PanopticObjectArray(
        header=Header(stamp=Time(sec=1_700_000_123, nanosec=987_654_321), frame_id="front_camera_optical_frame"),
        camera_name="front",
        frame_index=31337,
        processing_time_s=0.0625,
        image_width=2048,
        image_height=1024,
        objects=[
            make(0, PanopticObject.STATE_NEW, True),
            make(1, PanopticObject.STATE_TRACKED, False),
            make(2, PanopticObject.STATE_OCCLUDED, True),
        ],
    )


def sample_class_info() -> Any:
    """The Cityscapes class table as the node would latch it, with a distinctive model id."""
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    from panoptic_ros.classes import CITYSCAPES, VOID
    from panoptic_ros.msg import PanopticClassInfo
    from panoptic_ros.panoptic import LABEL_DIVISOR, PANOPTIC_ENCODING

    return PanopticClassInfo(
        header=Header(stamp=Time(sec=1_700_000_001, nanosec=5), frame_id="startup"),
        model_id="efficientps-b0-synth@sha256:0123456789abcdef",
        class_ids=[c.train_id for c in CITYSCAPES.classes],
        names=CITYSCAPES.names,
        is_thing=[c.is_thing for c in CITYSCAPES.classes],
        colors_rgb=[v for c in CITYSCAPES.classes for v in c.color_rgb],
        void_class_id=VOID,
        label_divisor=LABEL_DIVISOR,
        panoptic_encoding=PANOPTIC_ENCODING,
    )


SAMPLES: dict[str, Callable[[], Any]] = {"objects": sample_object_array, "classes": sample_class_info}


def message_fields(message: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf field of a ROS message as {dotted.path: plain Python value}; lists are indexed."""
    if not hasattr(message, "get_fields_and_field_types"):
        return {prefix: message}
    leaves: dict[str, Any] = {}
    for name in message.get_fields_and_field_types():
        value = getattr(message, name)
        path = f"{prefix}.{name}" if prefix else name
        if hasattr(value, "get_fields_and_field_types"):
            leaves.update(message_fields(value, path))
        elif isinstance(value, (list, tuple)) or type(value).__name__ in ("array", "ndarray"):
            items = list(value)
            leaves[f"{path}.__len__"] = len(items)
            for i, item in enumerate(items):
                leaves.update(message_fields(item, f"{path}[{i}]"))
        else:
            leaves[path] = value
    return leaves


def field_differences(expected: Any, received: Any) -> list[str]:
    """Human-readable list of fields whose values differ (empty when the messages are equal)."""
    want, got = message_fields(expected), message_fields(received)
    return [f"{path}: expected {want.get(path)!r}, received {got.get(path)!r}"
            for path in sorted(set(want) | set(got)) if want.get(path) != got.get(path)]


# --------------------------------------------------------------------------- publisher child


def publish(kind: str, topic: str, seconds: float) -> int:
    """Publishes the sample latched and keeps the publisher alive (re-publishing) until killed or timed out."""
    import rclpy
    from rclpy.executors import ExternalShutdownException

    rclpy.init()
    node = rclpy.create_node(f"panoptic_test_publisher_{uuid.uuid4().hex[:6]}")
    message = SAMPLES[kind]()
    publisher = node.create_publisher(type(message), topic, latched_qos())
    print("READY", flush=True)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and rclpy.ok():
            publisher.publish(message)
            rclpy.spin_once(node, timeout_sec=0.25)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


def start_publisher(kind: str, topic: str, domain_id: int, seconds: float = 45.0) -> subprocess.Popen:
    return subprocess.Popen(
        [python_executable(), str(Path(__file__).resolve()), "publish", "--kind", kind, "--topic", topic,
         "--seconds", str(seconds)],
        env=ros_env(domain_id), cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop_process(process: subprocess.Popen, timeout_s: float = 10.0) -> tuple[str, str]:
    """Ends a child we started (SIGTERM, then SIGKILL) and returns its (stdout, stderr)."""
    if process.poll() is None:
        process.terminate()
        try:
            return process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.communicate()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    pub = sub.add_parser("publish", help="publish a sample message latched on a topic")
    pub.add_argument("--kind", choices=sorted(SAMPLES), required=True)
    pub.add_argument("--topic", required=True)
    pub.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    return publish(args.kind, args.topic, args.seconds)


if __name__ == "__main__":
    sys.exit(main())
