"""``panoptic-ros predict`` writes COCO panoptic that the reference evaluator accepts."""
import json

import cv2
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


def test_predict_image_folder_and_bad_inputs(tmp_path, model_file, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k in range(2):
        cv2.imwrite(str(folder / f"img{k}.jpg"), street_frame(k).image[:, :, ::-1])
    assert main(["predict", "--input", str(folder), "--out", str(tmp_path / "o"), "--model", str(model_file),
                 "--device", "cpu"]) == 0
    pred = list(CocoPanopticDataset(tmp_path / "o"))
    assert [f.sequence for f in pred] == ["img0", "img1"] and pred[0].semantic.shape == (64, 128)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", "--input", str(empty), "--out", str(tmp_path / "o2"), "--model", str(model_file)]) == 1
    assert "neither a dataset" in capsys.readouterr().err
    assert main(["predict", "--input", str(folder), "--out", str(tmp_path / "o3"),
                 "--model", str(tmp_path / "missing.safetensors")]) == 1
    assert "does not exist" in capsys.readouterr().err
