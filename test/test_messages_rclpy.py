"""Our messages: the .msg files say what DESIGN.md asks, the generated classes match them, and a
fully populated message crosses two processes over real DDS (rclpy, Fast DDS) unchanged."""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from helpers_ros import (
    SAMPLES,
    discover_locally,
    field_differences,
    latched_qos,
    message_fields,
    random_domain_id,
    start_publisher,
    stop_process,
    unique_topic,
)

pytest.importorskip("rclpy")
msg = pytest.importorskip("panoptic_ros.msg")

MSG_DIR = Path(__file__).resolve().parents[1] / "msg"
MESSAGES = {"PanopticObject": msg.PanopticObject, "PanopticObjectArray": msg.PanopticObjectArray,
            "PanopticClassInfo": msg.PanopticClassInfo}

_LINE = re.compile(r"^(?P<type>[A-Za-z_][\w/]*(?:\[(?:<=)?\d*\])?)\s+(?P<name>[A-Za-z_]\w*)\s*(?:=\s*(?P<value>\S+))?$")
_ROSIDL_NAMES = {"float32": "float", "float64": "double", "bool": "boolean", "byte": "octet"}


def _rosidl_type(msg_type: str) -> str:
    """.msg spelling -> the spelling of get_fields_and_field_types() (rosidl's IDL names)."""
    base, bracket, rest = msg_type.partition("[")
    if "/" not in base and base[0].isupper():
        base = f"panoptic_ros/{base}"
    base = _ROSIDL_NAMES.get(base, base)
    if not bracket:
        return base
    size = rest.rstrip("]")
    if size == "":
        return f"sequence<{base}>"
    if size.startswith("<="):
        return f"sequence<{base}, {size[2:]}>"
    return f"{base}[{size}]"


def _parse_msg(name: str) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """(fields {name: rosidl type}, constants {NAME: value}, undocumented field names) of msg/<name>.msg.

    A field counts as documented when it has its own comment or sits in a block
    (no blank line between) that a comment line or a commented field opened.
    """
    fields: dict[str, str] = {}
    constants: dict[str, str] = {}
    undocumented: list[str] = []
    context = False
    for raw in (MSG_DIR / f"{name}.msg").read_text().splitlines():
        code, hash_, comment = raw.partition("#")
        code = code.strip()
        if not code:
            context = bool(hash_) or (context and bool(raw.strip()))
            continue
        match = _LINE.match(code)
        assert match, f"{name}.msg: cannot parse line {raw!r}"
        if match["value"] is not None:
            constants[match["name"]] = match["value"]
        else:
            fields[match["name"]] = _rosidl_type(match["type"])
            if not (comment.strip() or context):
                undocumented.append(match["name"])
        context = context or bool(comment.strip())
    return fields, constants, undocumented


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_generated_classes_match_the_msg_files(name: str) -> None:
    """Fails when msg/*.msg changed but the generated messages were not rebuilt (tools/setup_env.sh)."""
    fields, constants, _ = _parse_msg(name)
    cls = MESSAGES[name]
    assert cls.get_fields_and_field_types() == fields
    assert {k: str(getattr(cls, k)) for k in constants} == constants


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_every_msg_field_is_documented(name: str) -> None:
    assert _parse_msg(name)[2] == []


def test_messages_carry_what_the_design_requires() -> None:
    objects, constants, _ = _parse_msg("PanopticObject")
    required = {
        "track_id": "uint32", "class_id": "uint8", "label": "string", "score": "float", "state": "uint8",
        "x_min_px": "float", "y_min_px": "float", "x_max_px": "float", "y_max_px": "float",
        "visible_area_px": "uint32", "centroid_x_px": "float", "centroid_y_px": "float",
        "velocity_x_px_s": "float", "velocity_y_px_s": "float", "age_frames": "uint32", "age_s": "float",
        "last_seen": "builtin_interfaces/Time", "has_position": "boolean", "position_m": "geometry_msgs/Point",
    }
    assert {k: objects.get(k) for k in required} == required
    states = {k: int(v) for k, v in constants.items() if k.startswith("STATE_")}
    assert set(states) == {"STATE_NEW", "STATE_TRACKED", "STATE_OCCLUDED"} and len(set(states.values())) == 3

    array_fields = _parse_msg("PanopticObjectArray")[0]
    assert array_fields["header"] == "std_msgs/Header"
    assert array_fields["objects"] == "sequence<panoptic_ros/PanopticObject>"

    class_fields = _parse_msg("PanopticClassInfo")[0]
    assert {k: class_fields.get(k) for k in ("header", "class_ids", "names", "is_thing", "colors_rgb",
                                              "void_class_id", "label_divisor", "panoptic_encoding")} == {
        "header": "std_msgs/Header", "class_ids": "sequence<uint8>", "names": "sequence<string>",
        "is_thing": "sequence<boolean>", "colors_rgb": "sequence<uint8>", "void_class_id": "uint8",
        "label_divisor": "uint32", "panoptic_encoding": "string"}


def test_class_info_documents_the_core_panoptic_encoding() -> None:
    from panoptic_ros.classes import VOID
    from panoptic_ros.panoptic import LABEL_DIVISOR, PANOPTIC_ENCODING

    text = (MSG_DIR / "PanopticClassInfo.msg").read_text()
    assert f"# {LABEL_DIVISOR} (2^{LABEL_DIVISOR.bit_length() - 1})" in text
    assert f'"{PANOPTIC_ENCODING}"' in text
    assert f"({VOID})" in text


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_samples_set_every_field_away_from_its_default(kind: str) -> None:
    """A field the transport dropped would come back as its default; the samples must not hide that."""
    sample = SAMPLES[kind]()
    defaults = {"objects": msg.PanopticObject, "classes": msg.PanopticClassInfo}
    leaves = message_fields(sample)
    if kind == "objects":
        default_leaves = message_fields(msg.PanopticObject())
        for field, default in default_leaves.items():
            values = [leaves[f"objects[{i}].{field}"] for i in range(len(sample.objects))]
            assert any(v != default for v in values), f"objects[*].{field} is {default!r} in every object"
        array_defaults = message_fields(msg.PanopticObjectArray())
        for field, default in array_defaults.items():
            assert leaves[field] != default, field
    else:
        for field, default in message_fields(defaults[kind]()).items():
            assert leaves[field] != default, field


def _receive_over_dds(kind: str, monkeypatch: pytest.MonkeyPatch, wait_s: float = 40.0) -> tuple[list, str]:
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    domain_id = random_domain_id()
    topic = unique_topic(kind)
    # The same discovery settings as the child (helpers_ros.ros_env); rmw reads them at init.
    discover_locally(monkeypatch)
    publisher = start_publisher(kind, topic, domain_id, seconds=wait_s + 15)
    received: list = []
    context = Context()
    rclpy.init(context=context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = rclpy.create_node("panoptic_test_subscriber", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        node.create_subscription(type(SAMPLES[kind]()), topic, received.append, latched_qos())
        deadline = time.monotonic() + wait_s
        while not received and time.monotonic() < deadline and publisher.poll() is None:
            executor.spin_once(timeout_sec=0.2)
        executor.shutdown()
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
        out, err = stop_process(publisher)
    report = (f"domain {domain_id}, topic {topic}, publisher exit code {publisher.returncode}; "
              f"stdout: {out[-500:]!r}; stderr: {err[-2000:]!r}")
    return received, report


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_message_crosses_two_processes_unchanged(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    received, report = _receive_over_dds(kind, monkeypatch)
    assert received, f"no {kind} message arrived within 40 s ({report})"
    expected = SAMPLES[kind]()
    assert field_differences(expected, received[0]) == []
    assert received[0] == expected
    if kind == "objects":
        states = [o.state for o in received[0].objects]
        assert states == [msg.PanopticObject.STATE_NEW, msg.PanopticObject.STATE_TRACKED,
                          msg.PanopticObject.STATE_OCCLUDED]
