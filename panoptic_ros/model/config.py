"""The model's one typed configuration, and the presets that build_model reads.

A configuration travels inside every checkpoint's model card, so a saved
model always rebuilds with the architecture it was trained with.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from panoptic_ros.classes import CITYSCAPES, ClassTable

BACKBONES = ("efficientnet_lite0",) + tuple(f"efficientnet_b{i}" for i in range(6))

# ImageNet statistics, as the pretrained backbones expect (RGB, 0..1 scale).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "efficientnet_lite0"
    pretrained_backbone: bool = True  # initialise from ImageNet weights where we have them locally
    fpn_channels: int = 128
    semantic_channels: int = 128  # LSFE / DPC / MC width (EfficientPS: 128)
    stride2_refinement: bool = True  # refine the stride-4 semantic logits at stride 2 (semantic_head.py)
    # Instance head (Mask R-CNN style).
    anchor_sizes: tuple[int, ...] = (16, 32, 64, 128)  # one per FPN level (strides 4, 8, 16, 32)
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_pre_nms_top_n_train: int = 1000
    rpn_post_nms_top_n_train: int = 500
    rpn_pre_nms_top_n_test: int = 500
    rpn_post_nms_top_n_test: int = 200
    rpn_batch_size_per_image: int = 256
    box_batch_size_per_image: int = 128
    box_head_dim: int = 256
    mask_head_channels: int = 64
    mask_head_convs: int = 2
    embedding_dim: int = 64
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    detections_per_img: int = 50
    # Input.
    input_height: int = 256
    input_width: int = 512
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    classes: ClassTable = field(default_factory=lambda: CITYSCAPES)

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, got {self.backbone!r}")
        if len(self.anchor_sizes) != 4:
            raise ValueError("anchor_sizes needs one size per FPN level (4)")
        if self.input_height % 32 or self.input_width % 32:
            raise ValueError(f"input size must be a multiple of 32, got {self.input_height}x{self.input_width}")
        if not self.classes.thing_ids:
            raise ValueError("the class table has no thing classes")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_thing_classes(self) -> int:
        return len(self.classes.thing_ids)

    def to_json(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "classes"}
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
        d["classes"] = self.classes.to_json()
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"model card config has unknown fields: {', '.join(unknown)}")
        kwargs: dict[str, Any] = {}
        for k, v in d.items():
            if k == "classes":
                kwargs[k] = ClassTable.from_json(v)
            elif isinstance(v, list):
                kwargs[k] = tuple(v)
            else:
                kwargs[k] = v
        return cls(**kwargs)


def demo_config(**overrides: Any) -> ModelConfig:
    """The CPU demo model: EfficientNet-Lite0, narrow heads, 256x512 input."""
    base = dict(fpn_channels=96, semantic_channels=64, box_head_dim=256, mask_head_channels=64,
                mask_head_convs=2, input_height=256, input_width=512)
    base.update(overrides)
    return ModelConfig(**base)


def full_config(**overrides: Any) -> ModelConfig:
    """The EfficientPS-width model for GPUs: 256-channel FPN, 128-channel semantic head, 1024x2048."""
    base = dict(fpn_channels=256, semantic_channels=128, box_head_dim=1024, mask_head_channels=256,
                mask_head_convs=4, input_height=1024, input_width=2048,
                anchor_sizes=(32, 64, 128, 256), rpn_post_nms_top_n_test=1000, detections_per_img=100)
    base.update(overrides)
    return ModelConfig(**base)


PRESETS = {"demo": demo_config, "full": full_config}
