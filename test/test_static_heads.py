"""Fixed-shape proposals and detections (CUDA's default) against torchvision's dynamic RPN / RoI heads."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign, batched_nms

from panoptic_ros.model.evaluation import synthetic_frames
from panoptic_ros.model.predictor import Predictor
from panoptic_ros.model.static_heads import StaticInstanceInference, cluster_nms
from panoptic_ros.pipeline import default_model_path


def random_boxes(g: torch.Generator, n: int) -> torch.Tensor:
    xy = torch.rand((n, 2), generator=g) * 100
    wh = 1 + torch.rand((n, 2), generator=g) * 40
    return torch.cat([xy, xy + wh], 1)


@pytest.mark.parametrize("seed", range(20))
def test_cluster_nms_keeps_exactly_what_greedy_nms_keeps(seed):
    g = torch.Generator().manual_seed(seed)
    b, n = 3, 150
    boxes = torch.stack([random_boxes(g, n) for _ in range(b)])
    scores = torch.rand((b, n), generator=g)
    groups = torch.randint(0, 3, (b, n), generator=g)
    valid = torch.rand((b, n), generator=g) > 0.2
    order, keep, changed = cluster_nms(boxes, scores, groups, valid, 0.5, iterations=n)
    assert not changed.any()
    for i in range(b):
        idx = torch.nonzero(valid[i]).flatten()
        want = idx[batched_nms(boxes[i][idx], scores[i][idx], groups[i][idx], 0.5)]  # best first
        got = order[i][keep[i]]
        assert got.tolist() == want.tolist()


def test_too_few_iterations_are_reported_as_not_converged():
    # A chain: each box suppresses the next, so greedy keeps every other one; one round cannot know.
    boxes = torch.tensor([[[0.0, 0, 10, 10], [1, 0, 11, 10], [2, 0, 12, 10], [3, 0, 13, 10]]])
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6]])
    args = (boxes, scores, torch.zeros((1, 4), dtype=torch.long), torch.ones((1, 4), dtype=torch.bool), 0.75)
    _, keep, changed = cluster_nms(*args, iterations=1)
    assert changed.all()
    _, keep, changed = cluster_nms(*args, iterations=4)
    assert keep.tolist() == [[True, False, True, False]] and not changed.any()


def test_static_pooling_equals_multiscale_roi_align():
    g = torch.Generator().manual_seed(0)
    hw = (256, 512)
    features = [torch.randn((2, 8, hw[0] // s, hw[1] // s), generator=g) for s in (4, 8, 16, 32)]
    boxes = torch.stack([random_boxes(g, 30) * torch.tensor([4.0, 2, 4, 2]) for _ in range(2)])  # all levels
    ref = MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], 7, 2)(dict(zip(["p2", "p3", "p4", "p5"], features)),
                                                             list(boxes), [hw, hw])
    got = StaticInstanceInference(None).pool(features, boxes, hw, 7)
    torch.testing.assert_close(got, ref)


@pytest.fixture(scope="module")
def shipped():
    torch.set_num_threads(2)
    predictor = Predictor.from_file(default_model_path(), device="cpu")
    frames = [f.image for f in synthetic_frames(100_980, 3, 1, 256, 512)]
    return predictor, frames


def test_static_detections_equal_torchvisions_on_the_shipped_model(shipped):
    predictor, frames = shipped
    model = predictor.model
    x = model.normalize(torch.stack([torch.from_numpy(f).permute(2, 0, 1) for f in frames]))
    with torch.no_grad():
        p, _ = model.features(x)
        model.instance_head.roi_heads.score_thresh = 0.05  # the card's: many candidates, a harder NMS
        try:
            dynamic = model.instance_head.predict(p, [(256, 512)] * len(frames))
            static = StaticInstanceInference(model.instance_head).detections(p, (256, 512))
        finally:
            predictor.with_fusion()  # restores the heads' threshold from the fusion settings
    assert static.converged.all()
    assert static.boxes.shape[1] == model.instance_head.roi_heads.detections_per_img
    total = 0
    for d, s in zip(dynamic, static.compacted()):
        total += len(d.boxes)
        assert s.labels.tolist() == d.labels.tolist()
        torch.testing.assert_close(s.boxes, d.boxes)
        torch.testing.assert_close(s.scores, d.scores)
        torch.testing.assert_close(s.mask_logits, d.mask_logits)
        torch.testing.assert_close(s.embeddings, d.embeddings)
    assert total >= 30  # real detections, not empty frames


@pytest.mark.parametrize("fusion_mode", ["batch", "per_instance"])
def test_predictor_with_static_detections_gives_the_dynamic_output(shipped, fusion_mode):
    predictor, frames = shipped
    static = Predictor(predictor.model, predictor.card, device="cpu", detection_mode="static",
                       fusion_mode=fusion_mode)
    assert static.static_detections and not predictor.static_detections
    for a, b in zip(predictor.predict(frames), static.predict(frames)):
        np.testing.assert_array_equal(a.class_map, b.class_map)
        np.testing.assert_array_equal(a.instance_map, b.instance_map)
        np.testing.assert_array_equal(a.classes, b.classes)
        np.testing.assert_allclose(a.scores, b.scores)
        np.testing.assert_allclose(a.embeddings, b.embeddings, atol=1e-6)
    with pytest.raises(ValueError, match="detection_mode must be one of"):
        Predictor(predictor.model, predictor.card, device="cpu", detection_mode="fixed")



def test_odd_frames_and_sizes_in_batch_mode(shipped):
    """Blank frames (the model still sees a bus in black) at the network size and smaller: static detections
    with batched fusion give what the CPU defaults give, also when the heads keep nothing at all."""
    predictor, _ = shipped
    fast = Predictor(predictor.model, predictor.card, device="cpu", detection_mode="static", fusion_mode="batch")
    blank = [np.zeros((256, 512, 3), np.uint8), np.full((200, 300, 3), 128, np.uint8)]
    for threshold in (0.5, 1.0):  # 1.0: (almost) nothing passes the heads' score threshold
        for p in (predictor, fast):
            p.with_fusion(score_threshold=threshold)
        try:
            for a, b, f in zip(predictor.predict(blank), fast.predict(blank), blank):
                assert b.class_map.shape == f.shape[:2]
                np.testing.assert_array_equal(a.class_map, b.class_map)
                np.testing.assert_array_equal(a.instance_map, b.instance_map)
                np.testing.assert_array_equal(a.boxes_xyxy, b.boxes_xyxy)
                np.testing.assert_array_equal(a.areas_px, b.areas_px)
        finally:
            for p in (predictor, fast):
                p.with_fusion(score_threshold=0.5)
