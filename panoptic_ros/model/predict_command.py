"""``panoptic-ros predict``: run the model over a dataset, a bag or an image folder; write COCO panoptic.

Output: ``OUT/annotations/panoptic_pred.json`` + ``OUT/annotations/panoptic_pred/*.png``
(segment ids RGB-encoded, category id = the model's class id), so
panopticapi, cityscapesScripts or ``panoptic-ros evaluate`` can score it.
Frames keep their sequence names and indices, so predictions line up with
the ground truth they came from. The model and tracker are configured by the
node's parameters (``--params-file``, ``-p NAME:=VALUE``), as ``replay`` takes them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

from panoptic_ros.datasets.types import DatasetError, PanopticFrame
from panoptic_ros.panoptic import LABEL_DIVISOR
from panoptic_ros.params import TrackerParams, add_node_param_flags, node_params

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def input_frames(path: Path) -> Iterator[PanopticFrame]:
    """Frames of a dataset/bag (any layout the loader reads) or of a plain folder of images."""
    from panoptic_ros.datasets.loader import open_dataset

    try:
        dataset = open_dataset(path)
    except DatasetError:
        if not path.is_dir():
            raise
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise DatasetError(f"{path} is neither a dataset/bag nor a folder of images "
                               f"({', '.join(IMAGE_SUFFIXES)})") from None
        from panoptic_ros.datasets.coco import read_image_rgb

        for k, p in enumerate(images):
            rgb = read_image_rgb(p)
            h, w = rgb.shape[:2]
            yield PanopticFrame(rgb, np.full((h, w), 255, np.uint8), np.zeros((h, w), np.int32),
                                frame_index=k, sequence=p.stem)
        return
    yield from dataset


DEFAULT_FPS = 10.0  # frame rate assumed for tracking when frames carry no stamps (image folders)


def predict_to_coco(predictor, frames: Iterator[PanopticFrame], out: Path, batch: int = 4,
                    progress: bool = True, track: bool = False,
                    tracker: TrackerParams | None = None) -> tuple[Path, int]:
    """Write predictions for ``frames``; returns (json path, frame count).

    ``track``: run each sequence through the node's pipeline (model + tracker, one tracker per
    sequence) and write track ids as segment ids, consistent across a sequence's frames, so that video
    metrics (VPQ, STQ, IDF1, HOTA) of the output mean something; thing pixels of detections not yet
    confirmed as tracks carry no id, as in the node's panoptic image. ``tracker``: its settings
    (default: the node's defaults)."""
    from panoptic_ros.datasets.coco import CocoPanopticWriter

    writer = CocoPanopticWriter(out, "pred", predictor.classes, info={
        "description": "panoptic predictions written by panoptic-ros predict", "tracked": track})
    from panoptic_ros.pipeline import CameraFrame, Pipeline

    pipeline = Pipeline(predictor, tracker=tracker or TrackerParams(), max_batch=1) if track else None
    count = 0
    pending: list[PanopticFrame] = []
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(desc="predict", unit="frame")

    def predicted(f: PanopticFrame) -> tuple[np.ndarray, np.ndarray]:
        stamp_s = f.stamp_ns * 1e-9 if f.stamp_ns else f.frame_index / DEFAULT_FPS
        (o,) = pipeline.process([CameraFrame(f.sequence or "sequence", f.image, stamp_s)])
        return o.semantic, (o.panoptic % LABEL_DIVISOR).astype(np.int32)

    def flush() -> None:
        nonlocal count
        if pipeline is not None:
            maps = [predicted(f) for f in pending]
        else:
            maps = [(r.class_map, r.instance_map) for r in predictor.predict([f.image for f in pending])]
        for f, (class_map, instance_map) in zip(pending, maps):
            writer.add(PanopticFrame(f.image, class_map, instance_map, frame_index=f.frame_index,
                                     sequence=f.sequence, stamp_ns=f.stamp_ns))
            count += 1
            if bar is not None:
                bar.update(1)
        pending.clear()

    try:
        for f in frames:
            pending.append(f)
            if len(pending) == batch:
                flush()
        if pending:
            flush()
    finally:
        # Keep what was predicted even if the input breaks off mid-way.
        path = writer.close()
        if bar is not None:
            bar.close()
    return path, count


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict a dataset, bag or image folder into COCO panoptic format",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="dataset directory, rosbag2, or folder of images")
    p.add_argument("--out", required=True, help="output directory (COCO panoptic layout)")
    p.add_argument("--model", default=None, help="model .safetensors (default: the shipped demo model)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--batch", type=int, default=4, help="frames per model call (without --track)")
    p.add_argument("--track", action="store_true",
                   help="track objects through each sequence (the node's tracker) and write track ids as segment "
                        "ids, so VPQ / STQ / IDF1 / HOTA of the output are meaningful")
    p.add_argument("--test-time-flip", action="store_true",
                   help="average the stuff classes' semantic logits over each frame and its mirror image "
                        "(model.test_time_flip: higher PQ, a second dense pass per frame)")
    add_node_param_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from panoptic_ros.model.checkpoint import CheckpointError
    from panoptic_ros.pipeline import load_predictor

    if args.batch < 1:
        print("panoptic-ros predict: --batch must be >= 1", file=sys.stderr)
        return 2
    try:
        flip = [("model.test_time_flip", True)] if args.test_time_flip else []
        params, _ = node_params(args.model, args.device, args.params_file, [*args.param_values, *flip])
        predictor = load_predictor(params.model)
        path, n = predict_to_coco(predictor, input_frames(Path(args.input)), Path(args.out), args.batch,
                                  track=args.track, tracker=params.tracker)
    except (CheckpointError, DatasetError, ValueError) as exc:
        print(f"panoptic-ros predict: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {n} predictions to {path}")
    return 0
