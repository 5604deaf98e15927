"""Scoring a predictor on ground-truth frames: PQ / SQ / RQ per class and mIoU.

Held-out synthetic data uses seeds that training never draws
(``TrainSettings.eval_seed_start`` and up, far above the training range).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from panoptic_ros.datasets.types import PanopticFrame
from panoptic_ros.metrics.pq import MIoUAccumulator, MIoUResult, PQAccumulator, PQResult
from panoptic_ros.model.predictor import Predictor


@dataclass
class QualityReport:
    pq: PQResult
    miou: MIoUResult
    frames: int

    def card_metrics(self, description: dict) -> dict:
        d = self.pq.to_dict()
        return {"held_out": description, "frames": self.frames, "pq": d["all"]["pq"], "sq": d["all"]["sq"],
                "rq": d["all"]["rq"], "pq_things": d["things"]["pq"], "pq_stuff": d["stuff"]["pq"],
                "miou": self.miou.to_dict()["miou"], "per_class": d["per_class"]}


def evaluate_frames(predictor: Predictor, frames: Iterable[PanopticFrame], batch: int = 4,
                    progress: bool = False) -> QualityReport:
    classes = predictor.classes
    pq, miou = PQAccumulator(classes), MIoUAccumulator(classes)
    n = 0
    pending: list[PanopticFrame] = []

    def flush() -> None:
        nonlocal n
        for f, r in zip(pending, predictor.predict([f.image for f in pending])):
            pq.add(f.semantic, f.instance, r.class_map, r.instance_map,
                   gt_crowd_ids=[o.track_id for o in f.objects if o.is_crowd])
            miou.add(f.semantic, r.class_map)
            n += 1
        pending.clear()

    it = frames
    if progress:
        from tqdm import tqdm
        it = tqdm(frames, desc="evaluate", unit="frame")
    for f in it:
        pending.append(f)
        if len(pending) == batch:
            flush()
    if pending:
        flush()
    return QualityReport(pq.result(), miou.result(), n)


def synthetic_frames(seed_start: int, sequences: int, frames: int, height: int, width: int,
                     stride: int = 1) -> Iterable[PanopticFrame]:
    from panoptic_ros.synth import SynthConfig, SyntheticSequence

    cfg = SynthConfig(height=height, width=width)
    for seed in range(seed_start, seed_start + sequences):
        seq = SyntheticSequence(seed=seed, num_frames=frames * stride, config=cfg)
        for k in range(0, frames * stride, stride):
            yield seq.render(k)


def evaluate_synthetic_for_card(path: Path, settings) -> dict:
    """The held-out evaluation written into a trained model's card (called by ``train``)."""
    from panoptic_ros.model.train import render_hw

    predictor = Predictor.from_file(path, device=settings.device)
    h, w = render_hw(settings, predictor.card.config)  # the frames are rendered as in training
    stride = settings.eval_frame_stride
    report = evaluate_frames(predictor, synthetic_frames(settings.eval_seed_start, settings.eval_sequences,
                                                         settings.eval_frames, h, w, stride), progress=True)
    return report.card_metrics({"source": "synthetic", "seeds": [settings.eval_seed_start,
                                                                 settings.eval_seed_start + settings.eval_sequences - 1],
                                "frames_per_sequence": settings.eval_frames, "frame_stride": stride,
                                "size": [h, w]})
