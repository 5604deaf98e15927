"""Model files: weights as safetensors, a JSON model card beside them.

``model.safetensors`` + ``model.json``. The card holds the architecture
configuration (so the file rebuilds the network it was trained as), the class
table with colours, the input size and normalisation, how it was trained
(data seeds, steps, settings) and what it measured (PQ on held-out data).

Only safetensors are ever read: a pickle (``torch.save`` output), a
truncated or corrupt file, a missing card, or a class table that differs from
the one the caller expects is refused with :class:`CheckpointError` naming
the problem. Nothing here unpickles.
"""
from __future__ import annotations

import hashlib
import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from panoptic_ros.classes import ClassTable
from panoptic_ros.model.config import ModelConfig
from panoptic_ros.model.efficientps import EfficientPS, build_model

CARD_VERSION = 1


class CheckpointError(ValueError):
    """A model file that cannot or must not be loaded."""


@dataclass
class ModelCard:
    name: str
    config: ModelConfig
    training: dict[str, Any] = field(default_factory=dict)  # data, seeds, steps, optimiser settings
    metrics: dict[str, Any] = field(default_factory=dict)  # measured quality, e.g. {"pq": ..., "per_class": ...}
    weights_sha256: str = ""
    created: str = ""
    version: int = CARD_VERSION

    def to_json(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "version": self.version, "name": self.name, "created": self.created,
            "weights_sha256": self.weights_sha256,
            "input": {"height": cfg.input_height, "width": cfg.input_width, "channels": "RGB", "dtype": "uint8",
                      "normalisation": {"mean": list(cfg.mean), "std": list(cfg.std), "scale": 255.0}},
            "classes": cfg.classes.to_json(),
            "config": cfg.to_json(), "training": self.training, "metrics": self.metrics,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ModelCard":
        if d.get("version") != CARD_VERSION:
            raise CheckpointError(f"model card version {d.get('version')!r} is not supported (expected {CARD_VERSION})")
        try:
            cfg = ModelConfig.from_json(d["config"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"model card has an invalid config: {exc}") from exc
        return cls(name=d.get("name", ""), config=cfg, training=d.get("training", {}), metrics=d.get("metrics", {}),
                   weights_sha256=d.get("weights_sha256", ""), created=d.get("created", ""))


def card_path(weights: Path) -> Path:
    return weights.with_suffix(".json")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_model(model: EfficientPS, path: str | Path, card: ModelCard, dtype: torch.dtype = torch.float16) -> Path:
    """Write weights (floating tensors cast to ``dtype``) and the card; returns the weights path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous().cpu()
             for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp), metadata={"format": "panoptic_ros", "name": card.name})
    tmp.replace(path)
    card.weights_sha256 = file_sha256(path)
    card.created = card.created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    card_path(path).write_text(json.dumps(card.to_json(), indent=2) + "\n")
    return path


def check_safetensors_file(path: Path) -> None:
    """Refuse anything that is not a well-formed safetensors file, before any parser sees it."""
    if not path.is_file():
        raise CheckpointError(f"model file {path} does not exist")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if head[:2] == b"\x80\x02" or head[:1] == b"\x80" or head[:2] == b"PK":
            raise CheckpointError(f"{path} is a pickle / torch.save file; only .safetensors model files are "
                                  "loaded (convert it with safetensors.torch.save_file from trusted code)")
        if len(head) < 8:
            raise CheckpointError(f"{path} is truncated ({size} bytes): not a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > 100 * (1 << 20):
            raise CheckpointError(f"{path} is not a valid safetensors file (header length {n} of a {size}-byte file)")
        header = f.read(n)
    try:
        meta = json.loads(header)
    except ValueError as exc:
        raise CheckpointError(f"{path} has a corrupt safetensors header: {exc}") from exc
    ends = [int(v["data_offsets"][1]) for k, v in meta.items() if k != "__metadata__"]
    if ends and max(ends) != size - 8 - n:
        raise CheckpointError(f"{path} is truncated or padded: tensors end at byte {max(ends)} of "
                              f"{size - 8 - n} data bytes")


def load_model(path: str | Path, *, expected_classes: ClassTable | None = None,
               device: str | torch.device = "cpu") -> tuple[EfficientPS, ModelCard]:
    """Load weights + card, rebuild the network, check classes; the model is in eval mode."""
    path = Path(path)
    check_safetensors_file(path)
    cpath = card_path(path)
    if not cpath.is_file():
        raise CheckpointError(f"model card {cpath} is missing: every model file needs its .json card beside it")
    try:
        card = ModelCard.from_json(json.loads(cpath.read_text()))
    except ValueError as exc:
        raise CheckpointError(f"model card {cpath} is not valid: {exc}") from exc
    if expected_classes is not None and card.config.classes != expected_classes:
        raise CheckpointError(
            f"{path} was trained for {len(card.config.classes)} classes ({', '.join(card.config.classes.names)}), "
            f"expected {len(expected_classes)} ({', '.join(expected_classes.names)})")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} could not be read as safetensors: {exc}") from exc
    cfg = card.config
    if cfg.pretrained_backbone:
        # The weights are in the file; do not read the ImageNet initialisation again.
        from dataclasses import replace
        cfg = replace(cfg, pretrained_backbone=False)
    model = build_model(cfg)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"{path} does not match its card's architecture: {len(missing)} tensors missing "
                              f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})")
    for k, v in state.items():
        if v.shape != own[k].shape:
            raise CheckpointError(f"{path}: tensor {k} has shape {tuple(v.shape)}, the architecture needs "
                                  f"{tuple(own[k].shape)} (class count or widths differ from the card)")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    model.eval()
    return model.to(device), card


# ----------------------------------------------------------------- resumable training state


def save_training_state(directory: Path, model: EfficientPS, optimizer: torch.optim.Optimizer,
                        state: dict[str, Any]) -> None:
    """Model (fp32), optimiser tensors (safetensors) and scalars (JSON), written atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(directory / "model.tmp"))
    opt = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, st in opt["state"].items():
        for name, value in st.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{name}"] = value.contiguous()
            else:
                scalars[f"{pid}.{name}"] = value
    save_file(tensors or {"_empty": torch.zeros(1)}, str(directory / "optimizer.tmp"))
    doc = {"state": state, "optimizer_scalars": scalars, "param_groups": opt["param_groups"]}
    (directory / "state.tmp").write_text(json.dumps(doc))
    for stem, suffix in (("model", ".safetensors"), ("optimizer", ".safetensors"), ("state", ".json")):
        (directory / f"{stem}.tmp").replace(directory / f"{stem}{suffix}")


def load_training_state(directory: Path, model: EfficientPS, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    for name in ("model.safetensors", "optimizer.safetensors"):
        check_safetensors_file(directory / name)
    model.load_state_dict(load_file(str(directory / "model.safetensors")))
    doc = json.loads((directory / "state.json").read_text())
    tensors = load_file(str(directory / "optimizer.safetensors"))
    per_param: dict[int, dict[str, Any]] = {}
    for key, value in list(tensors.items()) + list(doc["optimizer_scalars"].items()):
        if key == "_empty":
            continue
        pid, name = key.split(".", 1)
        per_param.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": doc["param_groups"]})
    return doc["state"]
