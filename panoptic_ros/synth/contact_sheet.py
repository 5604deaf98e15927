"""A contact sheet: frames next to their panoptic ground truth, in one PNG, for a quick look.

Each cell shows the image and the ground truth side by side (class colours over a faded
copy of the image, instance outlines, each visible thing's track id at its centroid) and
is labelled with the sequence name and frame index.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from panoptic_ros.classes import CITYSCAPES, VOID, ClassTable
from panoptic_ros.datasets.types import PanopticFrame

_HEADER_PX = 18


def panoptic_overlay(frame: PanopticFrame, class_table: ClassTable = CITYSCAPES, alpha: float = 0.65
                     ) -> np.ndarray:
    """uint8 (H, W, 3) RGB: class colours blended over the image, white instance outlines, void black."""
    palette = class_table.palette().astype(np.float32)
    color = palette[frame.semantic]
    out = frame.image.astype(np.float32) * (1.0 - alpha) + color * alpha
    out[frame.semantic == VOID] = 0.0
    inst = frame.instance
    edge = np.zeros(inst.shape, bool)
    edge[:, 1:] |= inst[:, 1:] != inst[:, :-1]
    edge[1:, :] |= inst[1:, :] != inst[:-1, :]
    edge &= (inst > 0) | np.roll(inst > 0, 1, axis=0) | np.roll(inst > 0, 1, axis=1)
    out[edge] = 255.0
    return np.clip(out, 0, 255).astype(np.uint8)


def _centroids(instance: np.ndarray) -> dict[int, tuple[float, float]]:
    ids, inv = np.unique(instance.ravel(), return_inverse=True)
    h, w = instance.shape
    ys, xs = np.divmod(np.arange(h * w), w)
    counts = np.bincount(inv)
    cx = np.bincount(inv, weights=xs) / counts
    cy = np.bincount(inv, weights=ys) / counts
    return {int(t): (float(x), float(y)) for t, x, y in zip(ids, cx, cy) if t > 0}


def _text(img: np.ndarray, s: str, org: tuple[int, int], scale: float) -> None:
    cv2.putText(img, s, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, s, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def _cell(frame: PanopticFrame, class_table: ClassTable, cell_width: int) -> np.ndarray:
    h, w = frame.semantic.shape
    scale = cell_width / float(w)
    size = (cell_width, max(1, int(round(h * scale))))
    image = cv2.resize(frame.image, size, interpolation=cv2.INTER_AREA)
    over = cv2.resize(panoptic_overlay(frame, class_table), size, interpolation=cv2.INTER_NEAREST)
    font = max(0.3, min(0.5, cell_width / 1000.0))
    for tid, (x, y) in _centroids(frame.instance).items():
        _text(over, str(tid), (int(x * scale) - 6, int(y * scale) + 4), font)
    pair = np.concatenate([image, np.full((size[1], 2, 3), 255, np.uint8), over], axis=1)
    header = np.full((_HEADER_PX, pair.shape[1], 3), 30, np.uint8)
    label = f"{frame.sequence or 'frame'} #{frame.frame_index}  ({len(frame.visible_objects())} things visible)"
    cv2.putText(header, label, (4, _HEADER_PX - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([header, pair], axis=0)


def write_contact_sheet(frames: list[PanopticFrame], path: str | Path, class_table: ClassTable = CITYSCAPES,
                        columns: int = 4, cell_width: int = 384) -> Path:
    """Write one PNG with a grid of (image | ground truth) cells, ``columns`` cells per row.

    ``cell_width`` is the width, in pixels, each image is scaled to (a cell is two images wide).
    """
    frames = list(frames)
    if not frames:
        raise ValueError("write_contact_sheet needs at least one frame")
    if not all(isinstance(f, PanopticFrame) for f in frames):
        raise TypeError("write_contact_sheet takes PanopticFrame objects")
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns must be a positive integer, got {columns!r}")
    if cell_width < 32:
        raise ValueError(f"cell_width must be at least 32 px, got {cell_width!r}")
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"the contact sheet is a PNG; give a path ending in .png, got {str(path)!r}")
    cells = [_cell(f, class_table, cell_width) for f in frames]
    ch = max(c.shape[0] for c in cells)
    cw = max(c.shape[1] for c in cells)
    rows = []
    for r in range(0, len(cells), columns):
        row = []
        for c in cells[r:r + columns]:
            pad = np.zeros((ch, cw, 3), np.uint8)
            pad[:c.shape[0], :c.shape[1]] = c
            row.append(pad)
        while len(row) < columns and len(cells) > columns:
            row.append(np.zeros((ch, cw, 3), np.uint8))
        rows.append(np.concatenate([np.concatenate([x, np.zeros((ch, 4, 3), np.uint8)], axis=1) for x in row], axis=1))
    sheet = np.concatenate([np.concatenate([r, np.zeros((4, r.shape[1], 3), np.uint8)], axis=0) for r in rows], axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write the contact sheet to {path}")
    return path
