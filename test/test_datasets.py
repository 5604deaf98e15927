"""Dataset writers and readers: round trips, the reference tools' view of what we write, and bad input."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from panoptic_ros.camera import CameraIntrinsics, CameraModel, CameraMounting
from panoptic_ros.classes import CITYSCAPES, VOID
from panoptic_ros.datasets.cityscapes import (
    CityscapesPanopticDataset,
    CityscapesPanopticWriter,
    cityscapes_ids,
    write_cityscapes_panoptic,
)
from panoptic_ros.datasets.coco import (
    STUFF_SEGMENT_BASE,
    CocoPanopticDataset,
    CocoPanopticWriter,
    id_to_rgb,
    read_png,
    rgb_to_id,
    write_coco_panoptic,
    write_png,
)
from panoptic_ros.datasets.loader import detect_format, open_dataset
from panoptic_ros.datasets.types import DatasetError, ObjectAnnotation, PanopticFrame
from panoptic_ros.datasets.video_panoptic import (
    FOREIGN_CLASS_STRIDE,
    VideoPanopticDataset,
    write_video_panoptic,
)
from panoptic_ros.panoptic import unique_inverse

ROAD, SIDEWALK, BUILDING, SKY, PERSON, CAR = 0, 1, 2, 10, 11, 13
CAMERA = CameraModel(CameraIntrinsics(32, 24, 30.0, 31.0, 15.5, 11.25), CameraMounting(1.5, 0.05))


def camera_at(k: int) -> CameraModel:
    """The camera of frame k: the vehicle's pitch bounces by 0.01 rad a frame."""
    return CameraModel(CAMERA.intrinsics, CameraMounting(1.5, 0.05 + 0.01 * k))


def make_frames(num: int = 3, sequence: str = "seq-a", h: int = 24, w: int = 32,
                stamp0_ns: int = 1_000_000_000) -> list[PanopticFrame]:
    """Small frames: sky/building/sidewalk/road stuff, a void strip, car 3 driving right 2 px a frame,
    person 7, a person crowd without track id, and car 12 that is fully hidden (behind car 3) in the last frame.
    The camera pitch changes from frame to frame (``camera_at``)."""
    frames = []
    yy, xx = np.indices((h, w))
    for k in range(num):
        sem = np.full((h, w), ROAD, np.uint8)
        sem[:6], sem[6:12], sem[12:14] = SKY, BUILDING, SIDEWALK
        sem[:, :2] = VOID
        inst = np.zeros((h, w), np.int32)
        x0 = 4 + 2 * k
        sem[14:20, x0:x0 + 6], inst[14:20, x0:x0 + 6] = CAR, 3
        sem[8:16, 20:23], inst[8:16, 20:23] = PERSON, 7
        sem[18:22, 24:30], inst[18:22, 24:30] = PERSON, 0  # crowd: thing class, no track id
        objects = [ObjectAnnotation(3, CAR, 36, 1.0, (float(x0), 14.0, float(x0 + 6), 20.0), (0.5, 1.5, 8.0)),
                   ObjectAnnotation(7, PERSON, 24, 0.75, (20.0, 7.0, 23.0, 16.0), None)]
        if k < num - 1:
            sem[20:23, 14:18], inst[20:23, 14:18] = CAR, 12
            objects.append(ObjectAnnotation(12, CAR, 12, 0.5, (14.0, 19.0, 18.0, 23.0), (-0.1, 1.5, 9.5)))
        else:
            objects.append(ObjectAnnotation(12, CAR, 0, 0.0, (14.0, 19.0, 18.0, 23.0), (-0.1, 1.5, 9.5),
                                            occluder_track_id=3))
        image = np.stack([xx * 7, yy * 10, (xx + yy) * 4 + 20 * k], axis=-1).astype(np.uint8)
        camera = camera_at(k) if (h, w) == (24, 32) else None
        frames.append(PanopticFrame(image, sem, inst, objects, camera, stamp0_ns + k * 100_000_000, k, sequence))
    return frames


def visible_things(frame: PanopticFrame) -> list[tuple[int, int, int, tuple[float, ...]]]:
    """(track id, class, area, visible box) of every non-crowd thing with pixels, from the masks."""
    out = []
    for t in sorted(int(v) for v in np.unique(frame.instance) if v):
        ys, xs = np.nonzero(frame.instance == t)
        out.append((t, int(frame.semantic[ys[0], xs[0]]), int(ys.size),
                    (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))))
    return out


def objects_summary(frame: PanopticFrame) -> list[tuple[int, int, int, tuple[float, ...]]]:
    return [(o.track_id, o.class_id, o.area_px, o.amodal_box_xyxy) for o in frame.objects]


@pytest.fixture(scope="module")
def frames() -> list[PanopticFrame]:
    return make_frames()


# --------------------------------------------------------------------------- COCO

@pytest.mark.parametrize("case", ["small ids", "flipped view", "uint8", "large ids", "negative", "uint64", "empty"])
def test_unique_inverse_is_np_unique(case: str) -> None:
    """The histogram fast path and the sorting fallback both return exactly np.unique's values and inverse."""
    rng = np.random.default_rng(3)
    values = {"small ids": rng.integers(0, 300, (64, 96)).astype(np.int32),
              "flipped view": rng.integers(0, 40, (64, 96)).astype(np.int32)[:, ::-1],
              "uint8": rng.integers(0, 256, (32, 48)).astype(np.uint8),
              "large ids": rng.integers(0, 1 << 24, (32, 48)).astype(np.int64),
              "negative": rng.integers(-5, 5, (32, 48)).astype(np.int32),
              "uint64": rng.integers(0, 9, (32, 48)).astype(np.uint64),
              "empty": np.zeros((0, 4), np.int32)}[case]
    uniq, inverse = unique_inverse(values)
    ref_uniq, ref_inverse = np.unique(values.ravel(), return_inverse=True)
    assert uniq.dtype == ref_uniq.dtype and np.array_equal(uniq, ref_uniq)
    assert np.array_equal(inverse, ref_inverse.ravel())


def test_segment_id_rgb_encoding() -> None:
    ids = np.array([[0, 1, 255, 256], [65535, 65536, 26001, 2 ** 24 - 1]])
    rgb = id_to_rgb(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 4, 3)
    assert rgb.reshape(-1, 3).tolist() == [[0, 0, 0], [1, 0, 0], [255, 0, 0], [0, 1, 0],
                                           [255, 255, 0], [0, 0, 1], [145, 101, 0], [255, 255, 255]]
    np.testing.assert_array_equal(rgb_to_id(rgb), ids)
    with pytest.raises(DatasetError, match="must lie in 0..16777215"):
        id_to_rgb(np.array([[2 ** 24]]))


def test_coco_round_trip(tmp_path: Path, frames: list[PanopticFrame]) -> None:
    write_coco_panoptic(tmp_path, frames, split="val")
    ds = CocoPanopticDataset(tmp_path)
    assert ds.split == "val" and ds.sequences == ["seq-a"] and len(ds) == 3
    assert ds.classes == CITYSCAPES
    assert ds.category_to_train_id == {i: i for i in range(19)}
    back = list(ds.frames("seq-a"))
    for a, b in zip(frames, back, strict=True):
        np.testing.assert_array_equal(b.image, a.image)
        np.testing.assert_array_equal(b.semantic, a.semantic)
        np.testing.assert_array_equal(b.instance, a.instance)  # track ids survive as segment ids
        assert b.instance.dtype == np.int32 and b.semantic.dtype == np.uint8
        assert (b.stamp_ns, b.frame_index, b.sequence, b.camera) == (a.stamp_ns, a.frame_index, a.sequence, None)
        assert objects_summary(b) == visible_things(a)
        assert all(math.isnan(o.visible_fraction) and not o.is_crowd for o in b.objects)


def test_coco_segment_ids_and_crowd_flags(tmp_path: Path, frames: list[PanopticFrame]) -> None:
    json_path = write_coco_panoptic(tmp_path, frames[:1], split="val")
    doc = json.loads(json_path.read_text())
    segs = {s["id"]: s for s in doc["annotations"][0]["segments_info"]}
    assert sorted(segs) == [3, 7, 12] + sorted(STUFF_SEGMENT_BASE + c for c in (ROAD, SIDEWALK, BUILDING, SKY, PERSON))
    assert segs[STUFF_SEGMENT_BASE + PERSON]["iscrowd"] == 1 and segs[STUFF_SEGMENT_BASE + PERSON]["area"] == 24
    assert segs[3] == {"id": 3, "category_id": CAR, "area": 36, "bbox": [4, 14, 6, 6], "iscrowd": 0}
    assert segs[STUFF_SEGMENT_BASE + ROAD]["iscrowd"] == 0
    png = rgb_to_id(read_png(tmp_path / "annotations" / "panoptic_val" / doc["annotations"][0]["file_name"]))
    assert png[15, 5] == 3 and png[0, 0] == 0 and png[0, 5] == STUFF_SEGMENT_BASE + SKY


def test_coco_crowd_object_with_track_id_reads_back_as_instance_zero(tmp_path: Path) -> None:
    frame = make_frames(1)[0]
    frame.instance[18:22, 24:30] = 40
    frame.objects.append(ObjectAnnotation(40, PERSON, 24, 1.0, (24.0, 18.0, 30.0, 22.0), is_crowd=True))
    json_path = write_coco_panoptic(tmp_path, [frame])
    seg = next(s for s in json.loads(json_path.read_text())["annotations"][0]["segments_info"] if s["id"] == 40)
    assert seg["iscrowd"] == 1
    back = next(iter(CocoPanopticDataset(tmp_path)))
    expected = frame.instance.copy()
    expected[18:22, 24:30] = 0
    np.testing.assert_array_equal(back.instance, expected)
    assert [o.track_id for o in back.objects] == [3, 7]  # car 12 is hidden in a one-frame sequence


def test_coco_reader_maps_arbitrary_category_ids(tmp_path: Path) -> None:
    """A real-COCO-like split: sparse category ids, large segment ids, images in <root>/<split>/ as JPEG."""
    ids = np.zeros((8, 10), np.int64)
    ids[:3] = 5931152  # sky
    ids[4:7, 1:4] = 3290681  # a car
    ids[4:8, 6:9] = 10000  # a crowd of people
    (tmp_path / "annotations" / "panoptic_val2017").mkdir(parents=True)
    write_png(tmp_path / "annotations" / "panoptic_val2017" / "000000000139.png", id_to_rgb(ids))
    image = np.full((8, 10, 3), 128, np.uint8)
    import cv2
    (tmp_path / "val2017").mkdir()
    cv2.imwrite(str(tmp_path / "val2017" / "000000000139.jpg"), image)
    doc = {"images": [{"id": 139, "file_name": "000000000139.jpg", "width": 10, "height": 8}],
           "annotations": [{"image_id": 139, "file_name": "000000000139.png", "segments_info": [
               {"id": 5931152, "category_id": 184, "area": 30, "bbox": [0, 0, 10, 3], "iscrowd": 0},
               {"id": 3290681, "category_id": 3, "area": 9, "bbox": [1, 4, 3, 3], "iscrowd": 0},
               {"id": 10000, "category_id": 1, "area": 12, "bbox": [6, 4, 3, 4], "iscrowd": 1}]}],
           "categories": [{"id": 184, "name": "sky-other-merged", "isthing": 0, "color": [106, 154, 176]},
                          {"id": 1, "name": "person", "isthing": 1, "color": [220, 20, 60]},
                          {"id": 3, "name": "car", "isthing": 1, "color": [0, 0, 142]}]}
    (tmp_path / "annotations" / "panoptic_val2017.json").write_text(json.dumps(doc))
    ds = open_dataset(tmp_path)
    assert isinstance(ds, CocoPanopticDataset)
    assert ds.classes.names == ["person", "car", "sky-other-merged"]
    assert ds.classes.thing_ids == [0, 1]
    assert ds.category_to_train_id == {1: 0, 3: 1, 184: 2}
    (frame,) = list(ds)
    assert (frame.sequence, frame.frame_index) == ("val2017", 0)
    expected_sem = np.full((8, 10), VOID, np.uint8)
    expected_sem[:3], expected_sem[4:7, 1:4], expected_sem[4:8, 6:9] = 2, 1, 0
    np.testing.assert_array_equal(frame.semantic, expected_sem)
    np.testing.assert_array_equal(frame.instance, np.where(ids == 3290681, 3290681, 0))
    assert objects_summary(frame) == [(3290681, 1, 9, (1.0, 4.0, 4.0, 7.0))]
    assert np.abs(frame.image.astype(int) - 128).max() <= 2


# --------------------------------------------------------------------------- Cityscapes

def test_cityscapes_ids_follow_cityscapes_conventions(frames: list[PanopticFrame]) -> None:
    ids = cityscapes_ids(frames[0])
    car, person, road, sky = 26, 24, 7, 23
    assert ids.segment_ids[15, 5] == car * 1000 + 0  # track 3: first car by track id
    assert ids.segment_ids[21, 15] == car * 1000 + 1  # track 12
    assert ids.segment_ids[10, 21] == person * 1000 + 0  # track 7
    assert ids.segment_ids[19, 25] == person  # crowd: the bare label id
    assert ids.segment_ids[0, 5] == sky and ids.segment_ids[23, 3] == road and ids.segment_ids[0, 0] == 0
    assert ids.label_ids[0, 0] == 0 and ids.label_ids[15, 5] == car and ids.label_ids[19, 25] == person


def test_cityscapes_round_trip(tmp_path: Path, frames: list[PanopticFrame]) -> None:
    write_cityscapes_panoptic(tmp_path, frames, split="val")
    ds = CityscapesPanopticDataset(tmp_path)
    assert ds.split == "val" and ds.sequences == ["seq-a"] and len(ds) == 3
    for a, b in zip(frames, ds.frames("seq-a"), strict=True):
        np.testing.assert_array_equal(b.image, a.image)
        np.testing.assert_array_equal(b.semantic, a.semantic)
        # Documented id mapping: instance = Cityscapes segment id (label*1000 + k), crowd -> 0.
        np.testing.assert_array_equal(b.instance, np.where(a.instance > 0, cityscapes_ids(a).segment_ids, 0))
        assert (b.stamp_ns, b.frame_index, b.sequence) == (a.stamp_ns, a.frame_index, a.sequence)
        assert b.camera == a.camera
        segment_ids = cityscapes_ids(a).segment_ids
        assert objects_summary(b) == sorted((int(segment_ids[a.instance == t][0]), c, n, box)
                                            for t, c, n, box in visible_things(a))
    gt = tmp_path / "gtFine" / "val" / "seq-a"
    np.testing.assert_array_equal(read_png(gt / "seq-a_000000_000001_gtFine_labelTrainIds.png"), frames[1].semantic)
    label_ids = read_png(gt / "seq-a_000000_000001_gtFine_labelIds.png")
    assert label_ids.dtype == np.uint8 and label_ids[0, 0] == 0 and label_ids[0, 5] == 23
    instance_ids = read_png(gt / "seq-a_000000_000001_gtFine_instanceIds.png")
    assert instance_ids.dtype == np.uint16 and instance_ids[15, 7] == 26000
    camera = json.loads((tmp_path / "camera" / "val" / "seq-a" / "seq-a_000000_000001_camera.json").read_text())
    assert camera["intrinsic"] == {"fx": 30.0, "fy": 31.0, "u0": 15.5, "v0": 11.25}
    assert (camera["extrinsic"]["z"], camera["extrinsic"]["pitch"]) == (1.5, 0.05 + 0.01)


def test_cityscapes_objects_are_the_visible_things(tmp_path: Path, frames: list[PanopticFrame]) -> None:
    write_cityscapes_panoptic(tmp_path, frames[2:], split="val")
    (b,) = list(CityscapesPanopticDataset(tmp_path))
    assert objects_summary(b) == [(24000, PERSON, 24, (20.0, 8.0, 23.0, 16.0)),
                                  (26000, CAR, 36, (8.0, 14.0, 14.0, 20.0))]


def test_cityscapes_createPanopticImgs_reproduces_our_json_and_pngs(tmp_path: Path,
                                                                    frames: list[PanopticFrame]) -> None:
    from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic

    ours = write_cityscapes_panoptic(tmp_path / "cs", frames, split="val")
    (tmp_path / "conv").mkdir()
    convert2panoptic(str(tmp_path / "cs" / "gtFine"), str(tmp_path / "conv"), False, ["val"])
    a = json.loads(ours.read_text())
    b = json.loads((tmp_path / "conv" / "cityscapes_panoptic_val.json").read_text())
    assert a["categories"] == b["categories"]
    assert a["annotations"] == b["annotations"]
    assert [{k: v for k, v in im.items() if k in ("id", "width", "height", "file_name")} for im in a["images"]] \
        == b["images"]
    for ann in b["annotations"]:
        theirs = read_png(tmp_path / "conv" / "cityscapes_panoptic_val" / ann["file_name"])
        np.testing.assert_array_equal(read_png(tmp_path / "cs" / "gtFine" / "cityscapes_panoptic_val"
                                               / ann["file_name"]), theirs)


def test_cityscapes_pq_of_ground_truth_against_itself_is_one(tmp_path: Path, frames: list[PanopticFrame]) -> None:
    from cityscapesscripts.evaluation.evalPanopticSemanticLabeling import evaluatePanoptic
    from panopticapi.evaluation import pq_compute

    gt_json = write_cityscapes_panoptic(tmp_path, frames, split="val")
    folder = str(gt_json.with_suffix(""))
    cs = evaluatePanoptic(str(gt_json), folder, str(gt_json), folder, str(tmp_path / "result.json"))
    assert (cs["All"]["pq"], cs["Things"]["n"], cs["Stuff"]["n"]) == (1.0, 2, 4)
    coco = pq_compute(str(gt_json), str(gt_json), folder, folder)
    assert (coco["All"]["pq"], coco["All"]["n"]) == (1.0, 6)


def test_coco_pq_of_ground_truth_against_itself_is_one(tmp_path: Path, frames: list[PanopticFrame]) -> None:
    from panopticapi.evaluation import pq_compute

    gt_json = write_coco_panoptic(tmp_path, frames, split="val")
    result = pq_compute(str(gt_json), str(gt_json))
    assert (result["All"]["pq"], result["Things"]["n"], result["Stuff"]["n"]) == (1.0, 2, 4)


def test_cityscapes_reads_instance_ids_when_there_is_no_panoptic_json(tmp_path: Path,
                                                                      frames: list[PanopticFrame]) -> None:
    json_path = write_cityscapes_panoptic(tmp_path, frames, split="val")
    with_json = list(CityscapesPanopticDataset(tmp_path))
    json_path.unlink()
    shutil.rmtree(json_path.with_suffix(""))
    ds = CityscapesPanopticDataset(tmp_path)
    assert ds.sequences == ["seq-a_000000"]  # real-Cityscapes naming: no json extras
    for a, b in zip(with_json, ds, strict=True):
        np.testing.assert_array_equal(b.semantic, a.semantic)
        np.testing.assert_array_equal(b.instance, a.instance)
        assert objects_summary(b) == objects_summary(a)
        assert b.camera == a.camera and b.frame_index == a.frame_index


def test_cityscapes_trainid_json_maps_categories_by_name(tmp_path: Path, frames: list[PanopticFrame]) -> None:
    from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic

    write_cityscapes_panoptic(tmp_path, frames[:1], split="val")
    for p in (tmp_path / "gtFine").glob("cityscapes_panoptic_val*"):
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    convert2panoptic(str(tmp_path / "gtFine"), str(tmp_path / "gtFine"), True, ["val"])
    (b,) = list(CityscapesPanopticDataset(tmp_path, split="val"))
    np.testing.assert_array_equal(b.semantic, frames[0].semantic)


def test_cityscapes_two_sequences_and_name_clash(tmp_path: Path) -> None:
    write_cityscapes_panoptic(tmp_path / "ok", make_frames(2, "seq-a") + make_frames(1, "seq b"))
    assert CityscapesPanopticDataset(tmp_path / "ok").sequences == ["seq-a", "seq b"]
    writer = CityscapesPanopticWriter(tmp_path / "bad")
    writer.add(make_frames(1, "a_b")[0])
    with pytest.raises(DatasetError, match="both map to the city name 'a-b'"):
        writer.add(make_frames(1, "a-b")[0])


# --------------------------------------------------------------------------- video

def test_video_round_trip_is_exact(tmp_path: Path) -> None:
    frames = make_frames(3, "seq-a") + make_frames(2, "seq/b", stamp0_ns=0)
    write_video_panoptic(tmp_path, frames, split="train", fps=10.0)
    ds = VideoPanopticDataset(tmp_path)
    assert ds.sequences == ["seq-a", "seq/b"] and len(ds) == 5 and ds.classes == CITYSCAPES
    info = ds.sequence_info("seq/b")
    assert (info.directory, info.split, info.fps, info.camera, info.num_frames) == ("seq-b", "train", 10.0, CAMERA, 2)
    assert [f.camera for f in ds.frames("seq/b")] == [camera_at(0), camera_at(1)]
    back = list(ds)
    for a, b in zip(frames, back, strict=True):
        np.testing.assert_array_equal(b.image, a.image)
        np.testing.assert_array_equal(b.semantic, a.semantic)
        np.testing.assert_array_equal(b.instance, a.instance)
        assert b.objects == a.objects  # hidden car 12, boxes, positions, occluder: all of it
        assert (b.camera, b.stamp_ns, b.frame_index, b.sequence) == (a.camera, a.stamp_ns, a.frame_index, a.sequence)
    png = read_png(tmp_path / "panoptic_maps" / "train" / "seq-a" / "000000.png")
    assert tuple(png[15, 5]) == (CAR, 0, 3) and tuple(png[0, 0]) == (VOID, 0, 0)


def test_video_fps_from_stamps_and_large_track_ids(tmp_path: Path) -> None:
    frames = make_frames(3)
    for f in frames:
        f.instance[f.instance == 7] = 300
        f.objects[1] = ObjectAnnotation(300, PERSON, 24, 0.75, (20.0, 7.0, 23.0, 16.0))
    write_video_panoptic(tmp_path / "a", frames)
    ds = VideoPanopticDataset(tmp_path / "a")
    assert ds.sequence_info("seq-a").fps == pytest.approx(10.0)
    assert int(next(iter(ds)).instance[10, 21]) == 300
    frames[0].instance[frames[0].instance == 300] = 70000
    with pytest.raises(DatasetError, match="70000 does not fit"):
        write_video_panoptic(tmp_path / "b", frames[:1])


def test_video_reader_reads_kitti_step_layout(tmp_path: Path) -> None:
    for k in range(2):
        png = np.zeros((6, 8, 3), np.uint8)
        png[..., 0] = ROAD
        png[0:2, 0:3] = (CAR, 0, 1)
        png[3:5, 4:6] = (PERSON, 0, 1)  # the same STEP id in another class
        png[5, :] = (PERSON, 0, 0)  # crowd
        png[0, 7] = (VOID, 0, 0)
        write_png(tmp_path / "panoptic_maps" / "val" / "0003" / f"{k:06d}.png", png)
        write_png(tmp_path / "images" / "val" / "0003" / f"{k:06d}.png", np.full((6, 8, 3), 9 * k, np.uint8))
    ds = open_dataset(tmp_path)
    assert isinstance(ds, VideoPanopticDataset) and ds.sequences == ["0003"] and ds.classes == CITYSCAPES
    f0, f1 = list(ds.frames("0003"))
    assert (f0.stamp_ns, f1.stamp_ns, f1.frame_index, f1.camera) == (0, 100_000_000, 1, None)
    car_id, person_id = CAR * FOREIGN_CLASS_STRIDE + 1, PERSON * FOREIGN_CLASS_STRIDE + 1
    assert (int(f1.instance[0, 0]), int(f1.instance[3, 4]), int(f1.instance[5, 0]), int(f1.instance[0, 7])) == \
        (car_id, person_id, 0, 0)
    assert int(f1.semantic[5, 0]) == PERSON and int(f1.semantic[0, 7]) == VOID
    assert objects_summary(f1) == [(person_id, PERSON, 4, (4.0, 3.0, 6.0, 5.0)), (car_id, CAR, 6, (0.0, 0.0, 3.0, 2.0))]
    assert int(f1.image[0, 0, 0]) == 9


# --------------------------------------------------------------------------- loader and bad input

def test_loader_detects_each_layout(tmp_path: Path, frames: list[PanopticFrame]) -> None:
    write_coco_panoptic(tmp_path / "coco", frames)
    write_cityscapes_panoptic(tmp_path / "cityscapes", frames)
    write_video_panoptic(tmp_path / "video", frames)
    for name, cls in (("coco", CocoPanopticDataset), ("cityscapes", CityscapesPanopticDataset),
                      ("video", VideoPanopticDataset)):
        assert detect_format(tmp_path / name) == name
        ds = open_dataset(tmp_path / name)
        assert isinstance(ds, cls) and ds.format == name and len(list(ds)) == 3
        assert ds.sequences == ["seq-a"] and len(ds) == 3
        with pytest.raises(DatasetError, match=r"no sequence 'seq-b' in .*known: \['seq-a'\]"):
            next(iter(ds.frames("seq-b")))
    with pytest.raises(DatasetError, match="holds several datasets"):
        open_dataset(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="not a dataset"):
        open_dataset(tmp_path / "empty")


def _edit_json(path: Path, edit) -> None:  # noqa: ANN001
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def test_coco_bad_inputs_raise_dataset_error(tmp_path: Path, frames: list[PanopticFrame]) -> None:
    (tmp_path / "none" / "annotations").mkdir(parents=True)
    with pytest.raises(DatasetError, match="expected one panoptic_<split>.json"):
        CocoPanopticDataset(tmp_path / "none")
    with pytest.raises(DatasetError, match="missing annotation file"):
        CocoPanopticDataset(tmp_path / "none", split="val")

    json_path = write_coco_panoptic(tmp_path / "a", frames[:1])
    _edit_json(json_path, lambda d: d["annotations"][0]["segments_info"].pop(0))
    with pytest.raises(DatasetError, match=r"appear in the PNG but not in segments_info"):
        list(CocoPanopticDataset(tmp_path / "a"))

    json_path = write_coco_panoptic(tmp_path / "b", frames[:1])
    _edit_json(json_path, lambda d: d["annotations"][0]["segments_info"][0].update(category_id=99))
    with pytest.raises(DatasetError, match="category_id 99"):
        list(CocoPanopticDataset(tmp_path / "b"))

    json_path = write_coco_panoptic(tmp_path / "c", frames[:1])
    json_path.write_text(json_path.read_text()[:50])
    with pytest.raises(DatasetError, match="not valid JSON"):
        CocoPanopticDataset(tmp_path / "c")

    json_path = write_coco_panoptic(tmp_path / "d", frames[:1])
    next((tmp_path / "d" / "annotations" / "panoptic_train").glob("*.png")).unlink()
    with pytest.raises(DatasetError, match="missing file"):
        list(CocoPanopticDataset(tmp_path / "d"))

    with pytest.raises(DatasetError, match="exists already"):
        CocoPanopticWriter(tmp_path / "d")


def test_cityscapes_bad_inputs_raise_dataset_error(tmp_path: Path, frames: list[PanopticFrame]) -> None:
    (tmp_path / "empty" / "gtFine").mkdir(parents=True)
    with pytest.raises(DatasetError, match="missing cityscapes_panoptic_<split>.json"):
        CityscapesPanopticDataset(tmp_path / "empty")
    with pytest.raises(DatasetError, match="no gtFine folder"):
        CityscapesPanopticDataset(tmp_path)
    json_path = write_cityscapes_panoptic(tmp_path / "a", frames[:1])
    _edit_json(json_path, lambda d: d["categories"][0].update(name="lava"))
    with pytest.raises(DatasetError, match="'lava' is not in the class table"):
        CityscapesPanopticDataset(tmp_path / "a")
    json_path = write_cityscapes_panoptic(tmp_path / "b", frames[:1])
    _edit_json(json_path, lambda d: d["annotations"][0]["segments_info"].pop())
    with pytest.raises(DatasetError, match="not in segments_info"):
        list(CityscapesPanopticDataset(tmp_path / "b"))


def test_writers_reject_frames_that_break_the_panoptic_invariants(tmp_path: Path) -> None:
    frame = make_frames(1)[0]
    frame.instance[0, 5] = 9  # an instance id on sky
    with pytest.raises(DatasetError, match="instance id 9 lies on class 10"):
        write_coco_panoptic(tmp_path / "a", [frame])
    frame = make_frames(1)[0]
    frame.semantic[0, 5] = 40
    with pytest.raises(DatasetError, match=r"class ids \[40\] are not in the class table"):
        write_cityscapes_panoptic(tmp_path / "b", [frame])
    frame = make_frames(1)[0]
    frame.semantic[10, 21] = CAR  # track 7 now covers a person and a car pixel
    with pytest.raises(DatasetError, match="instance id 7 covers pixels of two classes"):
        write_video_panoptic(tmp_path / "c", [frame])


# --------------------------------------------------------------------------- panoptic-ros synth

@pytest.mark.parametrize(("args", "message"), [
    (["--size", "16x64"], "size 16x64 is outside 32..4096"),
    (["--size", "256by512"], "is not HEIGHTxWIDTH"),
    (["--sequences", "0"], "--sequences: must be at least 1, got 0"),
    (["--frames", "two"], "--frames: 'two' is not a whole number"),
    (["--fps", "0"], "fps must lie in 0.1..1000"),
    (["--seed", "-1"], "seed must lie in 0..2**32-1"),
    (["--format", "kitti"], "invalid choice: 'kitti'"),
])
def test_synth_rejects_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                     message: str) -> None:
    from panoptic_ros.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["synth", "--out", str(tmp_path / "out"), *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_synth_refuses_a_non_empty_output_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from panoptic_ros.cli import main

    (tmp_path / "keep.txt").write_text("precious")
    assert main(["synth", "--out", str(tmp_path), "--frames", "1"]) == 2
    assert "exists and is not an empty directory" in capsys.readouterr().err
    assert main(["synth", "--out", str(tmp_path / "new"), "--format", "coco", "--compressed"]) == 2
    assert "--storage and --compressed apply to bags" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_synth_writes_every_format_and_a_true_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from panoptic_ros.cli import main
    from panoptic_ros.synth import SynthConfig, SyntheticSequence

    out = tmp_path / "out"
    assert main(["synth", "--out", str(out), "--sequences", "2", "--frames", "2", "--size", "48x64", "--seed", "3",
                 "--format", "all", "--storage", "sqlite3", "--fps", "5"]) == 0
    config = SynthConfig(height=48, width=64, fps=5.0)
    sequences = [SyntheticSequence(3 + i, 2, config) for i in range(2)]
    truth = [s.render(k) for s in sequences for k in range(2)]
    tracks = {(f.sequence, o.track_id) for f in truth for o in f.objects}
    visible = sum(o.area_px > 0 for f in truth for o in f.objects)
    events = sum(len(s.occlusion_events()) for s in sequences)
    assert capsys.readouterr().out.strip() == (
        f"wrote 4 frames in 2 sequence(s) as cityscapes, coco, video, rosbag to {out}: {len(tracks)} objects "
        f"({visible} visible object-frames), {events} occlusion events")
    assert sorted(p.name for p in out.iterdir()) == ["cityscapes", "coco", "rosbag", "video"]
    assert sorted(p.name for p in (out / "rosbag").iterdir()) == ["synth_000003", "synth_000004"]
    assert list((out / "rosbag" / "synth_000003").glob("*.db3"))
    for name in ("cityscapes", "coco", "video", "rosbag"):
        ds = open_dataset(out / name)
        assert ds.sequences == ["synth_000003", "synth_000004"]
        back = list(ds)
        assert [(f.sequence, f.frame_index, f.stamp_ns) for f in back] == \
            [(f.sequence, f.frame_index, f.stamp_ns) for f in truth]
        for a, b in zip(truth, back, strict=True):
            np.testing.assert_array_equal(b.semantic, a.semantic)
            np.testing.assert_array_equal(b.image, a.image)
            np.testing.assert_array_equal(b.instance > 0, a.instance > 0)
    video = list(open_dataset(out / "video"))
    assert all(a.objects == b.objects and a.camera == b.camera for a, b in zip(truth, video, strict=True))


def test_synth_contact_sheet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from panoptic_ros.cli import main

    out = tmp_path / "out"
    assert main(["synth", "--out", str(out), "--frames", "3", "--size", "32x48", "--format", "video",
                 "--contact-sheet"]) == 0
    assert capsys.readouterr().out.strip().endswith(f"; contact sheet {out / 'contact_sheet.png'}")
    sheet = read_png(out / "contact_sheet.png")
    assert sheet.ndim == 3 and sheet.shape[0] > 0 and sorted(p.name for p in out.iterdir()) == \
        ["contact_sheet.png", "images", "panoptic_maps", "sequences.json"]
