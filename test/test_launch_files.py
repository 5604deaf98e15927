"""launch/, config/ and the RViz config name only things that exist.

launch and launch_ros are not installable here, so the launch files are
read with ``ast``: every executable they start is installed by setup.py and
CMakeLists.txt, every params file they reference is in config/, every
parameter they set is in the schema, every topic they remap is one the node
subscribes to or publishes for the cameras those params files configure, and
every launch argument they read is declared. The params files hold only
schema parameters with valid values; config/panoptic_ros.yaml is exactly
what ``panoptic-ros params`` generates; the RViz config shows topics the
node publishes (or its input image).
"""
from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from panoptic_ros.params import NodeParams, flatten_yaml_params, param_defs, to_yaml, validate_value
from panoptic_ros.ros.topics import node_topics

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))
PARAM_FILES = sorted((REPO / "config").glob("*.yaml"))
ROS_BUILTIN_PARAMETERS = {"use_sim_time"}
ALLOWED_IMPORTS = {"launch", "launch.actions", "launch.substitutions", "launch.conditions", "launch_ros.actions",
                   "launch_ros.substitutions", "launch_ros.parameter_descriptions", "os", "pathlib"}


def package_name() -> str:
    return ET.parse(REPO / "package.xml").getroot().findtext("name")


def console_scripts() -> set[str]:
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                if isinstance(k, ast.Constant) and k.value == "console_scripts":
                    return {ast.literal_eval(e).split("=")[0].strip() for e in v.elts}
    return set()


def cmake_programs() -> set[str]:
    text = (REPO / "CMakeLists.txt").read_text()
    programs = set()
    for block in re.findall(r"install\(PROGRAMS(.*?)DESTINATION\s+lib/\$\{PROJECT_NAME\}", text, re.S):
        programs |= {Path(p).name for p in block.split() if (REPO / p).is_file()}
    return programs


@dataclass
class LaunchFacts:
    """What one launch file names, read from its syntax tree."""

    nodes: list[dict[str, ast.AST]] = field(default_factory=list)  # keyword arguments of each Node(...)
    share_files: list[tuple[str, str, str]] = field(default_factory=list)  # (package, folder, file)
    declared: set[str] = field(default_factory=set)
    used: set[str] = field(default_factory=set)
    imports: set[str] = field(default_factory=set)


def read_launch(path: Path) -> LaunchFacts:
    facts = LaunchFacts()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            facts.imports.add(node.module or "")
        elif isinstance(node, ast.Import):
            facts.imports |= {a.name for a in node.names}
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            continue
        name = node.func.id
        if name == "Node":
            facts.nodes.append({k.arg: k.value for k in node.keywords})
        elif name == "PathJoinSubstitution":
            parts = node.args[0].elts
            assert isinstance(parts[0], ast.Call) and parts[0].func.id == "FindPackageShare", ast.dump(node)
            facts.share_files.append((ast.literal_eval(parts[0].args[0]),
                                      *(ast.literal_eval(p) for p in parts[1:])))
        elif name == "DeclareLaunchArgument":
            facts.declared.add(ast.literal_eval(node.args[0]))
        elif name == "LaunchConfiguration":
            facts.used.add(ast.literal_eval(node.args[0]))
    return facts


def test_there_are_a_single_and_a_multi_camera_launch_file():
    assert [p.name for p in LAUNCH_FILES] == ["panoptic.launch.py", "panoptic_multi_camera.launch.py"]


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_names_only_what_exists(path: Path):
    facts = read_launch(path)
    assert facts.imports <= ALLOWED_IMPORTS, facts.imports - ALLOWED_IMPORTS
    assert facts.nodes, "the launch file starts no node"
    assert facts.used <= facts.declared, f"launch arguments read but never declared: {facts.used - facts.declared}"
    pkg = package_name()
    installed = console_scripts() & cmake_programs()
    for pkg_name, folder, filename in facts.share_files:
        assert pkg_name == pkg
        assert (REPO / folder / filename).is_file(), f"{folder}/{filename} does not exist"
        assert folder in ("config", "launch", "models")  # installed by CMakeLists' install(DIRECTORY ...)
    params_files = [REPO / folder / f for _, folder, f in facts.share_files if f.endswith(".yaml")]
    assert params_files, "the launch file uses no params file from config/"
    defs = param_defs(NodeParams)
    for kwargs in facts.nodes:
        assert ast.literal_eval(kwargs["package"]) == pkg
        executable = ast.literal_eval(kwargs["executable"])
        assert executable in installed, f"{executable} is not both a console script and an installed program"
        # Parameter names set inline must exist.
        for item in kwargs["parameters"].elts:
            if isinstance(item, ast.Dict):
                for key in item.keys:
                    name = ast.literal_eval(key)
                    assert name in defs or name in ROS_BUILTIN_PARAMETERS, f"unknown parameter {name!r}"
        # Remapped topics must be the node's own, for the cameras its params files configure.
        cameras = list(defs["cameras"].default)
        for f in params_files:
            for values in flatten_yaml_params(yaml.safe_load(f.read_text())).values():
                cameras = values.get("cameras", cameras)
        inputs, outputs = node_topics(cameras)
        remapped = [ast.literal_eval(t.elts[0]) for t in kwargs.get("remappings", ast.List(elts=[])).elts]
        assert remapped, "no remappings: the node's inputs cannot be pointed at camera topics"
        for topic in remapped:
            assert topic in inputs or topic in outputs, f"{topic!r} is not a topic of a node with cameras {cameras}"
        assert set(inputs) <= set(remapped), f"inputs without a remapping argument: {set(inputs) - set(remapped)}"


@pytest.mark.parametrize("path", PARAM_FILES, ids=lambda p: p.name)
def test_params_files_hold_valid_schema_parameters(path: Path):
    defs = param_defs(NodeParams)
    doc = yaml.safe_load(path.read_text())
    nodes = flatten_yaml_params(doc)
    assert nodes, f"{path.name} has no '<node>: ros__parameters:' section"
    for values in nodes.values():
        for name, value in values.items():
            assert name in defs, f"{path.name}: unknown parameter {name!r}"
            _, error = validate_value(defs[name], value)
            assert error is None, f"{path.name}: {error}"


def test_default_params_file_is_the_generated_one():
    assert (REPO / "config" / "panoptic_ros.yaml").read_text() == to_yaml(NodeParams), \
        "config/panoptic_ros.yaml is stale: regenerate it with `panoptic-ros params > config/panoptic_ros.yaml`"


def test_rviz_config_shows_topics_of_the_default_node():
    doc = yaml.safe_load((REPO / "config" / "panoptic_ros.rviz").read_text())
    displays = doc["Visualization Manager"]["Displays"]
    inputs, outputs = node_topics(list(param_defs(NodeParams)["cameras"].default))
    shown = {}
    for d in displays:
        assert d["Class"].startswith("rviz_default_plugins/"), d["Class"]
        if "Topic" in d:
            shown[d["Class"]] = shown.get(d["Class"], []) + [d["Topic"]["Value"]]
    absolute = {"/" + t if not t.startswith("/") else t for t in inputs + outputs}
    for topics in shown.values():
        for topic in topics:
            assert topic in absolute, f"RViz shows {topic}, which the default node neither reads nor publishes"
    assert "/panoptic/overlay" in shown["rviz_default_plugins/Image"]
    assert "/image" in shown["rviz_default_plugins/Image"]
    assert shown["rviz_default_plugins/MarkerArray"] == ["/panoptic/markers"]
    # The camera image is sensor data (best effort); results are reliable.
    qos = {d["Topic"]["Value"]: d["Topic"]["Reliability Policy"] for d in displays if "Topic" in d}
    assert qos["/image"] == "Best Effort" and qos["/panoptic/overlay"] == "Reliable"


def test_node_topics_single_camera_has_no_prefix_and_several_have_their_names():
    inputs, outputs = node_topics(["camera"])
    assert inputs == ["image", "image/compressed", "camera_info"]
    assert "panoptic/objects" in outputs and "/diagnostics" in outputs
    inputs, outputs = node_topics(["front", "rear"])
    assert inputs[:3] == ["front/image", "front/image/compressed", "front/camera_info"]
    assert "rear/panoptic/overlay" in outputs
    for bad in ([], ["a", "a"], ["1cam"], ["front camera"]):
        with pytest.raises(ValueError):
            node_topics(bad)
