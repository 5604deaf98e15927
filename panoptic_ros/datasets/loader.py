"""Open any supported dataset directory or bag by looking at its layout.

``open_dataset(path)`` recognises, in this order:

- rosbag2: a directory with ``metadata.yaml``, a ``.mcap``/``.db3`` file in
  one, or a directory of bag directories (``RosbagDataset``);
- video panoptic / KITTI-STEP: ``sequences.json`` or ``panoptic_maps/``
  (``VideoPanopticDataset``);
- Cityscapes: ``gtFine/`` (``CityscapesPanopticDataset``);
- COCO panoptic: ``annotations/panoptic_*.json`` (``CocoPanopticDataset``).

Every reader answers the same small protocol, :class:`PanopticDataset`.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from panoptic_ros.classes import ClassTable
from panoptic_ros.datasets.types import DatasetError, PanopticFrame

FORMATS = ("rosbag", "video", "cityscapes", "coco")


@runtime_checkable
class PanopticDataset(Protocol):
    """What every reader offers: named sequences of frames and the class table their ids refer to."""

    format: str
    classes: ClassTable

    @property
    def sequences(self) -> list[str]: ...

    def frames(self, sequence: str) -> Iterator[PanopticFrame]: ...

    def __iter__(self) -> Iterator[PanopticFrame]: ...


def detect_format(path: str | Path) -> str:
    """The layout of ``path``, one of FORMATS; DatasetError when none fits."""
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"{p} does not exist")
    if (p / "metadata.yaml").is_file() or (p.is_file() and p.suffix in (".mcap", ".db3")):
        return "rosbag"
    if p.is_dir():
        if (p / "sequences.json").is_file() or (p / "panoptic_maps").is_dir():
            return "video"
        if (p / "gtFine").is_dir():
            return "cityscapes"
        if any((p / "annotations").glob("panoptic_*.json")):
            return "coco"
        if any((d / "metadata.yaml").is_file() for d in p.iterdir() if d.is_dir()):
            return "rosbag"
        inside = sorted(d.name for d in p.iterdir() if d.is_dir() and _is_dataset(d))
        if inside:
            raise DatasetError(f"{p} holds several datasets ({', '.join(inside)}); open one of them")
    raise DatasetError(f"{p} is not a dataset this package reads: expected a rosbag2 directory, sequences.json or "
                       "panoptic_maps/ (video), gtFine/ (Cityscapes) or annotations/panoptic_<split>.json (COCO)")


def _is_dataset(p: Path) -> bool:
    try:
        detect_format(p)
        return True
    except DatasetError:
        return False


def open_dataset(path: str | Path, split: str | None = None) -> PanopticDataset:
    """Open ``path`` with the reader its layout calls for; ``split`` picks a split where the layout has several."""
    fmt = detect_format(path)
    if fmt == "rosbag":
        from panoptic_ros.datasets.rosbag_io import RosbagDataset
        return RosbagDataset(path)
    if fmt == "video":
        from panoptic_ros.datasets.video_panoptic import VideoPanopticDataset
        return VideoPanopticDataset(path, split)
    if fmt == "cityscapes":
        from panoptic_ros.datasets.cityscapes import CityscapesPanopticDataset
        return CityscapesPanopticDataset(path, split)
    from panoptic_ros.datasets.coco import CocoPanopticDataset
    return CocoPanopticDataset(path, split)
