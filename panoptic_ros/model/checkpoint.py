"""Model files: weights as safetensors, a JSON model card beside them.

``model.safetensors`` + ``model.json``. The card holds the architecture
configuration (so the file rebuilds the network it was trained as), the class
table with colours, the input size and normalisation, how it was trained
(data seeds, steps, settings) and what it measured (PQ on held-out data).

Only safetensors are ever read: a path that is no regular ``.safetensors``
file (a directory, FIFO or device), a pickle (``torch.save`` output), a
truncated or corrupt file, weights whose SHA-256 differs from their card's, a
missing or malformed card, or a class table that differs from the one the
caller expects is refused with :class:`CheckpointError` naming the problem.
Nothing here unpickles.
"""
from __future__ import annotations

import hashlib
import json
import stat
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


MODEL_SUFFIX = ".safetensors"
MAX_HEADER_BYTES = 100 * (1 << 20)  # safetensors' own limit
MAX_CARD_BYTES = 10 * (1 << 20)  # a model card is a few kB of JSON


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


def check_regular_file(path: Path, what: str = "model file") -> int:
    """The size of ``path`` if it is a regular file (symlinks followed); CheckpointError otherwise.

    Runs before anything opens the path: opening a FIFO blocks start-up forever, a device such as
    /dev/zero or /dev/urandom never ends, and a directory is a confusing error further on.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        raise CheckpointError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise CheckpointError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        fix = ("the card must be a JSON file" if what == "model card" else
               f"name a {MODEL_SUFFIX} file with its .json card beside it")
        raise CheckpointError(f"{what} {path} is {_file_kind(info.st_mode)}, not a regular file; {fix}")
    return info.st_size


def check_model_path(path: Path) -> int:
    """A model path names a regular file ending in .safetensors; returns its size, CheckpointError if not."""
    size = check_regular_file(path)
    if path.suffix != MODEL_SUFFIX:
        raise CheckpointError(f"model file {path} must be a {MODEL_SUFFIX} file; only safetensors model files are "
                              "loaded (convert a PyTorch checkpoint with safetensors.torch.save_file in trusted "
                              "code, or retrain)")
    return size


def check_safetensors_file(path: Path) -> None:
    """Refuse anything that is not a well-formed safetensors file, before any parser sees it."""
    size = check_model_path(path)
    with open(path, "rb") as f:
        head = f.read(8)
        (n,) = struct.unpack("<Q", head) if len(head) == 8 else (-1,)
        header = f.read(n) if 0 <= n <= min(size - 8, MAX_HEADER_BYTES) else b""
    # A safetensors file is an 8-byte length and a JSON object. Its first two bytes may look like a pickle's
    # (a header of 640 bytes starts 80 02), so only what does not parse as one is judged by its magic.
    if not header.startswith(b"{"):
        if (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")) or head[:4] == b"PK\x03\x04":
            raise CheckpointError(f"{path} is a pickle / torch.save file; only .safetensors model files are "
                                  "loaded (convert it with safetensors.torch.save_file from trusted code)")
        if len(head) < 8:
            raise CheckpointError(f"{path} is truncated ({size} bytes): not a safetensors file")
        if not header:
            raise CheckpointError(f"{path} is not a valid safetensors file (header length {n} of a {size}-byte "
                                  "file): truncated, or another format (a pickle?); only .safetensors model files "
                                  "are loaded")
    try:
        meta = json.loads(header)
        ends = [int(v["data_offsets"][1]) for k, v in meta.items() if k != "__metadata__"]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError, OverflowError) as exc:
        raise CheckpointError(f"{path} has a corrupt safetensors header: {exc!r}") from None
    if ends and max(ends) != size - 8 - n:
        raise CheckpointError(f"{path} is truncated or padded: tensors end at byte {max(ends)} of "
                              f"{size - 8 - n} data bytes")


def read_card(path: Path) -> ModelCard:
    """The model card beside weights ``path``; CheckpointError naming what is wrong with it."""
    cpath = card_path(path)
    if not cpath.exists():
        raise CheckpointError(f"model card {cpath} is missing: every model file needs its .json card beside it")
    size = check_regular_file(cpath, "model card")
    if size > MAX_CARD_BYTES:
        raise CheckpointError(f"model card {cpath} is {size} bytes, not a model card (at most {MAX_CARD_BYTES})")
    try:
        doc = json.loads(cpath.read_bytes())
        if not isinstance(doc, dict):
            raise ValueError(f"expected a JSON object, got {type(doc).__name__}")
        return ModelCard.from_json(doc)
    except CheckpointError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError) as exc:
        raise CheckpointError(f"model card {cpath} is not valid: {exc!r}") from exc


def load_model(path: str | Path, *, expected_classes: ClassTable | None = None,
               device: str | torch.device = "cpu") -> tuple[EfficientPS, ModelCard]:
    """Load weights + card, rebuild the network, check classes; the model is in eval mode."""
    path = Path(path)
    check_safetensors_file(path)
    card = read_card(path)
    if expected_classes is not None and card.config.classes != expected_classes:
        raise CheckpointError(
            f"{path} was trained for {len(card.config.classes)} classes ({', '.join(card.config.classes.names)}), "
            f"expected {len(expected_classes)} ({', '.join(expected_classes.names)})")
    if card.weights_sha256 and file_sha256(path) != card.weights_sha256:
        raise CheckpointError(f"{path} does not match the weights_sha256 in its card {card_path(path)}: the file "
                              "is corrupt (changed bytes) or the card belongs to other weights")
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


def _optimizer_index_names(model: EfficientPS, optimizer: torch.optim.Optimizer) -> dict[int, str]:
    """Optimizer state index -> parameter name (indices run over the groups' params in order)."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    flat = [p for g in optimizer.param_groups for p in g["params"]]
    return {i: name_of[id(p)] for i, p in enumerate(flat)}


def save_training_state(directory: Path, model: EfficientPS, optimizer: torch.optim.Optimizer,
                        state: dict[str, Any]) -> None:
    """Model (fp32), optimiser tensors (safetensors) and scalars (JSON), written atomically.

    Optimiser state is keyed by parameter *name*, so a run can resume after
    the architecture gained modules (their parameters start fresh).
    """
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(directory / "model.tmp"))
    names = _optimizer_index_names(model, optimizer)
    opt = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, st in opt["state"].items():
        for key, value in st.items():
            if torch.is_tensor(value):
                tensors[f"{names[idx]}::{key}"] = value.contiguous()
            else:
                scalars[f"{names[idx]}::{key}"] = value
    save_file(tensors or {"_empty": torch.zeros(1)}, str(directory / "optimizer.tmp"))
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt["param_groups"]]
    doc = {"state": state, "optimizer_scalars": scalars, "param_groups": groups, "keys": "name"}
    (directory / "state.tmp").write_text(json.dumps(doc))
    for stem, suffix in (("model", ".safetensors"), ("optimizer", ".safetensors"), ("state", ".json")):
        (directory / f"{stem}.tmp").replace(directory / f"{stem}{suffix}")


_KERNEL_CHOICES = ("fused", "foreach", "capturable", "differentiable")  # how a step is computed, not what


def load_training_state(directory: Path, model: EfficientPS, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore what :func:`save_training_state` wrote; parameters the saved run lacked start fresh."""
    for name in ("model.safetensors", "optimizer.safetensors"):
        check_safetensors_file(directory / name)
    missing, unexpected = model.load_state_dict(load_file(str(directory / "model.safetensors")), strict=False)
    if unexpected:
        raise CheckpointError(f"{directory} holds tensors this architecture lacks, e.g. {unexpected[:3]}")
    if missing:
        print(f"resume: {len(missing)} tensors are new in this architecture and start fresh "
              f"(e.g. {', '.join(missing[:3])})")
    doc = json.loads((directory / "state.json").read_text())
    if doc.get("keys") != "name":
        raise CheckpointError(f"{directory}/state.json is from an older training-state format; restart the run")
    index_of = {n: i for i, n in _optimizer_index_names(model, optimizer).items()}
    per_param: dict[int, dict[str, Any]] = {}
    tensors = load_file(str(directory / "optimizer.safetensors"))
    for key, value in list(tensors.items()) + list(doc["optimizer_scalars"].items()):
        if key == "_empty":
            continue
        pname, stat = key.split("::", 1)
        if pname in index_of:
            per_param.setdefault(index_of[pname], {})[stat] = value
    current = optimizer.state_dict()
    # The saved hyper-parameters, but this code's choice of kernel (a run saved by the per-tensor loop
    # resumes fused, and the other way round).
    groups = [{**saved, **{k: g[k] for k in _KERNEL_CHOICES if k in g}, "params": g["params"]}
              for saved, g in zip(doc["param_groups"], current["param_groups"])]
    optimizer.load_state_dict({"state": per_param, "param_groups": groups})
    return doc["state"]
