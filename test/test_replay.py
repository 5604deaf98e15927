"""``panoptic-ros replay``: generated bags in both storages, offline and through a live node (real rclpy),
output bag contents, the overlay video, timings, and each kind of bad bag.

Bags are 4-6 frames of the synthetic street at 64x128 (the tiny random model's input size); the model is a
tiny random one with thresholds low enough that it reports objects.
"""
from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from panoptic_ros import cli, replay
from panoptic_ros import params as params_mod
from panoptic_ros.datasets.rosbag_io import RosbagDataset, panoptic_typestore, write_rosbag
from panoptic_ros.panoptic import decode_panoptic
from panoptic_ros.synth import SynthConfig, SyntheticSequence
from helpers_model import save_tiny_model

FRAMES = 4
PERMISSIVE = ["model.score_threshold:=0.05", "model.overlap_threshold:=0.0", "tracker.min_hits:=1",
              "tracker.high_score_threshold:=0.1", "tracker.low_score_threshold:=0.05",
              "tracker.new_track_score_threshold:=0.1", "model.device:=cpu"]
NODE_TOPICS = {"panoptic/image", "panoptic/semantic", "panoptic/objects", "panoptic/overlay", "panoptic/class_info"}


# --------------------------------------------------------------------------- fixtures


def build_tiny_model(path: Path) -> Path:
    """A tiny random model at the bags' 64x128 (what test_node uses too)."""
    import torch


    torch.set_num_threads(1)
    save_tiny_model(path, permissive=True)
    return path


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny.safetensors")


def synth_frames(seed: int, n: int = FRAMES, h: int = 64, w: int = 128) -> list:
    seq = SyntheticSequence(seed, n, SynthConfig(height=h, width=w))
    return [seq.render(k) for k in range(n)]


@pytest.fixture(scope="module")
def bags(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bags")
    frames = synth_frames(5)
    return {"mcap": write_rosbag(root / "mcap" / "drive", frames, storage="mcap"),
            "sqlite3": write_rosbag(root / "sqlite3" / "drive", frames, storage="sqlite3"),
            "jpeg": write_rosbag(root / "jpeg" / "drive", frames, storage="mcap", compressed="jpeg")}


def replay_cli(args: list[str], model: Path, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    argv = ["replay", *args, "--model", str(model)]
    for p in PERMISSIVE:
        argv += ["-p", p]
    rc = cli.main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def read_bag(path: Path) -> tuple[dict[str, str], list[tuple[str, int, bytes]]]:
    """(topic -> type, [(topic, log time, raw)]) of a bag, read with rosbags."""
    with AnyReader([path], default_typestore=panoptic_typestore()) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
        messages = [(c.topic, t, bytes(raw)) for c, t, raw in reader.messages()]
    return topics, messages


def input_stamps(bag: Path) -> list[int]:
    return [f.stamp_ns for f in RosbagDataset(bag)]


def video_frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def stamp_ns(msg) -> int:  # noqa: ANN001
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def check_output_bag(out: Path, bag: Path, overlay: bool = True, storage: str = "mcap") -> dict[str, list]:
    """The output bag has the node's topics and types, one message per input frame at the input's stamp and
    log time; returns the rclpy-deserialized messages by relative topic."""
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo, Image

    from panoptic_ros.msg import PanopticClassInfo, PanopticObjectArray

    suffix = ".mcap" if storage == "mcap" else ".db3"
    assert (out / "panoptic" / f"panoptic{suffix}").is_file()
    topics, messages = read_bag(out / "panoptic")
    expected = {"/camera/panoptic/image": "sensor_msgs/msg/Image", "/camera/panoptic/semantic": "sensor_msgs/msg/Image",
                "/camera/panoptic/objects": "panoptic_ros/msg/PanopticObjectArray",
                "/camera/panoptic/class_info": "panoptic_ros/msg/PanopticClassInfo",
                "/camera/camera_info": "sensor_msgs/msg/CameraInfo"}
    if overlay:
        expected["/camera/panoptic/overlay"] = "sensor_msgs/msg/Image"
    assert topics == expected
    types = {"image": Image, "semantic": Image, "overlay": Image, "objects": PanopticObjectArray,
             "class_info": PanopticClassInfo, "camera_info": CameraInfo}
    by_topic: dict[str, list] = {}
    log_times: dict[str, list[int]] = {}
    for topic, log_ns, raw in messages:
        key = topic.rsplit("/", 1)[1]
        by_topic.setdefault(key, []).append(deserialize_message(raw, types[key]))
        log_times.setdefault(key, []).append(log_ns)
    stamps = input_stamps(bag)
    for key in ("image", "semantic", "objects", "camera_info") + (("overlay",) if overlay else ()):
        assert [stamp_ns(m) for m in by_topic[key]] == stamps, key
        assert log_times[key] == stamps, key  # generated bags log at the header stamp
    assert len(by_topic["class_info"]) == 1 and list(by_topic["class_info"][0].names)[13] == "car"
    with Reader(out / "panoptic") as reader:
        qos = {c.topic: c.ext.offered_qos_profiles for c in reader.connections}
    assert "transient_local" in str(qos["/camera/panoptic/class_info"]).lower()
    for pan, objects in zip(by_topic["image"], by_topic["objects"]):
        assert pan.encoding == "32SC1" and (pan.height, pan.width) == (64, 128)
        classes, tracks = decode_panoptic(np.frombuffer(pan.data, "<i4").reshape(64, 128))
        assert set(np.unique(classes)) <= set(range(19)) | {255}
        visible = {o.track_id for o in objects.objects if o.state != 2}
        assert visible == set(np.unique(tracks)) - {0}, "objects and panoptic ids disagree"
        assert objects.camera_name == "camera" and objects.image_width == 128 and objects.processing_time_s > 0
    return by_topic


# --------------------------------------------------------------------------- offline


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_offline_replay_writes_what_the_node_would_publish(tmp_path: Path, model_path: Path, bags: dict[str, Path],
                                                           capsys: pytest.CaptureFixture, storage: str) -> None:
    import json

    from rclpy.serialization import deserialize_message, serialize_message
    from std_msgs.msg import Header

    from helpers_ros import field_differences
    from panoptic_ros.msg import PanopticObjectArray
    from panoptic_ros.params import NodeParams, build
    from panoptic_ros.pipeline import CameraFrame, Pipeline
    from panoptic_ros.ros import convert

    bag = bags[storage]
    out = tmp_path / "out"
    rc, stdout, err = replay_cli([str(bag), "--out", str(out), "--storage", storage], model_path, capsys)
    assert rc == 0, err
    assert err == "" and f"{FRAMES} of {FRAMES} frame(s)" in stdout
    by_topic = check_output_bag(out, bag, storage=storage)
    assert any(m.objects for m in by_topic["objects"]), "the permissive tiny model reports objects"

    # The same frames through the core Pipeline give the same ids, and the objects messages are exactly what
    # the node's converter (panoptic_ros.ros.convert) builds from those outputs.
    params = build(NodeParams, dict(p.split(":=") for p in PERMISSIVE) | {"model.path": str(model_path)})
    pipeline = Pipeline(replay._predictor_for(params), params.tracker, params.mount, params.max_batch)
    frames = list(RosbagDataset(bag))
    outputs = pipeline.process([CameraFrame("camera", f.image, f.stamp_ns / 1e9) for f in frames])
    for output, pan, objects in zip(outputs, by_topic["image"], by_topic["objects"], strict=True):
        np.testing.assert_array_equal(np.frombuffer(pan.data, "<i4").reshape(64, 128), output.panoptic)
        header = Header(stamp=objects.header.stamp, frame_id=objects.header.frame_id)
        want = convert.objects_msg(header, output, "camera", objects.processing_time_s)
        # Field for field after the wire's float32 rounding (not byte for byte: rclpy leaves the CDR alignment
        # padding uninitialised).
        want = deserialize_message(serialize_message(want), PanopticObjectArray)
        assert field_differences(want, objects) == [] and objects == want
    assert [m.header.frame_id for m in by_topic["objects"]] == ["camera_optical_frame"] * FRAMES

    video = video_frames(out / "overlay.mp4")
    assert len(video) == FRAMES and video[0].shape == (64, 128, 3)
    overlay0 = np.frombuffer(by_topic["overlay"][0].data, np.uint8).reshape(64, 128, 3)
    assert np.abs(video[0][..., ::-1].astype(int) - overlay0).mean() < 20  # lossy mp4v of the overlay
    timings = json.loads((out / "timings.json").read_text())
    assert timings["mode"] == "offline" and len(timings["frames"]) == FRAMES
    assert {"decode_ms", "network_ms", "tracking_ms", "processing_ms", "overlay_ms", "write_ms"} <= \
        set(timings["frames"][0])
    assert [r["stamp_ns"] for r in timings["frames"]] == input_stamps(bag)
    assert timings["summary"]["network_ms"]["count"] == FRAMES


def test_topics_flag_compressed_input_without_overlay_or_video(tmp_path: Path, model_path: Path,
                                                               bags: dict[str, Path],
                                                               capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    rc, _, err = replay_cli([str(bags["jpeg"]), "--topics", "/camera/image/compressed", "--out", str(out),
                             "--storage", "sqlite3", "--no-overlay", "--no-video"], model_path, capsys)
    assert rc == 0, err
    check_output_bag(out, bags["jpeg"], overlay=False, storage="sqlite3")
    assert not (out / "overlay.mp4").exists()
    rc, _, err = replay_cli([str(bags["jpeg"]), "--topics", "/camera/camera_info", "--out", str(tmp_path / "x")],
                            model_path, capsys)
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert "/camera/camera_info has message type sensor_msgs/msg/CameraInfo; replay reads" in err


def merge_bags(path: Path, bags: list[Path], storage: str = "mcap") -> Path:
    """One bag holding every message of ``bags`` (topics of the same name share a connection)."""
    store = panoptic_typestore()
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer, \
            AnyReader(bags, default_typestore=store) as reader:
        conns = {}
        for c in reader.connections:
            if c.topic not in conns:
                conns[c.topic] = writer.add_connection(c.topic, c.msgtype, typestore=store)
        for c, t, raw in reader.messages():
            writer.write(conns[c.topic], t, raw)
    return path


def test_several_cameras_in_one_bag(tmp_path: Path, model_path: Path, capsys: pytest.CaptureFixture) -> None:
    front = write_rosbag(tmp_path / "front", synth_frames(21, n=3), camera="front")
    rear = write_rosbag(tmp_path / "rear", synth_frames(22, n=3), camera="rear", compressed="png")
    bag = merge_bags(tmp_path / "both", [front, rear])
    out = tmp_path / "out"
    rc, stdout, err = replay_cli([str(bag), "--out", str(out)], model_path, capsys)
    assert rc == 0, err
    assert "6 of 6 frame(s) from front, rear" in stdout
    topics, messages = read_bag(out / "panoptic")
    for cam, source in (("front", front), ("rear", rear)):
        assert {t for t in topics if t.startswith(f"/{cam}/panoptic/")} == {f"/{cam}/{t}" for t in NODE_TOPICS}
        assert [t for topic, t, _ in messages if topic == f"/{cam}/panoptic/image"] == input_stamps(source)
        assert len(video_frames(out / f"overlay_{cam}.mp4")) == 3
    assert not (out / "overlay.mp4").exists()


def test_output_topic_names_are_the_nodes() -> None:
    from panoptic_ros.ros import topics

    assert {replay.PANOPTIC_TOPIC, replay.SEMANTIC_TOPIC, replay.OBJECTS_TOPIC, replay.OVERLAY_TOPIC,
            replay.CLASS_INFO_TOPIC} == NODE_TOPICS
    assert (topics.PANOPTIC, topics.SEMANTIC, topics.OBJECTS, topics.OVERLAY, topics.CLASS_INFO, topics.CAMERA_INFO) \
        == (replay.PANOPTIC_TOPIC, replay.SEMANTIC_TOPIC, replay.OBJECTS_TOPIC, replay.OVERLAY_TOPIC,
            replay.CLASS_INFO_TOPIC, replay.CAMERA_INFO_TOPIC)


def test_camera_discovery() -> None:
    img, comp, info = replay.IMAGE_TYPE, replay.COMPRESSED_TYPE, replay.CAMERA_INFO_TYPE
    topics = {"/front/image_raw": img, "/front/image/compressed": comp, "/front/camera_info": info,
              "/rear/image/compressed": comp, "/rear/camera_info": info, "/side/image": img,
              "/front/ground_truth/panoptic": img, "/front/panoptic/overlay": img, "/tf": "tf2_msgs/msg/TFMessage"}
    found = replay.find_cameras(topics, Path("b"))
    assert [(s.name, s.image_topic, s.compressed, s.camera_info_topic) for s in found] == [
        ("front", "/front/image_raw", False, "/front/camera_info"),
        ("rear", "/rear/image/compressed", True, "/rear/camera_info")]  # /side has no camera_info
    chosen = replay.find_cameras(topics, Path("b"), ["/side/image"])
    assert [(s.name, s.namespace, s.camera_info_topic) for s in chosen] == [("side", "/side", None)]
    assert chosen[0].topic("panoptic/image") == "/side/panoptic/image"
    with pytest.raises(replay.BagError, match="no topic /nope"):
        replay.find_cameras(topics, Path("b"), ["/nope"])
    with pytest.raises(replay.BagError, match="share a namespace"):
        replay.find_cameras(topics, Path("b"), ["/front/image_raw", "/front/image/compressed"])


# --------------------------------------------------------------------------- live


@pytest.mark.timeout(300)
def test_live_replay_records_what_a_real_node_publishes(tmp_path: Path, model_path: Path, bags: dict[str, Path],
                                                        capsys: pytest.CaptureFixture,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("rclpy")
    import json

    from helpers_ros import discover_locally, random_domain_id

    discover_locally(monkeypatch, random_domain_id())
    bag = bags["mcap"]
    # Lock-step: each image waits for the answers to the previous one, so "0 dropped" holds however loaded the
    # machine is. --rate 1000 would publish the whole bag within milliseconds and the node, which keeps only the
    # newest frame, would drop most of it: lock-step ignores the rate. (Paced playback is run by test_demo.)
    rc, stdout, err = replay_cli([str(bag), "--out", str(tmp_path / "live"), "--live", "--lockstep", "--rate",
                                  "1000"], model_path, capsys)
    log = (tmp_path / "live" / "node.log").read_text() if (tmp_path / "live" / "node.log").exists() else ""
    assert rc == 0, err + log
    assert "(live)" in stdout and "0 dropped" in stdout
    live = check_output_bag(tmp_path / "live", bag)
    assert live["class_info"][0].model_id.startswith("tiny sha256:")
    rc, _, err = replay_cli([str(bag), "--out", str(tmp_path / "offline")], model_path, capsys)
    assert rc == 0, err
    offline = check_output_bag(tmp_path / "offline", bag)
    # The node saw the bag's own pixels: its classes agree with the offline run's. (Not bit for bit: the node
    # runs one frame per batch on its own threads, and float round-off may flip a detection near threshold.)
    for a, b in zip(live["semantic"], offline["semantic"], strict=True):
        agree = np.mean(np.frombuffer(a.data, np.uint8) == np.frombuffer(b.data, np.uint8))
        assert agree > 0.99, agree
    assert len(video_frames(tmp_path / "live" / "overlay.mp4")) == FRAMES
    timings = json.loads((tmp_path / "live" / "timings.json").read_text())
    assert timings["mode"] == "live" and timings["frames_dropped"] == 0 and len(timings["frames"]) == FRAMES
    assert timings["lockstep"] is True and timings["rate"] is None
    assert all(r["latency_ms"] >= r["processing_ms"] > 0 for r in timings["frames"])
    # Paced at 1000x the node gets frames faster than it processes them and drops to the newest: what it
    # answered plus what it dropped is what was published, and a drop is explained.
    rc, stdout, err = replay_cli([str(bag), "--out", str(tmp_path / "paced"), "--live", "--rate", "1000",
                                  "--no-video"], model_path, capsys)
    assert rc == 0, err
    paced = json.loads((tmp_path / "paced" / "timings.json").read_text())
    assert paced["lockstep"] is False and paced["rate"] == 1000 and paced["frames_published"] == FRAMES
    assert paced["frames_dropped"] == FRAMES - len(paced["frames"]) and f"{paced['frames_dropped']} dropped" in stdout
    assert ("--lockstep lets it process every frame" in err) == (paced["frames_dropped"] > 0)


@pytest.mark.timeout(300)
def test_lockstep_moves_past_a_frame_the_node_refuses(tmp_path: Path, model_path: Path,
                                                      capsys: pytest.CaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Lock-step waits for each frame's answer; a frame the node refuses (too small to segment) gets none, and
    the replay goes on after the quiet period instead of stalling: the frames after it are answered."""
    pytest.importorskip("rclpy")
    import json

    from helpers_ros import discover_locally, random_domain_id
    from test_datasets import make_frames

    discover_locally(monkeypatch, random_domain_id())
    good = synth_frames(6, n=3)
    bad = make_frames(1, sequence=good[0].sequence, stamp0_ns=good[0].stamp_ns + 5 * 10**7)[0]  # 32x24 px
    bad.camera = good[0].camera
    bag = write_rosbag(tmp_path / "mixed", [good[0], bad, *good[1:]])
    rc, stdout, err = replay_cli([str(bag), "--out", str(tmp_path / "live"), "--live", "--lockstep"], model_path,
                                 capsys)
    assert rc == 0, err
    assert "3 of 4 frame(s)" in stdout and "1 dropped" in stdout
    assert "the node did not answer them" in err
    timings = json.loads((tmp_path / "live" / "timings.json").read_text())
    assert [r["stamp_ns"] for r in timings["frames"]] == [f.stamp_ns for f in good]


@pytest.mark.timeout(120)
def test_live_replay_without_a_node_says_why(tmp_path: Path, model_path: Path, bags: dict[str, Path],
                                            capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("rclpy")
    from helpers_ros import discover_locally, random_domain_id

    discover_locally(monkeypatch, random_domain_id())
    rc, _, err = replay_cli([str(bags["mcap"]), "--out", str(tmp_path / "a"), "--live", "--node-running",
                             "--startup-timeout", "2"], model_path, capsys)
    line = one_error_line(err)
    assert rc == 2 and "was not ready within 2 s" in line and "--node-running" in line
    rc = cli.main(["replay", str(bags["mcap"]), "--out", str(tmp_path / "b"), "--live", "--model",
                   str(tmp_path / "missing.safetensors"), "-p", "model.device:=cpu"])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2 and "panoptic_node exited with code 1 before it was ready" in line
    assert "missing.safetensors" in line and str(tmp_path / "b" / "node.log") in line


# --------------------------------------------------------------------------- bad bags


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("panoptic-ros replay: error: ")
    return lines[0]


def assert_valid_partial(out: Path, frames: int) -> None:
    """The output bag opens and holds ``frames`` frames; the video (if any) holds as many."""
    topics, messages = read_bag(out / "panoptic")
    assert sum(1 for t, _, _ in messages if t == "/camera/panoptic/image") == frames
    if frames > 1:
        assert len(video_frames(out / "overlay.mp4")) == frames


def test_truncated_mcap_replays_the_frames_before_the_cut(tmp_path: Path, model_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    frames = synth_frames(7, n=6, h=128, w=256)  # about 250 kB a frame: the mcap holds two 1 MiB chunks
    bag = write_rosbag(tmp_path / "drive", frames, storage="mcap")
    (data,) = bag.glob("*.mcap")
    blob = data.read_bytes()
    data.write_bytes(blob[: len(blob) - 100_000])  # into the second chunk, well before the summary
    rc, _, err = replay_cli([str(bag), "--out", str(tmp_path / "out")], model_path, capsys)
    line = one_error_line(err)
    assert rc == 1 and "is truncated" in line and str(bag) in line and "ros2 bag reindex" in line
    topics, messages = read_bag(tmp_path / "out" / "panoptic")
    got = [t for t, _, _ in messages if t == "/camera/panoptic/image"]
    assert 1 <= len(got) < 6
    assert_valid_partial(tmp_path / "out", len(got))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_cut_before_any_frame_is_one_line(tmp_path: Path, model_path: Path, capsys: pytest.CaptureFixture,
                                              storage: str) -> None:
    bag = write_rosbag(tmp_path / "drive", synth_frames(5), storage=storage)
    (data,) = [p for p in bag.iterdir() if p.suffix in (".mcap", ".db3")]
    data.write_bytes(data.read_bytes()[: 2 * data.stat().st_size // 5])
    rc, _, err = replay_cli([str(bag), "--out", str(tmp_path / "out")], model_path, capsys)
    line = one_error_line(err)
    assert rc == 1 and str(bag) in line and ("truncated" in line or "corrupt" in line)


def test_corrupt_database_keeps_the_frames_before_the_damage(tmp_path: Path, model_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    frames = synth_frames(5, n=6)
    bag = write_rosbag(tmp_path / "drive", frames, storage="sqlite3")
    (db,) = bag.glob("*.db3")
    blob = bytearray(db.read_bytes())
    snippet = frames[4].image.tobytes()[12000:12064]  # pixels of the fifth image, somewhere in the file
    assert blob.count(snippet) == 1
    page = blob.index(snippet) // 4096 * 4096
    blob[page:page + 4096] = bytes(4096)  # that database page (and its overflow-chain link) is lost
    db.write_bytes(bytes(blob))
    rc, stdout, err = replay_cli([str(bag), "--out", str(tmp_path / "out")], model_path, capsys)
    line = one_error_line(err)
    assert rc == 1 and "is corrupt after" in line and str(bag) in line
    topics, messages = read_bag(tmp_path / "out" / "panoptic")
    got = sum(1 for t, _, _ in messages if t == "/camera/panoptic/image")
    assert 1 <= got < 6 and f"{got} of" in stdout
    assert_valid_partial(tmp_path / "out", got)


def test_missing_metadata_and_missing_bag(tmp_path: Path, model_path: Path, capsys: pytest.CaptureFixture) -> None:
    bag = write_rosbag(tmp_path / "drive", synth_frames(5), storage="mcap")
    (bag / "metadata.yaml").unlink()
    for target in (bag, next(bag.glob("*.mcap"))):
        rc, _, err = replay_cli([str(target), "--out", str(tmp_path / "out")], model_path, capsys)
        line = one_error_line(err)
        assert rc == 1 and "no metadata.yaml" in line and f"ros2 bag reindex {bag}" in line
    rc, _, err = replay_cli([str(tmp_path / "nope"), "--out", str(tmp_path / "out")], model_path, capsys)
    assert rc == 1 and "does not exist" in one_error_line(err)
    assert not (tmp_path / "out").exists()


def _bag_with(path: Path, topics: list[tuple[str, str, str | None]], storage: str = "mcap") -> Path:
    """A bag with one message per (topic, type, msg definition or None for a standard type)."""
    store = get_typestore(Stores.ROS2_JAZZY)
    for _, msgtype, definition in topics:
        if definition is not None:
            store.register(get_types_from_msg(definition, msgtype))
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        for topic, msgtype, _ in topics:
            conn = writer.add_connection(topic, msgtype, typestore=store)
            if msgtype == "std_msgs/msg/String":
                msg = store.types[msgtype](data="hello")
            elif msgtype == replay.CAMERA_INFO_TYPE:
                t = store.types
                msg = t[msgtype](header=t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=0,
                                 nanosec=0), frame_id="cam"), height=4, width=4, distortion_model="",
                                 d=np.zeros(0), k=np.eye(3).ravel(), r=np.eye(3).ravel(), p=np.zeros(12),
                                 binning_x=0, binning_y=0, roi=t["sensor_msgs/msg/RegionOfInterest"](
                                     x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
            else:
                msg = store.types[msgtype](width=4, height=4)
            writer.write(conn, 1, store.serialize_cdr(msg, msgtype))
    return path


def _forget_definitions(bag: Path) -> None:
    """Make a Foxy/Humble-era sqlite3 bag: no stored message definitions, metadata version 5."""
    (db,) = bag.glob("*.db3")
    with sqlite3.connect(db) as con:
        con.execute("DROP TABLE message_definitions")
        con.execute("UPDATE schema SET schema_version = 3")
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())
    meta["rosbag2_bagfile_information"]["version"] = 5
    (bag / "metadata.yaml").write_text(yaml.safe_dump(meta))


def test_no_camera_topics_and_unknown_types(tmp_path: Path, model_path: Path, capsys: pytest.CaptureFixture) -> None:
    plain = _bag_with(tmp_path / "chatter", [("/chatter", "std_msgs/msg/String", None)])
    rc, _, err = replay_cli([str(plain), "--out", str(tmp_path / "a")], model_path, capsys)
    line = one_error_line(err)
    assert rc == 1 and "has no camera topics" in line and "/chatter (std_msgs/msg/String)" in line
    assert "--topics" in line

    acme = _bag_with(tmp_path / "acme", [("/cam/image", "acme_msgs/msg/Image", "uint32 width\nuint32 height"),
                                         ("/cam/camera_info", replay.CAMERA_INFO_TYPE, None)], storage="sqlite3")
    _forget_definitions(acme)
    rc, _, err = replay_cli([str(acme), "--out", str(tmp_path / "b")], model_path, capsys)
    line = one_error_line(err)
    assert rc == 1 and "/cam/image (acme_msgs/msg/Image, an unknown type)" in line
    rc, _, err = replay_cli([str(acme), "--topics", "/cam/image", "--out", str(tmp_path / "c")], model_path, capsys)
    line = one_error_line(err)
    assert rc == 1 and "topic /cam/image has message type acme_msgs/msg/Image" in line


def test_a_bad_bag_among_good_ones(tmp_path: Path, model_path: Path, bags: dict[str, Path],
                                   capsys: pytest.CaptureFixture) -> None:
    shutil.copytree(bags["mcap"], tmp_path / "bags" / "a-good")
    broken = shutil.copytree(bags["sqlite3"], tmp_path / "bags" / "b-broken")
    (broken / "metadata.yaml").unlink()
    shutil.copytree(bags["sqlite3"], tmp_path / "bags" / "c-good")
    rc, stdout, err = replay_cli([str(tmp_path / "bags"), "--out", str(tmp_path / "out"), "--workers", "1"],
                                 model_path, capsys)
    line = one_error_line(err)
    assert rc == 1 and "b-broken" in line and "no metadata.yaml" in line
    for name in ("a-good", "c-good"):
        check_output_bag(tmp_path / "out" / name, tmp_path / "bags" / name)
    assert stdout.count(f"{FRAMES} of {FRAMES} frame(s)") == 2


def test_bad_arguments_exit_2(tmp_path: Path, model_path: Path, bags: dict[str, Path],
                              capsys: pytest.CaptureFixture) -> None:
    rc, _, err = replay_cli([str(bags["mcap"]), "--out", str(tmp_path / "o"), "-p", "tracker.max_tracks:=0"],
                            model_path, capsys)
    assert rc == 2 and "tracker.max_tracks must be >= 1" in one_error_line(err)
    rc = cli.main(["replay", str(bags["mcap"]), "--out", str(tmp_path / "o"), "--model", str(tmp_path / "none.st")])
    err = capsys.readouterr().err
    assert rc == 2 and "none.st" in one_error_line(err)
    rc, _, err = replay_cli([str(bags["mcap"]), "--out", str(tmp_path / "o"), "--rate", "0"], model_path, capsys)
    assert rc == 2 and "--rate" in one_error_line(err)
    rc, _, err = replay_cli([str(bags["mcap"]), "--out", str(tmp_path / "o"), "--lockstep"], model_path, capsys)
    assert rc == 2 and "--lockstep paces a live replay (--live)" in one_error_line(err)
    (tmp_path / "taken" / "panoptic").mkdir(parents=True)
    rc, _, err = replay_cli([str(bags["mcap"]), "--out", str(tmp_path / "taken")], model_path, capsys)
    assert rc == 2 and "choose a new --out" in one_error_line(err)


def test_node_parameters_from_file_flags_and_shortcuts(tmp_path: Path) -> None:
    params_file = tmp_path / "params.yaml"
    params_file.write_text("/**:\n  ros__parameters:\n    max_batch: 3\n    tracker:\n      min_hits: 4\n"
                           "    model:\n      device: cuda\n")
    params, explicit = params_mod.node_params("/m.safetensors", "cpu", params_file,
                                              [("tracker.min_hits", "2"), ("overlay_alpha", "0.25")])
    assert (params.max_batch, params.tracker.min_hits, params.model.device, params.model.path,
            params.overlay_alpha) == (3, 2, "cpu", "/m.safetensors", 0.25)
    assert explicit == {"max_batch": 3, "tracker.min_hits": 2, "model.device": "cpu",
                        "model.path": "/m.safetensors", "overlay_alpha": 0.25}
    # What a live node receives: ROS's YAML scalars, typed as the schema types them.
    assert [replay.param_text(v) for v in (3, 0.25, 1.0, True, "/m.safetensors", ["front", "rear"], "it's")] == \
        ["3", "0.25", "1.0", "true", "'/m.safetensors'", "['front', 'rear']", "'it''s'"]
    with pytest.raises(ValueError, match="unknown parameter"):
        params_mod.node_params(None, None, None, [("tracker.nope", "1")])
    assert params_mod.parse_param("a.b:=c=d") == ("a.b", "c=d")


def test_frames_the_pipeline_refuses_are_skipped_and_counted(tmp_path: Path, model_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    from test_datasets import make_frames

    small = write_rosbag(tmp_path / "small", make_frames(3))  # 32x24: below the pipeline's 32 px a side
    rc, _, err = replay_cli([str(small), "--out", str(tmp_path / "a")], model_path, capsys)
    line = one_error_line(err)
    assert rc == 1 and "none of its 3 image(s) could be processed" in line and "smaller than 32 px" in line
    assert read_bag(tmp_path / "a" / "panoptic")[0] == {"/camera/camera_info": "sensor_msgs/msg/CameraInfo"}
    # One bad image among good ones: skipped with a warning, the rest replayed.
    good = synth_frames(5, n=3)
    bad = make_frames(1, sequence=good[0].sequence, stamp0_ns=good[-1].stamp_ns + 10**8)[0]
    bad.camera = None
    mixed = write_rosbag(tmp_path / "mixed", good + [bad])
    rc, stdout, err = replay_cli([str(mixed), "--out", str(tmp_path / "b")], model_path, capsys)
    assert rc == 0 and "3 of 4 frame(s)" in stdout
    assert err.strip().splitlines() == [f"panoptic-ros replay: warning: bag {mixed}: skipped 1 image(s) that could "
                                        f"not be processed; first: /camera/image at {bad.stamp_ns} ns: camera "
                                        "camera: image of 32x24 px is smaller than 32 px on a side; nothing can be "
                                        "segmented in it (is the driver's resolution set?)"]
