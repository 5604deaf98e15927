"""MOT metrics: hand-computed cases, and cross-checks against py-motmetrics (CLEAR, identity) and TrackEval (HOTA).

numpy-2 shim, test-only: py-motmetrics 1.4.0's ``distances.iou_matrix`` calls
``np.asfarray``, removed in numpy 2.0; the ``numpy2_shims`` fixture puts it back
on the numpy module for the duration of a test (monkeypatch). TrackEval 1.3.0
needs no shim.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from panoptic_ros.metrics.mot import (
    HOTA_ALPHAS,
    OcclusionEvent,
    TrackingFrame,
    box_iou_matrix,
    clear_mot_matches,
    combine_tracking_results,
    evaluate_tracking,
    id_switches_in_events,
    mask_iou_matrix,
)

mm = pytest.importorskip("motmetrics")
trackeval = pytest.importorskip("trackeval")


@pytest.fixture
def numpy2_shims(monkeypatch: pytest.MonkeyPatch) -> None:
    if not hasattr(np, "asfarray"):
        monkeypatch.setattr(np, "asfarray", lambda a, dtype=np.float64: np.asarray(a, dtype=dtype), raising=False)


# --------------------------------------------------------------------------- random sequences


def _random_sequence(rng: np.random.Generator, frames: int) -> list[dict]:
    """Moving boxes (x, y, w, h) with gaps; a tracker that jitters, misses, hallucinates and swaps/changes ids."""
    n_obj = int(rng.integers(2, 7))
    objs = []
    for k in range(n_obj):
        birth = int(rng.integers(0, frames // 2))
        objs.append({"id": 100 + k, "p": rng.uniform(0, 200, 2), "v": rng.uniform(-6, 6, 2),
                     "wh": rng.uniform(15, 50, 2), "birth": birth, "death": int(rng.integers(birth + 2, frames + 1)),
                     "gap": (int(rng.integers(0, frames)), int(rng.integers(1, 5))) if rng.random() < 0.4 else None,
                     "hyp": 1 + k})
    next_hyp = 50
    out = []
    for t in range(frames):
        gt_ids, gt_boxes, hyp_ids, hyp_boxes = [], [], [], []
        for o in objs:
            if not (o["birth"] <= t < o["death"]):
                continue
            if o["gap"] and o["gap"][0] <= t < o["gap"][0] + o["gap"][1]:
                continue
            box = np.concatenate([o["p"] + o["v"] * t, o["wh"]])
            gt_ids.append(o["id"])
            gt_boxes.append(box)
            r = rng.random()
            if r < 0.05:  # tracker gets a new id
                o["hyp"] = next_hyp
                next_hyp += 1
            elif r < 0.08:  # two tracks swap ids
                other = objs[int(rng.integers(0, n_obj))]
                o["hyp"], other["hyp"] = other["hyp"], o["hyp"]
            if rng.random() < 0.12:  # miss
                continue
            noise = rng.normal(0, 3.0 if rng.random() < 0.8 else 12.0, 4)
            hb = box + noise
            hb[2:] = np.maximum(hb[2:], 2.0)
            if o["hyp"] in hyp_ids:  # an id can be held by one box per frame
                continue
            hyp_ids.append(o["hyp"])
            hyp_boxes.append(hb)
        for _ in range(int(rng.poisson(0.6))):  # false positives, sometimes near a real object
            hid = int(rng.integers(500, 520))
            if hid in hyp_ids:
                continue
            base = gt_boxes[int(rng.integers(0, len(gt_boxes)))] if gt_boxes and rng.random() < 0.5 else \
                np.concatenate([rng.uniform(0, 200, 2), rng.uniform(15, 50, 2)])
            hyp_ids.append(hid)
            hyp_boxes.append(base + rng.normal(0, 8, 4) * np.array([1, 1, 0.3, 0.3]))
        out.append({"gt_ids": np.array(gt_ids, dtype=np.int64), "gt_xywh": np.array(gt_boxes).reshape(-1, 4),
                    "hyp_ids": np.array(hyp_ids, dtype=np.int64), "hyp_xywh": np.array(hyp_boxes).reshape(-1, 4)})
    return out


def _xyxy(xywh: np.ndarray) -> np.ndarray:
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)


def _ours(seq: list[dict]) -> list[TrackingFrame]:
    return [TrackingFrame.from_boxes(f["gt_ids"], _xyxy(f["gt_xywh"]), f["hyp_ids"], _xyxy(f["hyp_xywh"])) for f in seq]


def _motmetrics_acc(seq: list[dict]):
    acc = mm.MOTAccumulator(auto_id=True)
    for f in seq:
        acc.update(f["gt_ids"], f["hyp_ids"], mm.distances.iou_matrix(f["gt_xywh"], f["hyp_xywh"], max_iou=0.5))
    return acc


_MM_METRICS = ["mota", "motp", "idf1", "idp", "idr", "num_switches", "num_false_positives", "num_misses",
               "num_objects", "num_predictions", "num_matches", "idtp", "idfp", "idfn", "num_frames"]


def _trackeval_data(seq: list[dict]) -> dict:
    """The dict ``HOTA.eval_sequence`` expects: contiguous ids, TrackEval's own box IoU."""
    from trackeval.datasets._base_dataset import _BaseDataset

    gmap, hmap = {}, {}
    for f in seq:
        for g in f["gt_ids"].tolist():
            gmap.setdefault(g, len(gmap))
        for h in f["hyp_ids"].tolist():
            hmap.setdefault(h, len(hmap))
    return {
        "gt_ids": [np.array([gmap[g] for g in f["gt_ids"].tolist()], dtype=int) for f in seq],
        "tracker_ids": [np.array([hmap[h] for h in f["hyp_ids"].tolist()], dtype=int) for f in seq],
        "similarity_scores": [
            _BaseDataset._calculate_box_ious(f["gt_xywh"].copy(), f["hyp_xywh"].copy(), box_format="xywh")
            for f in seq],
        "num_gt_dets": sum(len(f["gt_ids"]) for f in seq),
        "num_tracker_dets": sum(len(f["hyp_ids"]) for f in seq),
        "num_gt_ids": len(gmap), "num_tracker_ids": len(hmap), "num_timesteps": len(seq),
    }


def _assert_clear_and_identity(ours, ref) -> None:
    c, i = ours.clear, ours.identity
    assert c.num_switches == ref["num_switches"]
    assert c.num_false_positives == ref["num_false_positives"]
    assert c.num_misses == ref["num_misses"]
    assert c.num_objects == ref["num_objects"]
    assert c.num_predictions == ref["num_predictions"]
    assert c.num_matches == ref["num_matches"]
    assert c.num_frames == ref["num_frames"]
    assert (i.idtp, i.idfp, i.idfn) == (ref["idtp"], ref["idfp"], ref["idfn"])
    assert c.mota == pytest.approx(ref["mota"], abs=1e-9)
    assert c.motp_distance == pytest.approx(ref["motp"], abs=1e-9)
    assert (i.idf1, i.idp, i.idr) == pytest.approx((ref["idf1"], ref["idp"], ref["idr"]), abs=1e-9)


def _assert_hota(h, ref: dict) -> None:
    assert np.array_equal(h.tp_per_alpha, ref["HOTA_TP"])
    assert np.array_equal(h.fn_per_alpha, ref["HOTA_FN"])
    assert np.array_equal(h.fp_per_alpha, ref["HOTA_FP"])
    for ours, theirs in ((h.hota_per_alpha, "HOTA"), (h.det_a_per_alpha, "DetA"), (h.ass_a_per_alpha, "AssA"),
                         (h.loc_a_per_alpha, "LocA"), (h.det_re_per_alpha, "DetRe"), (h.det_pr_per_alpha, "DetPr"),
                         (h.ass_re_per_alpha, "AssRe"), (h.ass_pr_per_alpha, "AssPr")):
        np.testing.assert_allclose(ours, ref[theirs], rtol=0, atol=1e-9, err_msg=theirs)
    assert (h.hota, h.det_a, h.ass_a, h.loc_a) == pytest.approx(
        (np.mean(ref["HOTA"]), np.mean(ref["DetA"]), np.mean(ref["AssA"]), np.mean(ref["LocA"])), abs=1e-9)


@pytest.mark.parametrize("seed", range(20))
def test_random_sequences_agree_with_motmetrics_and_trackeval(numpy2_shims, seed: int) -> None:
    rng = np.random.default_rng(seed)
    seq = _random_sequence(rng, int(rng.integers(15, 40)))
    ours = evaluate_tracking(_ours(seq))
    ref = mm.metrics.create().compute(_motmetrics_acc(seq), metrics=_MM_METRICS, name="seq").iloc[0]
    _assert_clear_and_identity(ours, ref)
    _assert_hota(ours.hota, trackeval.metrics.HOTA().eval_sequence(_trackeval_data(seq)))


def test_random_sequences_exercise_switches_and_partial_association(numpy2_shims) -> None:
    rng = np.random.default_rng(99)
    results = [evaluate_tracking(_ours(_random_sequence(rng, 30))) for _ in range(10)]
    assert sum(r.clear.num_switches for r in results) >= 5
    assert all(r.clear.num_false_positives > 0 and r.clear.num_misses > 0 for r in results)
    assert all(0.0 < r.hota.ass_a < 1.0 for r in results)


def test_combined_sequences_agree_with_the_libraries(numpy2_shims) -> None:
    rng = np.random.default_rng(1234)
    seqs = [_random_sequence(rng, int(rng.integers(10, 30))) for _ in range(3)]
    ours = combine_tracking_results([evaluate_tracking(_ours(s)) for s in seqs])
    mh = mm.metrics.create()
    summary = mh.compute_many([_motmetrics_acc(s) for s in seqs], metrics=_MM_METRICS,
                              names=["a", "b", "c"], generate_overall=True)
    _assert_clear_and_identity(ours, summary.loc["OVERALL"])
    hota = trackeval.metrics.HOTA()
    per_seq = {n: hota.eval_sequence(_trackeval_data(s)) for n, s in zip("abc", seqs)}
    _assert_hota(ours.hota, hota.combine_sequences(per_seq))


def test_empty_sides_match_trackeval_and_motmetrics(numpy2_shims) -> None:
    rng = np.random.default_rng(5)
    seq = _random_sequence(rng, 10)
    for f in seq:
        f["hyp_ids"], f["hyp_xywh"] = np.zeros(0, dtype=np.int64), np.zeros((0, 4))
    ours = evaluate_tracking(_ours(seq))
    _assert_hota(ours.hota, trackeval.metrics.HOTA().eval_sequence(_trackeval_data(seq)))
    ref = mm.metrics.create().compute(_motmetrics_acc(seq), metrics=_MM_METRICS, name="seq").iloc[0]
    assert (ours.clear.num_misses, ours.clear.mota) == (ref["num_misses"], ref["mota"]) == (ours.clear.num_objects, 0.0)
    gt_free = [{"gt_ids": np.zeros(0, dtype=np.int64), "gt_xywh": np.zeros((0, 4)),
                "hyp_ids": np.array([1]), "hyp_xywh": np.array([[0.0, 0, 10, 10]])}] * 3
    ours = evaluate_tracking(_ours(gt_free))
    _assert_hota(ours.hota, trackeval.metrics.HOTA().eval_sequence(_trackeval_data(gt_free)))
    assert math.isnan(ours.clear.mota) and ours.clear.num_false_positives == 3


# --------------------------------------------------------------------------- hand-computed


def _frame(gt: list[int], hyp: list[int], sim: list[list[float]]) -> TrackingFrame:
    return TrackingFrame(np.array(gt, dtype=np.int64), np.array(hyp, dtype=np.int64),
                         np.array(sim, dtype=np.float64).reshape(len(gt), len(hyp)))


def test_clear_mot_switch_persistence_and_counts() -> None:
    frames = [
        _frame([1, 2], [10, 20], [[0.9, 0.0], [0.0, 0.8]]),
        # hyp 20 now fits gt 1 better, but 1-10 still clears the threshold: the old pair is kept
        _frame([1, 2], [10, 20], [[0.55, 0.95], [0.0, 0.4]]),
        # gt 1 now only overlaps hyp 20 -> switch; gt 2 missed; hyp 30 false positive
        _frame([1, 2], [20, 30], [[0.7, 0.0], [0.0, 0.1]]),
    ]
    r = evaluate_tracking(frames)
    c = r.clear
    assert (c.num_objects, c.num_predictions, c.num_matches, c.num_switches) == (6, 6, 3, 1)
    assert (c.num_false_positives, c.num_misses) == (2, 2)  # hyp 20 in frame 1 (IoU 0.4 < 0.5), hyp 30
    assert c.mota == 1 - (2 + 1 + 2) / 6
    assert c.motp_iou == pytest.approx((0.9 + 0.8 + 0.55 + 0.7) / 4, abs=1e-15)
    assert clear_mot_matches(frames) == ({1: 10, 2: 20}, {1: 10}, {1: 20})
    # identity: pairs (1,10) x2, (2,20) x1, (1,20) x2 (frames 1 and 2) -> best mapping 1-10, 2-20 = 3
    assert (r.identity.idtp, r.identity.idfp, r.identity.idfn) == (3, 3, 3)
    assert r.identity.idf1 == 0.5


def test_clear_mot_prefers_more_matches_over_lower_distance() -> None:
    """A chain A-1-B-2-C-3: the three 0.5-IoU pairs beat the two perfect ones (py-motmetrics' solver)."""
    sim = [[0.5, 0.0, 0.0],
           [1.0, 0.5, 0.0],
           [0.0, 1.0, 0.5]]
    r = evaluate_tracking([_frame([1, 2, 3], [1, 2, 3], sim)])
    assert (r.clear.num_matches, r.clear.num_misses, r.clear.num_false_positives) == (3, 0, 0)
    acc = mm.MOTAccumulator(auto_id=True)
    acc.update([1, 2, 3], [1, 2, 3], np.where(np.array(sim) >= 0.5, 1 - np.array(sim), np.nan))
    assert mm.metrics.create().compute(acc, metrics=["num_matches"], name="x").iloc[0]["num_matches"] == 3


def test_hota_hand_computed() -> None:
    perfect = [_frame([1, 2], [7, 8], [[1.0, 0.0], [0.0, 1.0]])] * 4
    h = evaluate_tracking(perfect).hota
    assert (h.hota, h.det_a, h.ass_a, h.loc_a) == (1.0, 1.0, 1.0, 1.0)

    # one object, one hypothesis at IoU 0.72 for 2 frames: matched for the 14 alphas 0.05..0.70
    h = evaluate_tracking([_frame([1], [5], [[0.72]])] * 2).hota
    n = int(np.sum(HOTA_ALPHAS <= 0.72))
    assert n == 14
    assert h.det_a == pytest.approx(n / 19, abs=1e-15)
    assert h.ass_a == pytest.approx(n / 19, abs=1e-15)
    assert h.hota == pytest.approx(n / 19, abs=1e-15)
    assert h.loc_a == pytest.approx((n * 0.72 + (19 - n) * 1.0) / 19, abs=1e-12)  # TrackEval: LocA 1 without TP

    # the id changes half-way: every alpha has TP 4, AssA = 2 * (2 * 2/4) / 4 = 0.5
    h = evaluate_tracking([_frame([1], [5], [[1.0]])] * 2 + [_frame([1], [6], [[1.0]])] * 2).hota
    assert (h.det_a, h.ass_a, h.hota) == pytest.approx((1.0, 0.5, math.sqrt(0.5)), abs=1e-15)


def test_similarity_from_boxes_masks_and_id_maps_agree() -> None:
    gt_boxes = np.array([[2, 2, 12, 10], [20, 5, 30, 25]], dtype=float)
    hyp_boxes = np.array([[4, 2, 14, 10], [0, 0, 3, 3], [21, 6, 30, 25]], dtype=float)
    iou = box_iou_matrix(gt_boxes, hyp_boxes)
    assert iou[0, 0] == pytest.approx(64 / 96, abs=1e-15)  # 8x8 overlap of two 10x8 boxes
    assert iou[0, 2] == 0.0

    def raster(boxes: np.ndarray) -> np.ndarray:
        m = np.zeros((len(boxes), 32, 40), dtype=bool)
        for k, (x0, y0, x1, y1) in enumerate(boxes.astype(int)):
            m[k, y0:y1, x0:x1] = True
        return m

    np.testing.assert_allclose(mask_iou_matrix(raster(gt_boxes), raster(hyp_boxes)), iou, atol=1e-15)
    gt_map = np.zeros((32, 40), dtype=np.int32)
    for k, m in zip((7, 9), raster(gt_boxes)):
        gt_map[m] = k
    hyp_map = np.zeros((32, 40), dtype=np.int32)
    for k, m in zip((3, 4, 5), raster(hyp_boxes)):
        hyp_map[m] = k
    f = TrackingFrame.from_id_maps(gt_map, hyp_map)
    assert f.gt_ids.tolist() == [7, 9] and f.hyp_ids.tolist() == [3, 4, 5]
    np.testing.assert_allclose(f.similarity, iou, atol=1e-15)  # no overlaps between boxes of one side here


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="shape"):
        TrackingFrame(np.array([1, 2]), np.array([3]), np.array([[0.5, 0.5]]))
    with pytest.raises(ValueError, match="repeated id"):
        _frame([1, 1], [3], [[0.5], [0.5]])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        _frame([1], [3], [[1.5]])
    with pytest.raises(ValueError, match="x1 >= x0"):
        box_iou_matrix(np.array([[10, 0, 5, 5]]), np.array([[0, 0, 1, 1]]))
    with pytest.raises(ValueError, match="iou_threshold"):
        evaluate_tracking([_frame([1], [3], [[0.5]])], iou_threshold=0)
    with pytest.raises(TypeError, match="TrackingFrame"):
        evaluate_tracking([{"gt_ids": []}])  # type: ignore[list-item]


def test_result_renders() -> None:
    r = evaluate_tracking([_frame([1], [5], [[0.8]])] * 3)
    d = json.loads(r.to_json())
    assert d["mota"] == 1.0 and d["num_switches"] == 0 and d["idf1"] == 1.0
    assert "HOTA" in r.to_table() and "IDF1" in r.to_table()


# --------------------------------------------------------------------------- occlusion events


def _occlusion_sequence(after_ids: list[int | None]) -> list[TrackingFrame]:
    """gt 1 visible on frames 0-2 (tracked as hyp 10), hidden 3-5, visible 6-8 with the given hyp per frame."""
    frames = [_frame([1], [10], [[0.9]]) for _ in range(3)]
    frames += [_frame([], [], []) for _ in range(3)]
    for h in after_ids:
        frames.append(_frame([1], [], []) if h is None else _frame([1], [h], [[0.9]]))
    return frames


def test_event_outcomes_hand_computed() -> None:
    ev = [(1, 3, 5)]
    kept = id_switches_in_events(_occlusion_sequence([10, 10, 10]), ev)
    assert (kept.num_kept, kept.num_switches, kept.switch_rate) == (1, 0, 0.0)
    o = kept.outcomes[0]
    assert (o.hyp_before, o.frame_before, o.hyp_after, o.frame_after) == (10, 2, 10, 6)

    switched = id_switches_in_events(_occlusion_sequence([11, 11, 11]), ev)
    assert (switched.num_switches, switched.switch_rate, switched.keep_rate) == (1, 1.0, 0.0)
    assert evaluate_tracking(_occlusion_sequence([11, 11, 11])).clear.num_switches == 1

    late = _occlusion_sequence([None, None, 12])  # re-acquired only on frame 8
    assert id_switches_in_events(late, ev).outcomes[0].frame_after == 8
    within = id_switches_in_events(late, ev, reacquire_within_frames=2)  # searches frames 6-7 only
    assert (within.num_lost, within.num_evaluated, math.isnan(within.switch_rate)) == (1, 0, True)
    assert within.keep_rate == 0.0

    untracked = _occlusion_sequence([10, 10, 10])
    untracked[:3] = [_frame([1], [], []) for _ in range(3)]
    r = id_switches_in_events(untracked, [OcclusionEvent(1, 3, 5)])
    assert (r.num_untracked_before, r.num_events, r.num_evaluated) == (1, 1, 0)
    assert r.to_dict()["switch_rate"] is None


def test_event_search_stops_at_the_next_event_of_the_same_track() -> None:
    frames = _occlusion_sequence([None, None, 10])
    frames += [_frame([], [], [])] * 2 + [_frame([1], [13], [[0.9]])]  # frames 9-10 hidden, 11 back as 13
    r = id_switches_in_events(frames, [(1, 3, 5), (1, 6, 7), (1, 9, 10)])
    assert [o.outcome for o in r.outcomes] == ["lost", "kept", "switched"]
    # the first event may not look past frame 6, where the next event starts
    assert r.outcomes[1].frame_before == 2 and r.outcomes[1].frame_after == 8


def test_events_are_validated() -> None:
    frames = _occlusion_sequence([10])
    with pytest.raises(ValueError, match="start_frame <= end_frame"):
        id_switches_in_events(frames, [(1, 5, 3)])
    with pytest.raises(ValueError, match="start_frame <= end_frame"):
        id_switches_in_events(frames, [(1, 3, 99)])
    with pytest.raises(ValueError, match="reacquire_within_frames"):
        id_switches_in_events(frames, [(1, 3, 5)], reacquire_within_frames=0)


def test_paired_idf1_interval_is_zero_against_itself_and_signed_for_a_better_tracker() -> None:
    from panoptic_ros.metrics import IdentityResult, bootstrap_idf1_difference

    rng = np.random.default_rng(4)
    base = [IdentityResult(int(tp), int(fp), int(fn)) for tp, fp, fn in rng.integers(20, 200, (12, 3))]
    assert bootstrap_idf1_difference(base, base, resamples=200) == (0.0, 0.0)
    better = [IdentityResult(r.idtp + 10, max(r.idfp - 5, 0), max(r.idfn - 5, 0)) for r in base]
    lo, hi = bootstrap_idf1_difference(better, base, resamples=200)
    pooled = [sum(getattr(r, k) for r in rs) for rs in (better, base) for k in ("idtp", "idfp", "idfn")]
    point = (IdentityResult(*pooled[:3]).idf1 - IdentityResult(*pooled[3:]).idf1)
    assert 0 < lo < point < hi
    with pytest.raises(ValueError, match="differ in number"):
        bootstrap_idf1_difference(better[:2], base)
    with pytest.raises(ValueError, match="at least 2 units"):
        bootstrap_idf1_difference(base[:1], base[:1])
