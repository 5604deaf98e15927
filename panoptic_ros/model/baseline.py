"""The comparison baseline for benchmarks: torchvision Mask R-CNN R50-FPN + a semantic FPN head.

This is what a team would assemble from stock parts (a "home-grown
Detectron2 wrapper"): torchvision's ``maskrcnn_resnet50_fpn`` with its own
pre/post-processing (masks pasted one by one at full resolution), a Panoptic
FPN-style semantic head on the same FPN, and Panoptic FPN's heuristic fusion
(instances by score onto free pixels, then stuff by area). fp32, eager.
Weights are random: it exists to be timed, not to be accurate.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import maskrcnn_resnet50_fpn

from panoptic_ros.classes import CITYSCAPES, VOID, ClassTable
from panoptic_ros.model.predictor import masks_to_boxes, resolve_device
from panoptic_ros.panoptic import PanopticResult


class SemanticFPNHead(nn.Module):
    """Panoptic FPN's semantic branch: each level upsampled to 1/4 with 3x3 convs, summed, classified."""

    def __init__(self, in_channels: int, channels: int, num_classes: int) -> None:
        super().__init__()
        self.stages = nn.ModuleList()
        for level in range(4):  # strides 4, 8, 16, 32
            layers: list[nn.Module] = []
            for k in range(max(1, level)):
                layers += [nn.Conv2d(in_channels if k == 0 else channels, channels, 3, padding=1, bias=False),
                           nn.GroupNorm(32, channels), nn.ReLU(inplace=True)]
                if level:
                    layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.stages.append(nn.Sequential(*layers))
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        x = sum(stage(f) for stage, f in zip(self.stages, feats))
        return F.interpolate(self.classifier(x), size=size, mode="bilinear", align_corners=False)


class BaselinePredictor:
    """Same interface as :class:`panoptic_ros.model.predictor.Predictor` (what the Pipeline needs)."""

    def __init__(self, classes: ClassTable = CITYSCAPES, device: str = "auto", score_threshold: float = 0.5,
                 overlap_threshold: float = 0.5, min_stuff_area: int = 64, input_size: tuple[int, int] | None = None,
                 detections_per_img: int = 100) -> None:
        self.device = resolve_device(device)
        self._classes = classes
        self.thing_ids = torch.tensor(classes.thing_ids, device=self.device)
        self.stuff_ids = torch.tensor(classes.stuff_ids, device=self.device)
        h, w = input_size or (1024, 2048)
        # min_size / max_size equal to the frame size: torchvision's transform then does not rescale.
        self.detector = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                              num_classes=len(classes.thing_ids) + 1, min_size=min(h, w),
                                              max_size=max(h, w), box_detections_per_img=detections_per_img)
        self.semantic = SemanticFPNHead(256, 128, len(classes))
        self.detector.to(self.device).eval()
        self.semantic.to(self.device).eval()
        self.score_threshold, self.overlap_threshold, self.min_stuff_area = score_threshold, overlap_threshold, \
            min_stuff_area

    @property
    def classes(self) -> ClassTable:
        return self._classes

    def with_fusion(self, **changes: float) -> None:
        for k, v in changes.items():
            setattr(self, k, v)

    @torch.no_grad()
    def predict(self, frames: Sequence[np.ndarray]) -> list[PanopticResult]:
        t0 = time.perf_counter()
        images = [torch.from_numpy(np.ascontiguousarray(f)).to(self.device).permute(2, 0, 1).float() / 255.0
                  for f in frames]
        det = self.detector
        original = [tuple(im.shape[-2:]) for im in images]
        batch, _ = det.transform(images)
        feats = det.backbone(batch.tensors)
        proposals, _ = det.rpn(batch, feats)
        detections, _ = det.roi_heads(feats, proposals, batch.image_sizes)
        detections = det.transform.postprocess(detections, batch.image_sizes, original)  # pastes every mask
        levels = [feats[k] for k in ("0", "1", "2", "3")]
        sem_logits = self.semantic(levels, batch.tensors.shape[-2:])
        t1 = time.perf_counter()
        results = []
        for i, d in enumerate(detections):
            h, w = original[i]
            logits = sem_logits[i, :, : batch.image_sizes[i][0], : batch.image_sizes[i][1]]
            logits = F.interpolate(logits[None], size=(h, w), mode="bilinear", align_corners=False)[0]
            results.append(self._fuse(logits, d))
        t2 = time.perf_counter()
        for r in results:
            r.timings_ms.update(preprocess=0.0, network=(t1 - t0) * 1e3 / len(frames),
                                fusion=(t2 - t1) * 1e3 / len(frames))
        return results

    def _fuse(self, logits: torch.Tensor, d: dict[str, torch.Tensor]) -> PanopticResult:
        """Panoptic FPN's heuristic: instances by score onto free pixels, then stuff classes by area."""
        h, w = logits.shape[-2:]
        instance_map = torch.zeros((h, w), dtype=torch.int32, device=self.device)
        class_map = torch.full((h, w), VOID, dtype=torch.long, device=self.device)
        kept_cls, kept_scores = [], []
        for k in torch.argsort(d["scores"], descending=True).tolist():
            score = float(d["scores"][k])
            if score < self.score_threshold:
                break
            mask = d["masks"][k, 0] > 0.5
            area = int(mask.sum())
            if area == 0:
                continue
            free = mask & (instance_map == 0)
            if int(free.sum()) / area < 1 - self.overlap_threshold:
                continue
            kept_cls.append(int(self.thing_ids[int(d["labels"][k]) - 1]))
            kept_scores.append(score)
            instance_map[free] = len(kept_cls)
            class_map[free] = kept_cls[-1]
        stuff = self.stuff_ids[logits[self.stuff_ids].argmax(0)]
        sem_is_stuff = torch.isin(logits.argmax(0), self.stuff_ids)
        fill = (instance_map == 0) & sem_is_stuff
        class_map[fill] = stuff[fill]
        counts = torch.bincount(class_map.flatten(), minlength=256)
        small = torch.zeros(256, dtype=torch.bool, device=self.device)
        small[self.stuff_ids] = counts[self.stuff_ids] < self.min_stuff_area
        class_map[small[class_map]] = VOID
        n = len(kept_cls)
        return PanopticResult(
            class_map=class_map.to(torch.uint8).cpu().numpy(), instance_map=instance_map.cpu().numpy(),
            classes=np.array(kept_cls, dtype=np.int64), scores=np.array(kept_scores, dtype=np.float32),
            boxes_xyxy=masks_to_boxes(instance_map, n).cpu().numpy(), embeddings=np.zeros((n, 0), np.float32))
