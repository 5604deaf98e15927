"""The ROS 2 workspace build works: colcon (from PyPI) builds this repository as a package, and
sourcing install/setup.sh makes both the generated messages and our own modules importable
from the install space, with the `ros2 run` executables, launch files and config installed.

This is the proof behind the README's "colcon build" instructions; it takes ~10-30 s.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv"
PACKAGE = "panoptic_ros"
COLCON_TIMEOUT_S = 420
_NOT_SOURCE = {".git", ".venv", "build", "install", "log", "__pycache__", ".pytest_cache", ".hypothesis"}


def _source_files() -> list[str]:
    """The files a checkout would hold: tracked and new ones, without what .gitignore excludes."""
    try:
        listing = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                                 cwd=REPO, capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.CalledProcessError):
        return [str(p.relative_to(REPO)) for p in REPO.rglob("*")
                if p.is_file() and not _NOT_SOURCE.intersection(p.relative_to(REPO).parts)]
    return [name for name in listing.decode().split("\0") if name and (REPO / name).is_file()]


def _copy_package(destination: Path) -> list[str]:
    files = _source_files()
    for name in files:
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    return files


def _installed_directories() -> list[str]:
    """Source directories that CMakeLists.txt installs with install(DIRECTORY ...), our package aside."""
    text = (REPO / "CMakeLists.txt").read_text()
    names: list[str] = []
    for args in re.findall(r"install\(\s*DIRECTORY\s+(.*?)\s+DESTINATION", text, flags=re.S):
        names += [a.rstrip("/") for a in args.split() if a.rstrip("/") != PACKAGE]
    return names


def _build_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("COLCON_", "AMENT_", "CMAKE_")) and k != "PYTHONPATH"}
    env.update({
        "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "CMAKE_PREFIX_PATH": str(VENV),
        "AMENT_PREFIX_PATH": str(VENV),
        "PYTHONNOUSERSITE": "1",
    })
    return env


_IMPORT_CHECK = r"""
import json, sys
import panoptic_ros, panoptic_ros.msg, panoptic_ros.classes, panoptic_ros.params
from panoptic_ros.msg import PanopticObjectArray, PanopticObject
from panoptic_ros.classes import CITYSCAPES
from rclpy.serialization import deserialize_message, serialize_message
sent = PanopticObjectArray(camera_name="colcon", objects=[PanopticObject(track_id=7, label="car")])
back = deserialize_message(serialize_message(sent), PanopticObjectArray)
print(json.dumps({
    "package": panoptic_ros.__file__, "msg": panoptic_ros.msg.__file__,
    "classes": panoptic_ros.classes.__file__, "params": panoptic_ros.params.__file__,
    "msg_class": sys.modules[PanopticObjectArray.__module__].__file__,
    "round_trip": back == sent, "classes_count": len(CITYSCAPES),
}))
"""


@pytest.mark.timeout(600)
def test_colcon_builds_the_package_and_the_install_space_imports(tmp_path: Path) -> None:
    colcon = VENV / "bin" / "colcon"
    if not colcon.exists():
        pytest.fail(f"colcon is not installed in {VENV} (tools/setup_env.sh installs it from requirements/dev.txt)")
    source = tmp_path / "ws" / "src" / PACKAGE
    files = _copy_package(source)
    missing = [d for d in _installed_directories() if not any(f.startswith(d + "/") for f in files)]
    assert not missing, (
        f"CMakeLists.txt installs the directories {_installed_directories()}, but the package has no files in "
        f"{missing}: `colcon build` would fail at install time (git does not keep empty directories)")

    workspace = tmp_path / "ws"
    env = _build_env()
    python = VENV / "bin" / "python"
    build = subprocess.run(
        [str(colcon), "--log-base", "log", "build", "--base-paths", "src", "--event-handlers", "console_direct+",
         "--cmake-args", f"-DPython3_EXECUTABLE={python}", "-DBUILD_TESTING=OFF"],
        cwd=workspace, env=env, capture_output=True, text=True, timeout=COLCON_TIMEOUT_S)
    assert build.returncode == 0, f"colcon build failed:\n{build.stdout[-6000:]}\n{build.stderr[-4000:]}"

    install = workspace / "install"
    prefix = install / PACKAGE
    for executable in ("panoptic_node", "panoptic-ros"):
        path = prefix / "lib" / PACKAGE / executable
        assert path.is_file() and os.access(path, os.X_OK), f"`ros2 run {PACKAGE} {executable}` needs {path}"
    for directory in _installed_directories():
        shipped = sorted(f[len(directory) + 1:] for f in files if f.startswith(directory + "/"))
        installed_root = prefix / "share" / PACKAGE / directory
        installed = sorted(str(p.relative_to(installed_root)) for p in installed_root.rglob("*") if p.is_file())
        assert installed == shipped, f"share/{PACKAGE}/{directory} differs from the source {directory}/"

    # A fresh shell that sources the workspace, as a user would; cwd outside the repository so
    # that only the install space (first on PYTHONPATH, before the venv's editable path entry)
    # can provide the package.
    check = subprocess.run(
        ["bash", "-c", '. "$1/setup.sh" && exec "$2" -c "$3"', "check", str(install), str(python), _IMPORT_CHECK],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, f"imports after sourcing install/setup.sh failed:\n{check.stderr[-4000:]}"
    found = json.loads(check.stdout.strip().splitlines()[-1])
    assert found["round_trip"] is True and found["classes_count"] == 19
    for key in ("package", "msg", "classes", "params", "msg_class"):
        assert Path(found[key]).resolve().is_relative_to(prefix.resolve()), (
            f"{key} was imported from {found[key]}, not from the install space {prefix}")

    # The installed CLI launcher runs with the sourced environment (its shebang finds the venv's python3).
    cli = subprocess.run(
        ["bash", "-c", '. "$1/setup.sh" && exec "$2" params', "cli", str(install),
         str(prefix / "lib" / PACKAGE / "panoptic-ros")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr[-4000:]
    assert "ros__parameters:" in cli.stdout
