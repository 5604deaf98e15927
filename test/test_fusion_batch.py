"""The batched, synchronisation-free fusion (CUDA's) against the per-instance one (the CPU's).

The hand-made exact cases of test_fusion.py run through both; here random
scenes (overlapping boxes, boxes across the border, padding) and the shipped
model's real outputs check that the two agree.
"""
import numpy as np
import pytest
import torch

from panoptic_ros.model.fusion import pad_instances, panoptic_fusion, panoptic_fusion_batch


@pytest.mark.parametrize("seed", range(12))
def test_batch_fusion_agrees_with_per_instance_fusion_on_random_scenes(seed):
    g = torch.Generator().manual_seed(seed)
    c, h, w = 6, 48, 64
    things, stuff = [3, 4, 5], [0, 1, 2]
    images = []
    for _ in range(3):
        n = int(torch.randint(0, 9, (1,), generator=g))
        xy = torch.rand((n, 2), generator=g) * torch.tensor([w - 8.0, h - 8.0]) - 4
        wh = 4 + torch.rand((n, 2), generator=g) * 30
        images.append(dict(
            logits=torch.randn((c, h, w), generator=g) * 4,
            boxes=torch.cat([xy, xy + wh], 1), classes=torch.tensor(things)[torch.randint(0, 3, (n,), generator=g)],
            scores=torch.rand(n, generator=g), masks=torch.randn((n, 7, 7), generator=g) * 5))
    kw = dict(thing_ids=things, stuff_ids=stuff, score_threshold=0.3, overlap_threshold=0.4, min_stuff_area=20)
    valid = pad_instances([torch.ones(len(im["scores"]), dtype=torch.bool) for im in images], False)
    batch = panoptic_fusion_batch(torch.stack([im["logits"] for im in images]),
                                  pad_instances([im["boxes"] for im in images]),
                                  pad_instances([im["classes"] for im in images]),
                                  pad_instances([im["scores"] for im in images]),
                                  pad_instances([im["masks"] for im in images]), valid, **kw)
    for i, im in enumerate(images):
        one = panoptic_fusion(im["logits"], im["boxes"], im["classes"], im["scores"], im["masks"], **kw)
        assert (batch.class_map[i] == one.class_map).float().mean() > 0.999
        assert (batch.instance_map[i] == one.instance_map).float().mean() > 0.999
        rank = batch.rank[i, :len(im["scores"])]
        assert [int(j) for j in torch.argsort(rank) if rank[j] > 0] == one.keep.tolist()


@pytest.fixture(scope="module")
def street_frames():
    from panoptic_ros.model.evaluation import synthetic_frames
    return [f.image for f in synthetic_frames(100_950, 3, 1, 256, 512)]


def _same(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.class_map, y.class_map)
        np.testing.assert_array_equal(x.instance_map, y.instance_map)
        np.testing.assert_array_equal(x.classes, y.classes)
        np.testing.assert_array_equal(x.boxes_xyxy, y.boxes_xyxy)
        np.testing.assert_array_equal(x.areas_px, y.areas_px)
        np.testing.assert_allclose(x.scores, y.scores)
        np.testing.assert_allclose(x.embeddings, y.embeddings)


def test_predictor_batch_fusion_equals_per_instance_fusion_on_the_shipped_model(street_frames):
    from panoptic_ros.model.predictor import Predictor
    from panoptic_ros.pipeline import default_model_path

    host = Predictor.from_file(default_model_path(), device="cpu", fusion_mode="per_instance")
    batch = Predictor.from_file(default_model_path(), device="cpu", fusion_mode="batch")
    assert not host.batch_fusion and batch.batch_fusion
    a, b = host.predict(street_frames), batch.predict(street_frames)
    assert sum(r.num_instances for r in a) >= 10  # real scenes with cars, not empty frames
    _same(a, b)
    # Boxes and areas are those of the fused masks, per output id.
    for r in b:
        for i in range(r.num_instances):
            ys, xs = np.nonzero(r.instance_map == i + 1)
            assert r.areas_px[i] == len(ys)
            np.testing.assert_array_equal(r.boxes_xyxy[i], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])


def test_each_frame_is_fused_on_its_own_grid_when_smaller_than_the_network_input(street_frames):
    """A frame with no more pixels than the network input is fused on its own pixel grid (semantic logits
    resized bilinearly, boxes scaled, the smallest stuff region scaled by the area ratio); a larger one on the
    network's, its id maps enlarged. A batch of mixed sizes is fused in groups by grid, and every fusion mode
    gives the per-instance fusion's result for each frame."""
    import cv2
    import torch.nn.functional as F

    from panoptic_ros.model.fusion import panoptic_fusion
    from panoptic_ros.model.predictor import Predictor, grid_min_stuff_area
    from panoptic_ros.pipeline import default_model_path

    host = Predictor.from_file(default_model_path(), device="cpu", fusion_mode="per_instance")
    batch = Predictor.from_file(default_model_path(), device="cpu", fusion_mode="batch")
    static = Predictor.from_file(default_model_path(), device="cpu", detection_mode="static", fusion_mode="batch")
    nh, nw = host.input_size
    frame = street_frames[0]
    assert frame.shape[0] * frame.shape[1] < nh * nw  # the shipped model enlarges 256x512 frames
    large = cv2.resize(street_frames[1], (2 * nw, 2 * nh), interpolation=cv2.INTER_LINEAR)
    odd = np.ascontiguousarray(street_frames[2][:200, :300])
    assert host.fusion_grid(frame.shape[:2]) == frame.shape[:2] and host.fusion_grid(odd.shape[:2]) == (200, 300)
    assert host.fusion_grid(large.shape[:2]) == (nh, nw)
    mixed = [frame, large, odd, street_frames[1]]
    want = host.predict(mixed)
    assert [r.class_map.shape for r in want] == [f.shape[:2] for f in mixed]
    _same(want, batch.predict(mixed))
    _same(want, static.predict(mixed))

    # The small frame's maps are fusion's own output on its grid, not an id map resized after the fact.
    x = host.model.normalize(F.interpolate(torch.from_numpy(frame).permute(2, 0, 1)[None].float(), size=(nh, nw),
                                           mode="bilinear", align_corners=False))
    if host.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        p, logits = host.model.features(x)
        det = host.model.predict_from_features(p, logits).detections[0]
    h, w = frame.shape[:2]
    out = panoptic_fusion(F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)[0],
                          det.boxes * torch.tensor([w / nw, h / nh, w / nw, h / nh]), host._thing_lut[det.labels - 1],
                          det.scores, det.mask_logits, thing_ids=host._thing_lut, stuff_ids=host._stuff_lut,
                          score_threshold=0.5, overlap_threshold=0.5, min_stuff_area=round(64 * h * w / (nh * nw)))
    np.testing.assert_array_equal(want[0].class_map, out.class_map.numpy())
    assert int(want[0].instance_map.max()) == len(out.keep) >= 3
    # What tools that re-run only the fusion get (tools/tune_fusion.py): the same inputs on the same grid.
    grid_logits, grid_det, area_scale = host.fusion_inputs(frame)
    assert area_scale == h * w / (nh * nw) and grid_min_stuff_area(64, area_scale) == round(64 * area_scale)
    again = panoptic_fusion(grid_logits, grid_det.boxes, host._thing_lut[grid_det.labels - 1], grid_det.scores,
                            grid_det.mask_logits, thing_ids=host._thing_lut, stuff_ids=host._stuff_lut,
                            min_stuff_area=grid_min_stuff_area(64, area_scale))
    np.testing.assert_array_equal(again.class_map.numpy(), want[0].class_map)


def test_roi_heads_drop_what_fusion_drops_and_that_loses_nothing(street_frames):
    from panoptic_ros.model.predictor import Predictor
    from panoptic_ros.pipeline import default_model_path

    fast = Predictor.from_file(default_model_path(), device="cpu")
    heads = fast.model.instance_head.roi_heads
    assert 0.49 < heads.score_thresh < 0.5  # just below fusion's 0.5: torchvision keeps scores strictly above
    a = fast.predict(street_frames)
    heads.score_thresh = fast.card.config.box_score_thresh  # what the heads did before (0.05)
    _same(a, fast.predict(street_frames))
    fast.with_fusion(score_threshold=0.3)  # a runtime change of the fusion threshold moves the heads' too
    assert 0.29 < heads.score_thresh < 0.3
    with pytest.raises(ValueError, match="fusion_mode must be one of"):
        Predictor.from_file(default_model_path(), device="cpu", fusion_mode="gpu")


@pytest.mark.parametrize("out_hw", [(256, 512), (1024, 2048), (720, 1280), (1080, 1920), (300, 333), (100, 200),
                                    (129, 1000), (32, 64), (50, 200)])
def test_nearest_grid_equals_interpolate_and_full_resolution_boxes_and_areas(out_hw):
    """Id maps resized by index look-ups equal F.interpolate(nearest-exact: pixel centres aligned); boxes and
    areas derived from the small map (frames at least the network size) equal those counted on the resized map."""
    import torch.nn.functional as F

    from panoptic_ros.model.predictor import NearestGrid, masks_to_boxes

    g = torch.Generator().manual_seed(out_hw[0])
    small = torch.zeros((64, 128), dtype=torch.int32)
    n = 7
    for i in range(1, n):  # rectangles and scattered pixels, some overlapping, one id (7) absent
        y, x = int(torch.randint(0, 60, (1,), generator=g)), int(torch.randint(0, 120, (1,), generator=g))
        small[y:y + int(torch.randint(1, 20, (1,), generator=g)), x:x + int(torch.randint(1, 30, (1,), generator=g))] = i
    small[torch.randint(0, 64, (20,), generator=g), torch.randint(0, 128, (20,), generator=g)] = 3
    grid = NearestGrid((64, 128), out_hw, torch.device("cpu"))
    big = grid.resize(small)
    np.testing.assert_array_equal(big.numpy(), F.interpolate(small[None, None].float(), size=out_hw,
                                                             mode="nearest-exact")[0, 0].int().numpy())
    boxes, areas = grid.boxes_and_areas(small, big, n)
    want_areas = torch.bincount(big.flatten().long(), minlength=n + 1)[1:n + 1]
    np.testing.assert_array_equal(areas.numpy(), want_areas.numpy())
    present = want_areas > 0
    np.testing.assert_array_equal(boxes[present].numpy(), masks_to_boxes(big, n)[present].numpy())


def test_batch_fusion_of_a_batch_without_any_instance():
    logits = torch.randn((2, 4, 8, 10), generator=torch.Generator().manual_seed(1))
    logits[:, 2:] -= 10  # thing channels low: every pixel is stuff
    out = panoptic_fusion_batch(logits, torch.zeros((2, 0, 4)), torch.zeros((2, 0), dtype=torch.long),
                                torch.zeros((2, 0)), torch.zeros((2, 0, 4, 4)), torch.zeros((2, 0), dtype=torch.bool),
                                thing_ids=[2, 3], stuff_ids=[0, 1])
    for i in range(2):
        one = panoptic_fusion(logits[i], torch.zeros((0, 4)), torch.zeros(0, dtype=torch.long), torch.zeros(0),
                              torch.zeros((0, 4, 4)), thing_ids=[2, 3], stuff_ids=[0, 1])
        assert torch.equal(out.class_map[i], one.class_map) and not out.instance_map[i].any()
    assert out.rank.shape == (2, 0) and out.survived.shape == (2, 0)
