"""The tracker comparison: degraded ground truth, baseline adapters, scoring, and the command end to end.

Hand-built scenes are rectangles on a road (later things are nearer and
cover earlier ones); a thing is detected while at least a quarter of it is
visible. Ids and switch counts are exact.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from panoptic_ros.classes import CITYSCAPES
from panoptic_ros.datasets.types import ObjectAnnotation, PanopticFrame
from panoptic_ros.metrics.mot import OcclusionEvent, TrackingFrame, evaluate_tracking, id_switches_in_events
from panoptic_ros.panoptic import PanopticResult
from panoptic_ros.tracking.compare import (CompareSettings, DetectionOverlap, OurTracker, make_tracker)
from panoptic_ros.tracking.degrade import DegradeConfig, degrade_frame, track_embedding
from panoptic_ros.params import TrackerParams

CAR = CITYSCAPES.by_name("car").train_id
BUS = CITYSCAPES.by_name("bus").train_id
PERSON = CITYSCAPES.by_name("person").train_id
ROAD = CITYSCAPES.by_name("road").train_id
FPS = 10.0


# --------------------------------------------------------------------------- builders


@dataclass
class Rect:
    track_id: int
    class_id: int
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive); may leave the image


def gt_frame(rects: list[Rect], hw: tuple[int, int], k: int = 0) -> PanopticFrame:
    """A generator-style frame: exact instance ids, visible fractions, later rects nearer."""
    h, w = hw
    inst = np.zeros((h, w), np.int32)
    for r in rects:
        x0, y0, x1, y1 = r.box
        inst[max(y0, 0):max(min(y1, h), 0), max(x0, 0):max(min(x1, w), 0)] = r.track_id
    sem = np.full((h, w), ROAD, np.uint8)
    objects = []
    for r in rects:
        m = inst == r.track_id
        sem[m] = r.class_id
        x0, y0, x1, y1 = r.box
        alone = (min(x1, w) - max(x0, 0)) * (min(y1, h) - max(y0, 0))
        objects.append(ObjectAnnotation(track_id=r.track_id, class_id=r.class_id, area_px=int(m.sum()),
                                        visible_fraction=float(m.sum()) / max(alone, 1),
                                        amodal_box_xyxy=(float(x0), float(y0), float(x1), float(y1))))
    return PanopticFrame(image=np.zeros((h, w, 3), np.uint8), semantic=sem, instance=inst, objects=objects,
                         frame_index=k, stamp_ns=int(k * 1e8))


def detections(frame: PanopticFrame, min_visible: float = 0.25, order: list[int] | None = None) -> PanopticResult:
    """Exact detections of the things at least ``min_visible`` visible, in ``order`` of track id if given."""
    objs = [o for o in frame.objects if o.area_px > 0 and o.visible_fraction >= min_visible]
    if order is not None:
        objs = sorted(objs, key=lambda o: order.index(o.track_id))
    h, w = frame.instance.shape
    inst = np.zeros((h, w), np.int32)
    boxes = []
    for i, o in enumerate(objs):
        m = frame.instance == o.track_id
        inst[m] = i + 1
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    n = len(objs)
    return PanopticResult(class_map=frame.semantic.copy(), instance_map=inst,
                          classes=np.array([o.class_id for o in objs], np.int64).reshape(n),
                          scores=np.full(n, 0.9, np.float32), boxes_xyxy=np.array(boxes, np.float32).reshape(n, 4),
                          embeddings=np.zeros((n, 0), np.float32))


def crowd_frame(k: int, hw: tuple[int, int] = (120, 400)) -> PanopticFrame:
    """40 separate fully visible cars (a grid), plus one 10 %-visible car behind a bus."""
    rects = [Rect(1 + i, CAR, (10 + 38 * (i % 10), 5 + 28 * (i // 10), 38 + 38 * (i % 10), 25 + 28 * (i // 10)))
             for i in range(40)]
    rects.append(Rect(100, CAR, (300, 100, 340, 120)))
    rects.append(Rect(101, BUS, (304, 98, 400, 120)))
    return gt_frame(rects, hw, k)


# --------------------------------------------------------------------------- degrade


def test_degrade_is_deterministic_per_seed_and_frame() -> None:
    frame = crowd_frame(3)
    a, b = degrade_frame(frame, 7), degrade_frame(frame, 7)
    for x, y in ((a.result.instance_map, b.result.instance_map), (a.result.scores, b.result.scores),
                 (a.result.embeddings, b.result.embeddings), (a.result.boxes_xyxy, b.result.boxes_xyxy)):
        np.testing.assert_array_equal(x, y)
    c = degrade_frame(frame, 8)
    d = degrade_frame(crowd_frame(4), 7)
    assert not np.array_equal(a.result.instance_map, c.result.instance_map)
    assert not np.array_equal(a.result.instance_map, d.result.instance_map)


def test_degrade_drops_misses_and_perturbs_as_configured() -> None:
    config = DegradeConfig(miss_rate=0.1, false_positives_per_frame=0.0, fragment_rate=0.0, min_visible_fraction=0.15)
    detected = missed = changed = 0
    for k in range(40):
        frame = crowd_frame(k)
        out = degrade_frame(frame, 11, config)
        r = out.result
        assert 100 not in out.source_track_ids.tolist()  # 10 % visible: never detected
        assert out.ignore_track_ids == [100]
        assert out.stats.hidden == 1 and out.stats.false_positives == 0
        missed += out.stats.missed
        detected += out.stats.detected
        assert r.num_instances == out.stats.detected
        counted = np.bincount(r.instance_map.ravel(), minlength=r.num_instances + 1)[1:]
        np.testing.assert_array_equal(r.areas_px, counted)
        for i, t in enumerate(out.source_track_ids.tolist()):
            mine, truth = r.instance_map == i + 1, frame.instance == t
            iou = (mine & truth).sum() / (mine | truth).sum()
            assert iou >= 0.6, (k, t, iou)  # perturbed, still the object
            changed += int(iou < 1.0)
            assert not (mine & (frame.instance > 0) & ~truth).any()  # never takes another thing's pixels
            ys, xs = np.nonzero(mine)
            np.testing.assert_array_equal(r.boxes_xyxy[i], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    assert missed + detected == 40 * 41  # 40 cars and the bus, 40 frames
    assert abs(missed / 1640 - 0.1) <= 0.025  # binomial sd 0.0074
    assert changed >= 0.5 * detected  # boundaries really move (jitter of -1, 0, +1 px)


def test_degrade_false_positives_fragments_and_embeddings() -> None:
    frame = crowd_frame(0)
    noisy = DegradeConfig(miss_rate=0.0, false_positives_per_frame=3.0, fragment_rate=0.5, embedding_dim=32)
    fps = frags = 0
    cos_same, cos_other = [], []
    for k in range(20):
        out = degrade_frame(crowd_frame(k), 5, noisy)
        r = out.result
        fp = out.source_track_ids == 0
        fps += int(fp.sum())
        frags += int(out.is_fragment.sum())
        for i in fp.nonzero()[0]:
            assert not ((r.instance_map == i + 1) & (frame.instance > 0)).any()  # on background only
        for i in out.is_fragment.nonzero()[0]:  # a fragment follows its parent and is weaker
            parent = int(np.flatnonzero((out.source_track_ids == out.source_track_ids[i]) & ~out.is_fragment)[0])
            assert r.scores[i] < r.scores[parent]
        assert r.embeddings.shape == (r.num_instances, 32)
        np.testing.assert_allclose(np.linalg.norm(r.embeddings, axis=1), 1.0, atol=1e-5)
        for i, t in enumerate(out.source_track_ids.tolist()):
            if t:
                cos_same.append(float(r.embeddings[i] @ track_embedding(5, t, 32)))
                cos_other.append(float(r.embeddings[i] @ track_embedding(5, t + 1000, 32)))
    assert 30 <= fps <= 90 and 300 <= frags <= 500  # Poisson(3) x 20 frames; 40 things x 20 x 0.5
    # noise of norm 1 around a unit vector: cosine with the identity about 1/sqrt(2), with others about 0
    assert 0.62 <= np.mean(cos_same) <= 0.78 and abs(np.mean(cos_other)) <= 0.05
    none = degrade_frame(frame, 5, DegradeConfig(embeddings="none"))
    assert none.result.embeddings.shape == (none.result.num_instances, 0)


def test_degrade_config_refuses_bad_values() -> None:
    with pytest.raises(ValueError, match="miss_rate"):
        DegradeConfig(miss_rate=1.5)
    with pytest.raises(ValueError, match="embeddings must be one of"):
        DegradeConfig(embeddings="perfect")


# --------------------------------------------------------------------------- scoring


def test_detection_overlap_scores_exactly_as_id_maps() -> None:
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 5, (30, 40)).astype(np.int32) * 7  # ids 0, 7, 14, 21, 28
    det = rng.integers(0, 6, (30, 40)).astype(np.int32)  # 5 detections
    ids = np.array([3, 0, 3, 9, 4])  # two detections share id 3; one has none
    ignore = np.zeros((30, 40), bool)
    ignore[:5] = True
    frame = DetectionOverlap.build(gt, det, 5, ignore).tracking_frame(ids)
    hyp_map = np.concatenate([[0], ids])[det]
    ref = TrackingFrame.from_id_maps(np.where(ignore, 0, gt), np.where(ignore, 0, hyp_map))
    np.testing.assert_array_equal(frame.gt_ids, ref.gt_ids)
    np.testing.assert_array_equal(frame.hyp_ids, ref.hyp_ids)
    np.testing.assert_allclose(frame.similarity, ref.similarity, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="got 4 ids for 5 detections"):
        DetectionOverlap.build(gt, det, 5).tracking_frame(ids[:4])


# --------------------------------------------------------------------------- baselines


def two_cars(k: int) -> PanopticFrame:
    return gt_frame([Rect(1, CAR, (20 + 3 * k, 40, 60 + 3 * k, 64)), Rect(2, CAR, (200 - 3 * k, 70, 240 - 3 * k, 94))],
                    (120, 320), k)


# Ids each library gives on two cars moving apart, detections listed in alternating order (the
# adapter must follow the detection index, whatever the order the library returns them in).
# ByteTrack / OC-SORT / SORT wait for confirmation; BoT-SORT, McByte and C-BIoU activate on frame 0.
EXPECTED_BASELINE_IDS = {
    "bytetrack": [[0, 0], [1, 2], [1, 2], [1, 2], [1, 2], [1, 2]],
    "bytetrack-long": [[0, 0], [1, 2], [1, 2], [1, 2], [1, 2], [1, 2]],
    "ocsort": [[0, 0], [1, 2], [1, 2], [1, 2], [1, 2], [1, 2]],
    "botsort": [[1, 2]] * 6,
    "mcbyte": [[1, 2]] * 6,
    "sort": [[0, 0], [0, 0], [1, 2], [1, 2], [1, 2], [1, 2]],
    "cbiou": [[1, 2]] * 6,
}


@pytest.mark.parametrize("name", sorted(EXPECTED_BASELINE_IDS))
def test_baseline_adapters_give_exact_ids_per_detection(name: str) -> None:
    pytest.importorskip("trackers")
    tracker = make_tracker(name, FPS)
    got = []
    for k in range(6):
        frame = two_cars(k)
        order = [1, 2] if k % 2 == 0 else [2, 1]
        ids = tracker.update(detections(frame, order=order), k / FPS, frame.image)
        by_track = dict(zip(order, ids.tolist()))
        got.append([by_track[1], by_track[2]])
    assert got == EXPECTED_BASELINE_IDS[name]
    assert tracker.parameters["frame_rate"] == FPS


def test_missing_baseline_package_is_a_clear_error(monkeypatch) -> None:
    import sys

    from panoptic_ros.tracking.baselines import BaselineUnavailable

    monkeypatch.setitem(sys.modules, "trackers", None)  # import of it now fails
    with pytest.raises(BaselineUnavailable, match=r"'trackers' package.*pip install"):
        make_tracker("bytetrack", FPS)


# --------------------------------------------------------------------------- ours vs ByteTrack


def bus_scene(k: int) -> PanopticFrame:
    """A car drives right at 6 px/frame behind a parked bus: fully hidden on frames 14..30."""
    car = Rect(1, CAR, (20 + 6 * k, 60, 60 + 6 * k, 84))
    bus = Rect(2, BUS, (100, 30, 240, 100))
    return gt_frame([car, bus], (140, 360), k)


def run_scene(tracker, n: int) -> list[TrackingFrame]:
    out = []
    for k in range(n):
        frame = bus_scene(k)
        result = detections(frame)
        ids = tracker.update(result, k / FPS, None)
        out.append(DetectionOverlap.build(frame.instance, result.instance_map, result.num_instances)
                   .tracking_frame(ids))
    return out


def test_ours_keeps_the_id_through_a_full_occlusion_that_bytetrack_loses() -> None:
    pytest.importorskip("trackers")
    n = 40
    hidden = [k for k in range(n) if not (bus_scene(k).instance == 1).any()]
    assert hidden == list(range(14, 31))
    event = OcclusionEvent(track_id=1, start_frame=14, end_frame=30)
    ours = run_scene(OurTracker("ours", TrackerParams(), CITYSCAPES, use_embeddings=False), n)
    byte = run_scene(make_tracker("bytetrack", FPS), n)
    ours_ev = id_switches_in_events(ours, [event])
    byte_ev = id_switches_in_events(byte, [event])
    assert (ours_ev.num_kept, ours_ev.num_switches) == (1, 0)
    assert (byte_ev.num_kept, byte_ev.num_switches) == (0, 1)
    assert evaluate_tracking(ours).clear.num_switches == 0
    assert evaluate_tracking(byte).clear.num_switches == 1


# --------------------------------------------------------------------------- the command


def test_settings_refuse_training_seeds_and_unknown_names(tmp_path) -> None:
    with pytest.raises(ValueError, match="overlap the training seeds 0..4999"):
        CompareSettings(out=tmp_path, seed=4990, sequences=20)
    with pytest.raises(ValueError, match="--trackers must list distinct names"):
        CompareSettings(out=tmp_path, trackers=("ours", "deepsort"))
    with pytest.raises(ValueError, match="--inputs"):
        CompareSettings(out=tmp_path, inputs=("gt", "lidar"))


def test_command_refuses_a_missing_model(tmp_path, capsys) -> None:
    from panoptic_ros.cli import main

    rc = main(["track-compare", "--out", str(tmp_path / "o"), "--sequences", "1", "--frames", "2", "--inputs",
               "gt,model", "--trackers", "ours", "--model", str(tmp_path / "none.safetensors"), "--no-progress"])
    assert rc == 2
    assert "none.safetensors does not exist; pass --model PATH" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from panoptic_ros.model.checkpoint import ModelCard, save_model
    from panoptic_ros.model.config import ModelConfig
    from panoptic_ros.model.efficientps import build_model

    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = ModelConfig(pretrained_backbone=False, fpn_channels=32, semantic_channels=16, box_head_dim=64,
                      mask_head_channels=16, mask_head_convs=1, embedding_dim=16, input_height=64, input_width=128,
                      anchor_sizes=(8, 16, 32, 64), rpn_post_nms_top_n_train=100, rpn_post_nms_top_n_test=50,
                      box_batch_size_per_image=32)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(build_model(cfg).eval(), path, ModelCard(name="tiny", config=cfg))
    return path


def test_command_end_to_end_writes_json_md_and_pictures(tmp_path, tiny_model) -> None:
    pytest.importorskip("trackers")
    from panoptic_ros.cli import main

    out = tmp_path / "cmp"
    rc = main(["track-compare", "--out", str(out), "--sequences", "2", "--frames", "8", "--size", "128x256",
               "--inputs", "gt,model", "--trackers", "ours,ours-noemb,bytetrack,ocsort", "--model", str(tiny_model),
               "--device", "cpu", "--event-frames", "1:40", "--no-progress"])
    assert rc == 0
    for name in ("compare.json", "compare.md", "compare.png", "id_timeline.png"):
        assert (out / name).stat().st_size > 0, name
    with open(out / "compare.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "compare.json").read_text())
    assert {"command", "date", "machine", "settings", "num_sequences", "num_events", "sequences", "scores", "bar",
            "tracker_parameters", "events", "detections_gt", "evaluation"} <= set(report)
    assert report["num_sequences"] == 2 and [s["seed"] for s in report["sequences"]] == [200000, 200001]
    assert report["num_events"] == sum(s["events_in_range"] for s in report["sequences"])
    pairs = [(s["input"], s["tracker"]) for s in report["scores"]]
    assert pairs == [(i, t) for i in ("gt", "model") for t in ("ours", "ours-noemb", "bytetrack", "ocsort")]
    for s in report["scores"]:
        assert {"idf1", "hota", "mota", "id_switches", "events", "event_switches", "event_kept", "event_lost"} <= set(s)
        assert s["events"] == report["num_events"]
        assert s["event_switches"] + s["event_kept"] + s["event_lost"] + s["event_untracked_before"] == s["events"]
    assert len(report["events"]) == 8 * report["num_events"]
    assert set(report["bar"]) >= {"ours_event_switches", "bytetrack_event_switches", "ours_idf1", "passed"}
    ideal = report["reference_gt"]  # true ids on the same detections: the ceiling of any association
    assert ideal["tracker"] == "true-ids" and ideal["id_switches"] == 0
    assert all(ideal["idf1"] >= s["idf1"] for s in report["scores"] if s["input"] == "gt")
    ours = {s["input"]: s["idf1"] for s in report["scores"] if s["tracker"] == "ours"}
    for s in report["scores"]:  # paired bootstrap over the 2 sequences: it holds the pooled difference
        if s["tracker"] == "ours":
            assert s["idf1_minus_ours"] is None
        else:
            lo, hi = s["idf1_minus_ours"]
            assert lo - 1e-12 <= s["idf1"] - ours[s["input"]] <= hi + 1e-12, s
    assert report["tracker_parameters"]["bytetrack"]["frame_rate"] == 10.0
    md = (out / "compare.md").read_text()
    assert "## Input: gt-degraded" in md and "## Input: model" in md
    assert md.count("| ours-noemb |") == 2 and "IDF1 - ours, 95 % interval" in md
    assert "compatible_classes=[person:rider; car:truck;" in md  # list-valued parameters are listed too


def test_tune_tracker_scores_cached_detections_as_track_compare_does(tmp_path) -> None:
    """tools/tune_tracker.py caches detections and re-scores tracker settings on them; on the same frames
    and detections it must give track-compare's own figures, and refuse unknown or out-of-range settings."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import tune_tracker
    from panoptic_ros.synth import SynthConfig, SyntheticSequence
    from panoptic_ros.tracking.compare import run_compare

    seed, frames, hw = 200_000, 40, (128, 256)

    class GtDetector:  # stands in for the model: the gt-degraded detections of each frame, in order
        def __init__(self) -> None:
            self.seq = SyntheticSequence(seed, frames, SynthConfig(height=hw[0], width=hw[1], fps=10.0,
                                                                   occlusion_events_per_100_frames=4.0))
            self.k = 0

        def predict(self, images):
            fr = self.seq.render(self.k)
            assert np.array_equal(images[0], fr.image)
            self.k += 1
            return [degrade_frame(fr, seed, DegradeConfig(), CITYSCAPES).result]

    path = tmp_path / f"{seed}.npz"
    tune_tracker.cache_sequence(path, seed, frames, hw, GtDetector(), DegradeConfig().min_visible_fraction)
    cached = tune_tracker.score([tune_tracker.load_sequence(path)], TrackerParams())
    report = run_compare(CompareSettings(out=tmp_path / "cmp", sequences=1, frames=frames, height=hw[0],
                                         width=hw[1], seed=seed, inputs=("gt",), trackers=("ours",),
                                         event_min_frames=10, event_max_frames=40, progress=False))
    ours = report.score("gt", "ours")
    assert cached["idf1"] == pytest.approx(ours.idf1) and cached["hota"] == pytest.approx(ours.hota)
    assert cached["mota"] == pytest.approx(ours.mota) and cached["id_switches"] == ours.id_switches
    assert (cached["events"], cached["event_switches"], cached["event_kept"]) == (ours.events, ours.event_switches,
                                                                                  ours.event_kept)
    assert tune_tracker.parse_variant("a=reid_min_similarity:0.6,min_hits:3") == \
        ("a", {"reid_min_similarity": 0.6, "min_hits": 3})
    with pytest.raises(ValueError, match="unknown tracker parameter"):
        tune_tracker.parse_variant("a=no_such_thing:1")
    with pytest.raises(ValueError, match="min_hits"):
        tune_tracker.parse_variant("a=min_hits:0")
