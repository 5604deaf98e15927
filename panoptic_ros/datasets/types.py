"""Ground-truth frames, the common currency of the generator, the dataset readers/writers and evaluation."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Iterable, Iterator, TypeVar

import numpy as np

from panoptic_ros.camera import CameraModel


@dataclass(frozen=True)
class ObjectAnnotation:
    """One thing instance in one frame."""

    track_id: int  # instance id; stable for the whole sequence, never reused, >= 1
    class_id: int  # train id
    area_px: int  # visible pixels in this frame (0 when fully occluded)
    visible_fraction: float  # visible pixels / pixels the object would cover alone, 0..1
    amodal_box_xyxy: tuple[float, float, float, float]  # box of the whole object, visible or not, pixels
    position_m: tuple[float, float, float] | None = None  # ground contact point, camera optical frame, metres
    occluder_track_id: int = 0  # the thing covering most of the object when it is mostly hidden, 0 = none
    is_crowd: bool = False


@dataclass
class PanopticFrame:
    """An image with its panoptic ground truth.

    ``semantic`` holds train ids (255 = void); ``instance`` holds the track id
    of the thing at each pixel (0 for stuff and void). ``objects`` lists every
    thing of the frame, including fully occluded ones (area_px == 0) that are
    still in the field of view.
    """

    image: np.ndarray  # uint8 (H, W, 3) RGB
    semantic: np.ndarray  # uint8 (H, W)
    instance: np.ndarray  # int32 (H, W)
    objects: list[ObjectAnnotation] = field(default_factory=list)
    camera: CameraModel | None = None
    stamp_ns: int = 0
    frame_index: int = 0
    sequence: str = ""

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    def visible_objects(self) -> list[ObjectAnnotation]:
        return [o for o in self.objects if o.area_px > 0]


class DatasetError(ValueError):
    """A dataset file, directory or bag that cannot be read or written as asked.

    Raised at the dataset boundary (readers and writers) with a message that
    names the offending file or value and says how to fix it.
    """


R = TypeVar("R")


class SequenceIndex(Generic[R]):
    """What every dataset reader shares: named sequences, one record each (its frame entries, or what the
    reader knows of it), a look-up that names the known sequences when it fails, and iteration over every
    frame, sequence by sequence. A reader fills ``self._sequences`` (name -> record, in reading order), sets
    ``self._origin`` (the file or folder its errors name) and defines ``frames(sequence)``."""

    _sequences: dict[str, R]
    _origin: Path

    @property
    def sequences(self) -> list[str]:
        return list(self._sequences)

    def _record(self, sequence: str) -> R:
        if sequence not in self._sequences:
            raise DatasetError(f"no sequence {sequence!r} in {self._origin}; known: {self.sequences}")
        return self._sequences[sequence]

    def frames(self, sequence: str) -> Iterator[PanopticFrame]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[PanopticFrame]:
        for name in self.sequences:
            yield from self.frames(name)


class FrameWriter:
    """Base of the dataset writers: ``add`` frames one by one (they stream to disk), ``close`` writes the
    index and returns the file that names the set. As a context manager it closes on success and
    ``abort``s on an exception."""

    def add(self, frame: PanopticFrame) -> None:
        raise NotImplementedError

    def close(self) -> Path:
        raise NotImplementedError

    def abort(self) -> None:
        """Give up after an error (default: nothing to undo; partial files stay for inspection)."""

    def write_all(self, frames: Iterable[PanopticFrame]) -> Path:
        """Add every frame and close; returns what ``close`` returns."""
        try:
            for frame in frames:
                self.add(frame)
        except BaseException:
            self.abort()
            raise
        return self.close()

    def __enter__(self) -> "FrameWriter":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
