"""PQ and mIoU: exact hand-computed cases, and cross-checks against panopticapi and cityscapesscripts.

The panopticapi check writes every case in COCO panoptic format (PNG with the
RGB id encoding + JSON, built here with numpy and PIL, independent of our
segment logic) and compares all / things / stuff and per-class numbers to 1e-9.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from panoptic_ros.classes import CITYSCAPES, VOID, ClassInfo, ClassTable
from panoptic_ros.metrics.pq import AreaRow, MIoUAccumulator, PQAccumulator, PQResult, area_bin_labels

panopticapi_eval = pytest.importorskip("panopticapi.evaluation")

SMALL = ClassTable((
    ClassInfo(0, "road", 7, False, (128, 64, 128)),
    ClassInfo(1, "building", 11, False, (70, 70, 70)),
    ClassInfo(2, "sky", 23, False, (70, 130, 180)),
    ClassInfo(3, "person", 24, True, (220, 20, 60)),
    ClassInfo(4, "car", 26, True, (0, 0, 142)),
))


# --------------------------------------------------------------------------- COCO panoptic writer (test-only)


def _segments(sem: np.ndarray, inst: np.ndarray, table: ClassTable, crowd_ids: set[int], is_gt: bool,
              rng: np.random.Generator) -> tuple[np.ndarray, list[dict]]:
    """Per-pixel COCO segment ids and segments_info, one plain loop per distinct label.

    Stuff: one segment per class. Things: one per (class, instance). Ground-truth
    thing pixels with instance 0 or a crowd id: one crowd segment per class.
    Prediction thing pixels with instance 0: one ordinary segment per class.
    """
    thing = set(table.thing_ids)
    seg = np.zeros(sem.shape, dtype=np.int64)
    groups: dict[tuple, np.ndarray] = {}
    for c in np.unique(sem):
        c = int(c)
        if c == VOID:
            continue
        in_class = sem == c
        if c not in thing:
            groups[(c, "stuff")] = in_class
            continue
        for i in np.unique(inst[in_class]):
            i = int(i)
            mask = in_class & (inst == i)
            if is_gt and (i == 0 or i in crowd_ids):
                key = (c, "crowd")
                groups[key] = groups.get(key, np.zeros_like(mask)) | mask
            else:
                groups[(c, i)] = mask
    ids = rng.choice(np.arange(1, 1 << 24), size=len(groups), replace=False)
    info = []
    for seg_id, (key, mask) in zip(ids, groups.items()):
        seg[mask] = seg_id
        info.append({"id": int(seg_id), "category_id": key[0], "iscrowd": int(key[1] == "crowd"),
                     "area": int(mask.sum())})
    return seg, info


def _write_png(path: Path, seg: np.ndarray) -> None:
    rgb = np.stack([seg % 256, seg // 256 % 256, seg // 65536], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(path)


def _write_case(root: Path, images: list[dict], table: ClassTable, seed: int) -> tuple[Path, Path, dict]:
    rng = np.random.default_rng(seed)
    categories = [{"id": c.train_id, "name": c.name, "isthing": int(c.is_thing), "color": list(c.color_rgb)}
                  for c in table.classes]
    gt_json = {"images": [], "annotations": [], "categories": categories}
    pred_json = {"annotations": []}
    (root / "gt").mkdir(parents=True)
    (root / "pred").mkdir(parents=True)
    for k, im in enumerate(images):
        name = f"img{k:03d}.png"
        gseg, ginfo = _segments(im["gt_sem"], im["gt_inst"], table, set(im["crowd"]), True, rng)
        pseg, pinfo = _segments(im["pred_sem"], im["pred_inst"], table, set(), False, rng)
        _write_png(root / "gt" / name, gseg)
        _write_png(root / "pred" / name, pseg)
        gt_json["images"].append({"id": k, "file_name": name})
        gt_json["annotations"].append({"image_id": k, "file_name": name, "segments_info": ginfo})
        pred_json["annotations"].append({"image_id": k, "file_name": name, "segments_info": pinfo})
    gt_path, pred_path = root / "gt.json", root / "pred.json"
    gt_path.write_text(json.dumps(gt_json))
    pred_path.write_text(json.dumps(pred_json))
    return gt_path, pred_path, {c["id"]: c for c in categories}


def _panopticapi_single_core(root: Path, images: list[dict], table: ClassTable, seed: int):
    """panopticapi's own per-image loop and averaging, without its process pool."""
    gt_path, pred_path, categories = _write_case(root, images, table, seed)
    gt = json.loads(gt_path.read_text())
    pred = {a["image_id"]: a for a in json.loads(pred_path.read_text())["annotations"]}
    pairs = [(a, pred[a["image_id"]]) for a in gt["annotations"]]
    stat = panopticapi_eval.pq_compute_single_core(0, pairs, str(root / "gt"), str(root / "pred"), categories)
    out = {}
    for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        try:
            out[name], per_class = stat.pq_average(categories, isthing=isthing)
        except ZeroDivisionError:  # panopticapi divides by n = 0 when a group has no class
            out[name], per_class = {"pq": math.nan, "sq": math.nan, "rq": math.nan, "n": 0}, {}
        if name == "All":
            out["per_class"] = per_class
    return out, stat


def _ours(images: list[dict], table: ClassTable) -> PQResult:
    acc = PQAccumulator(table)
    for im in images:
        acc.add(im["gt_sem"], im["gt_inst"], im["pred_sem"], im["pred_inst"], gt_crowd_ids=im["crowd"])
    return acc.result()


def _assert_agree(ours: PQResult, ref: dict, stat, table: ClassTable) -> None:
    for name, group in (("All", ours.all), ("Things", ours.things), ("Stuff", ours.stuff)):
        r = ref[name]
        assert group.n == r["n"], name
        for f in ("pq", "sq", "rq"):
            if r["n"] == 0:
                assert math.isnan(getattr(group, f))
            else:
                assert getattr(group, f) == pytest.approx(r[f], abs=1e-9), (name, f)
    for c in ours.per_class:
        s = stat[c.class_id]
        assert (c.tp, c.fp, c.fn) == (s.tp, s.fp, s.fn), c.name
        assert c.iou_sum == pytest.approx(s.iou, abs=1e-9), c.name
        if c.tp + c.fp + c.fn:
            r = ref["per_class"][c.class_id]
            assert (c.pq, c.sq, c.rq) == pytest.approx((r["pq"], r["sq"], r["rq"]), abs=1e-9), c.name
        else:
            assert math.isnan(c.pq) and math.isnan(c.sq) and math.isnan(c.rq)
        if ours.by_area is not None:  # the by-area counts are a split of panopticapi's own counts
            area = ours.by_area.per_class.get(c.name, AreaRow((0,), (0,), (0,)))
            assert (sum(area.matched), sum(area.gt) - sum(area.matched), sum(area.fp)) == (s.tp, s.fn, s.fp), c.name


# --------------------------------------------------------------------------- random cases


def _random_image(rng: np.random.Generator, table: ClassTable, h: int = 32, w: int = 48,
                  big_ids: bool = False) -> dict:
    stuff, things = table.stuff_ids, table.thing_ids
    gt_sem = np.full((h, w), rng.choice(stuff), dtype=np.uint8)
    gt_inst = np.zeros((h, w), dtype=np.int32)
    for _ in range(rng.integers(1, 5)):  # stuff regions
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        gt_sem[y0:y0 + rng.integers(3, h), x0:x0 + rng.integers(3, w)] = rng.choice(stuff)
    next_id = int(rng.integers(1, 60000)) if big_ids else 1
    crowd: list[int] = []
    for _ in range(rng.integers(1, 8)):  # things, later ones occlude earlier ones
        y0, x0 = rng.integers(0, h - 3), rng.integers(0, w - 3)
        hh, ww = rng.integers(3, 14), rng.integers(3, 18)
        c = rng.choice(things)
        kind = rng.random()
        if kind < 0.1:
            iid = 0  # crowd by convention (thing pixel without an instance)
        else:
            iid = next_id
            next_id += int(rng.integers(1, 5))
            if kind < 0.2:
                crowd.append(iid)
        gt_sem[y0:y0 + hh, x0:x0 + ww] = c
        gt_inst[y0:y0 + hh, x0:x0 + ww] = iid
    for _ in range(rng.integers(0, 3)):  # void regions
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        gt_sem[y0:y0 + rng.integers(1, 8), x0:x0 + rng.integers(1, 10)] = VOID
        gt_inst[gt_sem == VOID] = rng.integers(0, 3)  # instance ids on void are ignored

    pred_sem, pred_inst = gt_sem.copy(), gt_inst.copy()
    pred_sem[pred_sem == VOID] = rng.choice(stuff)
    pred_inst[gt_sem == VOID] = 0
    remap = {}
    for iid in np.unique(gt_inst[np.isin(gt_sem, things)]):  # perturb each thing
        m = (gt_inst == iid) & np.isin(gt_sem, things)
        r = rng.random()
        new_id = int(rng.integers(1, 200)) if not big_ids else int(rng.integers(1, 1 << 22))
        while new_id in remap.values():
            new_id += 1
        remap[iid] = new_id
        if r < 0.15:  # missed: becomes background
            pred_sem[m] = rng.choice(stuff)
            pred_inst[m] = 0
            continue
        if r < 0.3:  # shifted
            ys, xs = np.nonzero(m)
            dy, dx = rng.integers(-3, 4, size=2)
            pred_sem[m] = rng.choice(stuff)
            pred_inst[m] = 0
            ys, xs = np.clip(ys + dy, 0, h - 1), np.clip(xs + dx, 0, w - 1)
            pred_sem[ys, xs] = gt_sem[m][0]
            pred_inst[ys, xs] = new_id
            continue
        pred_inst[m] = new_id
        if r < 0.4:  # class confusion
            pred_sem[m] = rng.choice(things)
        elif r < 0.5:  # split in two
            ys, xs = np.nonzero(m)
            half = xs > np.median(xs)
            pred_inst[ys[half], xs[half]] = new_id + 100000
        elif r < 0.55:  # thing predicted without an instance id
            pred_inst[m] = 0
    for _ in range(rng.integers(0, 3)):  # extra (false positive) things
        y0, x0 = rng.integers(0, h - 2), rng.integers(0, w - 2)
        pred_sem[y0:y0 + rng.integers(2, 8), x0:x0 + rng.integers(2, 8)] = rng.choice(things)
        pred_inst[y0:y0 + 8, x0:x0 + 8] = np.where(np.isin(pred_sem[y0:y0 + 8, x0:x0 + 8], things),
                                                   int(rng.integers(300000, 400000)), 0)
    if rng.random() < 0.5:  # predicted void
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        pred_sem[y0:y0 + rng.integers(1, 10), x0:x0 + rng.integers(1, 10)] = VOID
    noise = rng.random((h, w)) < 0.05  # pixel noise: stuff class swaps
    pred_sem[noise & ~np.isin(pred_sem, things)] = rng.choice(stuff)
    pred_inst[~np.isin(pred_sem, things)] = np.where(rng.random() < 0.5, 0, pred_inst[~np.isin(pred_sem, things)])
    return {"gt_sem": gt_sem, "gt_inst": gt_inst, "pred_sem": pred_sem, "pred_inst": pred_inst, "crowd": crowd}


@pytest.mark.parametrize("seed", range(24))
def test_random_cases_agree_with_panopticapi(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    table = SMALL if seed % 3 else CITYSCAPES
    images = [_random_image(rng, table, big_ids=seed % 4 == 1) for _ in range(int(rng.integers(1, 5)))]
    ref, stat = _panopticapi_single_core(tmp_path, images, table, seed)
    ours = _ours(images, table)
    assert ours.by_area is not None
    _assert_agree(ours, ref, stat, table)
    assert ours.num_images == len(images)


def test_random_cases_exercise_every_rule(tmp_path: Path) -> None:
    """The generator yields TP, FP and FN of every thing class, crowd and void (else the cross-check is weak)."""
    rng = np.random.default_rng(7)
    images = [_random_image(rng, SMALL) for _ in range(30)]
    ours = _ours(images, SMALL)
    things = [c for c in ours.per_class if c.is_thing]
    assert all(c.tp > 0 and c.fp > 0 and c.fn > 0 for c in things)
    assert sum(len(im["crowd"]) for im in images) > 0
    assert any((im["gt_sem"] == VOID).any() for im in images)


def test_full_pq_compute_agrees(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """panopticapi's top-level pq_compute (files, JSON, its process pool) on a multi-image case."""
    rng = np.random.default_rng(42)
    images = [_random_image(rng, CITYSCAPES) for _ in range(6)]
    gt_path, pred_path, _ = _write_case(tmp_path, images, CITYSCAPES, 42)
    ref = panopticapi_eval.pq_compute(str(gt_path), str(pred_path), str(tmp_path / "gt"), str(tmp_path / "pred"))
    ours = _ours(images, CITYSCAPES)
    for name, group in (("All", ours.all), ("Things", ours.things), ("Stuff", ours.stuff)):
        assert (group.pq, group.sq, group.rq) == pytest.approx(
            (ref[name]["pq"], ref[name]["sq"], ref[name]["rq"]), abs=1e-9)
        assert group.n == ref[name]["n"]
    capsys.readouterr()


# --------------------------------------------------------------------------- exact hand-computed cases


def _canvas(h: int = 20, w: int = 20) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((h, w), dtype=np.uint8), np.zeros((h, w), dtype=np.int32)


def test_perfect_prediction() -> None:
    sem, inst = _canvas()
    sem[:, 10:] = 1
    sem[2:6, 2:6] = 4
    inst[2:6, 2:6] = 7
    acc = PQAccumulator(SMALL)
    acc.add(sem, inst, sem, inst)
    r = acc.result()
    assert (r.all.pq, r.all.sq, r.all.rq, r.all.n) == (1.0, 1.0, 1.0, 3)
    assert (r.things.n, r.stuff.n) == (1, 2)
    car = r.per_class[4]
    assert (car.tp, car.fp, car.fn, car.iou_sum) == (1, 0, 0, 1.0)
    assert math.isnan(r.per_class[3].pq)  # person never occurs: left out
    assert r.miou is not None and r.miou.miou == 1.0


def test_iou_above_half_matches_and_exactly_half_does_not() -> None:
    sem, inst = _canvas()
    sem[0:10, 0:10] = 4  # gt car: 100 px
    inst[0:10, 0:10] = 1
    psem, pinst = _canvas()
    psem[0:10, 2:12] = 4  # 80 px overlap, union 120: IoU 2/3
    pinst[0:10, 2:12] = 5
    acc = PQAccumulator(SMALL)
    acc.add(sem, inst, psem, pinst)
    car = acc.result().per_class[4]
    assert (car.tp, car.fp, car.fn) == (1, 0, 0)
    assert car.pq == pytest.approx(2 / 3, abs=1e-15)
    assert car.sq == pytest.approx(2 / 3, abs=1e-15)
    assert car.rq == 1.0

    psem, pinst = _canvas()
    psem[0:10, 0:5] = 4  # 50 px inside the gt: IoU exactly 0.5 -> no match
    pinst[0:10, 0:5] = 5
    acc = PQAccumulator(SMALL)
    acc.add(sem, inst, psem, pinst)
    car = acc.result().per_class[4]
    assert (car.tp, car.fp, car.fn, car.pq) == (0, 1, 1, 0.0)


def test_void_is_subtracted_from_the_union() -> None:
    sem, inst = _canvas()
    sem[0:10, 0:10] = 4  # gt car 100 px
    inst[0:10, 0:10] = 1
    sem[0:10, 10:20] = VOID
    psem, pinst = _canvas()
    psem[0:10, 3:20] = 4  # 70 px on the car, 100 px on void: IoU 70 / (170 + 100 - 70 - 100) = 0.7
    pinst[0:10, 3:20] = 2
    acc = PQAccumulator(SMALL)
    acc.add(sem, inst, psem, pinst)
    car = acc.result().per_class[4]
    assert (car.tp, car.fp, car.fn) == (1, 0, 0)
    assert car.iou_sum == pytest.approx(0.7, abs=1e-15)


def test_unmatched_prediction_on_crowd_or_void_is_not_a_false_positive() -> None:
    sem, inst = _canvas()
    sem[0:10, 0:10] = 4  # crowd of cars (instance 0)
    sem[10:20, 0:4] = VOID
    # 1) mostly on crowd (60 of 100 px) -> ignored
    psem, pinst = _canvas()
    psem[0:10, 4:14] = 4
    pinst[0:10, 4:14] = 3
    acc = PQAccumulator(SMALL)
    acc.add(sem, inst, psem, pinst)
    assert (acc.result().per_class[4].fp, acc.result().per_class[4].fn) == (0, 0)
    # 2) exactly half on crowd -> a false positive (the rule is "more than half")
    psem, pinst = _canvas()
    psem[0:10, 5:15] = 4
    pinst[0:10, 5:15] = 3
    acc = PQAccumulator(SMALL)
    acc.add(sem, inst, psem, pinst)
    assert acc.result().per_class[4].fp == 1
    # 3) crowd of another class does not absorb it
    psem[0:10, 5:15] = 3
    acc = PQAccumulator(SMALL)
    acc.add(sem, inst, psem, pinst)
    assert acc.result().per_class[3].fp == 1
    # 4) crowd and void together: 30 px crowd + 24 px void of 60 -> ignored
    psem, pinst = _canvas()
    psem[7:13, 0:10] = 4  # rows 7-9 on crowd (30 px), rows 10-12 cols 0-3 void (12 px) -> 42/60 > 0.5
    pinst[7:13, 0:10] = 9
    acc = PQAccumulator(SMALL)
    acc.add(sem, inst, psem, pinst)
    assert acc.result().per_class[4].fp == 0


def test_explicit_crowd_ids_and_crowd_never_counts_as_false_negative() -> None:
    sem, inst = _canvas()
    sem[0:10, 0:10] = 3
    inst[0:10, 0:10] = 42
    psem, pinst = _canvas()
    acc = PQAccumulator(SMALL)
    acc.add(sem, inst, psem, pinst, gt_crowd_ids=[42])
    assert acc.result().per_class[3].fn == 0
    acc = PQAccumulator(SMALL)
    acc.add(sem, inst, psem, pinst)
    assert acc.result().per_class[3].fn == 1


def test_stuff_is_one_segment_per_class_and_instance_ids_on_stuff_are_ignored() -> None:
    sem, inst = _canvas()
    sem[:, 10:] = 2
    psem = sem.copy()
    pinst = np.arange(400, dtype=np.int32).reshape(20, 20)  # junk ids on stuff
    acc = PQAccumulator(SMALL)
    acc.add(sem, inst, psem, pinst)
    r = acc.result()
    assert (r.per_class[0].tp, r.per_class[2].tp, r.all.pq) == (1, 1, 1.0)


def test_streaming_sums_counts_over_images() -> None:
    sem, inst = _canvas()
    sem[0:10, 0:10] = 4
    inst[0:10, 0:10] = 1
    empty_sem, empty_inst = _canvas()
    acc = PQAccumulator(SMALL)
    acc.add(sem, inst, sem, inst)  # TP
    acc.add(sem, inst, empty_sem, empty_inst)  # FN (road predicted)
    r = acc.result()
    car = r.per_class[4]
    assert (car.tp, car.fp, car.fn) == (1, 0, 1)
    assert car.pq == pytest.approx(1 / 1.5, abs=1e-15)
    assert r.num_images == 2


def test_bad_input_is_refused_with_the_value_named() -> None:
    sem, inst = _canvas()
    acc = PQAccumulator(SMALL)
    bad = sem.copy()
    bad[0, 0] = 7
    with pytest.raises(ValueError, match="class id 7"):
        acc.add(bad, inst, sem, inst)
    with pytest.raises(ValueError, match="differ in shape"):
        acc.add(sem, inst, sem[:10], inst[:10])
    with pytest.raises(ValueError, match="id -3"):
        acc.add(sem, inst, sem, np.full_like(inst, -3))
    with pytest.raises(ValueError, match="dtype float"):
        acc.add(sem.astype(np.float32), inst, sem, inst)
    with pytest.raises(ValueError, match="2-D"):
        acc.add(sem[None], inst[None], sem[None], inst[None])
    with pytest.raises(ValueError, match="positive"):
        acc.add(sem, inst, sem, inst, gt_crowd_ids=[0])
    with pytest.raises(ValueError, match="class id 300"):
        acc.add(sem.astype(np.int32) + 300, inst, sem, inst)


def test_segments_are_counted_by_area() -> None:
    """Recall by segment area: ground truth binned by its area, false positives by theirs."""
    sem, inst = _canvas(40, 40)  # road, 1600 px
    sem[0:4, 0:4], inst[0:4, 0:4] = 4, 1  # car, 16 px (< 64): found
    sem[10:20, 0:10], inst[10:20, 0:10] = 4, 2  # car, 100 px (64-256): missed
    sem[20:40, 20:40], inst[20:40, 20:40] = 3, 3  # person, 400 px (256-1024): found
    psem, pinst = sem.copy(), inst.copy()
    psem[10:20, 0:10], pinst[10:20, 0:10] = 0, 0  # the missed car is road
    psem[0:8, 20:30], pinst[0:8, 20:30] = 4, 9  # a car that is not there, 80 px (64-256)
    acc = PQAccumulator(SMALL)
    acc.add(sem, inst, psem, pinst)
    r = acc.result()
    area = r.by_area
    assert area.edges_px == (64, 256, 1024, 4096, 16384)
    assert area.per_class["car"] == AreaRow(gt=(1, 1, 0, 0, 0, 0), matched=(1, 0, 0, 0, 0, 0), fp=(0, 1, 0, 0, 0, 0))
    assert area.per_class["car"].recall[:2] == (1.0, 0.0) and math.isnan(area.per_class["car"].recall[2])
    assert area.per_class["person"].matched == (0, 0, 1, 0, 0, 0)
    assert area.per_class["road"].gt == (0, 0, 0, 1, 0, 0)  # 1600 - 16 - 100 - 400 = 1084 px
    assert area.things.gt == (1, 1, 1, 0, 0, 0) and area.things.fp == (0, 1, 0, 0, 0, 0)
    assert set(area.per_class) == {"road", "person", "car"}
    as_json = json.loads(r.to_json())["by_area"]
    assert as_json["per_class"]["car"]["recall"] == [1.0, 0.0, None, None, None, None]
    assert as_json["things"]["gt"] == [1, 1, 1, 0, 0, 0] and as_json["edges_px"] == [64, 256, 1024, 4096, 16384]
    assert area_bin_labels() == ["<64", "64-256", "256-1024", "1024-4096", "4096-16384", ">=16384"]
    merged = PQAccumulator(SMALL)
    merged.merge(acc)
    merged.merge(acc)
    assert merged.result().by_area.per_class["car"].gt == (2, 2, 0, 0, 0, 0)


def test_result_renders_as_table_and_json() -> None:
    sem, inst = _canvas()
    sem[0:10, 0:10] = 4
    inst[0:10, 0:10] = 1
    acc = PQAccumulator(SMALL)
    acc.add(sem, inst, sem, inst)
    r = acc.result()
    table = r.to_table()
    assert "Things" in table and "car" in table and "100.0" in table and "n/a" in table
    d = json.loads(r.to_json())
    assert d["all"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 2}
    assert d["per_class"][3]["pq"] is None  # person: no segments -> null, not NaN
    assert d["miou"]["miou"] == 1.0


# --------------------------------------------------------------------------- mIoU


def test_miou_hand_computed() -> None:
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, VOID]], dtype=np.uint8)
    pred = np.array([[0, 1, 1, VOID], [0, 0, 1, 2]], dtype=np.uint8)
    acc = MIoUAccumulator(SMALL)
    acc.add(gt, pred)
    r = acc.result()
    # road: tp 3, gt 4, pred 3 -> 3/4; building: tp 2, gt 3 (one predicted void), pred 3 -> 2/4;
    # sky predicted only on void gt -> not counted; others absent -> NaN
    assert r.iou[0] == 0.75 and r.iou[1] == 0.5
    assert all(math.isnan(v) for v in r.iou[2:])
    assert r.miou == 0.625
    assert r.confusion[1, len(SMALL)] == 1  # the void prediction on building
    # road: 1 of its 4 pixels went to building (25 %); building: 1 of 3 to void (33 %)
    assert r.top_confusions() == (("building", "void", 1 / 3), ("road", "building", 0.25))
    assert r.top_confusions(k=1) == (("building", "void", 1 / 3),)
    assert r.top_confusions(min_share=0.3) == (("building", "void", 1 / 3),)
    d = r.to_dict()
    assert d["confusion"]["columns"][-1] == "void" and d["confusion"]["pixels"][0][:2] == [3, 1]
    assert d["top_confusions"][1] == {"gt": "road", "pred": "building", "share": 0.25}


def test_miou_agrees_with_cityscapesscripts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ev = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
    monkeypatch.setattr(ev.args, "evalInstLevelScore", False)
    monkeypatch.setattr(ev.args, "evalPixelAccuracy", False)
    monkeypatch.setattr(ev.args, "quiet", True)
    conf = ev.generateMatrix(ev.args)
    to_label = np.zeros(256, dtype=np.uint8)  # train id -> label id; void -> 0 (unlabeled)
    for c in CITYSCAPES.classes:
        to_label[c.train_id] = c.label_id
    rng = np.random.default_rng(3)
    ours = MIoUAccumulator(CITYSCAPES)
    via_pq = PQAccumulator(CITYSCAPES)  # its mIoU comes from the segment overlaps, not from the pixels
    for k in range(4):
        im = _random_image(rng, CITYSCAPES)
        gt, pred = im["gt_sem"], im["pred_sem"]
        ours.add(gt, pred)
        via_pq.add(gt, im["gt_inst"], pred, im["pred_inst"])
        Image.fromarray(to_label[gt]).save(tmp_path / f"gt{k}_labelIds.png")
        Image.fromarray(to_label[pred]).save(tmp_path / f"pred{k}.png")
        ev.evaluatePair(str(tmp_path / f"pred{k}.png"), str(tmp_path / f"gt{k}_labelIds.png"), conf, {}, {}, ev.args)
    scores = {c.name: ev.getIouScoreForLabel(c.label_id, conf, ev.args) for c in CITYSCAPES.classes}
    r = ours.result()
    for c in CITYSCAPES.classes:
        ref = scores[c.name]
        if math.isnan(ref):
            assert math.isnan(r.iou[c.train_id]), c.name
        else:
            assert r.iou[c.train_id] == pytest.approx(ref, abs=1e-12), c.name
    assert r.miou == pytest.approx(ev.getScoreAverage(scores, ev.args), abs=1e-12)
    from_pq = via_pq.result().miou
    assert from_pq is not None and np.array_equal(from_pq.confusion, r.confusion)


# --------------------------------------------------------------------------- speed


# --------------------------------------------------------------------------- bootstrap intervals


def random_unit_counts(rng: np.random.Generator, units: int, classes: int = 6) -> list:
    from panoptic_ros.metrics.pq import PQCounts

    out = []
    for _ in range(units):
        tp = rng.integers(0, 6, classes)
        tp[0] = 0  # a class that never matches ...
        fn = rng.integers(0, 3, classes)
        fp = rng.integers(0, 3, classes)
        tp[-1] = fp[-1] = fn[-1] = 0  # ... and one that never occurs
        out.append(PQCounts(tp, fp, fn, tp * rng.uniform(0.6, 0.95, classes)))
    return out


def six_class_table() -> ClassTable:
    return ClassTable(tuple(ClassInfo(i, f"c{i}", i, i >= 3, (i, i, i)) for i in range(6)))


def test_a_resample_of_every_unit_once_is_panopticapis_pq() -> None:
    """The vectorised per-resample PQ equals PQResult.from_counts on the summed counts (all, things, stuff)."""
    from panoptic_ros.metrics.pq import PQCounts, _resampled_pq, thing_mask

    rng = np.random.default_rng(5)
    table = six_class_table()
    units = random_unit_counts(rng, 7)
    weights = np.vstack([np.ones(7), rng.integers(0, 3, 7)])  # every unit once; an arbitrary resample
    got = _resampled_pq(units, weights, thing_mask(table))
    for r, w in enumerate(weights):
        total = PQCounts.zeros(6)
        for unit, copies in zip(units, w):
            for _ in range(int(copies)):
                total += unit
        ref = PQResult.from_counts(total, table, num_images=1)
        for group in ("all", "things", "stuff"):
            assert got[group][r] == pytest.approx(getattr(ref, group).pq, abs=1e-12), (r, group)


def test_bootstrap_interval_brackets_pq_is_seeded_and_shrinks_to_a_point_without_spread() -> None:
    from panoptic_ros.metrics.pq import PQCounts, bootstrap_pq, thing_mask

    rng = np.random.default_rng(6)
    table = six_class_table()
    units = random_unit_counts(rng, 12)
    total = PQCounts.zeros(6)
    for u in units:
        total += u
    point = PQResult.from_counts(total, table, 12)
    ci = bootstrap_pq(units, thing_mask(table), resamples=500, seed=1)
    assert ci.units == 12 and ci.resamples == 500 and ci.level == 0.95
    for group in ("all", "things", "stuff"):
        lo, hi = getattr(ci, group)
        assert lo < getattr(point, group).pq < hi, group
    assert bootstrap_pq(units, thing_mask(table), resamples=500, seed=1) == ci
    assert bootstrap_pq(units, thing_mask(table), resamples=500, seed=2) != ci
    same = bootstrap_pq([units[0]] * 5, thing_mask(table), resamples=50)  # identical units: no spread
    one = PQResult.from_counts(units[0], table, 1)
    assert same.all == pytest.approx((one.all.pq, one.all.pq), abs=1e-12)
    with pytest.raises(ValueError, match="at least 2 units"):
        bootstrap_pq(units[:1], thing_mask(table))


def test_paired_difference_is_zero_for_the_same_run_and_signed_for_a_better_one() -> None:
    from panoptic_ros.metrics.pq import PQCounts, bootstrap_pq_difference, thing_mask

    rng = np.random.default_rng(7)
    table = six_class_table()
    base = random_unit_counts(rng, 10)
    mask = thing_mask(table)
    same = bootstrap_pq_difference(base, base, mask, resamples=300)
    assert same.all == (0.0, 0.0) and not same.excludes_zero()
    # Better in every unit: one false negative of class 1 becomes a true positive at IoU 0.9.
    better = []
    for u in base:
        tp, fn, iou = u.tp.copy(), u.fn.copy(), u.iou_sum.copy()
        tp[1], fn[1], iou[1] = tp[1] + 1, max(fn[1] - 1, 0), iou[1] + 0.9
        better.append(PQCounts(tp, u.fp.copy(), fn, iou))
    up = bootstrap_pq_difference(better, base, mask, resamples=300)
    assert up.all[0] > 0 and up.excludes_zero() and up.stuff[0] > 0 and up.things == (0.0, 0.0)
    with pytest.raises(ValueError, match="differ in number"):
        bootstrap_pq_difference(better[:3], base, mask)
