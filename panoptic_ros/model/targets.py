"""Ground-truth frames -> the tensors the losses take."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from panoptic_ros.classes import VOID, ClassTable
from panoptic_ros.datasets.types import PanopticFrame
from panoptic_ros.model.instance_head import InstanceTargets
from panoptic_ros.panoptic import unique_inverse


@dataclass
class TrainingSample:
    image: torch.Tensor  # uint8 (3, H, W)
    semantic: torch.Tensor  # int64 (H, W), 255 = ignore
    instances: InstanceTargets


def frame_to_sample(frame: PanopticFrame, classes: ClassTable, min_area: int = 16,
                    flip: bool = False, size: tuple[int, int] | None = None) -> TrainingSample:
    """Every thing instance with at least ``min_area`` visible pixels becomes a box/mask target.

    ``size`` (H, W): resize to the network input first (centre-aligned nearest
    for the label maps; for the image area averaging when shrinking, bilinear when enlarging,
    as the predictor enlarges a smaller frame), for frames stored or rendered
    at another resolution.
    """
    image, semantic, instance = frame.image, frame.semantic, frame.instance
    if size is not None and tuple(semantic.shape) != tuple(size):
        h, w = size
        shrink = h <= semantic.shape[0] and w <= semantic.shape[1]
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        # Centre-aligned nearest (cv2's INTER_NEAREST picks floor(x * in / out): labels shifted against the image)
        semantic = cv2.resize(semantic, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
        instance = cv2.resize(instance, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
    if flip:
        image, semantic, instance = image[:, ::-1], semantic[:, ::-1], instance[:, ::-1]
    h, w = semantic.shape
    thing_lut = np.zeros(256, dtype=np.int64)  # train id -> 1-based thing label, 0 = not a thing
    for k, tid in enumerate(classes.thing_ids):
        thing_lut[tid] = k + 1
    ids, inverse = unique_inverse(instance)
    counts = np.bincount(inverse, minlength=ids.size)
    boxes, labels, masks, track_ids = [], [], [], []
    flat_sem = semantic.ravel()
    for j, (tid, area) in enumerate(zip(ids, counts)):
        if tid == 0 or area < min_area:
            continue
        pix = inverse == j
        cls = np.bincount(flat_sem[pix], minlength=256).argmax()
        if cls == VOID or thing_lut[cls] == 0:
            continue
        m = pix.reshape(h, w)
        rows = np.flatnonzero(m.any(1))
        cols = np.flatnonzero(m.any(0))
        boxes.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
        labels.append(thing_lut[cls])
        masks.append(m)
        track_ids.append(int(tid))
    n = len(boxes)
    targets = InstanceTargets(
        boxes=torch.tensor(boxes, dtype=torch.float32).reshape(n, 4),
        labels=torch.tensor(labels, dtype=torch.int64),
        masks=torch.from_numpy(np.stack(masks).astype(np.uint8)) if n else torch.zeros((0, h, w), dtype=torch.uint8),
        track_ids=torch.tensor(track_ids, dtype=torch.int64))
    return TrainingSample(
        image=torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
        semantic=torch.from_numpy(semantic.astype(np.int64)),
        instances=targets)
