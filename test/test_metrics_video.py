"""VPQ and STQ: hand-computed cases, and cross-checks against the references.

VPQ: the reference (mcahny/vps ``eval_vpq.py``) is panopticapi's matching run on
k frames stacked into one volume with tube-consistent ids; stacking the k
frames of every window into one tall COCO panoptic image and running
panopticapi itself reproduces it, so that is the cross-check.

STQ: a literal, pixel-loop port of deeplab2's numpy formula
(``_reference_stq`` below) on random sequences, and the STEP paper's worked
examples computed by hand.
"""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from panoptic_ros.classes import CITYSCAPES, VOID, ClassInfo, ClassTable
from panoptic_ros.metrics.video import STQAccumulator, VPQAccumulator

panopticapi_eval = pytest.importorskip("panopticapi.evaluation")

# The COCO panoptic writer and the per-image perturbations live in the PQ test; load that file by path.
_spec = importlib.util.spec_from_file_location("_pq_case_helpers", Path(__file__).with_name("test_metrics_pq.py"))
assert _spec is not None and _spec.loader is not None
pqh = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pqh)
SMALL: ClassTable = pqh.SMALL

CAR_SKY = ClassTable((  # the STEP paper's toy label set: class 0 'car' (thing), class 1 'sky' (stuff)
    ClassInfo(0, "car", 26, True, (0, 0, 142)),
    ClassInfo(1, "sky", 23, False, (70, 130, 180)),
))


# --------------------------------------------------------------------------- random sequences


def _random_sequence(rng: np.random.Generator, table: ClassTable, frames: int, h: int = 24, w: int = 32) -> list[dict]:
    """Moving things with stable ground-truth ids; predictions that drift, switch ids, flip class, miss, hallucinate."""
    stuff, things = table.stuff_ids, table.thing_ids
    background = np.full((h, w), stuff[0], dtype=np.uint8)
    background[: h // 3] = stuff[-1]
    background[:, rng.integers(0, w):] = rng.choice(stuff)
    objects = []
    for k in range(int(rng.integers(2, 6))):
        objects.append({"id": 1 + k if rng.random() < 0.9 else 0, "cls": int(rng.choice(things)),
                        "y": int(rng.integers(0, h - 6)), "x": int(rng.integers(0, w - 6)),
                        "vy": int(rng.integers(-1, 2)), "vx": int(rng.integers(-2, 3)),
                        "hh": int(rng.integers(3, 9)), "ww": int(rng.integers(3, 10)),
                        "pred_id": 50 + k, "switch_at": int(rng.integers(1, frames + 3)),
                        "flip_at": int(rng.integers(0, frames + 6)), "miss": rng.random() < 0.15})
    crowd_ids = [o["id"] for o in objects if o["id"] and rng.random() < 0.1]
    out = []
    for t in range(frames):
        gs, gi = background.copy(), np.zeros((h, w), dtype=np.int32)
        ps, pi = background.copy(), np.zeros((h, w), dtype=np.int32)
        if rng.random() < 0.5:
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            gs[y0:y0 + 4, x0:x0 + 6] = VOID
        for o in objects:
            y, x = o["y"] + o["vy"] * t, o["x"] + o["vx"] * t
            sl = (slice(max(y, 0), max(y + o["hh"], 0)), slice(max(x, 0), max(x + o["ww"], 0)))
            gs[sl], gi[sl] = o["cls"], o["id"]
            if o["miss"]:
                continue
            dy, dx = rng.integers(-1, 2, size=2)
            psl = (slice(max(y + dy, 0), max(y + dy + o["hh"], 0)), slice(max(x + dx, 0), max(x + dx + o["ww"], 0)))
            ps[psl] = o["cls"] if t < o["flip_at"] else things[(things.index(o["cls"]) + 1) % len(things)]
            pi[psl] = o["pred_id"] + (1000 if t >= o["switch_at"] else 0)
        if rng.random() < 0.4:  # hallucinated thing
            y0, x0 = rng.integers(0, h - 3), rng.integers(0, w - 3)
            ps[y0:y0 + 4, x0:x0 + 4] = rng.choice(things)
            pi[y0:y0 + 4, x0:x0 + 4] = int(rng.integers(2000, 2005))
        if rng.random() < 0.3:  # predicted void
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            ps[y0:y0 + 3, x0:x0 + 5] = VOID
        noise = rng.random((h, w)) < 0.03
        ps[noise & ~np.isin(ps, things)] = rng.choice(stuff)
        out.append({"gt_sem": gs, "gt_inst": gi, "pred_sem": ps, "pred_inst": pi, "crowd": crowd_ids})
    return out


def _stack(frames: list[dict]) -> dict:
    """k frames on top of each other: one tall image whose ids are the tube ids."""
    tall = {key: np.concatenate([f[key] for f in frames], axis=0)
            for key in ("gt_sem", "gt_inst", "pred_sem", "pred_inst")}
    return tall | {"crowd": sorted({c for f in frames for c in f["crowd"]})}


# --------------------------------------------------------------------------- VPQ


@pytest.mark.parametrize("seed", range(8))
def test_vpq_agrees_with_panopticapi_on_stacked_windows(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(500 + seed)
    table = SMALL if seed % 2 else CITYSCAPES
    sequences = [_random_sequence(rng, table, int(rng.integers(3, 7))) for _ in range(int(rng.integers(1, 3)))]
    acc = VPQAccumulator(table, window_sizes=(1, 2, 3, 4))
    for s, seq in enumerate(sequences):
        for f in seq:
            acc.add(f["gt_sem"], f["gt_inst"], f["pred_sem"], f["pred_inst"], sequence_id=s, gt_crowd_ids=f["crowd"])
    ours = acc.result()
    for k, r in zip(ours.window_sizes, ours.per_window):
        windows = [_stack(seq[i:i + k]) for seq in sequences for i in range(len(seq) - k + 1)]
        assert r.num_images == len(windows)
        if not windows:
            assert r.all.n == 0 and math.isnan(r.all.pq)
            continue
        ref, stat = pqh._panopticapi_single_core(tmp_path / f"k{k}", windows, table, seed)
        pqh._assert_agree(r, ref, stat, table)
    finite = [r.all.pq for r in ours.per_window]
    if all(math.isfinite(v) for v in finite):
        assert ours.vpq == pytest.approx(sum(finite) / 4, abs=1e-12)
    else:
        assert math.isnan(ours.vpq)


def test_vpq_rewards_consistent_ids_hand_computed() -> None:
    """One car over two frames; the prediction switches its id between them."""
    gs = np.ones((10, 20), dtype=np.uint8)  # building
    gi = np.zeros((10, 20), dtype=np.int32)
    gs[0:10, 0:10] = 4
    gi[0:10, 0:10] = 1
    ps1, pi1 = gs.copy(), gi.copy()
    pi1[gi == 1] = 7
    ps2, pi2 = gs.copy(), gi.copy()
    pi2[gi == 1] = 8  # id switch
    acc = VPQAccumulator(SMALL, window_sizes=(1, 2))
    acc.add(gs, gi, ps1, pi1)
    acc.add(gs, gi, ps2, pi2)
    r = acc.result()
    k1, k2 = r.per_window
    car1, car2 = k1.per_class[4], k2.per_class[4]
    assert (car1.tp, car1.fp, car1.fn) == (2, 0, 0)
    # k = 2: the 200-px tube overlaps each 100-px predicted tube with IoU exactly 0.5 -> no match
    assert (car2.tp, car2.fp, car2.fn) == (0, 2, 1)
    assert (k1.things.pq, k2.things.pq) == (1.0, 0.0)
    assert k2.stuff.pq == 1.0  # the building tube is one segment across both frames
    assert (k2.per_class[1].tp, k1.per_class[1].tp) == (1, 2)
    assert r.vpq_things == 0.5
    assert r.vpq == pytest.approx(((1.0 + 1.0) / 2 + (0.0 + 1.0) / 2) / 2, abs=1e-15)

    same = VPQAccumulator(SMALL, window_sizes=(1, 2))
    same.add(gs, gi, ps1, pi1)
    same.add(gs, gi, ps1, pi1)
    assert same.result().vpq == 1.0


def test_vpq_windows_do_not_span_sequences() -> None:
    gs = np.zeros((4, 4), dtype=np.uint8)
    gi = np.zeros((4, 4), dtype=np.int32)
    acc = VPQAccumulator(SMALL, window_sizes=(1, 2, 3))
    for seq in ("a", "b"):
        for _ in range(2):
            acc.add(gs, gi, gs, gi, sequence_id=seq)
    r = acc.result()
    assert [w.num_images for w in r.per_window] == [4, 2, 0]
    assert math.isnan(r.vpq)  # no 3-frame window exists
    assert "n/a" in r.to_table()
    assert json.loads(r.to_json())["vpq"] is None


def test_vpq_refuses_bad_window_sizes() -> None:
    for bad in ((), (0, 1), (2, 2)):
        with pytest.raises(ValueError, match="window_sizes"):
            VPQAccumulator(SMALL, window_sizes=bad)


# --------------------------------------------------------------------------- STQ: literal reference port


def _reference_stq(sequences: list[tuple[object, list[dict]]], table: ClassTable) -> dict:
    """deeplab2's STQuality (numpy version), written out with dicts and per-pixel loops."""
    n_cls = len(table)
    things = set(table.thing_ids)
    shift = 16
    conf, gts, preds, inters, res = {}, {}, {}, {}, {}
    for seq_id, frames in sequences:
        conf[seq_id] = np.zeros((n_cls + 1, n_cls + 1), dtype=np.int64)
        gts[seq_id], preds[seq_id], inters[seq_id] = {}, {}, {}
        for f in frames:
            crowd_ids = set(f["crowd"])
            for gs, gi, ps, pi in zip(f["gt_sem"].ravel(), f["gt_inst"].ravel(), f["pred_sem"].ravel(),
                                      f["pred_inst"].ravel()):
                gs, gi, ps, pi = int(gs), int(gi), int(ps), int(pi)
                y_true, y_pred = (gs << shift) + gi, (ps << shift) + pi
                conf[seq_id][n_cls if gs == VOID else gs, n_cls if ps == VOID else ps] += 1
                label = gs in things
                is_crowd = label and (gi == 0 or gi in crowd_ids)
                label = label and not is_crowd
                prediction = ps in things and not is_crowd
                if prediction:
                    preds[seq_id][y_pred] = preds[seq_id].get(y_pred, 0) + 1
                if label:
                    gts[seq_id][y_true] = gts[seq_id].get(y_true, 0) + 1
                if label and prediction:
                    inters[seq_id][(y_true, y_pred)] = inters[seq_id].get((y_true, y_pred), 0) + 1
    aq_sum, tubes, total = {}, {}, np.zeros((n_cls + 1, n_cls + 1), dtype=np.int64)
    for seq_id in conf:
        outer = 0.0
        for g, g_size in gts[seq_id].items():
            inner = 0.0
            for p, p_size in preds[seq_id].items():
                if (g, p) in inters[seq_id]:
                    tpa = inters[seq_id][(g, p)]
                    inner += tpa * (tpa / (tpa + (p_size - tpa) + (g_size - tpa)))
            outer += 1.0 / g_size * inner
        aq_sum[seq_id], tubes[seq_id] = outer, len(gts[seq_id])
        c = conf[seq_id].copy()
        c[n_cls, :] = 0
        total += c
        res[seq_id] = {"aq": outer / max(len(gts[seq_id]), 1e-15), "iou": _iou_of(c)}
    aq = sum(aq_sum.values()) / max(sum(tubes.values()), 1e-15)
    iou = _iou_of(total)
    return {"stq": math.sqrt(aq * iou), "aq": aq, "iou": iou, "per_seq": res}


def _iou_of(c: np.ndarray) -> float:
    inter = np.diag(c)
    union = inter + (c.sum(0) - inter) + (c.sum(1) - inter)
    return float(np.sum(inter / np.maximum(union, 1e-15)) / np.count_nonzero(union))


@pytest.mark.parametrize("seed", range(8))
def test_stq_agrees_with_the_reference_formula(seed: int) -> None:
    rng = np.random.default_rng(900 + seed)
    table = SMALL if seed % 2 else CITYSCAPES
    sequences = [(f"seq{s}", _random_sequence(rng, table, int(rng.integers(2, 6)), h=12, w=16))
                 for s in range(int(rng.integers(1, 4)))]
    acc = STQAccumulator(table)
    for seq_id, frames in sequences:
        for f in frames:
            acc.add(f["gt_sem"], f["gt_inst"], f["pred_sem"], f["pred_inst"], sequence_id=seq_id,
                    gt_crowd_ids=f["crowd"])
    ours = acc.result()
    ref = _reference_stq(sequences, table)
    assert (ours.stq, ours.aq, ours.sq) == pytest.approx((ref["stq"], ref["aq"], ref["iou"]), abs=1e-12)
    assert [s.sequence_id for s in ours.per_sequence] == [s for s, _ in sequences]
    for s in ours.per_sequence:
        r = ref["per_seq"][s.sequence_id]
        assert (s.aq, s.sq) == pytest.approx((r["aq"], r["iou"]), abs=1e-12)
        assert s.stq == pytest.approx(math.sqrt(r["aq"] * r["iou"]), abs=1e-12)
    assert 0.0 < ours.aq < 1.0  # the sequences do exercise partial association


# --------------------------------------------------------------------------- STQ: hand-computed (STEP paper examples)


def _row(cls: list[int], ins: list[int]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([cls], dtype=np.uint8), np.array([ins], dtype=np.int32)


@pytest.mark.parametrize("gt, pred, expected", [
    # one 5-pixel car track; AQ = 1/5 * sum_p TPA * IoU(g, p)
    (([0] * 5, [1] * 5), ([0] * 5, [1] * 5), (1.0, 1.0, 1.0)),
    (([0] * 5, [1] * 5), ([0] * 5, [1, 1, 2, 2, 2]), (math.sqrt(0.52), 0.52, 1.0)),  # (2*2/5 + 3*3/5)/5
    (([0] * 5, [1] * 5), ([0] * 5, [1, 2, 2, 2, 2]), (math.sqrt(0.68), 0.68, 1.0)),  # (1/5 + 16/5)/5
    (([0] * 5, [1] * 5), ([0] * 5, [1, 2, 3, 4, 5]), (math.sqrt(0.2), 0.2, 1.0)),  # 5 * (1/5)/5
    (([0] * 5, [1] * 5), ([0] * 5, [1, 2, 1, 2, 2]), (math.sqrt(0.52), 0.52, 1.0)),  # association ignores where
    # first pixel predicted sky: car IoU 4/5, sky IoU 0 -> SQ 0.4; AQ = 4*(4/5)/5
    (([0] * 5, [1] * 5), ([1, 0, 0, 0, 0], [0, 1, 1, 1, 1]), (math.sqrt(0.64 * 0.4), 0.64, 0.4)),
    # first pixel is crowd (car, instance 0): ignored by AQ, still a car pixel for SQ
    (([0] * 6, [0, 1, 1, 1, 1, 1]), ([0] * 6, [1] * 6), (1.0, 1.0, 1.0)),
    (([0] * 6, [0, 1, 1, 1, 1, 1]), ([0] * 6, [2, 2, 2, 2, 1, 1]), (math.sqrt(0.52), 0.52, 1.0)),
    # track 2 keeps only its non-crowd pixel; car IoU 5/6, sky 0/1 -> SQ 5/12; AQ = (1/5 + 9/5)/5
    (([0] * 6, [0, 1, 1, 1, 1, 1]), ([0, 0, 1, 0, 0, 0], [2, 2, 0, 1, 1, 1]), (math.sqrt(0.4 * 5 / 12), 0.4, 5 / 12)),
    # first pixel is sky in the ground truth: the 5-px prediction counts 4 TPA -> AQ 4*(4/5)/4; SQ (4/5 + 0)/2
    (([1, 0, 0, 0, 0], [0, 1, 1, 1, 1]), ([0] * 5, [1] * 5), (math.sqrt(0.8 * 0.4), 0.8, 0.4)),
    (([1, 0, 0, 0, 0], [0, 1, 1, 1, 1]), ([0] * 5, [2, 2, 2, 1, 1]), (math.sqrt(0.45 * 0.4), 0.45, 0.4)),
    (([1, 0, 0, 0, 0], [0, 1, 1, 1, 1]), ([0, 0, 1, 0, 0], [2, 2, 0, 1, 1]), (0.3, 0.3, 0.3)),
])
def test_stq_step_paper_examples(gt, pred, expected) -> None:
    acc = STQAccumulator(CAR_SKY)
    acc.add(*_row(*gt), *_row(*pred), sequence_id=1)
    r = acc.result()
    assert (r.stq, r.aq, r.sq) == pytest.approx(expected, abs=1e-12)
    assert (r.per_sequence[0].stq, r.per_sequence[0].num_frames) == (pytest.approx(expected[0], abs=1e-12), 1)


def test_stq_two_frames_and_two_sequences_hand_computed() -> None:
    # Sequence a: a 4-px car in two frames; prediction id 5 then 6 -> TPA 4 each, |g| 8, |p| 4:
    #   AQ_a = (4 * 4/8 + 4 * 4/8) / 8 = 0.5. Sequence b: perfect, AQ_b = 1.
    #   Pooled: (0.5 * 1 tube + 1.0 * 1 tube) / 2 tubes = 0.75.
    gs, gi = _row([0, 0, 0, 0, 1, 1], [3, 3, 3, 3, 0, 0])
    acc = STQAccumulator(CAR_SKY)
    acc.add(gs, gi, gs, np.where(gi > 0, 5, 0).astype(np.int32), sequence_id="a")
    acc.add(gs, gi, gs, np.where(gi > 0, 6, 0).astype(np.int32), sequence_id="a")
    acc.add(gs, gi, gs, gi, sequence_id="b")
    r = acc.result()
    assert [(s.sequence_id, s.aq, s.sq, s.num_frames, s.num_gt_tracks) for s in r.per_sequence] == [
        ("a", 0.5, 1.0, 2, 1), ("b", 1.0, 1.0, 1, 1)]
    assert (r.aq, r.sq, r.stq) == (0.75, 1.0, math.sqrt(0.75))


def test_stq_void_quirk_of_the_reference() -> None:
    """Pixels predicted void on a car: a car miss, and the void column joins the mean with IoU 0."""
    gs, gi = _row([0, 0, 0, 0, 1], [1, 1, 1, 1, 0])
    ps = np.array([[0, 0, 0, VOID, 1]], dtype=np.uint8)
    acc = STQAccumulator(CAR_SKY)
    acc.add(gs, gi, ps, gi)
    r = acc.result()
    # car 3/4, sky 1/1, void column 0/1 -> (0.75 + 1 + 0) / 3; AQ: TPA 3, |g| 4, |p| 3 -> 3 * 3/4 / 4
    assert r.sq == pytest.approx(1.75 / 3, abs=1e-15)
    assert r.aq == pytest.approx(9 / 16, abs=1e-15)
    # void ground truth is ignored entirely
    acc = STQAccumulator(CAR_SKY)
    gs_void = np.array([[0, 0, 0, 0, VOID]], dtype=np.uint8)
    acc.add(gs_void, gi, gs, gi)
    assert acc.result().sq == 1.0


def test_stq_refuses_bad_input_and_renders() -> None:
    acc = STQAccumulator(CAR_SKY)
    gs, gi = _row([0, 1], [1, 0])
    with pytest.raises(ValueError, match="class id 2"):
        acc.add(gs, gi, gs + 1, gi)
    with pytest.raises(ValueError, match="differ in shape"):
        acc.add(gs, gi, gs[:, :1], gi[:, :1])
    acc.add(gs, gi, gs, gi, sequence_id="x")
    r = acc.result()
    assert "x" in r.to_table()
    assert json.loads(r.to_json())["per_sequence"][0]["sequence_id"] == "x"
    empty = STQAccumulator(CAR_SKY).result()
    assert math.isnan(empty.stq) and empty.per_sequence == ()
