"""Small models and frames for tests: one definition instead of a copy per test file."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from panoptic_ros.classes import CITYSCAPES
from panoptic_ros.datasets.types import PanopticFrame
from panoptic_ros.model.checkpoint import ModelCard, save_model
from panoptic_ros.model.config import ModelConfig
from panoptic_ros.model.efficientps import EfficientPS, build_model

# A few thousand parameters' worth of the real architecture: every code path, milliseconds per frame.
TINY = dict(fpn_channels=32, semantic_channels=16, box_head_dim=64, mask_head_channels=16, mask_head_convs=1,
            embedding_dim=16, input_height=64, input_width=128, anchor_sizes=(8, 16, 32, 64),
            rpn_post_nms_top_n_train=100, rpn_post_nms_top_n_test=50, box_batch_size_per_image=32)


def tiny_model(seed: int = 0, permissive: bool = False, **overrides) -> tuple[EfficientPS, ModelConfig]:
    """Random weights. ``permissive``: the heads are biased so that every frame yields confident car
    detections with filled masks that win fusion, whatever the random initialisation (tests that need
    objects must not depend on the luck of the draw)."""
    torch.manual_seed(seed)
    cfg = ModelConfig(pretrained_backbone=False, **{**TINY, **overrides})
    model = build_model(cfg).eval()
    if permissive:
        car = CITYSCAPES.thing_ids.index(CITYSCAPES.by_name("car").train_id) + 1
        rh = model.instance_head.roi_heads
        with torch.no_grad():
            rh.box_predictor.cls_score.weight.mul_(0.01)
            rh.box_predictor.cls_score.bias.zero_()
            rh.box_predictor.cls_score.bias[car] = 6.0
            rh.box_predictor.bbox_pred.weight.zero_()
            rh.box_predictor.bbox_pred.bias.zero_()
            rh.mask_predictor.mask_fcn_logits.weight.mul_(0.01)
            rh.mask_predictor.mask_fcn_logits.bias.fill_(4.0)
    return model, cfg


def save_tiny_model(path: str | Path, seed: int = 0, permissive: bool = False, **overrides) -> Path:
    model, cfg = tiny_model(seed, permissive, **overrides)
    return save_model(model, Path(path), ModelCard(name="tiny", config=cfg))


def street_frame(seed: int, h: int = 64, w: int = 128) -> PanopticFrame:
    """Sky over road with a few cars: a scene a tiny model can fit in a few steps."""
    rng = random.Random(seed)
    img = np.zeros((h, w, 3), np.uint8)
    sem = np.zeros((h, w), np.uint8)
    inst = np.zeros((h, w), np.int32)
    img[: h // 3] = (70, 130, 180)
    sem[: h // 3] = 10
    img[h // 3:] = (128, 64, 128)
    for k in range(3):
        x, y = rng.randrange(0, w - 30), rng.randrange(h // 3, h - 16)
        img[y:y + 14, x:x + 24] = (0, 0, 142)
        sem[y:y + 14, x:x + 24] = 13
        inst[y:y + 14, x:x + 24] = k + 1
    return PanopticFrame(img, sem, inst)
