"""rosbag2 writer/reader: round trips in both storages, real rclpy reads our CDR, foreign and broken bags."""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from panoptic_ros.camera import CameraMounting
from panoptic_ros.classes import CITYSCAPES, VOID
from panoptic_ros.datasets import rosbag_io
from panoptic_ros.datasets.loader import detect_format, open_dataset
from panoptic_ros.datasets.rosbag_io import (
    STATE_OCCLUDED,
    STATE_TRACKED,
    RosbagDataset,
    RosbagWriter,
    find_msg_dir,
    mounting_from_transform,
    mounting_rotation,
    panoptic_typestore,
    quaternion_from_matrix,
    write_rosbag,
)
from panoptic_ros.datasets.types import DatasetError
from panoptic_ros.panoptic import encode_panoptic
from test_datasets import CAMERA, make_frames

BAG_CASES = [("mcap", None), ("sqlite3", None), ("mcap", "png"), ("sqlite3", "jpeg")]


def assert_camera_close(a, b) -> None:  # noqa: ANN001
    assert b.intrinsics == a.intrinsics
    assert b.mounting.height_m == a.mounting.height_m
    assert b.mounting.pitch_rad == pytest.approx(a.mounting.pitch_rad, abs=1e-12)


@pytest.mark.parametrize(("storage", "compressed"), BAG_CASES)
def test_round_trip(tmp_path: Path, storage: str, compressed: str | None) -> None:
    frames = make_frames(3)
    write_rosbag(tmp_path / "bag", frames, camera="front/cam", storage=storage, compressed=compressed)
    storage_files = list((tmp_path / "bag").glob("*.mcap" if storage == "mcap" else "*.db3"))
    assert len(storage_files) == 1
    ds = open_dataset(tmp_path / "bag")
    assert isinstance(ds, RosbagDataset) and ds.sequences == ["seq-a"] and ds.classes == CITYSCAPES
    cam = ds.sequence_info("seq-a").camera
    assert (cam.name, cam.compressed, cam.has_ground_truth) == ("front/cam", compressed is not None, True)
    back = list(ds.frames("seq-a"))
    assert len(back) == 3
    for a, b in zip(frames, back, strict=True):
        if compressed == "jpeg":
            assert np.abs(b.image.astype(int) - a.image).mean() < 3.0  # lossy, but the right colours
        else:
            np.testing.assert_array_equal(b.image, a.image)
        np.testing.assert_array_equal(b.semantic, a.semantic)
        np.testing.assert_array_equal(b.instance, a.instance)
        assert (b.stamp_ns, b.frame_index, b.sequence) == (a.stamp_ns, a.frame_index, a.sequence)
        assert_camera_close(a.camera, b.camera)
        # What the message holds: visible mask box and area, amodal box when hidden, position.
        expected = []
        for o in sorted(a.objects, key=lambda o: o.track_id):
            ys, xs = np.nonzero(a.instance == o.track_id)
            box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)) if ys.size \
                else o.amodal_box_xyxy
            expected.append((o.track_id, o.class_id, int(ys.size), box, o.position_m))
        assert [(o.track_id, o.class_id, o.area_px, o.amodal_box_xyxy, o.position_m) for o in b.objects] == expected
        assert [o.visible_fraction == 0.0 for o in b.objects] == [o.area_px == 0 for o in b.objects]


def test_objects_message_contents(tmp_path: Path) -> None:
    frames = make_frames(3)
    write_rosbag(tmp_path / "bag", frames, camera="cam")
    ts = panoptic_typestore()
    with Reader(tmp_path / "bag") as reader:
        conns = [c for c in reader.connections if c.topic == "/cam/ground_truth/objects"]
        msgs = [ts.deserialize_cdr(raw, "panoptic_ros/msg/PanopticObjectArray")
                for _, _, raw in reader.messages(connections=conns)]
    assert [m.frame_index for m in msgs] == [0, 1, 2]
    assert [m.header.frame_id for m in msgs] == ["cam_optical_frame"] * 3
    assert (msgs[2].header.stamp.sec, msgs[2].header.stamp.nanosec) == (1, 200_000_000)
    last = {o.track_id: o for o in msgs[2].objects}
    assert sorted(last) == [3, 7, 12]  # the crowd is not a track
    car, hidden = last[3], last[12]
    assert (car.state, car.label, car.score, car.visible_area_px) == (STATE_TRACKED, "car", 1.0, 36)
    assert (car.x_min_px, car.y_min_px, car.x_max_px, car.y_max_px) == (8.0, 14.0, 14.0, 20.0)
    assert (car.centroid_x_px, car.centroid_y_px) == (11.0, 17.0)
    assert car.velocity_x_px_s == pytest.approx(20.0) and car.velocity_y_px_s == 0.0  # 2 px per 0.1 s
    assert (car.age_frames, car.age_s, car.frames_since_seen) == (2, pytest.approx(0.2), 0)
    assert car.has_position and (car.position_m.x, car.position_m.y, car.position_m.z) == (0.5, 1.5, 8.0)
    assert car.distance_m == pytest.approx(math.sqrt(0.25 + 2.25 + 64.0))
    assert (hidden.state, hidden.visible_area_px, hidden.frames_since_seen) == (STATE_OCCLUDED, 0, 1)
    assert (hidden.x_min_px, hidden.y_min_px, hidden.x_max_px, hidden.y_max_px) == (14.0, 19.0, 18.0, 23.0)
    assert (hidden.last_seen.sec, hidden.last_seen.nanosec) == (1, 100_000_000)
    assert not last[7].has_position and last[7].distance_m == 0.0


def test_message_types_match_the_built_messages() -> None:
    msg = pytest.importorskip("panoptic_ros.msg")
    assert (rosbag_io.STATE_NEW, STATE_TRACKED, STATE_OCCLUDED) == \
        (msg.PanopticObject.STATE_NEW, msg.PanopticObject.STATE_TRACKED, msg.PanopticObject.STATE_OCCLUDED)
    assert find_msg_dir() == Path(rosbag_io.__file__).resolve().parents[2] / "msg"
    prefixes = [Path(sys.prefix)] + [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    share = next((p / "share" / "panoptic_ros" / "msg" for p in prefixes
                  if (p / "share" / "panoptic_ros" / "msg" / "PanopticObjectArray.json").is_file()), None)
    if share is None:
        pytest.skip("the generated message package (with rosidl's type hashes) is not installed")
    ts = panoptic_typestore()
    for name in rosbag_io.MESSAGE_NAMES:
        doc = json.loads((share / f"{name}.json").read_text())
        rosidl = next(h["hash_string"] for h in doc["type_hashes"] if h["type_name"] == f"panoptic_ros/msg/{name}")
        assert ts.hash_rihs01(f"panoptic_ros/msg/{name}") == rosidl


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_rclpy_deserializes_our_messages(tmp_path: Path, storage: str) -> None:
    pytest.importorskip("rclpy")
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo, Image

    from panoptic_ros.msg import PanopticClassInfo, PanopticObjectArray

    frames = make_frames(2)
    write_rosbag(tmp_path / "bag", frames, camera="cam", storage=storage)
    seen: dict[str, list] = {}
    with Reader(tmp_path / "bag") as reader:
        types = {"/cam/image": Image, "/cam/camera_info": CameraInfo, "/cam/ground_truth/panoptic": Image,
                 "/cam/ground_truth/objects": PanopticObjectArray, "/cam/ground_truth/class_info": PanopticClassInfo}
        assert {c.topic for c in reader.connections} == set(types) | {"/tf"}
        latched = {c.topic for c in reader.connections if any(
            q.durability.name == "TRANSIENT_LOCAL" for q in c.ext.offered_qos_profiles)}
        assert latched == {"/cam/ground_truth/class_info"}
        for conn, _, raw in reader.messages():
            if conn.topic in types:
                seen.setdefault(conn.topic, []).append(deserialize_message(bytes(raw), types[conn.topic]))
    images = seen["/cam/image"]
    assert [(m.header.stamp.sec, m.header.stamp.nanosec) for m in images] == [(1, 0), (1, 100_000_000)]
    img = images[1]
    assert (img.encoding, img.height, img.width, img.step, img.header.frame_id) == ("rgb8", 24, 32, 96,
                                                                                    "cam_optical_frame")
    np.testing.assert_array_equal(np.frombuffer(bytes(img.data), np.uint8).reshape(24, 32, 3), frames[1].image)
    pan = seen["/cam/ground_truth/panoptic"][1]
    assert (pan.encoding, pan.step, pan.is_bigendian) == ("32SC1", 128, 0)
    np.testing.assert_array_equal(np.frombuffer(bytes(pan.data), "<i4").reshape(24, 32),
                                  encode_panoptic(frames[1].semantic, frames[1].instance))
    info = seen["/cam/camera_info"][0]
    assert (info.width, info.height, info.distortion_model) == (32, 24, "plumb_bob")
    assert list(info.k) == [30.0, 0.0, 15.5, 0.0, 31.0, 11.25, 0.0, 0.0, 1.0]
    assert list(info.p) == [30.0, 0.0, 15.5, 0.0, 0.0, 31.0, 11.25, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert list(info.d) == [0.0] * 5 and list(info.r) == [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]
    objects = seen["/cam/ground_truth/objects"][1]
    assert (objects.camera_name, objects.frame_index, objects.image_width, objects.image_height) == ("cam", 1, 32, 24)
    assert [(o.track_id, o.class_id, o.label, o.state, o.visible_area_px) for o in objects.objects] == \
        [(3, 13, "car", STATE_TRACKED, 36), (7, 11, "person", STATE_TRACKED, 24),
         (12, 13, "car", STATE_OCCLUDED, 0)]  # car 12 is hidden in the last frame
    assert (objects.objects[0].x_min_px, objects.objects[0].velocity_x_px_s) == (6.0, pytest.approx(20.0))
    assert (objects.objects[2].position_m.x, objects.objects[2].position_m.z) == (-0.1, 9.5)
    (class_info,) = seen["/cam/ground_truth/class_info"]
    assert list(class_info.names) == CITYSCAPES.names
    assert list(class_info.class_ids) == list(range(19)) and list(class_info.is_thing) == list(CITYSCAPES.is_thing_mask)
    assert list(class_info.colors_rgb[39:42]) == [0, 0, 142]  # car
    assert (class_info.void_class_id, class_info.label_divisor, class_info.panoptic_encoding) == (255, 2 ** 23, "32SC1")


def test_mounting_transform() -> None:
    m = CameraMounting(1.4, 0.1)
    r = mounting_rotation(m)
    # The optical axis points forward and down by the pitch; image "down" (y) points mostly to -z.
    np.testing.assert_allclose(r @ [0, 0, 1], [math.cos(0.1), 0.0, -math.sin(0.1)], atol=1e-15)
    np.testing.assert_allclose(r @ [1, 0, 0], [0.0, -1.0, 0.0], atol=1e-15)
    back = mounting_from_transform((0.0, 0.0, 1.4), quaternion_from_matrix(r))
    assert back.height_m == 1.4 and back.pitch_rad == pytest.approx(0.1, abs=1e-12)
    rolled = quaternion_from_matrix(r @ np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    assert mounting_from_transform((0.0, 0.0, 1.4), rolled) is None


def test_directory_of_bags_reads_as_sequences(tmp_path: Path) -> None:
    write_rosbag(tmp_path / "bags" / "one", make_frames(2, "alpha"))
    write_rosbag(tmp_path / "bags" / "two", make_frames(1, "beta"), storage="sqlite3")
    assert detect_format(tmp_path / "bags") == "rosbag"
    ds = open_dataset(tmp_path / "bags")
    assert ds.sequences == ["alpha", "beta"]
    assert [(f.sequence, f.frame_index) for f in ds] == [("alpha", 0), ("alpha", 1), ("beta", 0)]
    with pytest.raises(DatasetError, match=r"no sequence 'gamma' in .*bags; known: \['alpha', 'beta'\]"):
        next(iter(ds.frames("gamma")))


@pytest.mark.parametrize("with_tf_static", [False, True])
def test_foreign_bag_without_ground_truth(tmp_path: Path, with_tf_static: bool) -> None:
    """A camera driver's bag: bgr8 images on image_raw, camera_info with other stamps, maybe a static
    mounting, no ground truth."""
    ts = get_typestore(Stores.ROS2_JAZZY)
    t = ts.types
    image = make_frames(1)[0].image
    mounting = CameraMounting(1.3, 0.02)
    with Writer(tmp_path / "bag", version=8, storage_plugin=StoragePlugin.SQLITE3) as w:
        if with_tf_static:
            qx, qy, qz, qw = quaternion_from_matrix(mounting_rotation(mounting))
            tf = t["geometry_msgs/msg/TransformStamped"](
                header=t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=0, nanosec=0),
                                                frame_id="base_footprint"),
                child_frame_id="drv", transform=t["geometry_msgs/msg/Transform"](
                    translation=t["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=1.3),
                    rotation=t["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw)))
            st = w.add_connection("/tf_static", "tf2_msgs/msg/TFMessage", typestore=ts)
            w.write(st, 5_000_000_000, ts.serialize_cdr(t["tf2_msgs/msg/TFMessage"](transforms=[tf]),
                                                        "tf2_msgs/msg/TFMessage"))
        ci = w.add_connection("/drv/camera_info", "sensor_msgs/msg/CameraInfo", typestore=ts)
        im = w.add_connection("/drv/image_raw", "sensor_msgs/msg/Image", typestore=ts)
        for k in range(2):
            hdr = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=5, nanosec=k * 1000),
                                           frame_id="drv")
            info_hdr = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=5, nanosec=k * 1000 - 1
                                                                                      if k else 0), frame_id="drv")
            info = t["sensor_msgs/msg/CameraInfo"](
                header=info_hdr, height=24, width=32, distortion_model="plumb_bob", d=np.zeros(5),
                k=CAMERA.intrinsics.k.ravel(), r=np.eye(3).ravel(), p=np.zeros(12), binning_x=0, binning_y=0,
                roi=t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                          do_rectify=False))
            w.write(ci, 5_000_000_000 + k * 1000 - 1, ts.serialize_cdr(info, "sensor_msgs/msg/CameraInfo"))
            msg = t["sensor_msgs/msg/Image"](header=hdr, height=24, width=32, encoding="bgr8", is_bigendian=0,
                                             step=96, data=np.ascontiguousarray(image[..., ::-1]).ravel())
            w.write(im, 5_000_000_000 + k * 1000, ts.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    ds = RosbagDataset(tmp_path / "bag")
    assert ds.sequences == ["bag"]
    cam = ds.sequence_info("bag").camera
    assert (cam.name, cam.image_topic, cam.camera_info_topic, cam.has_ground_truth) == \
        ("drv", "/drv/image_raw", "/drv/camera_info", False)
    frames = list(ds)
    assert [(f.stamp_ns, f.frame_index) for f in frames] == [(5_000_000_000, 0), (5_000_001_000, 1)]
    np.testing.assert_array_equal(frames[1].image, image)
    assert (frames[1].semantic == VOID).all() and (frames[1].instance == 0).all() and frames[1].objects == []
    if with_tf_static:
        assert frames[1].camera.intrinsics == CAMERA.intrinsics
        assert frames[1].camera.mounting.height_m == 1.3
        assert frames[1].camera.mounting.pitch_rad == pytest.approx(0.02, abs=1e-12)
    else:
        assert frames[1].camera is None  # intrinsics, but no base_footprint transform: no mounting


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_truncated_bag_raises_dataset_error(tmp_path: Path, storage: str) -> None:
    write_rosbag(tmp_path / "bag", make_frames(3), storage=storage)
    (data,) = [p for p in (tmp_path / "bag").iterdir() if p.suffix in (".mcap", ".db3")]
    blob = data.read_bytes()
    data.write_bytes(blob[: len(blob) * 2 // 5])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        list(RosbagDataset(tmp_path / "bag"))


def test_bad_bag_inputs(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a rosbag2 directory"):
        RosbagDataset(tmp_path)
    frames = make_frames(2)
    writer = RosbagWriter(tmp_path / "a")
    writer.add(frames[1])
    with pytest.raises(DatasetError, match="must be after the previous frame"):
        writer.add(frames[0])
    with pytest.raises(DatasetError, match="a bag holds one sequence"):
        writer.add(make_frames(3, "other", stamp0_ns=5_000_000_000)[2])
    writer.close()
    with pytest.raises(DatasetError, match="choose a path that does not exist"):
        RosbagWriter(tmp_path / "a")
    with pytest.raises(DatasetError, match="not a valid ROS name"):
        RosbagWriter(tmp_path / "b", camera="9cam")
    with pytest.raises(DatasetError, match="storage 'rosbag1'"):
        RosbagWriter(tmp_path / "c", storage="rosbag1")


def test_bad_image_messages_raise_dataset_error() -> None:
    t = panoptic_typestore().types
    hdr = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id="")
    short = t["sensor_msgs/msg/Image"](header=hdr, height=4, width=4, encoding="rgb8", is_bigendian=0, step=12,
                                       data=np.zeros(40, np.uint8))
    with pytest.raises(DatasetError, match="cam"):
        rosbag_io.image_msg_to_rgb(short, "cam")
    wrong = t["sensor_msgs/msg/Image"](header=hdr, height=4, width=4, encoding="rgb8", is_bigendian=0, step=12,
                                       data=np.zeros(48, np.uint8))
    with pytest.raises(DatasetError, match="expected '32SC1'"):
        rosbag_io.panoptic_msg_to_maps(wrong, "gt")
    corrupt = t["sensor_msgs/msg/CompressedImage"](header=hdr, format="jpeg", data=np.arange(50, dtype=np.uint8))
    with pytest.raises(DatasetError, match="(?i)cam: .*jpeg"):
        rosbag_io.compressed_msg_to_rgb(corrupt, "cam")


def test_frames_without_camera_write_no_camera_topics(tmp_path: Path) -> None:
    frames = make_frames(2)
    for f in frames:
        f.camera = None
    write_rosbag(tmp_path / "bag", frames)
    with Reader(tmp_path / "bag") as reader:
        assert "/camera/camera_info" not in {c.topic for c in reader.connections}
        assert "/tf" not in {c.topic for c in reader.connections}
    back = list(RosbagDataset(tmp_path / "bag"))
    assert [f.camera for f in back] == [None, None]
    np.testing.assert_array_equal(back[1].instance, frames[1].instance)
