"""``panoptic-ros predict`` writes COCO panoptic that the reference evaluator accepts."""
import json

import cv2
import numpy as np
import pytest

from panoptic_ros.cli import main
from panoptic_ros.datasets.coco import CocoPanopticDataset, write_coco_panoptic
from helpers_model import save_tiny_model, street_frame


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = save_tiny_model(tmp_path_factory.mktemp("m") / "tiny.safetensors")
    return path


def test_predict_dataset_then_panopticapi_scores_it(tmp_path, model_file):
    frames = []
    for k in range(3):
        f = street_frame(k)
        f.sequence, f.frame_index = "seq", k
        frames.append(f)
    write_coco_panoptic(tmp_path / "gt", frames, split="val")
    rc = main(["predict", "--input", str(tmp_path / "gt"), "--out", str(tmp_path / "pred"),
               "--model", str(model_file), "--device", "cpu"])
    assert rc == 0
    pred = CocoPanopticDataset(tmp_path / "pred")
    assert [(f.sequence, f.frame_index) for f in pred] == [("seq", 0), ("seq", 1), ("seq", 2)]
    # panopticapi accepts the pair (file names line up, ids decode, categories known).
    from panopticapi.evaluation import pq_compute
    gt_json = tmp_path / "gt" / "annotations" / "panoptic_val.json"
    pred_json = tmp_path / "pred" / "annotations" / "panoptic_pred.json"
    doc = json.loads(pred_json.read_text())
    assert all(ann["file_name"].endswith(".png") for ann in doc["annotations"])
    res = pq_compute(str(gt_json), str(pred_json), str(gt_json.parent / "panoptic_val"),
                     str(pred_json.parent / "panoptic_pred"))
    assert 0.0 <= res["All"]["pq"] <= 1.0


def test_predict_image_folder_and_bad_inputs(tmp_path, model_file, capsys, monkeypatch):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k in range(2):
        cv2.imwrite(str(folder / f"img{k}.jpg"), street_frame(k).image[:, :, ::-1])
    assert main(["predict", "--input", str(folder), "--out", str(tmp_path / "o"), "--model", str(model_file),
                 "--device", "cpu"]) == 0
    pred = list(CocoPanopticDataset(tmp_path / "o"))
    assert [f.sequence for f in pred] == ["img0", "img1"] and pred[0].semantic.shape == (64, 128)
    from panoptic_ros.model.dense import DenseRunner
    dense_batches, run_dense = [], DenseRunner.__call__
    monkeypatch.setattr(DenseRunner, "__call__", lambda self, x, dtype: dense_batches.append(len(x)) or
                        run_dense(self, x, dtype))
    assert main(["predict", "--input", str(folder), "--out", str(tmp_path / "flip"), "--model", str(model_file),
                 "--device", "cpu", "--batch", "2", "--test-time-flip"]) == 0
    assert dense_batches == [4]  # the two frames and their mirror images, in one dense pass
    assert [f.semantic.shape for f in CocoPanopticDataset(tmp_path / "flip")] == [(64, 128), (64, 128)]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", "--input", str(empty), "--out", str(tmp_path / "o2"), "--model", str(model_file)]) == 1
    assert "neither a dataset" in capsys.readouterr().err
    assert main(["predict", "--input", str(folder), "--out", str(tmp_path / "o3"),
                 "--model", str(tmp_path / "missing.safetensors")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["predict", "--input", str(folder), "--out", str(tmp_path / "o4"), "--model", str(model_file),
                 "-p", "model.score_threshold:=1.5"]) == 1
    assert "model.score_threshold" in capsys.readouterr().err


def test_predict_track_writes_track_ids_consistent_across_a_sequence(tmp_path):
    """--track: segment ids are the node's track ids -- none before a track is confirmed, then the same id
    for the same object in every frame of its sequence, and separate trackers per sequence."""
    weights = save_tiny_model(tmp_path / "tiny.safetensors", permissive=True)
    frames = []
    for seq in ("a", "b"):
        for k in range(4):
            f = street_frame(0)  # the same scene every frame: the same detections, so ids must persist
            f.sequence, f.frame_index, f.stamp_ns = seq, k, k * 100_000_000
            frames.append(f)
    write_coco_panoptic(tmp_path / "gt", frames, split="val")
    args = ["predict", "--input", str(tmp_path / "gt"), "--model", str(weights), "--device", "cpu"]
    assert main(args + ["--out", str(tmp_path / "tracked"), "--track"]) == 0
    pred = {(f.sequence, f.frame_index): f for f in CocoPanopticDataset(tmp_path / "tracked")}
    ids = {key: set(np.unique(f.instance[f.instance > 0]).tolist()) for key, f in pred.items()}
    assert ids[("a", 0)] == set() and ids[("b", 0)] == set()  # tentative on the first frame: no id yet
    assert ids[("a", 1)] and ids[("a", 1)] == ids[("a", 2)] == ids[("a", 3)]
    assert ids[("b", 1)] == ids[("a", 1)]  # a fresh tracker for sequence b numbers its objects the same way
    # The node's parameters reach predict: a params file, then -p over it (later wins).
    params_file = tmp_path / "params.yaml"
    params_file.write_text("/**:\n  ros__parameters:\n    tracker:\n      min_hits: 3\n")
    assert main(args + ["--out", str(tmp_path / "eager"), "--track", "--params-file", str(params_file),
                        "-p", "tracker.min_hits:=1"]) == 0
    eager = {(f.sequence, f.frame_index): f for f in CocoPanopticDataset(tmp_path / "eager")}
    assert set(np.unique(eager[("a", 0)].instance[eager[("a", 0)].instance > 0]).tolist())  # confirmed at once
    assert main(args + ["--out", str(tmp_path / "late"), "--track", "--params-file", str(params_file)]) == 0
    late = {(f.sequence, f.frame_index): f for f in CocoPanopticDataset(tmp_path / "late")}
    assert not (late[("a", 1)].instance > 0).any() and (late[("a", 2)].instance > 0).any()  # third hit
    assert main(args + ["--out", str(tmp_path / "plain")]) == 0
    plain = {(f.sequence, f.frame_index): f for f in CocoPanopticDataset(tmp_path / "plain")}
    assert set(np.unique(plain[("a", 0)].instance[plain[("a", 0)].instance > 0]).tolist())  # per-frame ids
    # evaluate knows which is which: video/tracking metrics only for the tracked predictions.
    assert CocoPanopticDataset(tmp_path / "tracked").info["tracked"] is True
    assert CocoPanopticDataset(tmp_path / "plain").info["tracked"] is False
    from panoptic_ros.evaluate import evaluate
    tracked = evaluate(tmp_path / "tracked", tmp_path / "gt")
    plain_report = evaluate(tmp_path / "plain", tmp_path / "gt")
    assert not tracked.untracked and tracked.summary()["id_switches"] is not None
    assert plain_report.untracked and plain_report.to_dict()["tracked"] is False
    s = plain_report.summary()
    assert s["pq"] is not None and all(s[k] is None for k in ("vpq", "stq", "idf1", "hota", "mota", "id_switches"))
    assert main(["evaluate", "--pred", str(tmp_path / "plain"), "--gt", str(tmp_path / "gt"),
                 "--out", str(tmp_path / "ev")]) == 0
    assert "no track ids" in (tmp_path / "ev" / "report.md").read_text()
