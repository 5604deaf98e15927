"""QoS profiles of the node's topics and the incompatible-QoS event hooks.

Inputs use the sensor-data profile (best effort, depth 5) by default, as
camera drivers publish; results are reliable and shallow (a late frame is
worth nothing); the class table is latched (transient local) so a
subscriber that comes later still gets it. A QoS mismatch is the usual
reason for "no output": the node listens for incompatible-QoS events on
every subscription and publisher and reports them.
"""
from __future__ import annotations

from typing import Callable

from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSPolicyKind, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)

RESULT_DEPTH = 2


def input_qos(name: str) -> QoSProfile:
    """``input_qos`` parameter -> profile: SENSOR_DATA (best effort, depth 5) or DEFAULT (reliable, depth 10)."""
    if name == "SENSOR_DATA":
        return qos_profile_sensor_data
    if name == "DEFAULT":
        return QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.VOLATILE)
    raise ValueError(f"input_qos must be SENSOR_DATA or DEFAULT, got {name!r}")


def result_qos() -> QoSProfile:
    """Reliable, volatile, depth 2: subscribers get every result they can keep up with, never stale ones."""
    return QoSProfile(depth=RESULT_DEPTH, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def latched_qos() -> QoSProfile:
    """Reliable, transient local, depth 1: a late subscriber still receives the last message."""
    return QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def describe(profile: QoSProfile) -> str:
    return f"{profile.reliability.name.lower()}, {profile.durability.name.lower()}, depth {profile.depth}"


def policy_name(policy: object) -> str:
    """The QoS policy an incompatibility event names, e.g. 'reliability' or 'durability'."""
    value = getattr(policy, "value", policy)
    try:
        return QoSPolicyKind(int(value)).name.lower()  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return f"policy {policy}"


IncompatibleHandler = Callable[[str, int], None]  # (policy name, new incompatible endpoints)


def _event(handler: IncompatibleHandler) -> Callable[[object], None]:
    def on_event(info: object) -> None:
        change = int(getattr(info, "total_count_change", 1))
        handler(policy_name(getattr(info, "last_policy_kind", None)), max(1, change))
    return on_event


def subscription_events(handler: IncompatibleHandler) -> SubscriptionEventCallbacks:
    """Calls ``handler(policy, count)`` when a publisher's offered QoS cannot serve this subscription."""
    return SubscriptionEventCallbacks(incompatible_qos=_event(handler), use_default_callbacks=False)


def publisher_events(handler: IncompatibleHandler) -> PublisherEventCallbacks:
    """Calls ``handler(policy, count)`` when a subscription requests QoS this publisher does not offer."""
    return PublisherEventCallbacks(incompatible_qos=_event(handler), use_default_callbacks=False)


