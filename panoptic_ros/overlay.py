"""The colour overlay people look at in RViz: class colours over the image, object outlines, id tags.

Pure numpy/OpenCV and linear in the pixel count (three byte LUTs, one blend,
two neighbour comparisons, masked copies), so a node can afford it whenever
someone watches: at 1024x2048 it costs a few milliseconds on one core, where
numpy fancy indexing (palette[class_map], out[mask] = ...) cost ~40.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from panoptic_ros.classes import VOID

OUTLINE_RGB = (255, 255, 255)
TEXT_RGB = (255, 255, 255)
TEXT_SHADOW_RGB = (0, 0, 0)


@dataclass(frozen=True)
class OverlayLabel:
    text: str
    x_px: float  # anchor (the text is centred on it), continuous pixel coordinates
    y_px: float


def render_overlay(image_rgb: np.ndarray, class_map: np.ndarray, track_map: np.ndarray, palette_rgb: np.ndarray,
                   alpha: float = 0.5, labels: Sequence[OverlayLabel] = ()) -> np.ndarray:
    """uint8 (H, W, 3): ``alpha`` of each pixel's class colour blended over the image.

    Void pixels keep the image; every tracked object (non-zero ``track_map``)
    gets a one-pixel outline on its own border pixels, so touching objects
    of one class stay apart; ``labels`` are drawn last, clipped to the image.
    """
    h, w = class_map.shape
    if image_rgb.shape != (h, w, 3) or track_map.shape != (h, w):
        raise ValueError(f"image {image_rgb.shape}, class map {class_map.shape} and track map {track_map.shape} "
                         "must share one (H, W)")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    image = np.ascontiguousarray(image_rgb, dtype=np.uint8)
    classes = np.ascontiguousarray(class_map, dtype=np.uint8)
    luts = np.zeros((3, 256), np.uint8)  # unknown ids (not in the palette) blend with black
    pal = np.asarray(palette_rgb, dtype=np.uint8).reshape(-1, 3)[:256]
    luts[:, :len(pal)] = pal.T
    colours = cv2.merge([cv2.LUT(classes, luts[c]) for c in range(3)])
    out = cv2.addWeighted(colours, float(alpha), image, 1.0 - float(alpha), 0.0)
    cv2.copyTo(image, (classes == VOID).view(np.uint8), out)  # void pixels keep the image
    edge = object_borders(track_map).view(np.uint8)
    cv2.bitwise_and(out, (0, 0, 0, 0), dst=out, mask=edge)  # masked scalar ops: no (H, W, 3) temporaries
    cv2.bitwise_or(out, (*OUTLINE_RGB, 0), dst=out, mask=edge)
    scale = max(0.35, min(h, w) / 900.0)
    for label in labels:
        _put_text(out, label, scale)
    return out


def object_borders(track_map: np.ndarray) -> np.ndarray:
    """bool (H, W): pixels of a tracked object with a 4-neighbour outside it."""
    edge = np.zeros(track_map.shape, dtype=bool)
    dx = track_map[:, 1:] != track_map[:, :-1]
    dy = track_map[1:, :] != track_map[:-1, :]
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    edge[1:, :] |= dy
    edge[:-1, :] |= dy
    edge &= track_map > 0
    return edge


def _put_text(out: np.ndarray, label: OverlayLabel, scale: float) -> None:
    font = cv2.FONT_HERSHEY_SIMPLEX
    thickness = max(1, int(round(scale * 2)))
    (tw, th), _ = cv2.getTextSize(label.text, font, scale, thickness)
    h, w = out.shape[:2]
    x = int(np.clip(label.x_px - tw / 2, 0, max(0, w - tw)))
    y = int(np.clip(label.y_px + th / 2, th, h - 1))
    cv2.putText(out, label.text, (x, y), font, scale, TEXT_SHADOW_RGB, thickness + 2, cv2.LINE_AA)
    cv2.putText(out, label.text, (x, y), font, scale, TEXT_RGB, thickness, cv2.LINE_AA)
