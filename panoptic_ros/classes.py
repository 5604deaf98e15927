"""The class table: Cityscapes' 19 training classes, their ids, colours and thing/stuff flags.

A model carries its own :class:`ClassTable` (in its model card); the default is
Cityscapes' evaluation set, which the synthetic generator, the datasets and the
shipped demo model use. ``class_id`` everywhere in this package means the
*train id* (0..18), ``VOID`` (255) marks pixels that belong to no class.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VOID = 255


@dataclass(frozen=True)
class ClassInfo:
    train_id: int
    name: str
    label_id: int  # Cityscapes' original label id (gtFine *_labelIds.png)
    is_thing: bool
    color_rgb: tuple[int, int, int]


@dataclass(frozen=True)
class ClassTable:
    classes: tuple[ClassInfo, ...]

    def __post_init__(self) -> None:
        ids = [c.train_id for c in self.classes]
        if ids != list(range(len(ids))):
            raise ValueError(f"class train ids must be 0..N-1 in order, got {ids}")
        if len(ids) >= VOID:
            raise ValueError(f"at most {VOID} classes fit the uint8 class id, got {len(ids)}")

    def __len__(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def thing_ids(self) -> list[int]:
        return [c.train_id for c in self.classes if c.is_thing]

    @property
    def stuff_ids(self) -> list[int]:
        return [c.train_id for c in self.classes if not c.is_thing]

    @property
    def is_thing_mask(self) -> np.ndarray:
        """bool[num_classes]: True where the class is a thing."""
        return np.array([c.is_thing for c in self.classes], dtype=bool)

    def palette(self) -> np.ndarray:
        """uint8[256, 3] colour lookup table: class id -> RGB; void and unused ids are black."""
        lut = np.zeros((256, 3), dtype=np.uint8)
        for c in self.classes:
            lut[c.train_id] = c.color_rgb
        return lut

    def by_name(self, name: str) -> ClassInfo:
        for c in self.classes:
            if c.name == name:
                return c
        raise KeyError(f"no class named {name!r}; known: {', '.join(self.names)}")

    def label_id_to_train_id(self) -> np.ndarray:
        """uint8[256] lookup: Cityscapes label id -> train id (VOID where not evaluated)."""
        lut = np.full(256, VOID, dtype=np.uint8)
        for c in self.classes:
            lut[c.label_id] = c.train_id
        return lut

    def to_json(self) -> list[dict]:
        return [
            {"id": c.train_id, "name": c.name, "label_id": c.label_id,
             "isthing": int(c.is_thing), "color": list(c.color_rgb)}
            for c in self.classes
        ]

    @classmethod
    def from_json(cls, items: list[dict]) -> "ClassTable":
        return cls(tuple(
            ClassInfo(int(d["id"]), str(d["name"]), int(d.get("label_id", d["id"])),
                      bool(d["isthing"]), tuple(int(v) for v in d["color"]))  # type: ignore[arg-type]
            for d in items
        ))


CITYSCAPES = ClassTable((
    ClassInfo(0, "road", 7, False, (128, 64, 128)),
    ClassInfo(1, "sidewalk", 8, False, (244, 35, 232)),
    ClassInfo(2, "building", 11, False, (70, 70, 70)),
    ClassInfo(3, "wall", 12, False, (102, 102, 156)),
    ClassInfo(4, "fence", 13, False, (190, 153, 153)),
    ClassInfo(5, "pole", 17, False, (153, 153, 153)),
    ClassInfo(6, "traffic light", 19, False, (250, 170, 30)),
    ClassInfo(7, "traffic sign", 20, False, (220, 220, 0)),
    ClassInfo(8, "vegetation", 21, False, (107, 142, 35)),
    ClassInfo(9, "terrain", 22, False, (152, 251, 152)),
    ClassInfo(10, "sky", 23, False, (70, 130, 180)),
    ClassInfo(11, "person", 24, True, (220, 20, 60)),
    ClassInfo(12, "rider", 25, True, (255, 0, 0)),
    ClassInfo(13, "car", 26, True, (0, 0, 142)),
    ClassInfo(14, "truck", 27, True, (0, 0, 70)),
    ClassInfo(15, "bus", 28, True, (0, 60, 100)),
    ClassInfo(16, "train", 31, True, (0, 80, 100)),
    ClassInfo(17, "motorcycle", 32, True, (0, 0, 230)),
    ClassInfo(18, "bicycle", 33, True, (119, 11, 32)),
))
