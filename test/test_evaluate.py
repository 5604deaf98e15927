"""``panoptic-ros evaluate``: numbers equal the core metrics on the same data, bags and dataset directories agree,
reports and plots are written, --compare flags regressions, bad inputs give one line and a non-zero exit.

The ground truth is a hand-made 8-frame street (32x48): stuff, a person crowd, a person, a car driving right,
and a car that a bus hides completely in frames 3-4 (one full-occlusion event). Predictions are the ground truth
with chosen mistakes, written as a replay output bag would be (panoptic image, objects with a processing time,
class table) or as a video panoptic directory.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from panoptic_ros import cli
from panoptic_ros.classes import CITYSCAPES, VOID
from panoptic_ros.datasets.rosbag_io import panoptic_typestore, write_rosbag
from panoptic_ros.datasets.types import ObjectAnnotation, PanopticFrame
from panoptic_ros.datasets.video_panoptic import write_video_panoptic
from panoptic_ros.evaluate import RULES, compare, evaluate
from panoptic_ros.metrics import (
    OcclusionEvent,
    PQAccumulator,
    STQAccumulator,
    TrackingFrame,
    VPQAccumulator,
    evaluate_tracking,
    id_switches_in_events,
)
from panoptic_ros.panoptic import encode_panoptic
from panoptic_ros.replay import (
    CLASS_INFO_TYPE,
    IMAGE_TYPE,
    OBJECTS_TYPE,
    SOURCE_KEY,
    OutputBag,
    OutputMessages,
)
from panoptic_ros.scaleout import ScaleOut

H, W = 32, 48
ROAD, BUILDING, WALL, SKY, PERSON, CAR, BUS = 0, 2, 3, 10, 11, 13, 15
CAMERA = "camera"
HIDDEN_FRAMES = (3, 4)  # car 9 is behind bus 12
ID_OFFSET = 100
LATENCY_S = [k / 64 for k in (1, 3, 2, 5, 4, 8, 6, 7)]  # processing times, exact in float32


def _box(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def gt_frames(sequence: str = "seq-eval", n: int = 8, shift: int = 0, stamp0_ns: int = 2_000_000_000
              ) -> list[PanopticFrame]:
    """The ground truth; ``shift`` moves the driving car, so that sequences differ."""
    frames = []
    yy, xx = np.indices((H, W))
    for k in range(n):
        sem = np.full((H, W), ROAD, np.uint8)
        sem[:8], sem[8:14] = SKY, BUILDING
        inst = np.zeros((H, W), np.int32)
        sem[9:14, 40:46] = PERSON  # a crowd: thing class, no id
        objects = []

        def thing(track: int, cls: int, rows: slice, cols: slice) -> None:
            sem[rows, cols], inst[rows, cols] = cls, track

        thing(3, PERSON, slice(10, 20), slice(2, 5))
        x = 6 + 2 * k + shift
        thing(5, CAR, slice(20, 26), slice(x, x + 8))
        car9 = (slice(18, 24), slice(30, 38))
        if k in HIDDEN_FRAMES:
            thing(12, BUS, slice(14, 29), slice(28, 44))
        else:
            thing(9, CAR, *car9)
        for track, cls in ((3, PERSON), (5, CAR), (9, CAR), (12, BUS)):
            mask = inst == track
            if mask.any():
                objects.append(ObjectAnnotation(track, cls, int(mask.sum()), 1.0, _box(mask)))
            elif track == 9:
                objects.append(ObjectAnnotation(9, CAR, 0, 0.0, (30.0, 18.0, 38.0, 24.0), occluder_track_id=12))
        image = np.stack([sem * 12, (inst * 40) % 256, (xx + yy + 9 * k) % 256], axis=-1).astype(np.uint8)
        frames.append(PanopticFrame(image, sem, inst, objects, None, stamp0_ns + k * 100_000_000, k, sequence))
    return frames


@dataclass
class Prediction:
    semantic: np.ndarray
    track: np.ndarray


def predict(frames: list[PanopticFrame], variant: str) -> list[Prediction | None]:
    """The ground truth with mistakes. 'good': a stuff error, an eroded car, a false positive; 'bad': those
    plus car 9 takes a new id after its occlusion, car 5 vanishes in frame 6 and half the sky is building;
    'missing': 'good' without frame 2."""
    out: list[Prediction | None] = []
    for k, f in enumerate(frames):
        sem = f.semantic.copy()
        track = np.where(f.instance > 0, f.instance + ID_OFFSET, 0).astype(np.int32)
        if k == 2:
            sem[8:11][sem[8:11] == BUILDING] = WALL
        if k == 6:
            cols = np.flatnonzero((f.instance == 5).any(axis=0))
            sem[:, cols[-1]][f.instance[:, cols[-1]] == 5] = ROAD
            track[:, cols[-1]][f.instance[:, cols[-1]] == 5] = 0
        if k == 1:
            sem[28:32, 0:5], track[28:32, 0:5] = CAR, 150
        if variant == "bad":
            if k > HIDDEN_FRAMES[-1]:
                track[f.instance == 9] = 777
            if k == 6:
                sem[f.instance == 5], track[f.instance == 5] = ROAD, 0
            if k == 4:
                sem[:4][sem[:4] == SKY] = BUILDING
        out.append(None if variant == "missing" and k == 2 else Prediction(sem, track))
    return out


def write_prediction_bag(path: Path, frames: list[PanopticFrame], preds: list[Prediction | None],
                         storage: str = "mcap", source: str | None = None, camera: str = CAMERA) -> Path:
    """A bag laid out as a replay writes it: panoptic image, objects (with processing_time_s), class table."""
    ts = panoptic_typestore()
    m = OutputMessages(ts)
    bag = OutputBag(path, storage, ts)
    if source is not None:
        bag.set_custom_data(SOURCE_KEY, source)
    stamp0 = frames[0].stamp_ns
    bag.write(f"/{camera}/panoptic/class_info", CLASS_INFO_TYPE, stamp0,
              m.serialize(m.class_info(stamp0, CITYSCAPES, "test-model"), CLASS_INFO_TYPE), latched=True)
    for k, (f, p) in enumerate(zip(frames, preds)):
        if p is None:
            continue
        header = m.header(f.stamp_ns, f"{camera}_optical_frame")
        image = m.image(header, encode_panoptic(p.semantic, p.track), "32SC1")
        bag.write(f"/{camera}/panoptic/image", IMAGE_TYPE, f.stamp_ns, m.serialize(image, IMAGE_TYPE))
        objects = ts.types[OBJECTS_TYPE](header=header, camera_name=camera, frame_index=k,
                                         processing_time_s=LATENCY_S[k], image_width=W, image_height=H, objects=[])
        bag.write(f"/{camera}/panoptic/objects", OBJECTS_TYPE, f.stamp_ns, m.serialize(objects, OBJECTS_TYPE))
    return bag.close()


def make_pair(root: Path, name: str, variant: str, shift: int = 0, storage: str = "mcap") -> tuple[Path, Path]:
    """(GT bag root/gt/name, prediction bag root/pred/name/panoptic) for one sequence."""
    frames = gt_frames(name, shift=shift)
    gt = write_rosbag(root / "gt" / name, frames, camera=CAMERA, storage=storage)
    pred = write_prediction_bag(root / "pred" / name / "panoptic", frames, predict(frames, variant), storage,
                                source=name)
    return gt, pred


def reference(sequences: list[tuple[str, list[PanopticFrame], list[Prediction | None]]],
              events: dict[str, list[OcclusionEvent]]) -> dict:
    """The metrics straight from the core accumulators and functions, sequence accumulators merged in order."""
    classes = CITYSCAPES
    lut = np.zeros(256, bool)
    lut[classes.thing_ids] = True
    pq, vpq, stq = PQAccumulator(classes), VPQAccumulator(classes), STQAccumulator(classes)
    tracking, outcomes = [], []
    for name, frames, preds in sequences:
        p_acc, v_acc, s_acc = PQAccumulator(classes), VPQAccumulator(classes), STQAccumulator(classes)
        tframes = []
        for f, p in zip(frames, preds):
            if p is None:
                p = Prediction(np.full((H, W), VOID, np.uint8), np.zeros((H, W), np.int32))
            p_acc.add(f.semantic, f.instance, p.semantic, p.track)
            v_acc.add(f.semantic, f.instance, p.semantic, p.track, sequence_id=name)
            s_acc.add(f.semantic, f.instance, p.semantic, p.track, sequence_id=name)
            gt_ids = np.where(lut[f.semantic] & (f.instance > 0), f.instance, 0)
            hyp_ids = np.where(lut[p.semantic] & (p.track > 0), p.track, 0)
            tframes.append(TrackingFrame.from_id_maps(gt_ids, hyp_ids))
        pq.merge(p_acc)
        vpq.merge(v_acc)
        stq.merge(s_acc)
        tracking.append(evaluate_tracking(tframes))
        outcomes += list(id_switches_in_events(tframes, events[name]).outcomes)
    from panoptic_ros.metrics import EventSwitchResult, combine_tracking_results

    return {"pq": pq.result().to_dict(), "vpq": vpq.result().to_dict(), "stq": stq.result().to_dict(),
            "tracking": combine_tracking_results(tracking).to_dict(),
            "occlusion": EventSwitchResult(tuple(outcomes)).to_dict()}


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    rc = cli.main(argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def load(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_evaluation_equals_the_core_metrics(tmp_path: Path, capsys: pytest.CaptureFixture, storage: str) -> None:
    gt, pred = make_pair(tmp_path, "seq-eval", "bad", storage=storage)
    rc, out, err = run_cli(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "eval"),
                            "--workers", "1"], capsys)
    assert rc == 0, err
    report = load(tmp_path / "eval")
    frames = gt_frames("seq-eval")
    want = reference([("seq-eval", frames, predict(frames, "bad"))], {"seq-eval": [OcclusionEvent(9, 3, 4)]})
    for key in ("pq", "vpq", "stq", "tracking", "occlusion"):
        assert report[key] == want[key], key
    # The chosen mistakes show up where they should.
    assert report["occlusion"]["num_events"] == 1 and report["occlusion"]["num_switches"] == 1
    assert report["occlusion_events"] == [{"sequence": "seq-eval", "track_id": 9, "start_frame": 3, "end_frame": 4,
                                           "outcome": "switched", "id_before": 109, "id_after": 777}]
    assert report["tracking"]["num_switches"] == 1
    per_class = {r["name"]: r for r in report["pq"]["per_class"]}
    assert per_class["wall"]["fp"] == 1 and per_class["car"]["fn"] == 1
    lat = [v * 1e3 for v in LATENCY_S]
    assert report["latency_ms"] == {"count": 8, "mean": float(np.mean(lat)), "p50": float(np.percentile(lat, 50)),
                                    "p90": float(np.percentile(lat, 90)), "p99": float(np.percentile(lat, 99)),
                                    "max": 125.0}
    assert report["counts"] == {"sequences": 1, "frames": 8, "frames_without_prediction": 0,
                                "predictions_without_ground_truth": 0}
    assert report["summary"]["pq"] == report["pq"]["all"]["pq"]
    assert report["summary"]["idf1"] == report["tracking"]["idf1"]
    assert "PQ " in out and "IDF1" in out and "occlusion events 1: 0 kept, 1 switched" in out


def test_missing_predictions_count_as_empty_or_are_skipped(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gt, pred = make_pair(tmp_path, "seq-eval", "missing")
    frames = gt_frames("seq-eval")
    preds = predict(frames, "missing")
    rc, _, err = run_cli(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "a")], capsys)
    assert rc == 0, err
    report = load(tmp_path / "a")
    want = reference([("seq-eval", frames, preds)], {"seq-eval": [OcclusionEvent(9, 3, 4)]})
    assert report["pq"] == want["pq"] and report["tracking"] == want["tracking"]
    assert report["counts"]["frames_without_prediction"] == 1 and report["counts"]["frames"] == 8
    rc, _, err = run_cli(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "b"),
                          "--skip-missing"], capsys)
    assert rc == 0, err
    skipped = load(tmp_path / "b")
    kept = [(f, p) for f, p in zip(frames, preds) if p is not None]
    want = reference([("seq-eval", [f for f, _ in kept], [p for _, p in kept])],
                     {"seq-eval": [OcclusionEvent(9, 2, 3)]})  # positions among the 7 evaluated frames
    assert skipped["pq"] == want["pq"] and skipped["tracking"] == want["tracking"]
    assert skipped["counts"]["frames"] == 7 and skipped["summary"]["pq"] > report["summary"]["pq"]


def test_dataset_directories_give_the_bag_numbers(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gt_bag, pred_bag = make_pair(tmp_path, "seq-eval", "bad")
    frames = gt_frames("seq-eval")
    pred_frames = [PanopticFrame(f.image, p.semantic, p.track, [], None, f.stamp_ns, f.frame_index, f.sequence)
                   for f, p in zip(frames, predict(frames, "bad"))]
    write_video_panoptic(tmp_path / "gt_video", frames)
    write_video_panoptic(tmp_path / "pred_video", pred_frames)
    for pred, gt, out in ((pred_bag, gt_bag, "bag"), (tmp_path / "pred_video", tmp_path / "gt_video", "video")):
        rc, _, err = run_cli(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / out)], capsys)
        assert rc == 0, err
    bag, video = load(tmp_path / "bag"), load(tmp_path / "video")
    for key in ("pq", "vpq", "tracking", "occlusion", "occlusion_events"):
        assert video[key] == bag[key], key
    assert video["stq"] == bag["stq"]
    assert video["latency_ms"] is None and bag["latency_ms"]["count"] == 8


def test_report_files_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import cv2

    gt, pred = make_pair(tmp_path, "seq-eval", "bad")
    out = tmp_path / "eval"
    rc, stdout, err = run_cli(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out)], capsys)
    assert rc == 0, err
    md = (out / "report.md").read_text()
    for png in ("per_class_pq.png", "recall_by_area.png", "confusion.png", "id_timeline.png", "latency_hist.png"):
        assert f"]({png})" in md
        image = cv2.imread(str(out / png))
        assert image is not None and image.shape[0] > 200 and image.shape[1] > 500, png
        assert image.std() > 10, f"{png} is blank"
    assert "| wall | stuff |" in md and "switched" in md and "Full-occlusion events: 1" in md
    assert "### Recall by segment area" in md and "| **all things** |" in md
    pq = json.loads((out / "report.json").read_text())["pq"]
    conf, top = pq["miou"]["confusion"], pq["miou"]["top_confusions"]
    assert len(conf["pixels"]) == len(conf["rows"]) and len(conf["pixels"][0]) == len(conf["rows"]) + 1
    assert top and f"| {top[0]['gt']} | {top[0]['pred']} |" in md  # the largest confusion, in report.md too
    by_area = pq["by_area"]
    for c in pq["per_class"]:
        counts = by_area["per_class"].get(c["name"], {"gt": [0], "matched": [0], "fp": [0]})
        assert (sum(counts["matched"]), sum(counts["gt"]), sum(counts["fp"])) == (c["tp"], c["tp"] + c["fn"], c["fp"])
    assert str(out / "report.md") in stdout


def test_compare_flags_regressions(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gt, good = make_pair(tmp_path / "g", "seq-eval", "good")
    _, bad = make_pair(tmp_path / "b", "seq-eval", "bad")
    rc, _, err = run_cli(["evaluate", "--pred", str(good), "--gt", str(gt), "--out", str(tmp_path / "good")], capsys)
    assert rc == 0, err
    baseline = tmp_path / "good" / "report.json"
    rc, out, err = run_cli(["evaluate", "--pred", str(bad), "--gt", str(gt), "--out", str(tmp_path / "bad"),
                            "--compare", str(baseline)], capsys)
    assert rc == 3, err
    report = load(tmp_path / "bad")
    assert set(report["comparison"]["regressed"]) >= {"pq", "idf1"}
    assert "REGRESSION" in out and "REGRESSION: PQ" in err
    assert "**REGRESSION**" in (tmp_path / "bad" / "compare.md").read_text()
    # The same predictions against themselves: nothing regressed.
    rc, out, err = run_cli(["evaluate", "--pred", str(good), "--gt", str(gt), "--out", str(tmp_path / "again"),
                            "--compare", str(baseline)], capsys)
    assert rc == 0, err
    assert "REGRESSION" not in out


def test_pq_interval_over_sequences_and_the_paired_difference(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    """Three sequences: PQ gets a bootstrap interval over them; 'bad' (worse in every sequence) against 'good'
    gets a paired interval for the difference below zero; 'good' against itself exactly [0, 0]."""
    gt, preds = [], {"good": [], "bad": []}
    for i, shift in enumerate((0, 3, 6)):
        frames = gt_frames(f"seq-{i}", shift=shift)
        gt += frames
        for variant in preds:
            preds[variant] += [PanopticFrame(f.image, p.semantic, p.track, [], None, f.stamp_ns, f.frame_index,
                                             f.sequence) for f, p in zip(frames, predict(frames, variant))]
    write_video_panoptic(tmp_path / "gt", gt)
    for variant, frames in preds.items():
        write_video_panoptic(tmp_path / variant, frames)
    rc, stdout, err = run_cli(["evaluate", "--pred", str(tmp_path / "good"), "--gt", str(tmp_path / "gt"), "--out",
                               str(tmp_path / "good_eval")], capsys)
    assert rc == 0, err
    good = load(tmp_path / "good_eval")
    ci = good["pq_bootstrap"]
    assert ci["units"] == 3 and ci["resamples"] == 2000 and ci["all"][0] <= good["summary"]["pq"] <= ci["all"][1]
    assert "interval" in stdout and "bootstrap over 3 sequences" in stdout
    assert "bootstrap over 3 sequences" in (tmp_path / "good_eval" / "report.md").read_text()
    assert [len(s["pq_counts"]["tp"]) for s in good["per_sequence"]] == [len(CITYSCAPES)] * 3
    rc, stdout, err = run_cli(["evaluate", "--pred", str(tmp_path / "bad"), "--gt", str(tmp_path / "gt"), "--out",
                               str(tmp_path / "bad_eval"), "--compare", str(tmp_path / "good_eval" / "report.json")],
                              capsys)
    assert rc == 3, err
    diff = load(tmp_path / "bad_eval")["comparison"]["pq_difference"]
    assert diff["units"] == 3 and diff["all"][1] < 0, diff
    assert "beyond what resampling the sequences moves" in stdout
    rc, stdout, err = run_cli(["evaluate", "--pred", str(tmp_path / "good"), "--gt", str(tmp_path / "gt"), "--out",
                               str(tmp_path / "again"), "--compare", str(tmp_path / "good_eval" / "report.json")],
                              capsys)
    assert rc == 0, err
    assert load(tmp_path / "again")["comparison"]["pq_difference"]["all"] == [0.0, 0.0]
    assert "within what resampling the sequences moves" in stdout
    # A baseline without per-sequence counts (an older report): the table still compares, the interval says why not.
    old = dict(good, per_sequence=[{k: v for k, v in s.items() if k != "pq_counts"} for s in good["per_sequence"]])
    comparison = compare(good, old)
    assert comparison.pq_difference is None and "older version" in comparison.difference_text()


def test_compare_rules_and_thresholds() -> None:
    base = {"summary": {"pq": 0.5, "idf1": 0.6, "latency_p50_ms": 100.0, "miou": 0.7}}
    rows = {r.rule.key: r for r in compare({"summary": {"pq": 0.496, "idf1": 0.591, "latency_p50_ms": 109.0,
                                                        "miou": 0.7}}, base).rows}
    assert not rows["pq"].regressed and not rows["idf1"].regressed and not rows["latency_p50_ms"].regressed
    rows = {r.rule.key: r for r in compare({"summary": {"pq": 0.494, "idf1": 0.591, "latency_p50_ms": 111.0,
                                                        "miou": None}}, base).rows}
    assert rows["pq"].regressed and not rows["idf1"].regressed and rows["latency_p50_ms"].regressed
    assert not rows["miou"].regressed and rows["miou"].current is None
    rows = {r.rule.key: r for r in compare({"summary": {"pq": 0.6, "idf1": 0.5}}, base).rows}
    assert rows["pq"].improved and rows["idf1"].regressed
    assert {r.key for r in RULES if r.tolerance is not None} >= {"pq", "idf1", "latency_p50_ms"}


def test_evaluate_api_for_the_demo(tmp_path: Path) -> None:
    gt, pred = make_pair(tmp_path, "seq-eval", "good")
    report = evaluate(pred, gt, plan=ScaleOut(1))
    frames = gt_frames("seq-eval")
    want = reference([("seq-eval", frames, predict(frames, "good"))], {"seq-eval": [OcclusionEvent(9, 3, 4)]})
    assert report.pq.to_dict() == want["pq"]
    assert report.events is not None and report.events.num_kept == 1
    assert report.summary()["frames"] == 8 and report.failures == []


# --------------------------------------------------------------------------- bad inputs


def test_bad_inputs_give_one_line_and_a_non_zero_exit(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gt, pred = make_pair(tmp_path, "seq-eval", "good")
    frames = gt_frames("seq-eval")
    write_video_panoptic(tmp_path / "video", frames)
    rear = write_prediction_bag(tmp_path / "rear_pred", frames, predict(frames, "good"), camera="rear")
    cases = {
        "missing": (["--pred", str(tmp_path / "nope"), "--gt", str(gt)], 2, "does not exist"),
        "mixed": (["--pred", str(pred), "--gt", str(tmp_path / "video")], 2, "both be rosbag2"),
        "compare": (["--pred", str(pred), "--gt", str(gt), "--compare", str(gt / "metadata.yaml")], 2, "--compare"),
        "camera": (["--pred", str(rear), "--gt", str(gt)], 1, "has no /camera/panoptic/image"),
    }
    for name, (args, code, text) in cases.items():
        rc, _, err = run_cli(["evaluate", *args, "--out", str(tmp_path / name)], capsys)
        assert rc == code, (name, err)
        assert len(err.strip().splitlines()) == 1 and text in err, (name, err)
    # A truncated prediction bag: one line naming it, exit 1.
    (data,) = [p for p in pred.iterdir() if p.suffix == ".mcap"]
    data.write_bytes(data.read_bytes()[:200])
    rc, _, err = run_cli(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "t")], capsys)
    assert rc == 1 and len(err.strip().splitlines()) == 1, err
    assert "truncated" in err and str(pred) in err
    assert not (tmp_path / "t" / "report.json").exists()  # nothing could be scored


def test_a_corrupt_prediction_bag_keeps_the_frames_before_the_damage(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    gt, pred = make_pair(tmp_path, "seq-eval", "good", storage="sqlite3")
    (db,) = pred.glob("*.db3")
    blob = bytearray(db.read_bytes())
    cut = len(blob) * 4 // 5  # a page of messages late in the file
    blob[cut:cut + 4096] = bytes(4096)
    db.write_bytes(bytes(blob))
    rc, _, err = run_cli(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "e")], capsys)
    assert rc == 1 and len(err.strip().splitlines()) == 1, err
    assert "corrupt" in err and str(pred) in err
    report = load(tmp_path / "e")
    assert report["counts"]["frames"] == 8
    assert 1 <= report["counts"]["frames_without_prediction"] < 8
    assert report["failures"] == [err.strip().removeprefix("panoptic-ros evaluate: error: ")]


def test_two_cameras_in_one_bag_are_two_sequences(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from test_replay import merge_bags

    front, rear = gt_frames("drive"), gt_frames("drive", shift=3)
    gt = merge_bags(tmp_path / "gt", [write_rosbag(tmp_path / "g1", front, camera="front"),
                                      write_rosbag(tmp_path / "g2", rear, camera="rear")])
    pred = merge_bags(tmp_path / "pred", [
        write_prediction_bag(tmp_path / "p1", front, predict(front, "good"), camera="front"),
        write_prediction_bag(tmp_path / "p2", rear, predict(rear, "bad"), camera="rear")])
    rc, _, err = run_cli(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "e")], capsys)
    assert rc == 0, err
    report = load(tmp_path / "e")
    assert [s["name"] for s in report["per_sequence"]] == ["gt/front", "gt/rear"]
    events = [OcclusionEvent(9, 3, 4)]
    want = reference([("gt/front", front, predict(front, "good")), ("gt/rear", rear, predict(rear, "bad"))],
                     {"gt/front": events, "gt/rear": events})
    for key in ("pq", "vpq", "stq", "tracking", "occlusion"):
        assert report[key] == want[key], key
    assert [s["id_switches"] for s in report["per_sequence"]] == [0, 1]


def test_accumulators_merge_as_if_fed_together_and_pickle_light() -> None:
    import pickle

    a, b = gt_frames("a"), gt_frames("b", shift=3)
    pa, pb = predict(a, "good"), predict(b, "bad")
    whole = [PQAccumulator(), VPQAccumulator(), STQAccumulator()]
    parts = [[PQAccumulator(), VPQAccumulator(), STQAccumulator()] for _ in range(2)]
    for seq, (frames, preds) in enumerate(((a, pa), (b, pb))):
        for f, p in zip(frames, preds):
            args = (f.semantic, f.instance, p.semantic, p.track)
            whole[0].add(*args)
            whole[1].add(*args, sequence_id=seq)
            whole[2].add(*args, sequence_id=seq)
            parts[seq][0].add(*args)
            parts[seq][1].add(*args, sequence_id=seq)
            parts[seq][2].add(*args, sequence_id=seq)
    merged = [PQAccumulator(), VPQAccumulator(), STQAccumulator()]
    for part in parts:
        for m, acc in zip(merged, pickle.loads(pickle.dumps(part))):  # as a worker process sends them back
            m.merge(acc)
    assert parts[0][0]._workspace._buffers  # per-pixel scratch space, filled while adding ...
    assert pickle.loads(pickle.dumps(parts[0][0]))._workspace._buffers == {}  # ... does not travel
    assert merged[2].result() == whole[2].result()  # sequences pool in order: exactly equal
    for m, w in zip((merged[0].result(), *merged[1].result().per_window),
                    (whole[0].result(), *whole[1].result().per_window)):
        assert [(r.tp, r.fp, r.fn) for r in m.per_class] == [(r.tp, r.fp, r.fn) for r in w.per_class]
        assert m.all.pq == pytest.approx(w.all.pq, abs=1e-12)
    assert np.array_equal(merged[0].miou.confusion, whole[0].miou.confusion)
    with pytest.raises(ValueError, match="both hold sequence"):
        merged[2].merge(parts[0][2])
    with pytest.raises(ValueError, match="both hold sequence"):
        merged[1].merge(parts[0][1])
