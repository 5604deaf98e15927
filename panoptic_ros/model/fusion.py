"""EfficientPS panoptic fusion as a pure function over tensors (CPU or CUDA, no model needed).

For each confident instance, the instance head's mask logits (ML_A, pasted
into the image, -inf outside the box) and the semantic head's logits of the
instance's class (ML_B, inside the box) are fused adaptively:

    FL = (sigmoid(ML_A) + sigmoid(ML_B)) * (ML_A + ML_B)

so that a pixel is claimed by the instance only where both heads agree. The
fused logits of all instances are stacked behind the semantic logits of the
stuff classes and the per-pixel argmax decides. Instances are first filtered
by confidence and by overlap with higher-scoring instances; afterwards
pixels that the semantic head calls a thing but no instance claims become
void, stuff classes covering fewer than ``min_stuff_area`` pixels become
void, and instances left with too few of their own pixels are dropped.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

VOID = 255


@dataclass
class FusionOutput:
    class_map: torch.Tensor  # uint8 (H, W): train id per pixel, VOID where undecided
    instance_map: torch.Tensor  # int32 (H, W): 1 + index into ``keep``, 0 for stuff/void
    keep: torch.Tensor  # int64 (K,): indices of the input instances that survived, in output order


def paste_mask_logits(mask_logits: torch.Tensor, boxes: torch.Tensor, height: int,
                      width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, M, M) box-relative logits -> ((N, H, W) logits, (N, H, W) bool inside-box).

    One batched ``grid_sample`` instead of torchvision's per-mask paste loop.
    Boxes are xyxy in pixels of the (H, W) canvas (pixel i covers [i, i+1)).
    """
    n = mask_logits.shape[0]
    dev, dt = mask_logits.device, mask_logits.dtype
    if n == 0:
        return mask_logits.new_zeros((0, height, width)), torch.zeros((0, height, width), dtype=torch.bool,
                                                                      device=dev)
    x1, y1, x2, y2 = boxes.to(dt).unbind(1)
    bw = (x2 - x1).clamp(min=1e-3)
    bh = (y2 - y1).clamp(min=1e-3)
    # Normalised output x in [-1, 1] -> normalised mask coordinate (align_corners=False).
    theta = torch.zeros((n, 2, 3), device=dev, dtype=dt)
    theta[:, 0, 0] = width / bw
    theta[:, 0, 2] = (width - 2 * x1) / bw - 1
    theta[:, 1, 1] = height / bh
    theta[:, 1, 2] = (height - 2 * y1) / bh - 1
    grid = F.affine_grid(theta, [n, 1, height, width], align_corners=False)
    pasted = F.grid_sample(mask_logits[:, None], grid, mode="bilinear", padding_mode="border",
                           align_corners=False)[:, 0]
    inside = (grid.abs() <= 1).all(dim=-1)
    return pasted, inside


def _paste_crop(mask_logits: torch.Tensor, box: torch.Tensor, height: int,
                width: int) -> tuple[tuple[slice, slice], torch.Tensor, torch.Tensor] | None:
    """One instance's logits pasted into the integer crop around its box: (slices, logits, inside)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    cx0, cy0 = max(0, int(x1)), max(0, int(y1))
    cx1, cy1 = min(width, int(x2) + 1), min(height, int(y2) + 1)
    if cx1 <= cx0 or cy1 <= cy0:
        return None
    local = torch.tensor([[x1 - cx0, y1 - cy0, x2 - cx0, y2 - cy0]], device=mask_logits.device)
    pasted, inside = paste_mask_logits(mask_logits[None], local, cy1 - cy0, cx1 - cx0)
    return (slice(cy0, cy1), slice(cx0, cx1)), pasted[0], inside[0]


def panoptic_fusion(semantic_logits: torch.Tensor, boxes: torch.Tensor, classes: torch.Tensor,
                    scores: torch.Tensor, mask_logits: torch.Tensor, *, thing_ids: list[int] | torch.Tensor,
                    stuff_ids: list[int] | torch.Tensor, score_threshold: float = 0.5,
                    overlap_threshold: float = 0.5, min_stuff_area: int = 0) -> FusionOutput:
    """Fuse one image's semantic logits (C, H, W) with its N instances.

    ``boxes`` (N, 4) are xyxy pixels of the (H, W) grid, ``classes`` (N,) are
    train ids of thing classes, ``mask_logits`` (N, M, M) are the mask head's
    logits for each instance's own class. Work per instance is confined to
    its box, so the cost grows with the boxes' area, not with N x H x W.
    """
    c, h, w = semantic_logits.shape
    dev = semantic_logits.device
    logits = semantic_logits.float()
    thing_ids_t = torch.as_tensor(thing_ids, device=dev, dtype=torch.long)
    stuff_ids_t = torch.as_tensor(stuff_ids, device=dev, dtype=torch.long)
    is_thing_class = torch.zeros(max(c, 1), dtype=torch.bool, device=dev)
    is_thing_class[thing_ids_t] = True

    # 1. Confidence filter, best first.  2. Overlap filter against better instances.
    order = torch.argsort(scores, descending=True)
    order = order[scores[order] >= score_threshold].tolist()
    taken = torch.zeros((h, w), dtype=torch.bool, device=dev)
    best = torch.full((h, w), float("-inf"), device=dev)  # best fused instance logit per pixel
    best_idx = torch.full((h, w), -1, dtype=torch.long, device=dev)  # its position in `kept`
    kept: list[int] = []
    mask_areas: list[int] = []
    for i in order:
        crop = _paste_crop(mask_logits[i].float(), boxes[i].float(), h, w)
        if crop is None:
            continue
        sl, ml_a, inside = crop
        binary = (ml_a > 0) & inside
        area = int(binary.sum())
        if area == 0 or float((binary & taken[sl]).sum()) / area > overlap_threshold:
            continue
        taken[sl] |= binary
        # 3. Adaptive fusion inside the box.
        ml_b = logits[int(classes[i])][sl]
        fused = (torch.sigmoid(ml_a) + torch.sigmoid(ml_b)) * (ml_a + ml_b)
        fused = torch.where(inside, fused, torch.full_like(fused, float("-inf")))
        better = fused > best[sl]  # ties go to the better-scored instance (earlier)
        best[sl] = torch.where(better, fused, best[sl])
        best_idx[sl] = torch.where(better, torch.full_like(best_idx[sl], len(kept)), best_idx[sl])
        kept.append(i)
        mask_areas.append(area)

    # 4. Argmax over [stuff logits, fused instance logits]: instances win only when strictly larger.
    stuff_logits = logits[stuff_ids_t]
    stuff_best, stuff_arg = stuff_logits.max(0)
    is_inst = best > stuff_best
    class_map = stuff_ids_t[stuff_arg]
    inst_index = torch.where(is_inst, best_idx, torch.full_like(best_idx, -1))
    kept_t = torch.as_tensor(kept, dtype=torch.long, device=dev)
    if kept:
        inst_classes = classes.to(dev)[kept_t].long()
        class_map = torch.where(is_inst, inst_classes[inst_index.clamp(min=0)], class_map)

    # 5. Thing pixels of the semantic head that no instance claimed are void.
    class_map = torch.where((~is_inst) & is_thing_class[logits.argmax(0)], torch.full_like(class_map, VOID),
                            class_map)

    # 6. Instances left with too little of their own mask are dropped (pixels -> void).
    instance_map = torch.zeros((h, w), dtype=torch.int32, device=dev)
    keep_out = kept_t[:0]
    if kept:
        counts = torch.bincount(inst_index[is_inst], minlength=len(kept))
        areas_t = torch.as_tensor(mask_areas, device=dev, dtype=torch.float32)
        survive = (counts > 0) & (counts.float() / areas_t >= (1.0 - overlap_threshold))
        new_id = torch.cumsum(survive.long(), 0) * survive.long()  # 1-based id for survivors, 0 otherwise
        lookup = torch.cat([new_id, new_id.new_zeros(1)])  # index -1 -> 0
        ids = lookup[inst_index]
        instance_map = ids.to(torch.int32)
        class_map = torch.where(is_inst & (ids == 0), torch.full_like(class_map, VOID), class_map)
        keep_out = kept_t[survive]

    # 7. Small stuff classes become void.
    if min_stuff_area > 0 and len(stuff_ids_t):
        stuff_counts = torch.bincount(class_map.flatten(), minlength=256)
        small = torch.zeros(256, dtype=torch.bool, device=dev)
        small[stuff_ids_t] = (stuff_counts[stuff_ids_t] > 0) & (stuff_counts[stuff_ids_t] < min_stuff_area)
        class_map = torch.where(small[class_map], torch.full_like(class_map, VOID), class_map)

    return FusionOutput(class_map.to(torch.uint8), instance_map, keep_out)
