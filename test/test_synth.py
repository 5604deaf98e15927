"""The procedural driving-scene generator: determinism, exact labels, visibility, occlusion events,
camera geometry, class coverage, and the contact sheet. Small images and few frames keep it fast."""
from __future__ import annotations

import dataclasses
import math
from functools import lru_cache

import cv2
import numpy as np
import pytest

from panoptic_ros.classes import CITYSCAPES, VOID
from panoptic_ros.datasets.types import PanopticFrame
from panoptic_ros.synth import OcclusionEvent, SynthConfig, SyntheticSequence, generate_sequence
from panoptic_ros.synth.contact_sheet import write_contact_sheet

SMALL = SynthConfig(height=128, width=256)
THING = CITYSCAPES.is_thing_mask


@lru_cache(maxsize=None)
def _seq(seed: int, n: int, height: int = 128, width: int = 256) -> SyntheticSequence:
    return SyntheticSequence(seed, n, SynthConfig(height=height, width=width))


def _same(a: PanopticFrame, b: PanopticFrame) -> bool:
    return (a.image.tobytes() == b.image.tobytes() and a.semantic.tobytes() == b.semantic.tobytes()
            and a.instance.tobytes() == b.instance.tobytes() and a.objects == b.objects
            and a.stamp_ns == b.stamp_ns and a.sequence == b.sequence)


def test_frames_are_byte_identical_for_a_seed_in_any_render_order():
    a = SyntheticSequence(11, 30, SMALL)
    b = SyntheticSequence(11, 30, SMALL)
    forward = [a.render(k) for k in (3, 17, 29)]
    backward = [b.render(k) for k in (29, 17, 3)][::-1]
    for fa, fb in zip(forward, backward):
        assert _same(fa, fb)
    # rendering again from the same object gives the same bytes too
    assert _same(a.render(17), forward[1])


def test_labels_only_pass_matches_the_full_render():
    full = SyntheticSequence(8, 40, SMALL)
    labels_only = SyntheticSequence(8, 40, SMALL)
    for k in (0, 21, 39):
        assert labels_only.objects(k) == full.render(k).objects


def test_different_seeds_give_different_scenes():
    f0 = SyntheticSequence(1, 5, SMALL).render(2)
    f1 = SyntheticSequence(2, 5, SMALL).render(2)
    assert f0.image.tobytes() != f1.image.tobytes()
    assert f0.semantic.tobytes() != f1.semantic.tobytes()


def test_the_world_of_a_seed_does_not_depend_on_the_resolution():
    small = SyntheticSequence(6, 80, SynthConfig(height=64, width=128)).world
    large = SyntheticSequence(6, 80, SynthConfig(height=256, width=512)).world
    assert small.planned == large.planned
    assert [a.model.tracks for a in small.actors] == [a.model.tracks for a in large.actors]
    assert all(np.array_equal(a.pose, b.pose) for a, b in zip(small.actors, large.actors))
    assert np.array_equal(small.ego, large.ego)
    assert small.intrinsics.fx * 4 == pytest.approx(large.intrinsics.fx)


def test_frame_metadata_and_types():
    seq = _seq(3, 40)
    f = seq.render(25)
    assert f.image.shape == (128, 256, 3) and f.image.dtype == np.uint8
    assert f.semantic.shape == (128, 256) and f.semantic.dtype == np.uint8
    assert f.instance.shape == (128, 256) and f.instance.dtype == np.int32
    assert f.sequence == "synth_000003" and f.frame_index == 25
    assert f.stamp_ns == 2_500_000_000  # 25 / 10 fps
    assert f.camera.intrinsics.width == 256 and f.camera.intrinsics.height == 128
    assert seq.camera.intrinsics == f.camera.intrinsics
    assert 1.2 <= seq.camera.mounting.height_m <= 1.7
    assert 0.0 < seq.camera.mounting.pitch_rad < math.radians(6)


def test_generate_sequence_yields_the_rendered_frames_in_order():
    frames = list(generate_sequence(5, 4, SMALL))
    seq = SyntheticSequence(5, 4, SMALL)
    assert [f.frame_index for f in frames] == [0, 1, 2, 3]
    assert _same(frames[2], seq.render(2))


@pytest.mark.parametrize("seed", [0, 4, 9])
def test_labels_are_consistent(seed):
    seq = _seq(seed, 60)
    for k in (10, 35, 59):
        f = seq.render(k)
        inst, sem = f.instance, f.semantic
        things = inst > 0
        assert THING[sem[things]].all(), "instance pixels must carry thing classes"
        stuff = (~things) & (sem != VOID)
        assert not THING[sem[stuff]].any(), "thing classes without a track id"
        assert not (inst[sem == VOID] != 0).any()
        assert set(np.unique(sem)) <= set(range(19)) | {VOID}
        ids = [o.track_id for o in f.objects]
        assert len(ids) == len(set(ids)), "one annotation per track per frame"
        assert all(t > 0 for t in ids)
        counts = np.bincount(inst.ravel())
        for o in f.objects:
            assert o.area_px == (counts[o.track_id] if o.track_id < len(counts) else 0)
            assert 0.0 <= o.visible_fraction <= 1.0
            assert (o.area_px == 0) == (o.visible_fraction == 0.0)
            assert CITYSCAPES.classes[o.class_id].is_thing
            x0, y0, x1, y1 = o.amodal_box_xyxy
            assert 0 <= x0 < x1 <= 256 and 0 <= y0 < y1 <= 128
            if o.area_px:
                ys, xs = np.nonzero(inst == o.track_id)
                assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1
                assert (sem[inst == o.track_id] == o.class_id).all()
        # every labelled instance is annotated
        assert set(np.unique(inst[things]).tolist()) <= set(ids)


def test_track_ids_are_unique_per_object_and_stable_over_time():
    seq = _seq(4, 60)
    world = seq.world
    all_ids = [t for a in world.actors for t, _ in a.model.tracks]
    assert len(all_ids) == len(set(all_ids)), "a track id names exactly one object"
    cls_of = {t: c for a in world.actors for t, c in a.model.tracks}
    last: dict[int, np.ndarray] = {}
    for k in range(0, 60, 3):
        _cam, rot, c = world.camera_at(k)
        for o in seq.objects(k):
            assert cls_of[o.track_id] == o.class_id
            p_world = np.asarray(o.position_m) @ rot + c  # optical -> world
            if o.track_id in last:
                step_m = np.linalg.norm(p_world - last[o.track_id])
                assert step_m < 3 * 16.0 / 10.0 + 1.0, f"track {o.track_id} jumped {step_m:.1f} m in 3 frames"
            last[o.track_id] = p_world


def test_visible_fraction_is_visible_over_alone_pixels():
    """Check against the object rendered in a world that holds nothing else."""
    seq = _seq(2, 120)
    checked = 0
    for k in (30, 45, 60, 75, 90):
        f = seq.render(k)
        for o in f.objects:
            if not 0.0 < o.visible_fraction < 1.0 or checked >= 12:
                continue
            actor = next(a for a in seq.world.actors if any(t == o.track_id for t, _ in a.model.tracks))
            if len(actor.model.tracks) > 1:
                continue  # rider and vehicle cover each other even when alone
            alone_world = dataclasses.replace(seq.world, actors=[actor], statics=[])
            alone = SyntheticSequence.from_world(alone_world)._rasterise(k, draw_image=False)
            alone_inst = alone[2]
            alone_px = int((alone_inst == o.track_id).sum())
            assert o.visible_fraction == pytest.approx(o.area_px / alone_px, abs=1e-12)
            ys, xs = np.nonzero(alone_inst == o.track_id)
            assert o.amodal_box_xyxy == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            checked += 1
    assert checked >= 5


def test_unoccluded_lead_vehicle_is_fully_visible():
    cfg = SynthConfig(height=128, width=256, traffic_density=0.0, pedestrian_density=0.0,
                      occlusion_events_per_100_frames=0.0)
    checked = 0
    for seed in range(6):
        seq = SyntheticSequence(seed, 20, cfg)
        leads = [a for a in seq.world.actors if a.role == "lead"]
        assert len(seq.world.actors) == len(leads) <= 1
        for k in (0, 10, 19):
            for o in seq.objects(k):
                x0, y0, x1, y1 = o.amodal_box_xyxy
                if 0 < x0 and x1 < 256 and 0 < y0 and y1 < 128:
                    assert o.visible_fraction == 1.0 and o.occluder_track_id == 0
                    checked += 1
    assert checked >= 3


def test_fully_occluded_objects_are_listed_with_zero_visibility():
    seq = _seq(2, 120)
    hidden = [o for k in range(120) for o in seq.objects(k) if o.area_px == 0]
    assert hidden, "expected fully occluded objects in this sequence"
    for o in hidden:
        assert o.visible_fraction == 0.0
        x0, y0, x1, y1 = o.amodal_box_xyxy
        assert x1 > x0 and y1 > y0  # inside the image
        assert o.occluder_track_id >= 0


def _obj(seq: SyntheticSequence, k: int, track_id: int):
    """The annotation of ``track_id`` in frame k (KeyError if it is not in the image)."""
    return {o.track_id: o for o in seq.objects(k)}[track_id]


def test_occlusion_events_behind_buses_and_trucks():
    good = 0
    for seed in (1, 2, 5, 6):
        seq = _seq(seed, 120)
        cls_of = {t: c for a in seq.world.actors for t, c in a.model.tracks}
        events = seq.occlusion_events()
        assert all(isinstance(e, OcclusionEvent) for e in events)
        for e in events:
            assert e.length == e.end_frame - e.start_frame + 1 >= 1
            assert _obj(seq, e.start_frame, e.track_id).area_px == 0
            assert _obj(seq, e.end_frame, e.track_id).area_px == 0
            # slivers at most between the clearly visible frames around the episode
            k = e.start_frame - 1
            while _obj(seq, k, e.track_id).visible_fraction < 0.1:
                k -= 1
            assert k >= 0
            k = e.end_frame + 1
            while _obj(seq, k, e.track_id).visible_fraction < 0.1:
                k += 1
            assert k < 120
        long_ones = [e for e in events if 10 <= e.length <= 40 and cls_of.get(e.occluder_track_id) in (14, 15)]
        good += len(long_ones)
        for e in long_ones:  # the object stays in the image the whole time
            assert e.occluder_track_id != e.track_id
            for k in range(e.start_frame, e.end_frame + 1):
                assert _obj(seq, k, e.track_id).visible_fraction < 0.1
    assert good >= 4


def test_scripted_occlusions_are_planned_for_most_sequences():
    planned = [len(SyntheticSequence(seed, 120, SMALL).world.planned) > 0 for seed in range(20, 26)]
    assert sum(planned) >= 5


def test_position_lies_at_the_bottom_of_the_amodal_box():
    checked = 0
    for seed in (0, 3):
        seq = _seq(seed, 40, 256, 512)
        for k in (5, 20, 35):
            f = seq.render(k)
            for o in f.objects:
                x0, y0, x1, y1 = o.amodal_box_xyxy
                if o.class_id == 12 or o.visible_fraction < 1.0 or x0 <= 0 or y0 <= 0 or x1 >= 512 or y1 >= 256:
                    continue  # riders stand on their vehicle; clipped boxes have no true bottom
                u, v = f.camera.project(np.array(o.position_m))[0]
                assert abs(v - (y1 - 0.5)) <= 3.0, (o, u, v)
                assert x0 - 2 <= u <= x1 + 2
                # and the point lies on the ground plane of the frame's camera
                g = f.camera.ground_points(np.array([u]), np.array([v]))[0]
                assert np.allclose(g, o.position_m, atol=0.02 * o.position_m[2] + 0.02)
                checked += 1
    assert checked >= 10


def test_all_classes_but_train_appear_across_a_few_sequences():
    seen: set[int] = set()
    for seed in range(6):
        seq = _seq(seed, 60)
        for k in (5, 30, 55):
            seen |= set(np.unique(seq.render(k).semantic).tolist())
    expected = set(range(19)) - {16}
    assert expected <= seen, f"missing classes: {[CITYSCAPES.classes[c].name for c in expected - seen]}"


def test_small_distant_things_are_void_not_instances():
    seq = _seq(1, 30)
    min_area = SMALL.min_thing_area_px
    for k in (0, 15, 29):
        f = seq.render(k)
        # every annotated thing (visible or not) is at least min_area px when whole and inside the image
        for o in f.objects:
            x0, y0, x1, y1 = o.amodal_box_xyxy
            if 0 < x0 and x1 < 256 and 0 < y0 and y1 < 128:
                assert (x1 - x0) * (y1 - y0) >= min_area
    assert (f.semantic == VOID).any()


def test_bad_input_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="image size"):
        SynthConfig(height=8, width=256)
    with pytest.raises(ValueError, match="camera_height_m"):
        SynthConfig(camera_height_m=(2.0, 1.0))
    with pytest.raises(ValueError, match="fog_probability"):
        SynthConfig(fog_probability=1.5)
    with pytest.raises(ValueError, match="seed"):
        SyntheticSequence(-1, 10, SMALL)
    with pytest.raises(ValueError, match="num_frames"):
        SyntheticSequence(1, 0, SMALL)
    with pytest.raises(TypeError, match="SynthConfig"):
        SyntheticSequence(1, 5, {"height": 10})  # type: ignore[arg-type]
    with pytest.raises(IndexError, match="outside 0..4"):
        SyntheticSequence(1, 5, SMALL).render(5)


def test_contact_sheet_is_a_png_grid(tmp_path):
    seq = _seq(3, 40)
    frames = [seq.render(k) for k in (1, 2, 3)]
    out = write_contact_sheet(frames, tmp_path / "sheet.png", columns=2, cell_width=128)
    img = cv2.imread(str(out))
    assert img is not None
    cell_h = 18 + 64  # header + 128x256 scaled to width 128
    cell_w = 2 * 128 + 2
    assert img.shape[0] == 2 * (cell_h + 4)
    assert img.shape[1] == 2 * (cell_w + 4)
    with pytest.raises(ValueError, match="png"):
        write_contact_sheet(frames, tmp_path / "sheet.jpg")
    with pytest.raises(ValueError, match="at least one frame"):
        write_contact_sheet([], tmp_path / "empty.png")


def test_mesh_building_shortcuts_equal_the_plain_formulas_bit_for_bit() -> None:
    """World building's fast paths (Newell normals without np.cross, rectangles without np.stack, the
    vectorised face padding) give exactly the plain formulas' numbers: frames of a seed never change."""
    from panoptic_ros.synth.world import FACE_PAD, MeshBuilder, polygon_normals, rects_x, rects_z

    rng = np.random.default_rng(5)
    for shape in ((7, 4, 3), (1, 8, 3), (3, 2, 5, 3)):
        p = rng.normal(size=shape) * 10.0 ** rng.integers(-3, 3)
        ref = np.cross(p, np.roll(p, -1, axis=-2)).sum(axis=-2)
        assert np.array_equal(polygon_normals(p), ref)
    r = rng.normal(size=(5, 4))
    z0, z1, h0, h1 = r.T
    xs = np.full_like(z0, 1.5)
    assert np.array_equal(rects_x(1.5, r), np.stack([np.stack([xs, -h0, z0], 1), np.stack([xs, -h0, z1], 1),
                                                     np.stack([xs, -h1, z1], 1), np.stack([xs, -h1, z0], 1)], 1))
    assert np.array_equal(rects_z(1.5, r), np.stack([np.stack([z0, -h0, xs], 1), np.stack([z1, -h0, xs], 1),
                                                     np.stack([z1, -h1, xs], 1), np.stack([z0, -h1, xs], 1)], 1))
    b = MeshBuilder()
    b.box(0, 1, 0, 1, 0, 1, (1, 0, 0), 13, 1)
    b.prism_x([(0, 0), (1, 0), (1, 1), (0.5, 1.5), (0, 1)], 0, 2, (0, 1, 0), 13, 1)  # caps of 5, sides of 4
    mesh = b.build()
    ref = np.array([np.concatenate([f, np.full(FACE_PAD - len(f), f[-1])]) for f in mesh.faces])
    assert np.array_equal(mesh.face_pad, ref) and mesh.face_pad.dtype == np.int64
    assert np.allclose(mesh.normals[:6], [[-1, 0, 0], [1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, -1], [0, 0, 1]])
    assert np.allclose(mesh.normals[6:8], [[-1, 0, 0], [1, 0, 0]])  # the prism's caps, outward
