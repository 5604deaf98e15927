"""The instance head's inference with fixed shapes: proposals and detections without host synchronisation.

torchvision's RPN and RoI heads keep a variable number of boxes at every step
(score thresholds, small-box removal, NMS and multi-scale RoIAlign's per-level
``torch.where``), and every variable size is a host synchronisation on a GPU
(several per image per batch). Here the same computation runs on fixed-size
tensors with validity masks:

- the RPN keeps each level's ``pre_nms_top_n`` best anchors (as torchvision),
  and thresholds become masks;
- NMS is Cluster-NMS (Zheng et al., "Enhancing Geometric Factors in Model
  Learning and Inference", 2021): the pairwise IoU matrix of the score-sorted
  boxes, then ``keep_j = valid_j and no kept i < j overlaps j``, iterated; its
  fixed point is exactly greedy NMS's result, reached after at most as many
  iterations as the longest chain of suppressions (a handful on street scenes;
  ``StaticSettings.nms_iterations``, with the count actually needed exposed by
  :func:`cluster_nms` for tests);
- ``post_nms_top_n`` proposals and ``detections_per_img`` detections are
  fixed-size slots (``topk`` of masked scores) with a validity flag;
- multi-scale RoIAlign pools every box on every level and picks its level's
  result (4x the pooling work, which is small, instead of a gather by level).

The result equals torchvision's path (same boxes, scores, labels, order) up to
the one approximation named in :class:`StaticSettings`; ``test/test_static_heads.py``
checks that on the shipped model. Fixed shapes also make this part capturable
by CUDA graphs later. On the CPU the dense IoU matrices cost more than
torchvision's greedy NMS, so the CPU keeps torchvision's path.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torchvision.models.detection.rpn import concat_box_prediction_layers
from torchvision.ops import roi_align
from torchvision.ops.poolers import LevelMapper


@dataclass(frozen=True)
class StaticSettings:
    nms_iterations: int = 16  # Cluster-NMS rounds (exact once the longest suppression chain is shorter;
    #                           street frames at 256x512 needed at most 8)
    # Detection candidates (proposal x class pairs above the score threshold) that enter the final NMS,
    # best first. Exact while fewer candidates pass the threshold (at the fusion's threshold, 0.5, a
    # street frame has a few dozen); beyond it the lowest-scored ones are dropped before NMS.
    max_candidates_factor: int = 8  # x detections_per_img


@dataclass
class StaticDetections:
    """Per image a fixed number D of detection slots; ``valid`` says which hold a detection."""

    boxes: torch.Tensor  # float32 (B, D, 4) xyxy, network input pixels
    labels: torch.Tensor  # int64 (B, D) 1..num_thing_classes (1 in empty slots)
    scores: torch.Tensor  # float32 (B, D), best first; 0 in empty slots
    mask_logits: torch.Tensor  # float32 (B, D, 28, 28)
    embeddings: torch.Tensor  # float32 (B, D, E)
    valid: torch.Tensor  # bool (B, D)
    converged: torch.Tensor  # bool (B,): both NMS passes reached greedy NMS's result within nms_iterations

    def per_image(self) -> list:
        """One :class:`~panoptic_ros.model.instance_head.Detections` per image, all D slots (empty ones too)."""
        from panoptic_ros.model.instance_head import Detections

        return [Detections(*(t[i] for t in (self.boxes, self.labels, self.scores, self.mask_logits,
                                             self.embeddings))) for i in range(self.boxes.shape[0])]

    def compacted(self) -> list:
        """Like torchvision's output: per image only the valid slots (a host synchronisation per image)."""
        from panoptic_ros.model.instance_head import Detections

        out = []
        for i in range(self.boxes.shape[0]):
            keep = self.valid[i]
            out.append(Detections(*(t[i][keep] for t in (self.boxes, self.labels, self.scores, self.mask_logits,
                                                         self.embeddings))))
        return out


def batched_box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, N, 4) x (B, M, 4) xyxy -> (B, N, M) IoU (0 where a union is empty)."""
    area_a = (a[..., 2] - a[..., 0]).clamp(min=0) * (a[..., 3] - a[..., 1]).clamp(min=0)
    area_b = (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)
    lt = torch.maximum(a[:, :, None, :2], b[:, None, :, :2])
    rb = torch.minimum(a[:, :, None, 2:], b[:, None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, :, None] + area_b[:, None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def cluster_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, valid: torch.Tensor,
                threshold: float, iterations: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Greedy NMS per group, batched and fixed-shape.

    ``boxes`` (B, K, 4), ``scores`` (B, K), ``groups`` (B, K) (boxes of different groups never suppress
    each other, as ``batched_nms``'s idxs), ``valid`` (B, K). Returns (order (B, K): indices by score,
    best first; keep (B, K) bool in that order; changed (B,) bool: whether the last iteration still
    changed something, i.e. more iterations could have been needed).
    """
    key = torch.where(valid, scores, torch.full_like(scores, -math.inf))
    order = torch.argsort(key, dim=1, descending=True, stable=True)
    b = boxes.gather(1, order[..., None].expand(-1, -1, 4))
    g = groups.gather(1, order)
    v = valid.gather(1, order)
    iou = batched_box_iou(b, b)
    k = boxes.shape[1]
    upper = torch.ones((k, k), dtype=torch.bool, device=boxes.device).triu(1)  # i before j
    suppresses = (iou > threshold) & upper & (g[:, :, None] == g[:, None, :]) & v[:, :, None]
    keep = v
    changed = torch.zeros(boxes.shape[0], dtype=torch.bool, device=boxes.device)
    for _ in range(iterations):
        new = v & ~(suppresses & keep[:, :, None]).any(1)
        changed = (new != keep).any(1)
        keep = new
    return order, keep, changed


def _first_slots(keep: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` kept positions of score-sorted rows (padding with invalid slots): (index, valid)."""
    k = keep.shape[1]
    if n > k:
        pad = n - k
        keep = torch.cat([keep, keep.new_zeros((keep.shape[0], pad))], 1)
    rank = torch.arange(keep.shape[1], device=keep.device).expand_as(keep)
    key = torch.where(keep, -rank.float(), torch.full_like(rank, -math.inf, dtype=torch.float32))
    top, idx = key.topk(n, dim=1)  # the kept ones in sorted order, then the rest
    return idx.clamp(max=k - 1), torch.isfinite(top)


class StaticInstanceInference:
    """Fixed-shape inference for an :class:`~panoptic_ros.model.instance_head.InstanceHead` (shares its weights)."""

    def __init__(self, head, settings: StaticSettings = StaticSettings()) -> None:
        self.head = head
        self.settings = settings
        self._anchors: dict[tuple, list[torch.Tensor]] = {}

    def anchors(self, features: list[torch.Tensor], image_hw: tuple[int, int]) -> list[torch.Tensor]:
        """The RPN's anchors for this batch and input size: they depend on shapes only, so they are made once
        (torchvision's generator copies its cell anchors to the device on every call, which a CUDA graph
        capture does not allow)."""
        from panoptic_ros.model.instance_head import _image_list

        b = features[0].shape[0]
        key = (b, image_hw, tuple(tuple(f.shape[-2:]) for f in features), features[0].device, features[0].dtype)
        found = self._anchors.get(key)
        if found is None:
            if len(self._anchors) > 16:
                self._anchors.clear()
            found = self._anchors[key] = self.head.rpn.anchor_generator(_image_list(features, [image_hw] * b),
                                                                        features)
        return found

    # -------------------------------------------------------------- pooling

    @staticmethod
    def _scales(features: list[torch.Tensor], image_hw: tuple[int, int]) -> list[float]:
        return [2.0 ** round(math.log2(f.shape[-2] / image_hw[0])) for f in features]

    def pool(self, features: list[torch.Tensor], boxes: torch.Tensor, image_hw: tuple[int, int], output: int,
             sampling_ratio: int = 2) -> torch.Tensor:
        """MultiScaleRoIAlign over (B, N, 4) boxes -> (B * N, C, output, output), every box on its FPN level."""
        b, n, _ = boxes.shape
        scales = self._scales(features, image_hw)
        k_min, k_max = int(-math.log2(scales[0])), int(-math.log2(scales[-1]))
        flat = boxes.reshape(-1, 4)
        levels = LevelMapper(k_min, k_max)([flat])  # torchvision's rule (canonical 224 px at level 4)
        ids = torch.arange(b, device=boxes.device, dtype=flat.dtype).repeat_interleave(n)[:, None]
        rois = torch.cat([ids, flat], 1)
        per_level = torch.stack([roi_align(f, rois.to(f.dtype), output_size=(output, output), spatial_scale=s,
                                           sampling_ratio=sampling_ratio) for f, s in zip(features, scales)])
        return per_level[levels, torch.arange(b * n, device=boxes.device)]

    # -------------------------------------------------------------- stages

    @torch.no_grad()
    def proposals(self, features: list[torch.Tensor],
                  image_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """RPN: (B, P, 4) proposals, (B, P) validity (P = post_nms_top_n, best first), (B,) NMS converged."""
        rpn = self.head.rpn
        b = features[0].shape[0]
        objectness, deltas = rpn.head(features)
        anchors = self.anchors(features, image_hw)
        per_level = [o[0].numel() for o in objectness]
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        boxes = rpn.box_coder.decode(deltas.detach(), anchors).view(b, -1, 4)
        objectness = objectness.detach().reshape(b, -1)
        top = rpn._get_top_n_idx(objectness, per_level)  # each level's pre_nms_top_n best anchors
        level_of = torch.cat([torch.full((n,), i, device=boxes.device) for i, n in enumerate(per_level)])
        scores = torch.sigmoid(objectness.gather(1, top))
        levels = level_of[top]
        boxes = boxes.gather(1, top[..., None].expand(-1, -1, 4))
        h, w = image_hw
        boxes = torch.stack([boxes[..., 0].clamp(0, w), boxes[..., 1].clamp(0, h), boxes[..., 2].clamp(0, w),
                             boxes[..., 3].clamp(0, h)], -1)
        valid = ((boxes[..., 2] - boxes[..., 0]) >= rpn.min_size) & ((boxes[..., 3] - boxes[..., 1]) >= rpn.min_size)
        valid &= scores >= rpn.score_thresh
        order, keep, changed = cluster_nms(boxes, scores, levels, valid, rpn.nms_thresh,
                                           self.settings.nms_iterations)
        idx, ok = _first_slots(keep, rpn.post_nms_top_n())
        sel = order.gather(1, idx)
        return boxes.gather(1, sel[..., None].expand(-1, -1, 4)), ok, ~changed

    @torch.no_grad()
    def detections(self, features: list[torch.Tensor], image_hw: tuple[int, int]) -> StaticDetections:
        rh = self.head.roi_heads
        proposals, prop_valid, rpn_converged = self.proposals(features, image_hw)
        b, p, _ = proposals.shape
        safe = torch.where(prop_valid[..., None], proposals, _unit_box(proposals))
        box_feats = rh.box_head(self.pool(features, safe, image_hw, 7))
        class_logits, box_regression = rh.box_predictor(box_feats)
        c = class_logits.shape[-1]
        pred = rh.box_coder.decode(box_regression, [safe.reshape(-1, 4)]).view(b, p, c, 4)[:, :, 1:]
        scores = torch.softmax(class_logits.float(), -1).view(b, p, c)[:, :, 1:]
        h, w = image_hw
        pred = torch.stack([pred[..., 0].clamp(0, w), pred[..., 1].clamp(0, h), pred[..., 2].clamp(0, w),
                            pred[..., 3].clamp(0, h)], -1)
        labels = torch.arange(1, c, device=pred.device).expand(b, p, c - 1)
        pred, scores, labels = pred.reshape(b, -1, 4), scores.reshape(b, -1), labels.reshape(b, -1)
        valid = prop_valid[:, :, None].expand(b, p, c - 1).reshape(b, -1) & (scores > rh.score_thresh)
        valid &= ((pred[..., 2] - pred[..., 0]) >= 1e-2) & ((pred[..., 3] - pred[..., 1]) >= 1e-2)
        d = rh.detections_per_img
        m = min(pred.shape[1], self.settings.max_candidates_factor * d)
        cand = torch.where(valid, scores, torch.full_like(scores, -math.inf)).topk(m, dim=1).indices
        pred, scores, labels, valid = (pred.gather(1, cand[..., None].expand(-1, -1, 4)), scores.gather(1, cand),
                                       labels.gather(1, cand), valid.gather(1, cand))
        order, keep, changed = cluster_nms(pred, scores, labels, valid, rh.nms_thresh, self.settings.nms_iterations)
        idx, ok = _first_slots(keep, d)
        sel = order.gather(1, idx)
        boxes = pred.gather(1, sel[..., None].expand(-1, -1, 4))
        labels = torch.where(ok, labels.gather(1, sel), torch.ones_like(sel))
        scores = torch.where(ok, scores.gather(1, sel), torch.zeros_like(scores[:, :d]))
        safe = torch.where(ok[..., None], boxes, _unit_box(boxes))
        mask_logits = rh.mask_predictor(rh.mask_head(self.pool(features, safe, image_hw, 14)))
        n = b * d
        mask_logits = mask_logits[torch.arange(n, device=labels.device), labels.reshape(-1)]
        mask_logits = mask_logits.view(b, d, *mask_logits.shape[-2:])
        emb = self.head.embedding(rh.box_head(self.pool(features, safe, image_hw, 7))).view(b, d, -1)
        return StaticDetections(boxes.float(), labels, scores.float(), mask_logits.float(), emb.float(), ok,
                                rpn_converged & ~changed)


def _unit_box(like: torch.Tensor) -> torch.Tensor:
    """A harmless box for empty slots (pooled, never used); made by kernels, not a host copy (graph-capturable)."""
    return (torch.arange(4, device=like.device) >= 2).to(like.dtype).expand_as(like)
