"""Scale-out: serial, local worker processes and a local Ray instance give identical results, in item order.

Evaluation over a directory of bags is compared as the exact report.json (all but the run facts); replay
over a directory of bags in two worker processes as the exact output images.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from panoptic_ros import cli
from panoptic_ros.scaleout import ScaleOut, ScaleOutError, map_ordered

# The bag-writing helpers of test_evaluate and test_replay are imported inside the tests: worker processes
# import this module to find slow_identity, and should not pay for them.


def slow_identity(item: tuple[int, float]) -> int:
    """Returns the item's number after sleeping its delay (so that workers finish out of order)."""
    time.sleep(item[1])
    return item[0]


def test_map_ordered_keeps_item_order_whatever_finishes_first() -> None:
    items = [(0, 2.0), (1, 0.0), (2, 0.1), (3, 0.0)]
    finished: list[int] = []
    assert map_ordered(slow_identity, items, ScaleOut(1)) == [0, 1, 2, 3]
    results = map_ordered(slow_identity, items, ScaleOut(2), on_result=lambda i, r: finished.append(i))
    assert results == [0, 1, 2, 3]
    assert sorted(finished) == [0, 1, 2, 3] and finished != [0, 1, 2, 3]  # they did finish out of order
    assert map_ordered(slow_identity, [], ScaleOut(2)) == []
    with pytest.raises(ScaleOutError, match="at least 1"):
        ScaleOut(0)
    with pytest.raises(ScaleOutError, match="empty"):
        ScaleOut(1, " ")


@pytest.fixture(scope="module")
def bag_pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three GT bags and their prediction bags (different mistakes and motion) under root/gt and root/pred."""
    from test_evaluate import make_pair

    root = tmp_path_factory.mktemp("pairs")
    make_pair(root, "seq-a", "good")
    make_pair(root, "seq-b", "bad", shift=2, storage="sqlite3")
    make_pair(root, "seq-c", "missing", shift=4)
    return root


def evaluate_report(root: Path, out: Path, scale: list[str], capsys: pytest.CaptureFixture) -> dict:
    rc = cli.main(["evaluate", "--pred", str(root / "pred"), "--gt", str(root / "gt"), "--out", str(out), *scale])
    err = capsys.readouterr().err
    assert rc == 0, err
    report = json.loads((out / "report.json").read_text())
    run = report.pop("run")
    assert run["units"] == 3
    return report | {"backend": run["backend"]}


@pytest.mark.timeout(240)
def test_evaluation_is_identical_serial_in_processes_and_on_ray(tmp_path: Path, bag_pairs: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("ray")
    serial = evaluate_report(bag_pairs, tmp_path / "serial", ["--workers", "1"], capsys)
    pool = evaluate_report(bag_pairs, tmp_path / "pool", ["--workers", "2"], capsys)
    ray = evaluate_report(bag_pairs, tmp_path / "ray", ["--ray", "local"], capsys)
    assert (serial.pop("backend"), pool.pop("backend"), ray.pop("backend")) == ("serial", "processes", "ray")
    assert pool == serial
    assert ray == serial
    assert [s["name"] for s in serial["per_sequence"]] == ["seq-a", "seq-b", "seq-c"]
    assert serial["counts"]["frames"] == 24 and serial["counts"]["frames_without_prediction"] == 1


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_replay import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.mark.timeout(240)
def test_replay_of_a_directory_in_worker_processes_equals_serial(tmp_path: Path, model_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    from panoptic_ros.datasets.rosbag_io import write_rosbag
    from test_replay import PERMISSIVE, read_bag, synth_frames

    for i, name in enumerate(("drive-a", "drive-b", "drive-c")):
        write_rosbag(tmp_path / "bags" / name, synth_frames(11 + i, n=3), storage="mcap" if i % 2 else "sqlite3")
    outputs = {}
    for label, scale in (("serial", ["--workers", "1"]), ("pool", ["--workers", "2"])):
        argv = ["replay", str(tmp_path / "bags"), "--out", str(tmp_path / label), "--model", str(model_path),
                "--no-video", *scale]
        for p in PERMISSIVE:
            argv += ["-p", p]
        rc = cli.main(argv)
        captured = capsys.readouterr()
        assert rc == 0, captured.err
        assert captured.out.count("3 of 3 frame(s)") == 3
        outputs[label] = {name: [(t, np.frombuffer(raw, np.uint8)) for topic, t, raw in
                                 read_bag(tmp_path / label / name / "panoptic")[1]
                                 if topic == "/camera/panoptic/semantic"]
                          for name in ("drive-a", "drive-b", "drive-c")}
    for name, serial in outputs["serial"].items():
        pool = outputs["pool"][name]
        assert [t for t, _ in pool] == [t for t, _ in serial] and len(serial) == 3
        # Each bag's outputs came back to its own directory: the classes agree (bit-exact where the workers run
        # as many math threads as this process; a different thread count may round a few pixels differently).
        for (_, a), (_, b) in zip(pool, serial):
            assert np.mean(a == b) > 0.99
