"""Faults: the device failing during inference, bad model files at start-up, a bag cut off mid-way.

There is no GPU here, so device faults are injected: the real tiny model runs behind a stand-in for an
accelerator (:class:`FaultyPredictor`) that reports ``cuda:0`` and raises ``torch.cuda.OutOfMemoryError``
or ``RuntimeError("CUDA error: device-side assert triggered")`` for the calls a test scripts. What must
hold: out of memory is survived by retrying the batch in halves down to single frames; a frame that still
fails either moves the model to ``model.fallback_device`` (when set) or is skipped alone; nothing else in
the batch is lost; every step is counted and described in /diagnostics. Model files that are missing,
truncated, pickled, of another class count, or corrupt stop ``panoptic_node`` at start-up with exit status
1 and one clear line. A bag cut off mid-way gives results for every frame before the cut and one error line
from ``panoptic-ros replay``.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from panoptic_ros import pipeline as pipeline_module
from panoptic_ros.classes import CITYSCAPES, ClassTable
from panoptic_ros.model.checkpoint import ModelCard
from panoptic_ros.model.config import ModelConfig
from panoptic_ros.model.efficientps import build_model
from panoptic_ros.model.predictor import FusionSettings, Predictor
from panoptic_ros.params import TrackerParams
from panoptic_ros.pipeline import (DEVICE_ERROR, FALLBACK, GAVE_UP, OUT_OF_MEMORY, SPLIT, CameraFrame, FrameFailure,
                                   FrameOutput, InferenceError, Pipeline, classify_inference_error)
from helpers_report import record
from helpers_model import TINY, save_tiny_model

torch.set_num_threads(1)

FULL = os.environ.get("PANOPTIC_RELIABILITY_SIZE", "ci") == "full"
REPO = Path(__file__).resolve().parents[1]
NODE = REPO / ".venv" / "bin" / "panoptic_node"
CLI = REPO / ".venv" / "bin" / "panoptic-ros"
PERMISSIVE_TRACKER = TrackerParams(min_hits=1, high_score_threshold=0.1, low_score_threshold=0.05,
                                   new_track_score_threshold=0.1)
OOM = "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.7 GiB total capacity; 14.9 GiB already allocated)"
ASSERT = "CUDA error: device-side assert triggered\nCUDA kernel errors might be asynchronously reported"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_tiny_model(path)
    return path


@pytest.fixture(scope="module")
def predictor(model_path: Path) -> Predictor:
    return Predictor.from_file(model_path, device="cpu",
                               fusion=FusionSettings(score_threshold=0.05, overlap_threshold=0.0, min_stuff_area=64))


Rule = Callable[[list[np.ndarray], str], BaseException | None]


class FaultyPredictor:
    """The real predictor behind a stand-in accelerator: it says it runs on ``cuda:0``, and each call first
    asks ``rule(frames, device)`` for an exception to raise (as the device would) before inferring for real."""

    def __init__(self, inner: Predictor, rule: Rule | None = None) -> None:
        self.inner = inner
        self.rule: Rule = rule or (lambda frames, device: None)
        self.device = "cuda:0"
        self.calls: list[tuple[str, int]] = []  # (device, batch size) of every call, failed ones included
        self.moves: list[str] = []
        self.releases = 0

    @property
    def classes(self) -> ClassTable:
        return self.inner.classes

    @property
    def dtype(self) -> torch.dtype:
        return self.inner.dtype

    @property
    def input_size(self) -> tuple[int, int]:
        return self.inner.input_size

    @property
    def card(self) -> ModelCard:
        return self.inner.card

    def with_fusion(self, **changes: float) -> None:
        self.inner.with_fusion(**changes)

    def predict(self, frames: list[np.ndarray]) -> list:
        self.calls.append((self.device, len(frames)))
        exc = self.rule(list(frames), self.device)
        if exc is not None:
            raise exc
        return self.inner.predict(frames)

    def to_device(self, device: str) -> None:
        self.inner.to_device(device)  # the real move (CPU to CPU here)
        self.device = device
        self.moves.append(device)

    def release_cached_memory(self) -> None:
        self.releases += 1


def frames_of(cameras: list[str], seed: int, stamp_s: float) -> list[CameraFrame]:
    rng = np.random.default_rng(seed)
    return [CameraFrame(c, rng.integers(0, 256, (64, 128, 3), dtype=np.uint8), stamp_s) for c in cameras]


def oom_when(condition: Callable[[list[np.ndarray], str], bool]) -> Rule:
    return lambda frames, device: torch.cuda.OutOfMemoryError(OOM) if condition(frames, device) else None


def reference(predictor: Predictor, frames: list[CameraFrame]) -> dict[str, FrameOutput]:
    """Each frame alone through a fault-free pipeline: what a survived fault must still produce."""
    pipe = Pipeline(predictor, tracker=PERMISSIVE_TRACKER, max_batch=1)
    return {o.camera: o for o in pipe.process(frames)}


def assert_same(output: FrameOutput, want: FrameOutput) -> None:
    np.testing.assert_array_equal(output.panoptic, want.panoptic)
    assert [o.track.track_id for o in output.objects] == [o.track.track_id for o in want.objects]


# --------------------------------------------------------------------------- the pipeline, device faults


def test_out_of_memory_splits_the_batch_down_to_single_frames_and_loses_nothing(predictor: Predictor) -> None:
    faulty = FaultyPredictor(predictor, oom_when(lambda frames, device: len(frames) > 1))
    pipe = Pipeline(faulty, tracker=PERMISSIVE_TRACKER, max_batch=4)
    frames = frames_of(["a", "b", "c", "d"], seed=1, stamp_s=1.0)
    outputs = pipe.process_each(frames)
    assert [type(o) for o in outputs] == [FrameOutput] * 4
    assert faulty.calls == [("cuda:0", 4), ("cuda:0", 2), ("cuda:0", 1), ("cuda:0", 1), ("cuda:0", 2),
                            ("cuda:0", 1), ("cuda:0", 1)]
    faults = pipe.take_faults()
    assert [(f.kind, f.batch_size, f.action) for f in faults] == [(OUT_OF_MEMORY, 4, SPLIT),
                                                                   (OUT_OF_MEMORY, 2, SPLIT),
                                                                   (OUT_OF_MEMORY, 2, SPLIT)]
    assert faults[0].device == "cuda:0" and faults[0].message.startswith("CUDA out of memory")
    assert "retrying the batch of 4 in two halves" in faults[0].describe()
    assert pipe.fault_counts == Counter({OUT_OF_MEMORY: 3, SPLIT: 3}) and pipe.take_faults() == []
    assert faulty.releases == 3 and faulty.moves == []
    want = reference(predictor, frames)
    for out in outputs:
        assert_same(out, want[out.camera])
    record(__file__, "faults.out_of_memory_split", frames=4, failed_calls=3, frames_lost=0)


def test_a_device_side_assert_costs_only_the_frame_that_triggers_it(predictor: Predictor) -> None:
    frames = frames_of(["a", "b", "c", "d"], seed=2, stamp_s=1.0)
    poison = frames[2].image_rgb

    def device_assert(batch: list[np.ndarray], device: str) -> BaseException | None:
        return RuntimeError(ASSERT) if any(f is poison for f in batch) else None

    faulty = FaultyPredictor(predictor, device_assert)
    pipe = Pipeline(faulty, tracker=PERMISSIVE_TRACKER, max_batch=4)
    outputs = pipe.process_each(frames)
    assert [type(o) for o in outputs] == [FrameOutput, FrameOutput, FrameFailure, FrameOutput]
    assert outputs[2].frame is frames[2] and "device-side assert" in str(outputs[2].error)
    assert [(f.kind, f.batch_size, f.action) for f in pipe.take_faults()] == [
        (DEVICE_ERROR, 4, SPLIT), (DEVICE_ERROR, 2, SPLIT), (DEVICE_ERROR, 1, GAVE_UP)]
    want = reference(predictor, frames)
    for out in (outputs[0], outputs[1], outputs[3]):
        assert_same(out, want[out.camera])
    # The failed frame never reached its camera's tracker; the next frame of that camera is its first.
    nxt = pipe.process(frames_of(["c"], seed=3, stamp_s=1.1))[0]
    assert nxt.frame_index == 0
    # process() (what replay calls) raises a typed error whose cause is the device's.
    with pytest.raises(InferenceError, match="1 of 4 frame") as info:
        pipe.process(frames)
    assert isinstance(info.value.__cause__, RuntimeError) and "device-side assert" in str(info.value.__cause__)


@pytest.mark.parametrize("fallback", ["cpu", ""])
def test_a_device_that_keeps_failing_falls_back_to_the_cpu_when_configured(predictor: Predictor,
                                                                          fallback: str) -> None:
    faulty = FaultyPredictor(predictor, oom_when(lambda frames, device: device.startswith("cuda")))
    pipe = Pipeline(faulty, tracker=PERMISSIVE_TRACKER, max_batch=2, fallback_device=fallback)
    frames = frames_of(["a", "b"], seed=4, stamp_s=1.0)
    outputs = pipe.process_each(frames)
    faults = [(f.kind, f.device, f.batch_size, f.action) for f in pipe.take_faults()]
    if fallback:
        assert [type(o) for o in outputs] == [FrameOutput, FrameOutput]
        assert faults == [(OUT_OF_MEMORY, "cuda:0", 2, SPLIT), (OUT_OF_MEMORY, "cuda:0", 1, FALLBACK)]
        assert faulty.calls == [("cuda:0", 2), ("cuda:0", 1), ("cpu", 1), ("cpu", 1)]
        assert faulty.moves == ["cpu"] and pipe.device == "cpu"
        want = reference(predictor, frames)
        for out in outputs:
            assert_same(out, want[out.camera])
        # For good: later batches run whole on the CPU, without new faults.
        later = pipe.process(frames_of(["a", "b"], seed=5, stamp_s=1.1))
        assert len(later) == 2 and faulty.calls[-1] == ("cpu", 2) and pipe.take_faults() == []
        record(__file__, "faults.fallback_to_cpu", frames=4, frames_lost=0, moves=faulty.moves)
    else:
        assert [type(o) for o in outputs] == [FrameFailure, FrameFailure]
        assert faults == [(OUT_OF_MEMORY, "cuda:0", 2, SPLIT), (OUT_OF_MEMORY, "cuda:0", 1, GAVE_UP),
                          (OUT_OF_MEMORY, "cuda:0", 1, GAVE_UP)]
        assert faulty.moves == [] and pipe.device == "cuda:0"


def test_a_failing_fallback_move_is_reported_not_raised(predictor: Predictor) -> None:
    faulty = FaultyPredictor(predictor, lambda frames, device: RuntimeError(ASSERT))

    def broken_move(device: str) -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    faulty.to_device = broken_move  # type: ignore[method-assign]
    pipe = Pipeline(faulty, tracker=PERMISSIVE_TRACKER, max_batch=1, fallback_device="cpu")
    (out,) = pipe.process_each(frames_of(["a"], seed=6, stamp_s=1.0))
    assert isinstance(out, FrameFailure) and "illegal memory access" in str(out.error)
    assert [f.action for f in pipe.take_faults()] == [FALLBACK, GAVE_UP]


def test_other_errors_are_not_retried(predictor: Predictor) -> None:
    faulty = FaultyPredictor(predictor, lambda frames, device: ValueError("a bug, not the device"))
    pipe = Pipeline(faulty, tracker=PERMISSIVE_TRACKER, max_batch=4, fallback_device="cpu")
    with pytest.raises(ValueError, match="a bug"):
        pipe.process_each(frames_of(["a", "b", "c"], seed=7, stamp_s=1.0))
    assert faulty.calls == [("cuda:0", 3)] and pipe.take_faults() == [] and faulty.moves == []


def test_inference_errors_are_classified() -> None:
    cases = [(torch.cuda.OutOfMemoryError(OOM), OUT_OF_MEMORY),
             (torch.OutOfMemoryError("out of memory"), OUT_OF_MEMORY),
             (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you "
                           "tried to allocate 123456789 bytes"), OUT_OF_MEMORY),
             (RuntimeError(ASSERT), DEVICE_ERROR),
             (RuntimeError("CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasSgemm( handle)`"), DEVICE_ERROR),
             (RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR"), DEVICE_ERROR),
             (RuntimeError("CUDA error: an illegal memory access was encountered"), DEVICE_ERROR),
             (RuntimeError("The size of tensor a (3) must match the size of tensor b (4)"), None),
             (ValueError("CUDA error: but a ValueError is ours"), None), (KeyError("x"), None)]
    assert [classify_inference_error(e) for e, _ in cases] == [k for _, k in cases]


def test_predictor_moves_to_the_cpu_and_leaves_half_precision(model_path: Path) -> None:
    p = Predictor.from_file(model_path, device="cpu", precision="fp16")
    assert p.dtype == torch.float16
    p.to_device("cpu")
    assert p.dtype == torch.float32 and p.device == torch.device("cpu")
    assert all(t.device.type == "cpu" for t in p.model.parameters())
    assert len(p.predict([np.zeros((64, 128, 3), np.uint8)])) == 1
    p.release_cached_memory()  # nothing cached on the CPU: a no-op, not an error


# --------------------------------------------------------------------------- the node reports faults


def _node_with(context: Any, model_path: Path, monkeypatch: pytest.MonkeyPatch, cameras: list[str],
               **params: Any) -> tuple[Any, FaultyPredictor]:
    """A PanopticNode (in this process) whose model sits behind a FaultyPredictor, worker stopped."""
    from rclpy.parameter import Parameter

    from panoptic_ros.ros.node import PanopticNode

    made: list[FaultyPredictor] = []
    real = pipeline_module.load_predictor

    def load(model_params: Any) -> FaultyPredictor:
        made.append(FaultyPredictor(real(model_params)))
        return made[0]

    monkeypatch.setattr(pipeline_module, "load_predictor", load)
    values = {"model.path": str(model_path), "model.device": "cpu", "model.score_threshold": 0.05,
              "model.overlap_threshold": 0.0, "tracker.min_hits": 1, "tracker.high_score_threshold": 0.1,
              "tracker.low_score_threshold": 0.05, "tracker.new_track_score_threshold": 0.1,
              "cameras": cameras, "max_batch": len(cameras), **params}
    node = PanopticNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()],
                        namespace=f"/faults_{uuid.uuid4().hex[:8]}")
    node.close()  # the test runs the processing cycles itself
    return node, made[0]


def _feed(node: Any, seed: int, stamp_s: float) -> None:
    from sensor_msgs.msg import Image

    rng = np.random.default_rng(seed)
    for cam in node.cameras:
        msg = Image(height=64, width=128, encoding="rgb8", step=384,
                    data=rng.integers(0, 256, 64 * 128 * 3, dtype=np.uint8).tobytes())
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(stamp_s), int(round(stamp_s % 1 * 1e9))
        cam.subs[0].callback(msg)
    node._cycle()


OK, WARN = 0, 1  # diagnostic_msgs/DiagnosticStatus levels


def _model_status(node: Any) -> tuple[int, str, dict[str, str]]:
    status = [s for s in node.diagnostics_array().status if s.name.endswith(": model")][0]
    level = status.level[0] if isinstance(status.level, bytes) else int(status.level)
    return level, status.message, {kv.key: kv.value for kv in status.values}


def _camera_counts(node: Any, key: str) -> dict[str, int]:
    return {c.name: c.stats[key] for c in node.cameras}


@pytest.fixture(scope="module")
def context():
    pytest.importorskip("rclpy")
    pytest.importorskip("panoptic_ros.msg")
    from helpers_ros import own_context

    with own_context() as ctx:
        yield ctx


@pytest.mark.timeout(120)
def test_node_survives_and_reports_out_of_memory_and_device_errors(context, model_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from panoptic_ros.ros import diagnostics

    node, faulty = _node_with(context, model_path, monkeypatch, ["a", "b", "c", "d"])
    try:
        assert node.device == "cuda:0" and _model_status(node)[0] == OK
        faulty.rule = oom_when(lambda frames, device: len(frames) > 1)
        _feed(node, seed=1, stamp_s=1.0)
        assert _camera_counts(node, diagnostics.PROCESSED) == {"a": 1, "b": 1, "c": 1, "d": 1}
        level, message, values = _model_status(node)
        assert level == WARN and "out of memory" in message and "two halves" in message
        assert (values["inference_out_of_memory"], values["batch_splits"], values["inference_device_errors"],
                values["device_fallbacks"], values["frames_failed_on_device"]) == ("3", "3", "0", "0", "0")
        assert values["device"] == "cuda:0"

        poisoned: list[np.ndarray] = []

        def device_assert(frames: list[np.ndarray], device: str) -> BaseException | None:
            return RuntimeError(ASSERT) if any(f is poisoned[0] for f in frames) else None

        original_decode = node._decode

        def decode(cam: Any, pending: Any) -> Any:  # remember camera c's pixels: the frame that trips the device
            frame = original_decode(cam, pending)
            if cam.name == "c":
                poisoned[:] = [frame.image_rgb]
            return frame

        monkeypatch.setattr(node, "_decode", decode)
        faulty.rule = device_assert
        _feed(node, seed=2, stamp_s=1.1)
        assert _camera_counts(node, diagnostics.PROCESSED) == {"a": 2, "b": 2, "c": 1, "d": 2}
        assert _camera_counts(node, diagnostics.PROCESSING_ERRORS) == {"a": 0, "b": 0, "c": 1, "d": 0}
        level, message, values = _model_status(node)
        assert level == WARN and "device error" in message and "skipped" in message
        assert (values["inference_device_errors"], values["batch_splits"], values["frames_failed_on_device"]) == \
            ("3", "5", "1")
        faulty.rule = lambda frames, device: None
        _feed(node, seed=3, stamp_s=1.2)
        assert _camera_counts(node, diagnostics.PROCESSED) == {"a": 3, "b": 3, "c": 2, "d": 3}
        assert _model_status(node)[0] == OK  # nothing new: the warning clears
        received = _camera_counts(node, diagnostics.RECEIVED)
        assert received == {"a": 3, "b": 3, "c": 3, "d": 3}
    finally:
        node.destroy_node()


@pytest.mark.timeout(120)
def test_node_falls_back_to_the_cpu_and_says_so(context, model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from panoptic_ros.ros import diagnostics

    node, faulty = _node_with(context, model_path, monkeypatch, ["a", "b"], **{"model.fallback_device": "cpu"})
    try:
        faulty.rule = oom_when(lambda frames, device: device.startswith("cuda"))
        _feed(node, seed=1, stamp_s=1.0)
        assert _camera_counts(node, diagnostics.PROCESSED) == {"a": 1, "b": 1}
        assert faulty.moves == ["cpu"]
        for seed in (2, 3):  # degraded for good: still WARN, though no new fault
            level, message, values = _model_status(node)
            assert level == WARN and values["device"] == "cpu"
            assert message.endswith("running on fallback device cpu after inference failed on cuda:0")
            assert (values["device_fallbacks"], values["inference_out_of_memory"]) == ("1", "2")
            _feed(node, seed=seed, stamp_s=1.0 + seed / 10)
        assert _camera_counts(node, diagnostics.PROCESSED) == {"a": 3, "b": 3}
        assert faulty.calls[-2:] == [("cpu", 2), ("cpu", 2)]
        assert _camera_counts(node, diagnostics.PROCESSING_ERRORS) == {"a": 0, "b": 0}
    finally:
        node.destroy_node()


# --------------------------------------------------------------------------- bad model files at start-up


def _start_node(model: Path, domain_id: int) -> subprocess.Popen:
    from helpers_ros import ros_env

    return subprocess.Popen([str(NODE), "--ros-args", "-p", f"model.path:={model}", "-p", "model.device:=cpu"],
                            env=ros_env(domain_id), cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def bad_model_files(good: Path, root: Path) -> dict[str, tuple[Path, str, Path]]:
    """name -> (file, the phrase its refusal must contain, the path the refusal must name)."""
    blob = good.read_bytes()
    card = good.with_suffix(".json").read_text()
    files: dict[str, tuple[Path, str, Path]] = {}

    def add(name: str, data: bytes, phrase: str, card_text: str | None = card) -> None:
        path = root / f"{name}.safetensors"
        path.write_bytes(data)
        if card_text is not None:
            path.with_suffix(".json").write_text(card_text)
        files[name] = (path, phrase, path if card_text is not None else path.with_suffix(".json"))

    files["missing"] = (root / "missing.safetensors", "does not exist", root / "missing.safetensors")
    add("truncated", blob[: len(blob) * 2 // 3], "is truncated")
    buf = io.BytesIO()
    torch.save(build_model(ModelConfig(pretrained_backbone=False, **TINY)).state_dict(), buf)
    add("pickled", buf.getvalue(), "is a pickle / torch.save file")
    # Weights of the 19-class model under a card for 12 classes: the heads' shapes cannot match.
    doc = json.loads(card)
    twelve = ClassTable(CITYSCAPES.classes[:12])
    other = ModelCard(name="tiny", config=replace(ModelCard.from_json(doc).config, classes=twelve),
                      weights_sha256=doc["weights_sha256"])
    add("wrong_class_count", blob, "class count or widths differ from the card", json.dumps(other.to_json()))
    # The rest are refused by the same loader; checked in-process below (no node start each).
    add("header_cut", blob[:6], "is truncated (6 bytes)")
    corrupt = bytearray(blob)
    corrupt[8:20] = b"not json!!!!"
    add("corrupt_header", bytes(corrupt), "corrupt safetensors header")
    flipped = bytearray(blob)
    for i in range(len(flipped) - 4000, len(flipped) - 3000, 7):  # tensor bytes; the header still parses
        flipped[i] ^= 0xFF
    add("changed_bytes", bytes(flipped), "does not match the weights_sha256 in its card")
    add("no_card", blob, "model card", None)
    return files


THROUGH_THE_NODE = ("missing", "truncated", "pickled", "wrong_class_count")


@pytest.mark.timeout(180)
def test_bad_model_files_stop_the_node_at_start_up_with_one_clear_line(model_path: Path, tmp_path: Path) -> None:
    pytest.importorskip("rclpy")
    from helpers_ros import random_domain_id

    files = bad_model_files(model_path, tmp_path)
    t0 = time.monotonic()
    started = {name: _start_node(files[name][0], random_domain_id()) for name in THROUGH_THE_NODE}
    outcomes = {}
    try:
        for name, process in started.items():
            out, _ = process.communicate(timeout=150)
            outcomes[name] = (process.returncode, out)
    finally:
        for process in started.values():
            if process.poll() is None:
                process.kill()
    for name in THROUGH_THE_NODE:
        _, phrase, named = files[name]
        rc, out = outcomes[name]
        fatal = [line for line in out.splitlines() if "cannot start:" in line]
        assert rc == 1, (name, out[-2000:])
        assert len(fatal) == 1 and phrase in fatal[0] and str(named) in fatal[0], (name, out[-2000:])
        assert "Traceback" not in out, (name, out[-2000:])
    record(__file__, "faults.model_files", refused_by_the_node=list(THROUGH_THE_NODE), exit_status=1,
           seconds=round(time.monotonic() - t0, 1))


def test_every_bad_model_file_is_refused_by_the_loader_the_node_uses(model_path: Path, tmp_path: Path) -> None:
    from panoptic_ros.model.checkpoint import CheckpointError
    from panoptic_ros.params import ModelParams

    files = bad_model_files(model_path, tmp_path)
    for name, (path, phrase, named) in files.items():
        with pytest.raises(CheckpointError) as info:
            pipeline_module.load_predictor(ModelParams(path=str(path), device="cpu"))
        assert phrase in str(info.value) and str(named) in str(info.value), (name, str(info.value))
    assert pipeline_module.load_predictor(ModelParams(path=str(model_path), device="cpu")).classes == CITYSCAPES
    record(__file__, "faults.model_files_loader", refused=sorted(files))


# --------------------------------------------------------------------------- a bag cut off mid-way


def readable_frames(mcap_bytes: bytes, topic_suffix: str = "/image") -> int:
    """Image messages a streaming mcap reader gets before the cut: the independent count of what is readable."""
    from mcap.exceptions import McapError
    from mcap.records import Channel, Message
    from mcap.stream_reader import StreamReader

    channels: dict[int, str] = {}
    count = 0
    try:
        for rec in StreamReader(io.BytesIO(mcap_bytes), emit_chunks=False).records:
            if isinstance(rec, Channel):
                channels[rec.id] = rec.topic
            elif isinstance(rec, Message) and channels.get(rec.channel_id, "").endswith(topic_suffix):
                count += 1
    except (McapError, EOFError, ValueError):
        pass
    return count


@pytest.mark.timeout(240)
def test_replay_of_a_bag_cut_mid_way_keeps_every_readable_frame_and_says_why(model_path: Path,
                                                                            tmp_path: Path) -> None:
    from rosbags.highlevel import AnyReader

    from panoptic_ros.datasets.rosbag_io import panoptic_typestore, write_rosbag
    from panoptic_ros.synth import SynthConfig, SyntheticSequence

    n = 24 if FULL else 12
    seq = SyntheticSequence(3, n, SynthConfig(height=128, width=256))  # ~230 kB a frame: several mcap chunks
    bag = write_rosbag(tmp_path / "drive", [seq.render(k) for k in range(n)], storage="mcap")
    (data,) = bag.glob("*.mcap")
    blob = data.read_bytes()
    cut = blob[: int(len(blob) * 0.6)]
    data.write_bytes(cut)
    readable = readable_frames(cut)
    assert 0 < readable < n, readable
    out = tmp_path / "out"
    result = subprocess.run([str(CLI), "replay", str(bag), "--out", str(out), "--model", str(model_path),
                             "-p", "model.device:=cpu"], capture_output=True, text=True, timeout=200)
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, result.stderr[-2000:]
    assert len(errors) == 1 and "is truncated" in errors[0] and str(bag) in errors[0], result.stderr
    with AnyReader([out / "panoptic"], default_typestore=panoptic_typestore()) as reader:
        written = [c for c, _, _ in reader.messages() if c.topic.endswith("/panoptic/objects")]
    assert len(written) == readable, (len(written), readable)
    assert f"{readable} of {readable} frame(s)" in result.stdout, result.stdout
    record(__file__, "faults.truncated_bag", frames_recorded=n, bytes_kept=f"{len(cut)} of {len(blob)}",
           frames_readable=readable, frames_replayed=len(written), exit_status=result.returncode,
           error_line=errors[0])
