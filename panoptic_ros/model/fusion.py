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


def _class_tables(thing_ids, stuff_ids, num_classes: int, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(stuff ids as a long tensor, bool (C,) table: is class c a thing) on ``dev``."""
    thing_ids_t = torch.as_tensor(thing_ids, device=dev, dtype=torch.long)
    is_thing_class = torch.zeros(max(num_classes, 1), dtype=torch.bool, device=dev)
    is_thing_class[thing_ids_t] = True
    return torch.as_tensor(stuff_ids, device=dev, dtype=torch.long), is_thing_class


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
    stuff_ids_t, is_thing_class = _class_tables(thing_ids, stuff_ids, c, dev)

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


@dataclass
class BatchFusionOutput:
    """:func:`panoptic_fusion_batch` for B images; nothing in it has been copied to the host."""

    class_map: torch.Tensor  # uint8 (B, H, W)
    instance_map: torch.Tensor  # int32 (B, H, W): 1 + rank among each image's survivors, 0 for stuff/void
    survived: torch.Tensor  # bool (B, N): which input instance survived (input order, padding False)
    rank: torch.Tensor  # int64 (B, N): 1-based output id of each survivor, 0 otherwise (input order)


def pad_instances(per_image: list[torch.Tensor], fill: float = 0.0) -> torch.Tensor:
    """Stack per-image (N_i, ...) tensors into (B, max N_i, ...) with ``fill`` behind each image's rows."""
    n = max((len(t) for t in per_image), default=0)
    first = per_image[0]
    out = first.new_full((len(per_image), n, *first.shape[1:]), fill)
    for i, t in enumerate(per_image):
        out[i, :len(t)] = t
    return out


def panoptic_fusion_batch(semantic_logits: torch.Tensor, boxes: torch.Tensor, classes: torch.Tensor,
                          scores: torch.Tensor, mask_logits: torch.Tensor, valid: torch.Tensor, *,
                          thing_ids: list[int] | torch.Tensor, stuff_ids: list[int] | torch.Tensor,
                          score_threshold: float = 0.5, overlap_threshold: float = 0.5,
                          min_stuff_area: int = 0) -> BatchFusionOutput:
    """The same fusion as :func:`panoptic_fusion` for a batch, without one host synchronisation.

    ``semantic_logits`` (B, C, H, W); per image N instances padded to a common
    N: ``boxes`` (B, N, 4), ``classes`` (B, N) train ids, ``scores`` (B, N),
    ``mask_logits`` (B, N, M, M) and ``valid`` (B, N) bool (False = padding).
    Every decision is a tensor operation on the logits' device: the greedy
    overlap filter walks the N score-ranks of all images at once over full
    (B, H, W) masks, so the work is N x B x H x W instead of the boxes' area
    (what a GPU does well and a CPU does not: on the CPU use
    :func:`panoptic_fusion`). Outputs equal :func:`panoptic_fusion`'s up to
    pixels where a pasted mask logit sits within rounding of 0.
    """
    b, c, h, w = semantic_logits.shape
    n = boxes.shape[1]
    dev = semantic_logits.device
    logits = semantic_logits.float()
    stuff_ids_t, is_thing_class = _class_tables(thing_ids, stuff_ids, c, dev)

    # Score order per image (padding last); rank r of image i is input instance order[i, r].
    scores = torch.where(valid, scores.float(), torch.full_like(scores, float("-inf"), dtype=torch.float32))
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    s_scores = scores.gather(1, order)
    s_valid = valid.gather(1, order) & (s_scores >= score_threshold)
    s_classes = classes.long().gather(1, order)
    s_boxes = boxes.float().gather(1, order[..., None].expand(b, n, 4))
    m = mask_logits.shape[-1]
    s_masks = mask_logits.float().gather(1, order[..., None, None].expand(b, n, m, m))

    pasted, inside = paste_mask_logits(s_masks.reshape(b * n, m, m), s_boxes.reshape(b * n, 4), h, w)
    pasted, inside = pasted.view(b, n, h, w), inside.view(b, n, h, w)
    binary = (pasted > 0) & inside & s_valid[..., None, None]
    areas = binary.sum((-2, -1))  # (B, N)

    # Greedy overlap filter, best first, all images in step.
    taken = torch.zeros((b, h, w), dtype=torch.bool, device=dev)
    kept = torch.zeros((b, n), dtype=torch.bool, device=dev)
    for r in range(n):
        mine = binary[:, r]
        overlap = (mine & taken).sum((-2, -1)).double() / areas[:, r].clamp(min=1).double()
        keep_r = (areas[:, r] > 0) & (overlap <= overlap_threshold)
        kept[:, r] = keep_r
        taken |= mine & keep_r[:, None, None]

    # Adaptive fusion of every kept instance over its box; the best (earliest on ties) per pixel.
    ml_b = logits.gather(1, s_classes.clamp(0, c - 1)[..., None, None].expand(b, n, h, w))
    fused = (torch.sigmoid(pasted) + torch.sigmoid(ml_b)) * (pasted + ml_b)
    fused = torch.where(inside & kept[..., None, None], fused, torch.full_like(fused, float("-inf")))
    if n:
        best, best_rank = fused.max(1)  # the first maximal index: ties go to the better-scored instance
    else:
        best = torch.full((b, h, w), float("-inf"), device=dev)
        best_rank = torch.zeros((b, h, w), dtype=torch.long, device=dev)

    stuff_best, stuff_arg = logits[:, stuff_ids_t].max(1)
    is_inst = best > stuff_best
    class_map = stuff_ids_t[stuff_arg]
    if n:  # (with no instances at all, nothing to look up: is_inst is False everywhere)
        class_map = torch.where(is_inst, s_classes.gather(1, best_rank.view(b, -1)).view(b, h, w), class_map)
    class_map = torch.where((~is_inst) & is_thing_class[logits.argmax(1)], torch.full_like(class_map, VOID),
                            class_map)

    # Instances left with too little of their own mask are dropped; survivors numbered in score order.
    slot = torch.where(is_inst, best_rank, torch.full_like(best_rank, n)).view(b, -1)  # n = no instance
    counts = torch.zeros((b, n + 1), dtype=torch.long, device=dev).scatter_add_(1, slot, torch.ones_like(slot))
    counts = counts[:, :n]
    survive = kept & (counts > 0) & (counts.float() / areas.clamp(min=1).float() >= (1.0 - overlap_threshold))
    new_id = torch.cumsum(survive.long(), 1) * survive.long()
    ids = torch.cat([new_id, new_id.new_zeros((b, 1))], 1).gather(1, slot).view(b, h, w)
    class_map = torch.where(is_inst & (ids == 0), torch.full_like(class_map, VOID), class_map)

    if min_stuff_area > 0 and len(stuff_ids_t):
        counts_cls = torch.zeros((b, 256), dtype=torch.long, device=dev).scatter_add_(
            1, class_map.view(b, -1), torch.ones_like(class_map.view(b, -1)))
        small = torch.zeros((b, 256), dtype=torch.bool, device=dev)
        sc = counts_cls[:, stuff_ids_t]
        small[:, stuff_ids_t] = (sc > 0) & (sc < min_stuff_area)
        class_map = torch.where(small.gather(1, class_map.view(b, -1)).view(b, h, w),
                                torch.full_like(class_map, VOID), class_map)

    # Back to input order.
    survived = torch.zeros_like(survive).scatter_(1, order, survive)
    rank = torch.zeros_like(new_id).scatter_(1, order, new_id)
    return BatchFusionOutput(class_map.to(torch.uint8), ids.to(torch.int32), survived, rank)
