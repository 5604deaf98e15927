"""EfficientPS panoptic fusion on hand-made logits, with exact expected maps.

Every hand-made case runs through both implementations: the per-instance one
(``panoptic_fusion``, what the CPU uses) and the batched one without host
synchronisation (``panoptic_fusion_batch``, what CUDA uses); random cases
check that the two agree.
"""
import math

import numpy as np
import pytest
import torch

from panoptic_ros.model.fusion import VOID, pad_instances, paste_mask_logits, panoptic_fusion, panoptic_fusion_batch

ROAD, SKY, CAR, PERSON = 0, 1, 2, 3
STUFF, THINGS = [ROAD, SKY], [CAR, PERSON]
H, W = 8, 10


def scene_logits() -> torch.Tensor:
    """Sky (rows 0-2) over road (rows 3-7); thing channels low everywhere."""
    logits = torch.full((4, H, W), -5.0)
    logits[SKY, :3] = 5.0
    logits[ROAD, 3:] = 5.0
    return logits


def const_masks(values: list[float], m: int = 4) -> torch.Tensor:
    return torch.stack([torch.full((m, m), v) for v in values]) if values else torch.zeros((0, m, m))


@pytest.fixture(params=["per_instance", "batch"], autouse=True)
def implementation(request, monkeypatch):
    monkeypatch.setitem(IMPLEMENTATION, "name", request.param)
    return request.param


IMPLEMENTATION = {"name": "per_instance"}


def fuse(logits, boxes, classes, scores, masks, **kw):
    kw.setdefault("score_threshold", 0.5)
    kw.setdefault("overlap_threshold", 0.5)
    boxes_t = torch.tensor(np.asarray(boxes, np.float32).reshape(-1, 4))
    classes_t = torch.tensor(classes, dtype=torch.long)
    scores_t = torch.tensor(scores, dtype=torch.float32)
    if IMPLEMENTATION["name"] == "per_instance":
        out = panoptic_fusion(logits, boxes_t, classes_t, scores_t, masks, thing_ids=THINGS, stuff_ids=STUFF, **kw)
        return out.class_map.numpy(), out.instance_map.numpy(), out.keep.tolist()
    return fuse_as_batch(logits, boxes_t, classes_t, scores_t, masks, **kw)


def fuse_as_batch(logits, boxes, classes, scores, masks, **kw):
    """One image through panoptic_fusion_batch, as the second image of a batch next to a different one,
    so that batching cannot leak between images; ``keep`` in output order as panoptic_fusion returns it."""
    other = torch.roll(logits, 1, dims=0)
    pad = 3  # padding rows that must be ignored
    n = len(scores)
    valid = torch.zeros((2, n + pad), dtype=torch.bool)
    valid[1, :n] = True
    out = panoptic_fusion_batch(
        torch.stack([other, logits]),
        pad_instances([boxes.new_zeros((0, 4)), torch.cat([boxes, torch.tensor([[0.0, 0.0, 5.0, 5.0]] * pad)])]),
        pad_instances([classes.new_zeros(0), torch.cat([classes, classes.new_full((pad,), THINGS[0])])]),
        pad_instances([scores.new_zeros(0), torch.cat([scores, scores.new_full((pad,), 0.99)])]),
        pad_instances([masks.new_zeros((0, *masks.shape[1:])),
                       torch.cat([masks, torch.full((pad, *masks.shape[1:]), 9.0)])]),
        valid, thing_ids=THINGS, stuff_ids=STUFF, **kw)
    assert not out.survived[0].any() and not out.survived[1, n:].any()
    rank = out.rank[1, :n]
    keep = [int(i) for i in torch.argsort(rank) if rank[i] > 0]
    assert out.instance_map.dtype == torch.int32 and out.class_map.dtype == torch.uint8
    return out.class_map[1].numpy(), out.instance_map[1].numpy(), keep


def test_single_instance_claims_its_box_where_both_heads_agree():
    logits = scene_logits()
    logits[CAR, 4:8, 2:6] = 8.0  # the semantic head sees a car in the box
    cls, inst, keep = fuse(logits, [[2, 4, 6, 8]], [CAR], [0.9], const_masks([6.0]))
    expected_cls = np.full((H, W), ROAD, np.uint8)
    expected_cls[:3] = SKY
    expected_cls[4:8, 2:6] = CAR
    expected_inst = np.zeros((H, W), np.int32)
    expected_inst[4:8, 2:6] = 1
    np.testing.assert_array_equal(cls, expected_cls)
    np.testing.assert_array_equal(inst, expected_inst)
    assert keep == [0]


def test_fused_logit_formula_decides_against_stuff():
    # Mask says car (a=2), semantic says weakly not car (b=-1): fused = (s(2)+s(-1))*(1) = 1.15 < road 5
    # -> road wins; with road logit lowered to 1.0, the car (1.15) wins.
    a, b = 2.0, -1.0
    fused = (1 / (1 + math.exp(-a)) + 1 / (1 + math.exp(-b))) * (a + b)
    assert 1.0 < fused < 5.0
    logits = scene_logits()
    logits[CAR, 4:8, 2:6] = b
    cls, inst, keep = fuse(logits, [[2, 4, 6, 8]], [CAR], [0.9], const_masks([a]))
    assert (inst == 0).all() and keep == []  # the instance lost every pixel -> dropped
    assert (cls[4:8, 2:6] == ROAD).all()
    logits[ROAD, 4:8, 2:6] = 1.0
    cls, inst, keep = fuse(logits, [[2, 4, 6, 8]], [CAR], [0.9], const_masks([a]))
    assert (inst[4:8, 2:6] == 1).all() and (cls[4:8, 2:6] == CAR).all() and keep == [0]


def test_low_confidence_instances_are_ignored_and_unclaimed_thing_pixels_are_void():
    logits = scene_logits()
    logits[CAR, 4:8, 2:6] = 8.0
    cls, inst, keep = fuse(logits, [[2, 4, 6, 8]], [CAR], [0.3], const_masks([6.0]))
    assert keep == [] and (inst == 0).all()
    # The semantic head says car there but no instance claims it: void, not road.
    assert (cls[4:8, 2:6] == VOID).all()
    assert (cls[:3] == SKY).all() and (cls[3] == ROAD).all()


def test_overlap_filter_drops_an_instance_mostly_inside_a_better_one():
    logits = scene_logits()
    logits[CAR, 3:8, 1:9] = 8.0
    boxes = [[1, 3, 7, 8], [2, 4, 6, 8], [7, 3, 9, 8]]  # #1 lies inside #0; #2 is separate
    cls, inst, keep = fuse(logits, boxes, [CAR, CAR, CAR], [0.9, 0.8, 0.7], const_masks([6.0, 6.0, 6.0]))
    assert keep == [0, 2]
    expected = np.zeros((H, W), np.int32)
    expected[3:8, 1:7] = 1
    expected[3:8, 7:9] = 2
    np.testing.assert_array_equal(inst, expected)
    # With the threshold at 1.0 nothing is filtered for overlap, but #1 still wins no pixel (#0 is
    # better-scored with equal logits), so it is dropped after fusion.
    _, inst, keep = fuse(logits, boxes, [CAR, CAR, CAR], [0.9, 0.8, 0.7], const_masks([6.0, 6.0, 6.0]),
                         overlap_threshold=1.0)
    assert keep == [0, 2]


def test_sorting_by_score_lets_the_better_instance_win_ties():
    logits = scene_logits()
    logits[PERSON, 4:8, 2:6] = 8.0
    logits[CAR, 4:8, 2:6] = 8.0
    # Two instances with the same box and equal fused logits, different classes: the higher score wins.
    cls, inst, keep = fuse(logits, [[2, 4, 6, 8], [2, 4, 6, 8]], [CAR, PERSON], [0.6, 0.95],
                           const_masks([6.0, 6.0]), overlap_threshold=1.0)
    assert keep == [1]  # the car kept no pixels -> dropped
    assert (cls[4:8, 2:6] == PERSON).all() and (inst[4:8, 2:6] == 1).all()


def test_small_stuff_regions_become_void():
    logits = scene_logits()
    logits[SKY, 7, 9] = 20.0  # one stray sky pixel in the road
    cls, _, _ = fuse(logits, np.zeros((0, 4)), [], [], const_masks([]), min_stuff_area=0)
    assert cls[7, 9] == SKY
    cls, _, _ = fuse(logits, np.zeros((0, 4)), [], [], const_masks([]), min_stuff_area=40)
    # Sky has 31 pixels -> below 40 -> void everywhere; road (49) stays.
    assert (cls[:3] == VOID).all() and cls[7, 9] == VOID and (cls[3:7] == ROAD).all()


def test_boxes_partly_outside_the_image_are_clipped():
    logits = scene_logits()
    logits[CAR, 5:8, 7:10] = 8.0
    cls, inst, keep = fuse(logits, [[7, 5, 13, 11]], [CAR], [0.9], const_masks([6.0]))
    assert keep == [0]
    assert (inst[5:8, 7:10] == 1).all() and inst.sum() == 9


def test_paste_places_mask_cells_at_their_pixels():
    # A 2x2 mask over a 4x4 box: each mask cell covers a 2x2 block of pixels.
    m = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    pasted, inside = paste_mask_logits(m, torch.tensor([[2.0, 2.0, 6.0, 6.0]]), 8, 8)
    assert inside[0, 2:6, 2:6].all() and inside[0].sum() == 16
    # Pixel centres at 2.5 and 3.5 of the first mask cell [2, 4): bilinear between cells, exact at
    # the cell centres 3.0 and 5.0 -> pixel 2 samples below the first centre (clamped, border): 1.0.
    assert float(pasted[0, 2, 2]) == pytest.approx(1.0)
    assert float(pasted[0, 5, 5]) == pytest.approx(4.0)
    assert float(pasted[0, 2, 5]) == pytest.approx(2.0)

