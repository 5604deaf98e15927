"""Node parameters declared from the one schema (panoptic_ros.params), and their validation.

Each schema field becomes a ROS parameter with its dotted name, help text,
range and read-only flag (non-dynamic fields cannot change while the node
runs). Float and list parameters accept any type at the ROS level
(``dynamic_typing``) so that ``-p mount.height_m:=2`` (an integer to ROS)
or an empty list default work; the schema's :func:`validate_value` then
coerces and checks every value, at start-up and on every change, and
refuses bad ones with its reason.
"""
from __future__ import annotations

import typing
from typing import Any, Callable

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node
from rclpy.parameter import Parameter

from panoptic_ros.params import NodeParams, ParamDef, build, flatten, iter_params, param_defs, validate_value


def descriptor(p: ParamDef) -> ParameterDescriptor:
    unit = f" [{p.unit}]" if p.unit else ""
    extra = f"one of: {', '.join(map(str, p.choices))}" if p.choices else ""
    d = ParameterDescriptor(name=p.name, description=p.help + unit, additional_constraints=extra,
                            read_only=not p.dynamic)
    if p.type is float or typing.get_origin(p.type) is list:
        d.dynamic_typing = True
    if p.type is float and p.minimum is not None and p.maximum is not None:
        d.floating_point_range = [FloatingPointRange(from_value=float(p.minimum), to_value=float(p.maximum))]
    elif p.type is int and p.minimum is not None and p.maximum is not None:
        d.integer_range = [IntegerRange(from_value=int(p.minimum), to_value=int(p.maximum), step=1)]
    return d


def declare(node: Node, schema: type = NodeParams) -> Any:
    """Declare every schema parameter (overrides from YAML / --ros-args apply) and build the schema instance.

    Raises ValueError naming the first bad value.
    """
    values = {}
    for p in iter_params(schema):
        try:
            values[p.name] = node.declare_parameter(p.name, p.default, descriptor(p)).value
        except (InvalidParameterValueException, InvalidParameterTypeException) as exc:
            raise ValueError(f"{p.name}: {exc}") from None
    return build(schema, values)


class ParameterGuard:
    """The set-parameters callback: checks every change against the schema, then hands the new set on.

    ``apply(new_params)`` is called only when every change in the request
    is valid; it may raise ValueError (e.g. a cross-field check) to refuse
    the request with that reason.
    """

    def __init__(self, current: NodeParams, apply: Callable[[NodeParams], None]) -> None:
        self.current = current
        self._apply = apply
        self._defs = param_defs(NodeParams)

    def __call__(self, changes: list[Parameter]) -> SetParametersResult:
        values = flatten(self.current)
        for change in changes:
            p = self._defs.get(change.name)
            if p is None:
                continue  # rclpy's own parameters (use_sim_time, ...)
            if not p.dynamic:
                return SetParametersResult(successful=False,
                                           reason=f"{p.name} is fixed while the node runs; restart to change it")
            value, error = validate_value(p, change.value)
            if error:
                return SetParametersResult(successful=False, reason=error)
            values[p.name] = value
        try:
            new = build(NodeParams, values)
            self._apply(new)
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self.current = new
        return SetParametersResult(successful=True)
