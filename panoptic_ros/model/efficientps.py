"""The EfficientPS-style network: backbone -> 2-way FPN -> semantic head + instance head.

Composition by constructor (as torchvision's GeneralizedRCNN): each part is a
module with one job. Two explicit entry points instead of one ``forward``
that changes its return type with ``self.training``:

- :meth:`EfficientPS.loss` - a dict of scalar losses for training;
- :meth:`EfficientPS.predict` - semantic logits and instance detections.

:meth:`EfficientPS.forward_dense` is the dense part alone (what ONNX export and
CUDA graphs take): normalised images -> semantic logits, FPN maps, RPN maps.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from panoptic_ros.model.backbone import build_backbone
from panoptic_ros.model.config import ModelConfig
from panoptic_ros.model.fpn import TwoWayFPN
from panoptic_ros.model.instance_head import Detections, InstanceHead, InstanceTargets
from panoptic_ros.model.semantic_head import DetailRefinement, SemanticHead


@dataclass
class RawPrediction:
    semantic_logits: torch.Tensor  # (B, C, H, W) at network input resolution
    detections: list[Detections]  # per image; labels are 1..num_things (see EfficientPS.thing_class_ids)


class EfficientPS(nn.Module):
    def __init__(self, cfg: ModelConfig, backbone: nn.Module, fpn: TwoWayFPN, semantic_head: SemanticHead,
                 instance_head: InstanceHead, refinement: DetailRefinement | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.fpn = fpn
        self.semantic_head = semantic_head
        self.instance_head = instance_head
        self.refinement = refinement
        self.register_buffer("mean", torch.tensor(cfg.mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(cfg.std).view(1, 3, 1, 1) * 255.0, persistent=False)
        # Instance label k (1-based) <-> train id of the k-th thing class.
        self.register_buffer("thing_class_ids", torch.tensor(cfg.classes.thing_ids, dtype=torch.long),
                             persistent=False)

    def normalize(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 (or float 0..255) RGB -> normalised float, on the images' device."""
        return (images_uint8.to(self.mean.dtype) - self.mean) / self.std

    def features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Normalised images -> (FPN maps P2..P5, semantic logits at the input size)."""
        c = self.backbone(x)  # C1 (stride 2) .. C5 (stride 32)
        p = self.fpn(c[1:])
        logits = self.semantic_head(p)
        if self.refinement is not None:
            logits = self.refinement(logits, c[0])
        return p, F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def forward_dense(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Normalised images -> (semantic logits, P2..P5, RPN objectness x4, RPN deltas x4)."""
        p, sem = self.features(x)
        obj, deltas = self.instance_head.rpn.head(p)
        return (sem, *p, *obj, *deltas)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:  # for tracing/export
        return self.forward_dense(x)

    def loss(self, images: torch.Tensor, semantic: torch.Tensor, targets: list[InstanceTargets],
             semantic_hard_fraction: float = 0.25,
             semantic_class_weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """images: (B, 3, H, W) uint8; semantic: (B, H, W) int64 train ids (255 ignored);
        semantic_class_weights: (num_classes,) per-class weights of the semantic loss, or None (all 1)."""
        x = self.normalize(images)
        p, sem_logits = self.features(x)
        sizes = [tuple(x.shape[-2:])] * x.shape[0]
        losses = self.instance_head.loss(p, sizes, targets)
        losses["loss_semantic"] = semantic_loss(sem_logits, semantic, semantic_hard_fraction,
                                                 semantic_class_weights)
        return losses

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> RawPrediction:
        """images: (B, 3, H, W) uint8 or normalised float (then pass normalized=True via predict_normalized)."""
        return self.predict_normalized(self.normalize(images))

    @torch.no_grad()
    def predict_normalized(self, x: torch.Tensor) -> RawPrediction:
        p, sem_logits = self.features(x)
        return self.predict_from_features(p, sem_logits)

    @torch.no_grad()
    def predict_from_features(self, p: list[torch.Tensor], sem_logits: torch.Tensor) -> RawPrediction:
        """The sparse part (proposals, RoI heads) over dense outputs computed elsewhere (e.g. a CUDA graph)."""
        sizes = [tuple(sem_logits.shape[-2:])] * sem_logits.shape[0]
        return RawPrediction(sem_logits, self.instance_head.predict(p, sizes))


def semantic_loss(logits: torch.Tensor, target: torch.Tensor, hard_fraction: float,
                  class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy averaged over all labelled pixels plus over the hardest ``hard_fraction`` of them.

    EfficientPS weights hard pixels more (its "weighted per-pixel log-loss");
    thin classes such as poles and signs are mostly hard pixels. With
    ``class_weights`` each pixel's loss is scaled by its true class's weight:
    the first term becomes the weighted mean, and the hardest pixels are the
    ones with the largest *weighted* loss.
    """
    flat = target.flatten()
    ce = F.cross_entropy(logits.float(), target, ignore_index=255, reduction="none").flatten()
    labelled = flat != 255
    valid = ce[labelled]
    if valid.numel() == 0:
        return logits.sum() * 0.0
    if class_weights is None:
        mean = valid.mean()
    else:
        w = class_weights.to(valid)[flat[labelled]]
        valid = valid * w
        mean = valid.sum() / w.sum()
    k = max(1, int(valid.numel() * hard_fraction))
    return 0.5 * mean + 0.5 * torch.topk(valid, k, sorted=False).values.mean()


def build_model(cfg: ModelConfig) -> EfficientPS:
    """The model a configuration describes (ImageNet-initialised backbone if cfg.pretrained_backbone)."""
    backbone = build_backbone(cfg.backbone, cfg.pretrained_backbone)
    fpn = TwoWayFPN(tuple(backbone.out_channels[1:]), cfg.fpn_channels)
    semantic = SemanticHead(cfg.fpn_channels, cfg.semantic_channels, cfg.num_classes)
    refinement = DetailRefinement(cfg.num_classes, backbone.out_channels[0]) if cfg.stride2_refinement else None
    return EfficientPS(cfg, backbone, fpn, semantic, InstanceHead(cfg), refinement)
