"""The one parameter schema.

Every tunable of the pipeline and the node is a field of a dataclass below,
with its default, its help text, and its limits. From these classes come the
ROS node's declared parameters (``panoptic_ros.ros.parameters``), the
defaults in ``config/*.yaml`` (``panoptic-ros params --yaml``), command-line
flags of the tools (:func:`add_cli_flags`), the README's parameter table
(``panoptic-ros params --markdown``) and the validation that refuses bad
values with a reason (:func:`validate_value`). No parameter is defined twice.

Nested dataclasses become dotted names: ``tracker.max_occluded_frames``.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

_MISSING = dataclasses.MISSING


def param(default: Any, help: str, *, choices: tuple | None = None, minimum: float | None = None,
          maximum: float | None = None, dynamic: bool = False, unit: str = "") -> Any:
    """A schema field. ``dynamic`` parameters may change while the node runs."""
    meta = {"help": help, "choices": choices, "minimum": minimum, "maximum": maximum,
            "dynamic": dynamic, "unit": unit}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: list(d) if isinstance(d, list) else dict(d),
                     metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ParamDef:
    name: str  # dotted
    type: type  # bool, int, float, str or list[str] / list[float]
    default: Any
    help: str
    choices: tuple | None
    minimum: float | None
    maximum: float | None
    dynamic: bool
    unit: str

    @property
    def type_name(self) -> str:
        return getattr(self.type, "__name__", str(self.type)).replace("typing.", "")


# --------------------------------------------------------------------------- schema


@dataclass
class ModelParams:
    path: str = param("", "Model file (.safetensors with its .json model card beside it); empty = the shipped demo model")
    device: str = param("auto", "Inference device: auto (cuda if available), cpu, cuda or cuda:N")
    fallback_device: str = param("", "Where the model moves, for good, when inference fails on its device even "
                                     "for a single frame (out of memory or a device error; failing batches are "
                                     "first retried in halves): '' = nowhere (the frame is skipped and counted) "
                                     "or 'cpu'", choices=("", "cpu"))
    precision: str = param("auto", "Arithmetic: auto (fp16 on CUDA, fp32 on CPU), fp32, fp16 or bf16",
                           choices=("auto", "fp32", "fp16", "bf16"))
    dense_mode: str = param("auto", "How the dense part (backbone, FPN, semantic head) runs: auto (cuda_graph on "
                                    "CUDA, else eager), eager, cuda_graph (captured per batch size, checked against "
                                    "eager on first use, eager where capture fails) or compile, through torch.compile",
                            choices=("auto", "eager", "cuda_graph", "compile"))
    detection_mode: str = param("auto", "How proposals and detections are selected: auto (static on CUDA, else "
                                        "dynamic), dynamic (torchvision's RPN and RoI heads: variable sizes, host "
                                        "synchronisations on a GPU) or static (the same result on fixed-size tensors "
                                        "with validity masks and Cluster-NMS: no host synchronisation)",
                                choices=("auto", "dynamic", "static"))
    fusion_mode: str = param("auto", "How panoptic fusion runs: auto (batch on CUDA, else per_instance), per_instance "
                                     "(work confined to each box, decided on the host: fastest on a CPU) or batch "
                                     "(all frames and instances at once on the device, no host synchronisation "
                                     "until the batch's results are copied)",
                             choices=("auto", "per_instance", "batch"))
    input_height: int = param(0, "Network input height in pixels; 0 = the model card's", minimum=0, maximum=4096,
                              unit="px")
    input_width: int = param(0, "Network input width in pixels; 0 = the model card's", minimum=0, maximum=8192,
                             unit="px")
    score_threshold: float = param(0.5, "Minimum instance confidence kept by panoptic fusion", minimum=0.0,
                                   maximum=1.0, dynamic=True)
    overlap_threshold: float = param(0.5, "Fusion drops an instance whose mask keeps less than this fraction of "
                                          "its pixels after overlaps are resolved", minimum=0.0, maximum=1.0,
                                     dynamic=True)
    min_stuff_area: int = param(64, "Stuff regions smaller than this many pixels become void (pixels of the "
                                    "network input; scaled by the area ratio when a smaller frame is fused on its "
                                    "own grid)", minimum=0, maximum=1 << 20, dynamic=True, unit="px")
    test_time_flip: bool = param(False, "Test-time flip: the dense part also runs on each frame mirrored and the "
                                        "stuff classes' semantic logits are averaged over both views (the previous, "
                                        "256x512-input demo model: held-out PQ +0.006-0.008; costs a second dense "
                                        "pass per frame)")
    max_detections: int = param(50, "Most instances kept per frame", minimum=1, maximum=1000)
    rpn_post_nms_top_n: int = param(200, "Proposals kept after the RPN's NMS at inference", minimum=10, maximum=5000)


@dataclass
class TrackerParams:
    min_hits: int = param(2, "Detections needed before a track is confirmed and gets an id", minimum=1, maximum=30)
    max_lost_frames: int = param(15, "Frames an unmatched, unoccluded track is kept (e.g. left the image)",
                                 minimum=0, maximum=10000, dynamic=True, unit="frames")
    max_occluded_frames: int = param(60, "Frames a track hidden behind another object is kept", minimum=0,
                                     maximum=10000, dynamic=True, unit="frames")
    match_threshold: float = param(0.3, "Lowest association affinity accepted for a match", minimum=0.0,
                                   maximum=1.0, dynamic=True)
    embedding_weight: float = param(0.3, "Weight of appearance similarity in the association affinity",
                                    minimum=0.0, maximum=1.0, dynamic=True)
    camera_motion_compensation: bool = param(True, "Estimate the camera's image motion and compensate predictions")
    high_score_threshold: float = param(0.5, "Detections at or above this score are associated first; those "
                                             "between low_score_threshold and this only extend existing tracks "
                                             "(ByteTrack's second stage)", minimum=0.0, maximum=1.0, dynamic=True)
    low_score_threshold: float = param(0.1, "Detections below this score are ignored by the tracker",
                                       minimum=0.0, maximum=1.0, dynamic=True)
    new_track_score_threshold: float = param(0.6, "Lowest score of an unmatched detection that starts a new "
                                                  "(tentative) track", minimum=0.0, maximum=1.0, dynamic=True)
    max_tentative_missed_frames: int = param(1, "Consecutive misses after which a not yet confirmed track is "
                                                "dropped", minimum=0, maximum=100, dynamic=True, unit="frames")
    max_center_distance: float = param(1.0, "Association gate: largest distance between a track's predicted "
                                            "and a detection's box centre, in box sizes (sqrt of box area)",
                                       minimum=0.0, maximum=100.0, dynamic=True)
    occlusion_threshold: float = param(0.5, "Fraction of an unmatched track's predicted region that another "
                                            "thing must cover for the track to count as occluded (kept "
                                            "max_occluded_frames) rather than lost (kept max_lost_frames)",
                                       minimum=0.0, maximum=1.0, dynamic=True)
    reid_max_distance: float = param(1.0, "Re-identification gate for occluded and lost tracks: largest gap "
                                          "between the predicted box and a detection's box, in track sizes "
                                          "(detections touching the occluder pass regardless)",
                                     minimum=0.0, maximum=100.0, dynamic=True)
    reid_min_similarity: float = param(0.5, "Re-identification needs at least this appearance cosine "
                                            "similarity when both sides have embeddings", minimum=-1.0,
                                       maximum=1.0, dynamic=True)
    compatible_classes: list[str] = param(["person:rider", "car:truck", "car:bus", "truck:bus", "bicycle:motorcycle"],
                                          "Pairs of class names (or ids) that may match each other although they "
                                          "differ, as 'a:b' (a segmenter's class flickers between look-alikes; the "
                                          "track's class is the majority of its detections)")
    embedding_momentum: float = param(0.9, "Weight of the stored appearance in its moving average (the new "
                                           "detection gets 1 - this)", minimum=0.0, maximum=1.0, dynamic=True)
    mask_stride: int = param(4, "Masks are compared on every mask_stride-th pixel (speed over precision)",
                             minimum=1, maximum=32, unit="px")
    max_tracks: int = param(1000, "Most tracks held at once (tentative, lost and occluded included)",
                            minimum=1, maximum=100000)
    max_frame_gap_s: float = param(1.0, "A stamp step larger than this, zero or negative is a clock jump: "
                                        "the motion model steps by the recent frame period instead",
                                   minimum=0.0, maximum=3600.0, unit="s")
    camera_motion_width_px: int = param(256, "Camera motion is estimated on the image sub-sampled to about "
                                             "this width", minimum=16, maximum=4096, unit="px")


@dataclass
class CameraMountParams:
    height_m: float = param(0.0, "Camera height above the ground; 0 = unknown (no object positions)",
                            minimum=0.0, maximum=100.0, dynamic=True, unit="m")
    pitch_deg: float = param(0.0, "Camera pitch, positive looks down", minimum=-89.0, maximum=89.0, dynamic=True,
                             unit="deg")
    per_camera: list[str] = param([], "Mountings that differ from height_m/pitch_deg, one per camera as "
                                      "'name:height_m:pitch_deg' (e.g. 'rear:1.2:5.0')", dynamic=True)


@dataclass
class NodeParams:
    cameras: list[str] = param(["camera"], "Camera names, each with its own tracker; with one camera the topics "
                                           "are image, camera_info, panoptic/... (no prefix), with several each "
                                           "camera's topics sit under its name (front/image, front/panoptic/...)")
    input_transport: str = param("raw", "Subscribe to sensor_msgs/Image ('raw', topic image) or "
                                        "sensor_msgs/CompressedImage ('compressed', topic image/compressed)",
                                 choices=("raw", "compressed"))
    input_qos: str = param("SENSOR_DATA", "QoS of the image and camera_info subscriptions",
                           choices=("SENSOR_DATA", "DEFAULT"))
    camera_info_tolerance_s: float = param(0.05, "Largest stamp difference accepted between an image and its "
                                                 "CameraInfo", minimum=0.0, maximum=10.0, unit="s")
    max_batch: int = param(6, "Most camera frames run through the model in one batch", minimum=1, maximum=64)
    tracking_threads: int = param(0, "Threads that track and encode the different cameras of one batch at once "
                                     "(each camera's frames stay in order): 0 = one per camera in the batch, 1 = "
                                     "one after another in the inference thread", minimum=0, maximum=64)
    enabled: bool = param(True, "Run inference (also switchable with the ~/set_enabled service)", dynamic=True)
    publish_semantic: bool = param(True, "Publish panoptic/semantic (mono8 class ids)")
    overlay_alpha: float = param(0.5, "Opacity of the class colours in panoptic/overlay", minimum=0.0, maximum=1.0,
                                 dynamic=True)
    diagnostics_period_s: float = param(1.0, "Period of /diagnostics messages", minimum=0.05, maximum=60.0,
                                        unit="s")
    log_throttle_s: float = param(5.0, "Shortest interval between repeated warnings of one kind", minimum=0.0,
                                  maximum=3600.0, unit="s")
    model: ModelParams = field(default_factory=ModelParams)
    tracker: TrackerParams = field(default_factory=TrackerParams)
    mount: CameraMountParams = field(default_factory=CameraMountParams)


# --------------------------------------------------------------------------- mechanism


def iter_params(schema: type, prefix: str = "") -> Iterator[ParamDef]:
    """Every leaf parameter of a schema dataclass, depth first, in declaration order."""
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            yield from iter_params(t, f"{prefix}{f.name}.")
            continue
        default = f.default if f.default is not _MISSING else f.default_factory()  # type: ignore[misc]
        m = f.metadata
        yield ParamDef(f"{prefix}{f.name}", t, default, m.get("help", ""), m.get("choices"), m.get("minimum"),
                       m.get("maximum"), bool(m.get("dynamic")), m.get("unit", ""))


def param_defs(schema: type = NodeParams) -> dict[str, ParamDef]:
    return {p.name: p for p in iter_params(schema)}


def validate_value(p: ParamDef, value: Any) -> tuple[Any, str | None]:
    """Coerce ``value`` to the parameter's type; return (value, None) or (None, reason)."""
    origin = typing.get_origin(p.type)
    try:
        if p.type is bool:
            if isinstance(value, str) and value.lower() in ("true", "false"):
                value = value.lower() == "true"
            if not isinstance(value, bool):
                return None, f"{p.name} must be true or false, got {value!r}"
        elif p.type is int:
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                return None, f"{p.name} must be an integer, got {value!r}"
            value = int(value)
        elif p.type is float:
            if isinstance(value, bool):
                return None, f"{p.name} must be a number, got {value!r}"
            value = float(value)
            if not math.isfinite(value):
                return None, f"{p.name} must be a finite number, got {value!r}"
        elif p.type is str:
            if not isinstance(value, str):
                return None, f"{p.name} must be a string, got {value!r}"
        elif origin is list:
            (item,) = typing.get_args(p.type)
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, (list, tuple)):
                return None, f"{p.name} must be a list, got {value!r}"
            value = [item(v) for v in value]
    except (TypeError, ValueError):
        return None, f"{p.name} must be of type {p.type_name}, got {value!r}"
    if p.choices is not None and value not in p.choices:
        return None, f"{p.name} must be one of {', '.join(map(str, p.choices))}; got {value!r}"
    if p.minimum is not None and value < p.minimum:
        return None, f"{p.name} must be >= {p.minimum}{p.unit and ' ' + p.unit}, got {value!r}"
    if p.maximum is not None and value > p.maximum:
        return None, f"{p.name} must be <= {p.maximum}{p.unit and ' ' + p.unit}, got {value!r}"
    return value, None


def build(schema: type, values: dict[str, Any]) -> Any:
    """A schema instance from dotted-name values (missing ones take defaults); bad values raise ValueError."""
    defs = param_defs(schema)
    unknown = sorted(set(values) - set(defs))
    if unknown:
        raise ValueError(f"unknown parameter(s): {', '.join(unknown)}")
    nested: dict[str, Any] = {}
    for name, p in defs.items():
        raw = values.get(name, p.default)
        value, err = validate_value(p, raw)
        if err:
            raise ValueError(err)
        node = nested
        *parents, leaf = name.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return _instantiate(schema, nested)


def _instantiate(schema: type, values: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(schema)
    kwargs = {}
    for f in dataclasses.fields(schema):
        t = hints[f.name]
        kwargs[f.name] = _instantiate(t, values[f.name]) if dataclasses.is_dataclass(t) else values[f.name]
    return schema(**kwargs)


def flatten(instance: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted-name values of a schema instance."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(instance):
        v = getattr(instance, f.name)
        if dataclasses.is_dataclass(v):
            out.update(flatten(v, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = v
    return out


def to_yaml(schema: type = NodeParams, node_name: str = "/**", values: dict[str, Any] | None = None) -> str:
    """A ROS 2 params file (``node: ros__parameters: ...``) with every parameter and its help as a comment."""
    values = values or {}
    lines = [f"{node_name}:", "  ros__parameters:"]
    last_group: list[str] = []
    for p in iter_params(schema):
        *group, leaf = p.name.split(".")
        common = 0
        while common < min(len(group), len(last_group)) and group[common] == last_group[common]:
            common += 1
        for depth in range(common, len(group)):
            lines.append("    " + "  " * depth + f"{group[depth]}:")
        last_group = group
        indent = "    " + "  " * len(group)
        unit = f" [{p.unit}]" if p.unit else ""
        lines.append(f"{indent}# {p.help}{unit}")
        lines.append(f"{indent}{leaf}: {_yaml_scalar(values.get(p.name, p.default))}")
    return "\n".join(lines) + "\n"


def _yaml_scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_yaml_scalar(x) for x in v) + "]"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def flatten_yaml_params(doc: dict) -> dict[str, dict[str, Any]]:
    """{node: {dotted name: value}} from a parsed ROS 2 params file."""
    out: dict[str, dict[str, Any]] = {}
    for node, body in (doc or {}).items():
        params = (body or {}).get("ros__parameters", {})
        flat: dict[str, Any] = {}

        def walk(d: dict, prefix: str) -> None:
            for k, v in d.items():
                if isinstance(v, dict):
                    walk(v, f"{prefix}{k}.")
                else:
                    flat[f"{prefix}{k}"] = v

        walk(params, "")
        out[node] = flat
    return out


def parse_param(text: str) -> tuple[str, str]:
    """'tracker.min_hits:=2' -> ('tracker.min_hits', '2') (also NAME=VALUE)."""
    sep = ":=" if ":=" in text else "="
    name, _, value = text.partition(sep)
    if not name.strip() or not _:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME:=VALUE (e.g. -p tracker.min_hits:=2)")
    return name.strip(), value.strip()


def add_node_param_flags(parser: argparse.ArgumentParser) -> None:
    """``--params-file FILE`` and ``-p NAME:=VALUE`` (read by :func:`node_params`), as the offline tools take them."""
    parser.add_argument("--params-file", type=Path, default=None,
                        help="a ROS 2 params file of the node (config/*.yaml)")
    parser.add_argument("-p", "--param", dest="param_values", type=parse_param, action="append", default=[],
                        metavar="NAME:=VALUE", help="a node parameter, as on `ros2 run`: -p tracker.min_hits:=2")


def node_params(model: str | None, device: str | None, params_file: Path | None,
                values: Sequence[tuple[str, Any]]) -> tuple[NodeParams, dict[str, Any]]:
    """The node parameters from a params file, ``-p`` values, ``--model`` and ``--device`` (later wins);
    returns them and the explicitly set values. ValueError naming the bad parameter."""
    import yaml

    chosen: dict[str, Any] = {}
    if params_file is not None:
        try:
            doc = yaml.safe_load(params_file.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"cannot read --params-file {params_file}: {exc}") from None
        for node_values in flatten_yaml_params(doc).values():
            chosen.update(node_values)
    chosen.update(dict(values))
    if model is not None:
        chosen["model.path"] = model
    if device is not None:
        chosen["model.device"] = device
    params = build(NodeParams, chosen)
    explicit = {k: v for k, v in flatten(params).items() if k in chosen}
    return params, explicit


def markdown_table(schema: type = NodeParams) -> str:
    rows = ["| parameter | type | default | range / choices | dynamic | description |",
            "|---|---|---|---|---|---|"]
    for p in iter_params(schema):
        if p.choices:
            rng = ", ".join(f"`{c}`" for c in p.choices)
        elif p.minimum is not None or p.maximum is not None:
            rng = f"{p.minimum if p.minimum is not None else '-inf'} .. {p.maximum if p.maximum is not None else 'inf'}"
        else:
            rng = ""
        unit = f" ({p.unit})" if p.unit else ""
        rows.append(f"| `{p.name}` | {p.type_name} | `{_yaml_scalar(p.default)}` | {rng} | "
                    f"{'yes' if p.dynamic else 'no'} | {p.help}{unit} |")
    return "\n".join(rows) + "\n"


def add_cli_flags(parser: argparse.ArgumentParser, schema: type, prefix: str = "") -> None:
    """One ``--dotted.name`` flag per parameter (dashes for underscores), defaulting to None = schema default."""
    group = parser.add_argument_group(f"{schema.__name__} parameters")
    for p in iter_params(schema):
        flag = "--" + prefix + p.name.replace("_", "-")
        group.add_argument(flag, dest=f"param:{p.name}", default=None, metavar=p.type_name.upper(),
                           help=f"{p.help} (default: {_yaml_scalar(p.default)})")


def from_cli(args: argparse.Namespace, schema: type) -> Any:
    """The schema instance that the flags added by :func:`add_cli_flags` describe."""
    values = {k.split(":", 1)[1]: v for k, v in vars(args).items() if k.startswith("param:") and v is not None}
    return build(schema, values)
