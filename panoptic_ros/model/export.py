"""``panoptic-ros export``: the dense part of the model as ONNX (dynamic batch).

Exported: normalised image batch (B, 3, H, W) -> semantic logits, the four FPN
maps and the RPN's objectness / box-delta maps per level. Proposal selection,
RoI heads and fusion stay in PyTorch (they are data-dependent, small, and
torchvision's ops have no portable ONNX form worth maintaining). The export
is checked against PyTorch with onnxruntime before the command reports
success. A TensorRT engine can be built from this file with ``trtexec`` on a
machine that has TensorRT; that path is not verified here (no TensorRT).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from panoptic_ros.argtypes import parse_size
from panoptic_ros.model.checkpoint import load_model
from panoptic_ros.model.efficientps import EfficientPS

LEVELS = ("p2", "p3", "p4", "p5")


def output_names() -> list[str]:
    return (["semantic_logits"] + [f"fpn_{l}" for l in LEVELS] + [f"rpn_objectness_{l}" for l in LEVELS]
            + [f"rpn_deltas_{l}" for l in LEVELS])


@dataclass
class ParityReport:
    max_abs_error: dict[str, float]
    max_rel_error: float  # max over outputs of ||onnx - torch|| / ||torch||
    batch_sizes: list[int]

    @property
    def ok(self) -> bool:
        return self.max_rel_error < 1e-4


def export_onnx(model: EfficientPS, path: Path, height: int, width: int, opset: int = 17) -> Path:
    model = model.eval().float()
    dummy = torch.randn(2, 3, height, width)
    names = output_names()
    axes = {"images": {0: "batch"}, **{n: {0: "batch"} for n in names}}
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(model, (dummy,), str(path), input_names=["images"], output_names=names,
                          dynamic_axes=axes, opset_version=opset, dynamo=False, do_constant_folding=True)
    return path


def check_parity(model: EfficientPS, path: Path, height: int, width: int,
                 batch_sizes: tuple[int, ...] = (1, 3), seed: int = 0) -> ParityReport:
    """Run onnxruntime (CPU) and PyTorch on the same random batches; compare every output."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(seed)
    worst: dict[str, float] = {}
    rel = 0.0
    for b in batch_sizes:
        x = torch.randn(b, 3, height, width, generator=gen)
        with torch.no_grad():
            ref = [t.numpy() for t in model.eval()(x)]
        got = sess.run(None, {"images": x.numpy()})
        for name, r, g in zip(output_names(), ref, got):
            if r.shape != g.shape:
                raise AssertionError(f"{name}: onnx shape {g.shape} != torch {r.shape}")
            worst[name] = max(worst.get(name, 0.0), float(np.abs(r - g).max()))
            rel = max(rel, float(np.linalg.norm(r - g) / max(np.linalg.norm(r), 1e-12)))
    return ParityReport(worst, rel, list(batch_sizes))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export the dense part of a model to ONNX (checked with onnxruntime)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="", help="model .safetensors (default: the shipped demo model)")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="export format")
    p.add_argument("--out", required=True, help="output .onnx file")
    p.add_argument("--size", type=parse_size, default=None, metavar="HxW",
                   help="HxW input size (default: the model card's)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version (default: %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from panoptic_ros.pipeline import resolve_model_path

    model, card = load_model(resolve_model_path(args.model))
    h, w = card.config.input_height, card.config.input_width
    if args.size:
        h, w = args.size
    out = export_onnx(model.float(), Path(args.out), h, w, args.opset)
    report = check_parity(model, out, h, w)
    Path(args.out).with_suffix(".parity.json").write_text(json.dumps(
        {"max_abs_error": report.max_abs_error, "max_rel_error": report.max_rel_error,
         "batch_sizes": report.batch_sizes, "input": [h, w]}, indent=2))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB); onnxruntime vs torch: max relative error "
          f"{report.max_rel_error:.2e} over batches {report.batch_sizes}")
    if not report.ok:
        print("parity check FAILED (relative error >= 1e-4)")
        return 1
    return 0
