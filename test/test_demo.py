"""``panoptic-ros demo`` end to end: synthetic bag -> real node over DDS -> report, video, summary."""
import json

import cv2
import pytest

from panoptic_ros.cli import main
from helpers_model import save_tiny_model


@pytest.mark.timeout(400)
def test_demo_runs_the_node_and_writes_report_video_and_summary(tmp_path, capsys):
    weights = save_tiny_model(tmp_path / "tiny.safetensors", permissive=True)
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--model", str(weights), "--frames", "6", "--size", "64x128",
               "--device", "cpu"])
    assert rc == 0
    screen = capsys.readouterr().out
    for word in ("PQ", "IDF1", "frames/s", "report/report.md", "overlay.mp4"):
        assert word in screen
    summary = json.loads((out / "demo_summary.json").read_text())
    # On CPU the default is lock-step playback: every frame processed, however loaded the machine.
    assert summary["lockstep"] is True and summary["frames_published"] == summary["frames_processed"] == 6
    assert 0.0 <= summary["summary"]["pq"] <= 1.0
    for name in ("report.md", "report.json", "per_class_pq.png", "id_timeline.png"):
        assert (out / "report" / name).stat().st_size > 0
    video = cv2.VideoCapture(str(out / "replay" / "overlay.mp4"))
    ok, frame = video.read()
    assert ok and frame.shape[:2] == (64, 128)


def test_demo_refuses_bad_arguments(capsys):
    assert main(["demo", "--size", "12x"]) == 2
    assert "HEIGHTxWIDTH" in capsys.readouterr().err
    assert main(["demo", "--frames", "1"]) == 2
