"""The Mask R-CNN-style instance head, built from torchvision's detection parts.

Region proposals (torchvision ``RegionProposalNetwork`` with a light separable
head shared over the four FPN levels), ``MultiScaleRoIAlign`` features, a box
head (two FC layers, classes + box regression), a mask head (convs + deconv,
28x28 mask logits per class), and an appearance-embedding head on the box
features that the tracker uses to re-identify objects.

Unlike torchvision's ``RoIHeads.forward`` (losses in training, detections in
eval), the head has two explicit entry points, :meth:`InstanceHead.loss` and
:meth:`InstanceHead.predict`, and ``predict`` returns mask *logits*, which
EfficientPS's panoptic fusion needs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss, maskrcnn_loss
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import MultiScaleRoIAlign

from panoptic_ros.model.config import ModelConfig
from panoptic_ros.model.layers import Pointwise

LEVELS = ("p2", "p3", "p4", "p5")


def _image_list(p: list[torch.Tensor], image_sizes: list[tuple[int, int]]) -> ImageList:
    """An ImageList without pixels: the anchor generator only reads the padded size."""
    h, w = image_sizes[0]
    return ImageList(p[0].new_empty((len(image_sizes), 0, h, w)), image_sizes)


class LightRPNHead(nn.Module):
    """Separable 3x3 conv then 1x1 objectness / box-delta layers (same outputs as torchvision's RPNHead)."""

    def __init__(self, channels: int, num_anchors: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, groups=channels), Pointwise(channels, channels),
            nn.ReLU(inplace=True))
        self.cls_logits = Pointwise(channels, num_anchors)
        self.bbox_pred = Pointwise(channels, num_anchors * 4)
        for layer in (self.cls_logits, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.constant_(layer.bias, 0.0)

    def forward(self, x: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        logits, deltas = [], []
        for f in x:
            t = self.conv(f)
            logits.append(self.cls_logits(t))
            deltas.append(self.bbox_pred(t))
        return logits, deltas


class EmbeddingHead(nn.Module):
    """Box-head features -> L2-normalised appearance embedding."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(inplace=True), nn.Linear(in_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(x), dim=1)


@dataclass
class InstanceTargets:
    """Ground truth of one image for the instance head (network input resolution)."""

    boxes: torch.Tensor  # float32 (N, 4) xyxy pixels
    labels: torch.Tensor  # int64 (N,) 1..num_thing_classes (0 is background)
    masks: torch.Tensor  # uint8 (N, H, W)
    track_ids: torch.Tensor  # int64 (N,) identity across frames of one sequence


@dataclass
class Detections:
    """Instances found in one image, before fusion."""

    boxes: torch.Tensor  # float32 (N, 4) xyxy, network input pixels
    labels: torch.Tensor  # int64 (N,) 1..num_thing_classes
    scores: torch.Tensor  # float32 (N,)
    mask_logits: torch.Tensor  # float32 (N, 28, 28), the channel of the predicted class
    embeddings: torch.Tensor  # float32 (N, D)


class InstanceHead(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        c = cfg.fpn_channels
        num_anchors = len(cfg.anchor_ratios)
        anchors = AnchorGenerator(tuple((s,) for s in cfg.anchor_sizes), (cfg.anchor_ratios,) * 4)
        self.rpn = RegionProposalNetwork(
            anchors, LightRPNHead(c, num_anchors), fg_iou_thresh=0.7, bg_iou_thresh=0.3,
            batch_size_per_image=cfg.rpn_batch_size_per_image, positive_fraction=0.5,
            pre_nms_top_n={"training": cfg.rpn_pre_nms_top_n_train, "testing": cfg.rpn_pre_nms_top_n_test},
            post_nms_top_n={"training": cfg.rpn_post_nms_top_n_train, "testing": cfg.rpn_post_nms_top_n_test},
            nms_thresh=0.7)
        n_cls = cfg.num_thing_classes + 1
        self.roi_heads = RoIHeads(
            box_roi_pool=MultiScaleRoIAlign(list(LEVELS), 7, 2),
            box_head=TwoMLPHead(c * 49, cfg.box_head_dim),
            box_predictor=FastRCNNPredictor(cfg.box_head_dim, n_cls),
            fg_iou_thresh=0.5, bg_iou_thresh=0.5, batch_size_per_image=cfg.box_batch_size_per_image,
            positive_fraction=0.25, bbox_reg_weights=None, score_thresh=cfg.box_score_thresh,
            nms_thresh=cfg.box_nms_thresh, detections_per_img=cfg.detections_per_img,
            mask_roi_pool=MultiScaleRoIAlign(list(LEVELS), 14, 2),
            mask_head=MaskRCNNHeads(c, [cfg.mask_head_channels] * cfg.mask_head_convs, 1),
            mask_predictor=MaskRCNNPredictor(cfg.mask_head_channels, cfg.mask_head_channels, n_cls))
        self.embedding = EmbeddingHead(cfg.box_head_dim, cfg.embedding_dim)

    def _feature_dict(self, p: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return dict(zip(LEVELS, p))

    def embed(self, feats: dict[str, torch.Tensor], boxes: list[torch.Tensor],
              image_sizes: list[tuple[int, int]]) -> torch.Tensor:
        rh = self.roi_heads
        return self.embedding(rh.box_head(rh.box_roi_pool(feats, boxes, image_sizes)))

    def loss(self, p: list[torch.Tensor], image_sizes: list[tuple[int, int]],
             targets: list[InstanceTargets]) -> dict[str, torch.Tensor]:
        """Training losses: RPN, box classification/regression, mask, embedding."""
        feats = self._feature_dict(p)
        images = _image_list(p, image_sizes)
        tv_targets = [{"boxes": t.boxes, "labels": t.labels, "masks": t.masks} for t in targets]
        proposals, losses = self.rpn(images, feats, tv_targets)

        rh = self.roi_heads
        proposals, matched_idxs, labels, regression_targets = rh.select_training_samples(proposals, tv_targets)
        box_feats = rh.box_head(rh.box_roi_pool(feats, proposals, image_sizes))
        class_logits, box_regression = rh.box_predictor(box_feats)
        loss_cls, loss_box = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
        losses.update(loss_classifier=loss_cls, loss_box_reg=loss_box)

        pos_props, pos_idx = [], []
        for props, lab, idx in zip(proposals, labels, matched_idxs):
            pos = torch.where(lab > 0)[0]
            pos_props.append(props[pos])
            pos_idx.append(idx[pos])
        if sum(len(b) for b in pos_props):
            mask_logits = rh.mask_predictor(rh.mask_head(rh.mask_roi_pool(feats, pos_props, image_sizes)))
            losses["loss_mask"] = maskrcnn_loss(mask_logits, pos_props, [t["masks"] for t in tv_targets],
                                                [t["labels"] for t in tv_targets], pos_idx)
        else:
            losses["loss_mask"] = p[0].sum() * 0.0
        losses["loss_embedding"] = self._embedding_loss(feats, image_sizes, targets)
        return losses

    def _embedding_loss(self, feats: dict[str, torch.Tensor], image_sizes: list[tuple[int, int]],
                        targets: list[InstanceTargets], temperature: float = 0.1) -> torch.Tensor:
        """InfoNCE between ground-truth boxes of image pairs (2k, 2k+1) from the same sequence.

        An object's embedding in one frame must be nearest to the same track's
        embedding in the other frame among all objects there.
        """
        zero = next(iter(feats.values())).sum() * 0.0
        if len(targets) < 2 or all(len(t.boxes) == 0 for t in targets):
            return zero
        emb = self.embed(feats, [t.boxes for t in targets], image_sizes)
        per_image = emb.split([len(t.boxes) for t in targets])
        losses = []
        for a in range(0, len(targets) - 1, 2):
            b = a + 1
            ea, eb = per_image[a], per_image[b]
            ta, tb = targets[a].track_ids, targets[b].track_ids
            if len(ta) == 0 or len(tb) == 0:
                continue
            same = ta[:, None] == tb[None, :]
            if not same.any():
                continue
            sim = ea @ eb.T / temperature
            rows = same.any(1)
            cols = same.any(0)
            losses.append(F.cross_entropy(sim[rows], same[rows].float().argmax(1)))
            losses.append(F.cross_entropy(sim.T[cols], same.T[cols].float().argmax(1)))
        return torch.stack(losses).mean() if losses else zero

    @torch.no_grad()
    def predict(self, p: list[torch.Tensor], image_sizes: list[tuple[int, int]]) -> list[Detections]:
        feats = self._feature_dict(p)
        images = _image_list(p, image_sizes)
        proposals, _ = self.rpn(images, feats)
        rh = self.roi_heads
        box_feats = rh.box_head(rh.box_roi_pool(feats, proposals, image_sizes))
        class_logits, box_regression = rh.box_predictor(box_feats)
        boxes, scores, labels = rh.postprocess_detections(class_logits, box_regression, proposals, image_sizes)
        counts = [len(b) for b in boxes]
        if sum(counts) == 0:
            empty_d = self.embedding.proj[-1].out_features
            return [Detections(b, lab, s, b.new_zeros((0, 28, 28)), b.new_zeros((0, empty_d)))
                    for b, lab, s in zip(boxes, labels, scores)]
        mask_logits = rh.mask_predictor(rh.mask_head(rh.mask_roi_pool(feats, boxes, image_sizes)))
        all_labels = torch.cat(labels)
        mask_logits = mask_logits[torch.arange(len(all_labels), device=all_labels.device), all_labels]
        embeddings = self.embed(feats, boxes, image_sizes)
        out = []
        for b, lab, s, m, e in zip(boxes, labels, scores, mask_logits.split(counts), embeddings.split(counts)):
            out.append(Detections(b, lab, s, m, e))
        return out
