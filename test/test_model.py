"""The model: architecture shapes, a tiny training run whose loss falls, checkpoints, the predictor."""
import dataclasses
import json
import numpy as np
import pytest
import torch

from panoptic_ros.classes import CITYSCAPES, ClassInfo, ClassTable
from panoptic_ros.model.backbone import EfficientNetLite0, build_backbone, lite0_imagenet_path
from panoptic_ros.model.checkpoint import CheckpointError, ModelCard, load_model, save_model
from panoptic_ros.model.config import ModelConfig, demo_config
from panoptic_ros.model.efficientps import build_model
from panoptic_ros.model.predictor import Predictor, flip_average_stuff
from panoptic_ros.model.targets import frame_to_sample
from panoptic_ros.model.train import TrainSettings, train
from helpers_model import TINY, street_frame

torch.set_num_threads(2)

class FixedPairs:
    def sample(self, rng):
        return street_frame(1), street_frame(1)

    def describe(self):
        return {"source": "test"}


def test_backbone_strides_and_imagenet_weights():
    net = build_backbone("efficientnet_lite0", pretrained=True).eval()
    feats = net(torch.zeros(1, 3, 64, 128))
    assert [tuple(f.shape[-2:]) for f in feats] == [(32, 64), (16, 32), (8, 16), (4, 8), (2, 4)]
    assert [f.shape[1] for f in feats] == list(EfficientNetLite0.out_channels)
    # Every trunk tensor came from the ImageNet file (not left at random init).
    from safetensors.torch import load_file
    state = load_file(str(lite0_imagenet_path()))
    own = net.state_dict()
    assert set(state) <= set(own)
    assert all(torch.equal(own[k], v) for k, v in state.items())
    assert len(state) == len([k for k in own if not k.endswith("num_batches_tracked")])


def test_torchvision_backbone_selectable():
    net = build_backbone("efficientnet_b0", pretrained=False)
    feats = net(torch.zeros(1, 3, 64, 64))
    assert [tuple(f.shape[-2:]) for f in feats] == [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]


def test_targets_from_frame():
    f = street_frame(3)
    s = frame_to_sample(f, CITYSCAPES)
    assert s.image.shape == (3, 64, 128) and s.semantic.shape == (64, 128)
    assert len(s.instances.boxes) == len(set(np.unique(f.instance)) - {0})
    car_label = CITYSCAPES.thing_ids.index(13) + 1
    assert (s.instances.labels == car_label).all()
    for box, mask in zip(s.instances.boxes, s.instances.masks):
        ys, xs = np.nonzero(mask.numpy())
        assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    flipped = frame_to_sample(f, CITYSCAPES, flip=True)
    assert torch.equal(flipped.semantic, s.semantic.flip(-1))


def test_tiny_training_run_loss_falls_and_resumes(tmp_path):
    s = TrainSettings(out=str(tmp_path / "run"), steps=24, warmup_steps=4, lr=2e-3, checkpoint_every=12,
                      overrides=TINY)
    path = train(s, source=FixedPairs(), progress=False)
    hist = json.loads((tmp_path / "run" / "train_state" / "state.json").read_text())["state"]["history"]
    first = np.mean([h["total"] for h in hist[:3]])
    last = np.mean([h["total"] for h in hist[-3:]])
    assert last < 0.6 * first, (first, last)
    assert (tmp_path / "run" / "loss_curves.png").stat().st_size > 1000
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["training"]["steps_done"] == 24 and card["config"]["fpn_channels"] == 32
    # Resume: asking for more steps continues from the saved step instead of starting over.
    s.steps = 26
    train(s, source=FixedPairs(), progress=False)
    hist2 = json.loads((tmp_path / "run" / "train_state" / "state.json").read_text())["state"]["history"]
    assert len(hist2) == 26 and hist2[:24] == hist


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory):
    torch.manual_seed(0)
    cfg = ModelConfig(pretrained_backbone=False, **TINY)
    model = build_model(cfg).eval()
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(model, path, ModelCard(name="tiny", config=cfg))
    return path, model


def test_checkpoint_round_trip_gives_the_same_outputs(tiny_model_file):
    path, model = tiny_model_file
    loaded, card = load_model(path, expected_classes=CITYSCAPES)
    x = torch.randn(1, 3, 64, 128)
    ref = model.half().float()(x)  # the file stores fp16
    out = loaded(x)
    for a, b in zip(ref, out):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert card.name == "tiny" and len(card.weights_sha256) == 64


def test_bad_checkpoints_are_refused_with_a_reason(tiny_model_file, tmp_path):
    path, model = tiny_model_file
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope.safetensors")
    pickled = tmp_path / "pickled.safetensors"
    torch.save(model.state_dict(), pickled)
    with pytest.raises(CheckpointError, match="pickle"):
        load_model(pickled)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    truncated.with_suffix(".json").write_text(path.with_suffix(".json").read_text())
    with pytest.raises(CheckpointError, match="truncated"):
        load_model(truncated)
    corrupt = tmp_path / "corrupt.safetensors"
    data = bytearray(path.read_bytes())
    data[8:20] = b"not json!!!!"
    corrupt.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(corrupt)
    no_card = tmp_path / "nocard.safetensors"
    no_card.write_bytes(path.read_bytes())
    with pytest.raises(CheckpointError, match="card"):
        load_model(no_card)
    other = ClassTable(CITYSCAPES.classes[:18] + (ClassInfo(18, "bike", 33, True, (1, 2, 3)),))
    with pytest.raises(CheckpointError, match="classes"):
        load_model(path, expected_classes=other)
    # A card whose architecture does not match the tensors (wider FPN).
    wrong = tmp_path / "wrong.safetensors"
    wrong.write_bytes(path.read_bytes())
    card = json.loads(path.with_suffix(".json").read_text())
    card["config"]["fpn_channels"] = 48
    wrong.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="shape"):
        load_model(wrong)


def test_predictor_returns_typed_results_at_frame_size(tiny_model_file):
    path, _ = tiny_model_file
    pred = Predictor.from_file(path, device="cpu")
    pred.with_fusion(score_threshold=0.0, min_stuff_area=0)
    frames = [street_frame(5).image, np.ascontiguousarray(street_frame(6, 96, 160).image)]
    results = pred.predict(frames)
    assert [r.class_map.shape for r in results] == [(64, 128), (96, 160)]
    for r in results:
        n = r.num_instances
        assert r.instance_map.dtype == np.int32 and r.class_map.dtype == np.uint8
        assert r.scores.shape == (n,) and r.boxes_xyxy.shape == (n, 4) and r.embeddings.shape == (n, 16)
        assert set(np.unique(r.instance_map)) <= set(range(n + 1))
        for i in range(n):
            ys, xs = np.nonzero(r.mask(i))
            assert r.boxes_xyxy[i].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert CITYSCAPES.classes[r.classes[i]].is_thing
            assert (r.class_map[r.mask(i)] == r.classes[i]).all()
        if n:
            np.testing.assert_allclose(np.linalg.norm(r.embeddings, axis=1), 1.0, rtol=1e-4)
    with pytest.raises(ValueError, match="uint8"):
        pred.predict([np.zeros((4, 4), np.float32)])


def test_flip_average_stuff_on_hand_made_logits():
    # Two images of 2 classes (0 stuff, 1 thing) on a 1x3 grid, then their mirrored views.
    plain = torch.tensor([[[[1., 2., 3.]], [[7., 8., 9.]]], [[[0., 0., 6.]], [[5., 5., 5.]]]])
    mirrored = torch.tensor([[[[30., 20., 10.]], [[-1., -1., -1.]]], [[[4., 2., 0.]], [[-9., -9., -9.]]]])
    out = flip_average_stuff(torch.cat([plain, mirrored]), 2, torch.tensor([0]))
    expected = torch.tensor([[[[5.5, 11., 16.5]], [[7., 8., 9.]]], [[[0., 1., 5.]], [[5., 5., 5.]]]])
    assert torch.equal(out, expected)


def test_test_time_flip_makes_the_stuff_logits_mirror_symmetric(tiny_model_file):
    """With the flip, a frame's and its mirror image's stuff logits are exact mirrors of each other (without
    it they are not: the network is not mirror-symmetric); thing logits and FPN maps stay the plain view's."""
    path, _ = tiny_model_file
    plain = Predictor.from_file(path, device="cpu")
    flip = Predictor.from_file(path, device="cpu", test_time_flip=True)
    stuff, things = list(plain.classes.stuff_ids), list(plain.classes.thing_ids)
    image = torch.from_numpy(street_frame(5).image).permute(2, 0, 1)[None]
    x = plain.model.normalize(torch.cat([image, image.flip(-1)]))
    p0, s0 = plain.dense_outputs(x)
    p1, s1 = flip.dense_outputs(x)
    asymmetry_plain = (s0[0, stuff] - s0[1, stuff].flip(-1)).abs().max()
    asymmetry_flip = (s1[0, stuff] - s1[1, stuff].flip(-1)).abs().max()
    assert asymmetry_plain > 1e-6 and asymmetry_flip <= asymmetry_plain / 100
    torch.testing.assert_close(s1[:, things], s0[:, things], rtol=0, atol=1e-5)
    for a, b in zip(p0, p1):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    torch.testing.assert_close(s1[:, stuff], (s0[:, stuff] + s0.flip(0)[:, stuff].flip(-1)) / 2, rtol=0, atol=1e-5)
    (r,) = flip.predict([street_frame(6, 96, 160).image])
    assert r.class_map.shape == (96, 160)


def test_demo_config_is_the_shipped_architecture():
    cfg = demo_config()
    assert cfg.backbone == "efficientnet_lite0" and (cfg.input_height, cfg.input_width) == (256, 512)


@pytest.mark.parametrize("layout", ["coco", "video"])
def test_training_reads_dataset_directories_and_resizes(tmp_path, layout):
    from panoptic_ros.datasets.coco import write_coco_panoptic
    from panoptic_ros.datasets.video_panoptic import write_video_panoptic

    frames = []
    for k in range(3):
        f = street_frame(k, 96, 192)  # stored at another size than the 64x128 network input
        f.sequence, f.frame_index, f.stamp_ns = "seq", k, k * 100_000_000
        frames.append(f)
    root = tmp_path / layout
    (write_coco_panoptic if layout == "coco" else write_video_panoptic)(root, frames)
    s = TrainSettings(out=str(tmp_path / "run"), data=str(root), steps=2, warmup_steps=1, checkpoint_every=2,
                      overrides=TINY)
    path = train(s, progress=False)
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["training"]["data"]["source"] == "dataset"
    assert card["training"]["data"]["temporal_pairs"] == (layout == "video")
    assert card["training"]["steps_done"] == 2


def test_resume_after_the_architecture_gained_a_module(tmp_path):
    """Optimiser state is keyed by parameter name: new modules start fresh, the rest continues."""
    s = TrainSettings(out=str(tmp_path / "run"), steps=2, warmup_steps=1, checkpoint_every=2,
                      overrides={**TINY, "stride2_refinement": False})
    train(s, source=FixedPairs(), progress=False)
    s2 = TrainSettings(out=str(tmp_path / "run"), steps=3, warmup_steps=1, checkpoint_every=1,
                       overrides={**TINY, "stride2_refinement": True})
    train(s2, source=FixedPairs(), progress=False)
    hist = json.loads((tmp_path / "run" / "train_state" / "state.json").read_text())["state"]["history"]
    assert [h["step"] for h in hist] == [1, 2, 3]
    from safetensors.torch import load_file
    state = load_file(str(tmp_path / "run" / "train_state" / "optimizer.safetensors"))
    assert any(k.startswith("refinement.") for k in state)  # the new module now has optimiser state too


def test_training_can_continue_from_a_model_file(tmp_path, tiny_model_file):
    path, model = tiny_model_file
    s = TrainSettings(out=str(tmp_path / "cont"), init=str(path), steps=1, warmup_steps=1, checkpoint_every=1)
    out = train(s, source=FixedPairs(), progress=False)
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["config"]["fpn_channels"] == TINY["fpn_channels"]  # the init model's architecture, not the preset's
    assert card["training"]["settings"]["init"] == str(path)
    # Continued once more: the card nests the whole chain, each run with its own record, and sums it.
    # (with the semantic loss weighted per class, which the card's settings and command record)
    s2 = TrainSettings(out=str(tmp_path / "cont2"), init=str(out), steps=2, warmup_steps=1, checkpoint_every=1,
                       semantic_class_weights={"traffic light": 2.5})
    card2 = json.loads(train(s2, source=FixedPairs(), progress=False).with_suffix(".json").read_text())
    t = card2["training"]
    assert t["settings"]["semantic_class_weights"] == {"traffic light": 2.5}
    assert "--semantic-class-weight 'traffic light=2.5'" in t["command"]
    assert t["steps_done"] == 2 and t["settings"]["init"] == str(out)
    assert t["parent"]["weights_sha256"] == card["weights_sha256"] and t["parent"]["steps_done"] == 1
    assert t["parent"]["parent"]["weights_sha256"] == json.loads(path.with_suffix(".json").read_text())["weights_sha256"]
    assert t["total_steps"] == 3 and t["total_train_time_s"] == pytest.approx(
        t["train_time_s"] + t["parent"]["train_time_s"])
    # --input-size applies to a continued model too (the network is convolutional): trained and carded at 96x192
    s3 = TrainSettings(out=str(tmp_path / "cont3"), init=str(out), steps=1, warmup_steps=1, checkpoint_every=1,
                       overrides={"input_height": 96, "input_width": 192})
    card3 = json.loads(train(s3, source=FixedPairs(), progress=False).with_suffix(".json").read_text())
    assert (card3["config"]["input_height"], card3["config"]["input_width"]) == (96, 192)
    assert card3["config"]["fpn_channels"] == TINY["fpn_channels"]


def test_render_size_trains_on_frames_enlarged_as_the_predictor_enlarges_them(tmp_path):
    """--render-size: synthetic frames rendered smaller than the network input are enlarged bilinearly (as the
    predictor does), and the card's held-out PQ is measured on frames of that size; a dataset run refuses it."""
    import random

    import torch.nn.functional as F

    from panoptic_ros.model.config import PRESETS
    from panoptic_ros.model.evaluation import evaluate_synthetic_for_card
    from panoptic_ros.model.train import SyntheticPairs, render_hw

    s = TrainSettings(out=str(tmp_path / "run"), steps=1, warmup_steps=1, checkpoint_every=1, eval_sequences=1,
                      eval_frames=1, render_size=[64, 128], overrides={**TINY, "input_height": 96, "input_width": 192})
    cfg = PRESETS[s.preset](**s.overrides)
    assert render_hw(s, cfg) == (64, 128) and render_hw(TrainSettings(out="x"), cfg) == (96, 192)
    a, _ = SyntheticPairs(cfg, s).pair(3, random.Random(0))
    assert a.image.shape == (64, 128, 3)
    x = frame_to_sample(a, cfg.classes, size=(96, 192))
    enlarged = F.interpolate(torch.from_numpy(a.image).permute(2, 0, 1)[None].float(), size=(96, 192),
                             mode="bilinear", align_corners=False)[0]
    assert x.image.shape == (3, 96, 192) and (x.image.float() - enlarged).abs().max() <= 1.0  # uint8 rounding
    # labels enlarged centre-aligned (nearest-exact), so they stay on the image's content
    labels = F.interpolate(torch.from_numpy(a.semantic)[None, None].float(), size=(96, 192), mode="nearest-exact")
    assert torch.equal(x.semantic.long(), labels[0, 0].long())
    card = json.loads(train(s, progress=False, evaluate_fn=evaluate_synthetic_for_card)
                      .with_suffix(".json").read_text())
    assert card["metrics"]["held_out"]["size"] == [64, 128] and card["metrics"]["frames"] == 1
    assert (card["config"]["input_height"], card["config"]["input_width"]) == (96, 192)
    assert "--render-size 64x128" in card["training"]["command"]
    with pytest.raises(ValueError, match="render-size"):
        train(TrainSettings(out=str(tmp_path / "ds"), data=str(tmp_path), render_size=[64, 128]), progress=False)
    with pytest.raises(ValueError, match=r"render-size must be HxW with both sides in 32\.\.4096"):
        train(TrainSettings(out=str(tmp_path / "small"), render_size=[16, 128]), progress=False)


def test_the_cards_training_command_reproduces_the_settings():
    """The command written into a model card parses back into the same settings (flags and --input-size too)."""
    import argparse
    import shlex

    from panoptic_ros.model.train import _settings_argv, register, settings_from_args

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    for s in (TrainSettings(out="runs/x"),
              TrainSettings(out="runs/y", steps=10, lr=4e-4, amp=False, channels_last=False, init="m.safetensors",
                            data_workers=3, time_budget_s=90.0, overrides={"input_height": 128, "input_width": 256},
                            semantic_class_weights={"traffic light": 2.5, "wall": 1.75}, render_size=[64, 128])):
        argv = shlex.split(" ".join(_settings_argv(s)))
        assert settings_from_args(parser.parse_args(["train", *argv])) == s


@pytest.mark.parametrize("flag,value,reason", [("--input-size", "320by640", "is not HEIGHTxWIDTH"),
                                              ("--render-size", "256x", "is not HEIGHTxWIDTH"),
                                              ("--input-size", "8x16", "outside 32..4096")])
def test_train_refuses_a_malformed_size_with_the_reason(flag, value, reason, capsys):
    """Sizes parse with the one shared HEIGHTxWIDTH type (panoptic_ros.argtypes): exit 2 and the reason."""
    import argparse

    from panoptic_ros.model.train import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["train", "--out", "runs/x", flag, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and reason in err


def test_size_lists_parse_each_size():
    import argparse

    from panoptic_ros.argtypes import parse_sizes

    assert parse_sizes("256x512, 1024X2048") == [(256, 512), (1024, 2048)]
    with pytest.raises(argparse.ArgumentTypeError, match="is not HEIGHTxWIDTH"):
        parse_sizes("256x512,512")


def test_semantic_loss_class_weights_on_a_hand_made_case():
    """Per-class weights scale each pixel's cross-entropy by its true class's weight: the mean term becomes the
    weighted mean and the hard-pixel term picks the largest weighted losses; void pixels stay out."""
    import math

    from panoptic_ros.model.efficientps import semantic_loss

    logits = torch.zeros(1, 3, 1, 4)  # uniform over 3 classes: every labelled pixel's loss is ln 3
    target = torch.tensor([[[0, 1, 2, 255]]])
    ln3 = math.log(3)
    assert semantic_loss(logits, target, 0.34).item() == pytest.approx(ln3)
    w = torch.tensor([1.0, 2.0, 5.0])
    # weighted mean: (1 + 2 + 5) ln3 / 8 = ln3; hardest third of 3 pixels = 1 pixel, the class-2 one: 5 ln3
    assert semantic_loss(logits, target, 0.34, w).item() == pytest.approx(0.5 * ln3 + 0.5 * 5 * ln3)
    logits[0, 0, 0, 0] = 10.0  # pixel 0 now nearly right: the weighted mean is (~0 + 2 ln3 + 5 ln3) / 8
    ce0 = math.log(1 + 2 * math.exp(-10.0))
    expect = 0.5 * (ce0 + 7 * ln3) / 8 + 0.5 * 5 * ln3
    assert semantic_loss(logits, target, 0.34, w).item() == pytest.approx(expect, rel=1e-6)


def test_semantic_class_weights_are_checked_against_the_class_table():
    import argparse

    from panoptic_ros.model.config import PRESETS
    from panoptic_ros.model.train import parse_class_weight, semantic_class_weight_tensor

    cfg = PRESETS["demo"](**TINY)
    assert semantic_class_weight_tensor({}, cfg, torch.device("cpu")) is None
    w = semantic_class_weight_tensor({"traffic light": 2.5}, cfg, torch.device("cpu"))
    assert w.shape == (len(cfg.classes),) and w[cfg.classes.by_name("traffic light").train_id] == 2.5
    assert float(w.sum()) == len(cfg.classes) - 1 + 2.5
    with pytest.raises(ValueError, match="unknown classes \\['trafic light'\\]"):
        semantic_class_weight_tensor({"trafic light": 2.0}, cfg, torch.device("cpu"))
    with pytest.raises(ValueError, match="finite and > 0"):
        semantic_class_weight_tensor({"wall": 0.0}, cfg, torch.device("cpu"))
    assert parse_class_weight("traffic light=2.5") == ("traffic light", 2.5)
    for bad in ("wall", "=2", "wall=x"):
        with pytest.raises(argparse.ArgumentTypeError, match="CLASS=WEIGHT"):
            parse_class_weight(bad)


def test_train_command_refuses_bad_settings_with_a_reason(tmp_path, capsys):
    """A misspelt class weight or a missing --init file ends `panoptic-ros train` with exit 2 and the reason,
    before any training work."""
    from panoptic_ros.cli import main

    out = str(tmp_path / "run")
    assert main(["train", "--out", out, "--no-eval", "--semantic-class-weight", "trafic light=2"]) == 2
    assert "unknown classes ['trafic light']" in capsys.readouterr().err
    assert main(["train", "--out", out, "--no-eval", "--init", str(tmp_path / "missing.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("panoptic-ros train: error:") and "missing.safetensors" in err
    assert not (tmp_path / "run" / "train_state").exists()


def test_data_workers_give_the_same_step_keyed_samples_as_one_process(tmp_path):
    """With --data-workers the data of step i depends only on (seed, i): rendered in worker processes it is
    what the training process would render itself, so neither the worker count nor a resume changes it."""
    from panoptic_ros.model.config import PRESETS
    from panoptic_ros.model.train import ParallelSteps, SyntheticPairs, step_samples

    s = TrainSettings(out=str(tmp_path / "run"), pairs_per_step=2, data_workers=2, overrides=TINY)
    cfg = PRESETS[s.preset](**TINY)
    here = [step_samples(SyntheticPairs(cfg, s), s, cfg, k) for k in (7, 8, 9)]
    assert not all(torch.equal(a.image, b.image) for a, b in zip(here[0], here[1]))  # steps differ
    workers = ParallelSteps(cfg, s, first_step=7, workers=2)
    try:
        rendered = [next(workers) for _ in range(3)]
    finally:
        workers.close()
    for mine, theirs in zip(here, rendered):
        assert len(mine) == len(theirs) == 4  # two pairs of two frames
        for a, b in zip(mine, theirs):
            assert torch.equal(a.image, b.image) and torch.equal(a.semantic, b.semantic)
            assert torch.equal(a.instances.masks, b.instances.masks)
            assert torch.equal(a.instances.track_ids, b.instances.track_ids)
    out = train(dataclasses.replace(s, steps=2, warmup_steps=1, checkpoint_every=2, data_workers=1), progress=False)
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["steps_done"] == 2 and "--data-workers 1" in card["training"]["command"]
    with pytest.raises(ValueError, match="data-workers"):
        train(TrainSettings(out=str(tmp_path / "ds"), data=str(tmp_path), data_workers=1, overrides=TINY),
              progress=False)


def test_time_budget_ends_the_run_with_its_schedule(tmp_path):
    """--time-budget-s: the cosine schedule runs over training time and the run stops when it is spent (long
    before --steps), ending near the schedule's floor; resuming a spent run trains no further."""
    s = TrainSettings(out=str(tmp_path / "run"), steps=100_000, warmup_steps=1, lr=2e-3, checkpoint_every=1000,
                      time_budget_s=3.0, overrides=TINY)
    train(s, source=FixedPairs(), progress=False)
    hist = json.loads((tmp_path / "run" / "train_state" / "state.json").read_text())["state"]["history"]
    spent = sum(h["time_s"] for h in hist)
    assert 3.0 <= spent < 3.0 + 5 * max(h["time_s"] for h in hist) and 2 < len(hist) < 100_000
    from panoptic_ros.model.train import lr_at
    before = np.cumsum([0.0] + [h["time_s"] for h in hist])
    assert [h["lr"] for h in hist] == [lr_at(i, s, before[i]) for i in range(len(hist))]  # time is the clock
    assert hist[0]["lr"] == s.lr and hist[-1]["lr"] < 0.3 * s.lr  # decayed over the budget
    train(s, source=FixedPairs(), progress=False)
    again = json.loads((tmp_path / "run" / "train_state" / "state.json").read_text())["state"]["history"]
    assert len(again) == len(hist)


def test_pointwise_convolution_as_matrix_product_equals_the_convolution(monkeypatch):
    """CPU training on NHWC maps takes the matrix-product path; values and gradients are the convolution's."""
    from panoptic_ros.model import layers

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(24, 12, 1).to(memory_format=torch.channels_last)
    pw = layers.Pointwise(24, 12).to(memory_format=torch.channels_last)
    pw.load_state_dict(conv.state_dict())  # the same state dict as nn.Conv2d's
    x = torch.randn(2, 24, 16, 32).contiguous(memory_format=torch.channels_last)
    grad_out = torch.randn(2, 12, 16, 32)
    results = []
    for module in (conv, pw):
        xi = x.clone().requires_grad_()
        y = module(xi)
        y.backward(grad_out)
        results.append((y.detach(), xi.grad, module.weight.grad, module.bias.grad))
    assert layers.pointwise_as_matmul(pw, x)
    assert results[1][0].is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    # Elsewhere it is the convolution itself: inference, no grad, NCHW input, above the size limit.
    assert not layers.pointwise_as_matmul(pw.eval(), x)
    pw.train()
    with torch.no_grad():
        assert not layers.pointwise_as_matmul(pw, x)
    assert not layers.pointwise_as_matmul(pw, x.contiguous())
    monkeypatch.setattr(layers, "MATMUL_MAX_MACS", 2 * 16 * 32 * 24 * 12 - 1)
    assert not layers.pointwise_as_matmul(pw, x)


def test_weight_average_follows_every_tensor(tmp_path):
    """EMA: floating tensors move (1 - d) of the way to the model's, integer buffers are copied."""
    import copy

    from helpers_model import tiny_model
    from panoptic_ros.model.train import WeightAverage

    model, _ = tiny_model()
    ema = WeightAverage(model, 0.999, tmp_path / "none.safetensors")
    before = copy.deepcopy(ema.model.state_dict())
    for step in (5, 6):
        with torch.no_grad():
            for t in model.state_dict().values():
                t.add_(torch.randn_like(t) if t.is_floating_point() else torch.ones_like(t))
        ema.update(model, step)
        d = (1 + step) / (10 + step)
        for name, avg in ema.model.state_dict().items():
            cur = model.state_dict()[name]
            expected = d * before[name] + (1 - d) * cur if cur.is_floating_point() else cur
            torch.testing.assert_close(avg, expected, msg=name)
        before = copy.deepcopy(ema.model.state_dict())
    assert ema.model.state_dict()["fpn.lateral_td.0.1.num_batches_tracked"] == \
        model.state_dict()["fpn.lateral_td.0.1.num_batches_tracked"]


def test_resume_keeps_the_saved_hyper_parameters_and_this_codes_optimizer_kernel(tmp_path):
    """A state saved by the per-tensor AdamW loop resumes under the fused one (and keeps lr, moments)."""
    from helpers_model import tiny_model
    from panoptic_ros.model.checkpoint import load_training_state, save_training_state

    model, _ = tiny_model()
    old = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.05, foreach=False)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    old.step()
    save_training_state(tmp_path, model, old, {"step": 1})
    new = torch.optim.AdamW(model.parameters(), lr=1.0, fused=True)
    assert load_training_state(tmp_path, model, new) == {"step": 1}
    group = new.param_groups[0]
    assert group["fused"] is True and not group["foreach"]
    assert group["lr"] == 3e-4 and group["weight_decay"] == 0.05
    first = next(iter(model.parameters()))
    torch.testing.assert_close(new.state[first]["exp_avg"], old.state[first]["exp_avg"])
    new.step()  # the fused kernel accepts the resumed state


def test_bench_train_times_the_real_training_loop(tmp_path, tiny_model_file):
    """tools/bench_train.py: per-step times of a short run from a model file, warm-up steps left out."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "bench_train.py"
    spec = importlib.util.spec_from_file_location("bench_train", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    assert bench.main(["--init", str(tiny_model_file[0]), "--steps", "3", "--skip", "1", "--repeats", "2",
                       "--data-workers", "0", "--threads", "1", "--json", str(out)]) == 0
    row = json.loads(out.read_text())
    assert row["steps_timed"] == 4 and len(row["run_medians_s"]) == 2
    assert 0 < row["median_s"] <= row["p90_s"] * (1 + 1e-9)


def test_train_vs_heldout_scores_the_frames_training_drew(tmp_path, tiny_model_file, capsys, monkeypatch):
    """tools/train_vs_heldout.py scores frames 0, s, 2s.. of the training seeds' full-length worlds (the very
    frames training renders) next to the same sampling of held-out seeds."""
    import importlib.util
    from pathlib import Path

    from panoptic_ros.model.evaluation import synthetic_frames
    from panoptic_ros.synth import SynthConfig, SyntheticSequence

    path = Path(__file__).resolve().parents[1] / "tools" / "train_vs_heldout.py"
    spec = importlib.util.spec_from_file_location("train_vs_heldout", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    # the sampling: frame 2 of seed 3's 4-frame world is what training's SyntheticPairs renders for it
    f = list(synthetic_frames(3, 1, 2, 64, 128, 2))[1]
    g = SyntheticSequence(seed=3, num_frames=4, config=SynthConfig(height=64, width=128)).render(2)
    assert (f.image == g.image).all() and (f.instance == g.instance).all()
    assert tool.main(["--model", str(tiny_model_file[0]), "--sequences", "1", "--frames", "2",
                      "--frames-per-sequence", "4", "--threads", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"train", "heldout"} and out["train"]["frames"] == out["heldout"]["frames"] == 2
    assert all(0.0 <= out[k]["pq"] <= 1.0 for k in out)
    with pytest.raises(SystemExit):
        tool.main(["--model", str(tiny_model_file[0]), "--frames", "3", "--frames-per-sequence", "80"])
    # --size: frames rendered at another size than the network input (as `train --render-size` trains)
    sizes, real = [], tool.synthetic_frames
    monkeypatch.setattr(tool, "synthetic_frames", lambda *a: sizes.append(a[3:5]) or real(*a))
    assert tool.main(["--model", str(tiny_model_file[0]), "--sequences", "1", "--frames", "1",
                      "--frames-per-sequence", "4", "--size", "48x96", "--threads", "1"]) == 0
    assert sizes == [(48, 96), (48, 96)]
