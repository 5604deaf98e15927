"""Argument types shared by the command-line tools: frame and network sizes written ``HEIGHTxWIDTH``."""
from __future__ import annotations

import argparse
import re

MIN_SIZE_PX, MAX_SIZE_PX = 32, 4096


def parse_size(text: str) -> tuple[int, int]:
    """'256x512' -> (256, 512): height x width in pixels."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if m is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not HEIGHTxWIDTH in pixels, e.g. 256x512")
    h, w = int(m[1]), int(m[2])
    if not (MIN_SIZE_PX <= h <= MAX_SIZE_PX and MIN_SIZE_PX <= w <= MAX_SIZE_PX):
        raise argparse.ArgumentTypeError(f"size {h}x{w} is outside {MIN_SIZE_PX}..{MAX_SIZE_PX} pixels per side")
    return h, w


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """'256x512,512x1024' -> [(256, 512), (512, 1024)]."""
    return [parse_size(part) for part in text.split(",")]
