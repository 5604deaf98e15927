"""``panoptic-ros evaluate``: score panoptic tracking outputs against ground truth; report, JSON, comparison.

Inputs (``--pred`` and ``--gt`` of the same kind):

- **bags**: a replay output bag (``{ns}/panoptic/image`` and
  ``{ns}/panoptic/objects``, see :mod:`panoptic_ros.replay`) against a bag with
  ground truth (``{ns}/ground_truth/panoptic`` and ``{ns}/ground_truth/objects``,
  as ``panoptic-ros synth --format rosbag`` writes), frames matched by header
  stamp, cameras by namespace. Directories of bags pair up by name: a GT bag
  ``gt/{name}`` with the prediction bag whose ``panoptic_ros.source_bag``
  (written by replay) is ``{name}``, else the one at ``pred/{name}`` or
  ``pred/{name}/panoptic``.
- **dataset directories** (COCO panoptic, Cityscapes, video panoptic; see
  :func:`panoptic_ros.datasets.loader.open_dataset`): sequences matched by
  name, frames by frame index; prediction instance ids are track ids.

A ground-truth frame without a prediction counts as an empty (all void)
prediction, so dropped frames cost quality; ``--skip-missing`` leaves them
out instead. Every count is reported.

Metrics (each from :mod:`panoptic_ros.metrics`, checked there against its
reference implementation): PQ / SQ / RQ per class, things and stuff, mIoU;
VPQ (windows of 1..4 frames); STQ; CLEAR MOT (MOTA, ID switches), IDF1, HOTA
on mask IoU of thing tracks (class-agnostic); ID switches across
full-occlusion events where the ground truth says which objects are hidden
(the objects topic's OCCLUDED state in bags, ``area_px == 0`` in a video
panoptic ``sequences.json``); latency from the objects messages'
``processing_time_s`` (bags) or the replay's ``timings.json``.

Scale-out: each GT bag (or dataset sequence) is one unit, evaluated in its
own worker process (``--workers N``) or Ray task (``--ray ADDRESS``). The
metrics are sums over units (accumulators merged in the units' name order),
so a parallel run reports exactly what a serial one does.

Outputs in ``--out``: ``report.md`` (tables and the PNG plots
``per_class_pq.png``, ``recall_by_area.png``, ``confusion.png``,
``id_timeline.png``, ``latency_hist.png``) and ``report.json``. With two or more sequences PQ
comes with a 95 % bootstrap interval over sequences (the unit of
independence; per-sequence class counts are kept in ``report.json``).
``--compare OTHER.json`` adds a side-by-side table with the deltas, written
to ``compare.md`` and printed, and flags regressions: PQ, PQ things/stuff,
mIoU, VPQ or STQ down by more than 0.005; IDF1, HOTA or MOTA down by more
than 0.01; p50 latency up by more than 10 %. When both reports scored the
same sequences, a paired bootstrap adds an interval for the PQ difference
(whether the change exceeds what resampling the sequences moves).

Exit codes: 0 evaluated, no regression; 1 some input was bad (the report
covers the rest); 2 bad arguments, nothing to evaluate, or an unreadable
``--compare`` file; 3 the comparison found a regression.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from panoptic_ros.classes import CITYSCAPES, VOID, ClassTable
from panoptic_ros.datasets.types import DatasetError, PanopticFrame
from panoptic_ros.metrics import (
    EventSwitchResult,
    OcclusionEvent,
    PQAccumulator,
    PQCounts,
    PQInterval,
    PQResult,
    STQAccumulator,
    STQResult,
    TrackingFrame,
    TrackingResult,
    VPQAccumulator,
    VPQResult,
    clear_mot_matches,
    combine_tracking_results,
    bootstrap_pq,
    bootstrap_pq_difference,
    evaluate_tracking,
    id_switches_in_events,
    thing_mask,
)
from panoptic_ros.replay import (
    CLASS_INFO_TOPIC,
    IMAGE_TYPE,
    OBJECTS_TOPIC,
    OUTPUT_BAG_NAME,
    PANOPTIC_TOPIC,
    SOURCE_KEY,
    TIMINGS_NAME,
    BagError,
    BagSource,
    bag_directories,
    bag_read_errors,
    latency_summary,
)
from panoptic_ros.scaleout import RAY_LOCAL, ScaleOut, ScaleOutError, default_workers, map_ordered

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
COMPARE_MD = "compare.md"
REPORT_FORMAT = "panoptic_ros.evaluation/1"
EXIT_OK, EXIT_BAD_INPUT, EXIT_USAGE, EXIT_REGRESSION = 0, 1, 2, 3


# --------------------------------------------------------------------------- units of work


@dataclass(frozen=True)
class EvaluateOptions:
    iou_threshold: float = 0.5  # CLEAR MOT and IDF1 match threshold (mask IoU)
    skip_missing: bool = False  # leave out ground-truth frames without a prediction instead of scoring them empty

    def __post_init__(self) -> None:
        if not (0.0 < self.iou_threshold <= 1.0):
            raise ValueError(f"--iou-threshold must lie in (0, 1], got {self.iou_threshold}")


@dataclass(frozen=True)
class EvaluationUnit:
    """One ground-truth bag (or dataset sequence) and its predictions: what one worker evaluates."""

    name: str  # the merge order key: GT bag name, or dataset sequence name
    kind: str  # "bag" or "dataset"
    gt: Path
    pred: Path
    options: EvaluateOptions
    sequence: str | None = None  # dataset sequence


@dataclass
class IdTimeline:
    """Which predicted id each ground-truth track carried, frame by frame (for the ID timeline plot)."""

    sequence: str
    gt_ids: list[int]
    hyp_ids: np.ndarray  # int64 (num_gt, num_frames): the CLEAR-matched predicted id, 0 when unmatched
    state: np.ndarray  # int8 (num_gt, num_frames): 0 not in view, 1 visible, 2 hidden (fully occluded)

    ABSENT, VISIBLE, HIDDEN = 0, 1, 2


@dataclass
class SequenceScore:
    """Everything one sequence contributes; accumulators merge, the rest concatenates."""

    name: str
    num_frames: int
    num_missing: int  # ground-truth frames without a prediction
    num_unmatched: int  # predictions without a ground-truth frame
    pq: PQAccumulator
    vpq: VPQAccumulator
    stq: STQAccumulator
    tracking: TrackingResult
    events: EventSwitchResult | None  # None: the ground truth does not say which objects are hidden
    timeline: IdTimeline
    latencies_ms: list[float]
    untracked: bool = False  # the predictions say they carry no track ids (``predict`` without ``--track``)


@dataclass
class UnitResult:
    """One unit's sequences. ``error`` (one line) says why it stopped; the sequences scored up to the
    damage (of a truncated or corrupt bag) are kept."""

    name: str
    sequences: list[SequenceScore] = field(default_factory=list)
    classes: ClassTable = CITYSCAPES
    components_ms: dict[str, list[float]] = field(default_factory=dict)  # from a replay's timings.json
    error: str | None = None


# --------------------------------------------------------------------------- scoring one sequence


def _thing_lut(classes: ClassTable) -> np.ndarray:
    lut = np.zeros(256, dtype=bool)
    lut[classes.thing_ids] = True
    return lut


class SequenceScorer:
    """Feeds one sequence's (ground truth, prediction) frames to every metric."""

    def __init__(self, name: str, classes: ClassTable, options: EvaluateOptions, has_occlusion_info: bool) -> None:
        self.name = name
        self.classes = classes
        self.options = options
        self.has_occlusion_info = has_occlusion_info
        self.pq = PQAccumulator(classes)
        self.vpq = VPQAccumulator(classes)
        self.stq = STQAccumulator(classes)
        self._is_thing = _thing_lut(classes)
        self._frames: list[TrackingFrame] = []
        self._hidden: list[set[int]] = []
        self._visible: list[set[int]] = []
        self.latencies_ms: list[float] = []
        self.num_missing = 0
        self.num_unmatched = 0

    def add(self, gt: PanopticFrame, pred_semantic: np.ndarray | None, pred_track: np.ndarray | None,
            latency_ms: float | None = None) -> None:
        if pred_semantic is None or pred_track is None:
            self.num_missing += 1
            if self.options.skip_missing:
                return
            pred_semantic = np.full(gt.semantic.shape, VOID, dtype=np.uint8)
            pred_track = np.zeros(gt.semantic.shape, dtype=np.int32)
        if pred_semantic.shape != gt.semantic.shape:
            raise DatasetError(f"{self.name}, frame {gt.frame_index} (stamp {gt.stamp_ns} ns): prediction "
                               f"{pred_semantic.shape} and ground truth {gt.semantic.shape} differ in size")
        crowd = sorted({o.track_id for o in gt.objects if o.is_crowd})
        try:
            self.pq.add(gt.semantic, gt.instance, pred_semantic, pred_track, crowd)
            self.vpq.add(gt.semantic, gt.instance, pred_semantic, pred_track, self.name, crowd)
            self.stq.add(gt.semantic, gt.instance, pred_semantic, pred_track, self.name, crowd)
        except ValueError as exc:
            raise DatasetError(f"{self.name}, frame {gt.frame_index}: {exc}") from None
        gt_things = self._is_thing[gt.semantic] & (gt.instance > 0)
        if crowd:
            gt_things &= ~np.isin(gt.instance, crowd)
        gt_ids = np.where(gt_things, gt.instance, 0)
        hyp_ids = np.where(self._is_thing[pred_semantic] & (pred_track > 0), pred_track, 0)
        self._frames.append(TrackingFrame.from_id_maps(gt_ids, hyp_ids))
        self._hidden.append({o.track_id for o in gt.objects if o.area_px == 0 and not o.is_crowd})
        self._visible.append({int(v) for v in np.unique(gt_ids) if v})
        if latency_ms is not None and math.isfinite(latency_ms):
            self.latencies_ms.append(float(latency_ms))

    @property
    def num_frames(self) -> int:
        """Frames scored so far."""
        return len(self._frames)

    def occlusion_events(self) -> list[OcclusionEvent]:
        """Runs of frames where a track is fully hidden and after which it is visible again."""
        events = []
        n = len(self._hidden)
        for track in sorted(set().union(*self._hidden) if self._hidden else set()):
            k = 0
            while k < n:
                if track in self._hidden[k]:
                    start = k
                    while k + 1 < n and track in self._hidden[k + 1]:
                        k += 1
                    if k + 1 < n and track in self._visible[k + 1]:
                        events.append(OcclusionEvent(track, start, k))
                k += 1
        return events

    def finish(self) -> SequenceScore:
        frames = self._frames
        threshold = self.options.iou_threshold
        tracking = evaluate_tracking(frames, threshold)
        events = id_switches_in_events(frames, self.occlusion_events(), threshold) if self.has_occlusion_info \
            else None
        return SequenceScore(self.name, len(frames), self.num_missing, self.num_unmatched, self.pq, self.vpq,
                             self.stq, tracking, events, self._timeline(clear_mot_matches(frames, threshold)),
                             self.latencies_ms)

    def _timeline(self, matches: Sequence[dict[int, int]]) -> IdTimeline:
        ids = sorted(set().union(*self._visible, *self._hidden)) if self._visible else []
        row = {t: i for i, t in enumerate(ids)}
        n = len(self._visible)
        hyp = np.zeros((len(ids), n), dtype=np.int64)
        state = np.zeros((len(ids), n), dtype=np.int8)
        for k in range(n):
            for t in self._visible[k]:
                state[row[t], k] = IdTimeline.VISIBLE
            for t in self._hidden[k]:
                state[row[t], k] = IdTimeline.HIDDEN
            for t, h in matches[k].items():
                hyp[row[t], k] = h
        return IdTimeline(self.name, ids, hyp, state)


# --------------------------------------------------------------------------- reading predictions from a bag


@dataclass
class PredFrame:
    stamp_ns: int
    semantic: np.ndarray | None  # uint8 (H, W)
    track: np.ndarray | None  # int32 (H, W)
    processing_ms: float | None


def prediction_namespaces(topics: dict[str, str]) -> list[str]:
    """Camera namespaces with a panoptic image in a prediction bag ('' for one at the root)."""
    suffix = "/" + PANOPTIC_TOPIC
    return sorted(t[: -len(suffix)] for t, m in topics.items() if t.endswith(suffix) and m == IMAGE_TYPE)


def _pred_frames(source: BagSource, namespace: str) -> Iterator[PredFrame]:
    """Panoptic images (and their objects messages' processing times) of one camera, paired by header stamp."""
    from panoptic_ros.datasets.rosbag_io import panoptic_msg_to_maps

    pan_topic, obj_topic = f"{namespace}/{PANOPTIC_TOPIC}", f"{namespace}/{OBJECTS_TOPIC}"
    has_objects = obj_topic in source.topics
    pending: dict[int, PredFrame] = {}
    for message in source.messages({pan_topic, obj_topic}):
        msg = source.deserialize(message)
        stamp = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
        p = pending.setdefault(stamp, PredFrame(stamp, None, None, None))
        if message.topic == pan_topic:
            p.semantic, p.track = panoptic_msg_to_maps(msg, f"bag {source.bag.name}, {pan_topic} at {stamp} ns")
        else:
            p.processing_ms = float(msg.processing_time_s) * 1e3
        if p.semantic is not None and (p.processing_ms is not None or not has_objects):
            yield pending.pop(stamp)
        elif len(pending) > 32:  # an objects message without its image (or the reverse): let it go
            oldest = pending.pop(min(pending))
            if oldest.semantic is not None:
                yield oldest
    for stamp in sorted(pending):
        if pending[stamp].semantic is not None:
            yield pending[stamp]


def _joined(gt_frames: Iterator[Any], preds: Iterator[Any], scorer: SequenceScorer,
            gt_key: Any, pred_key: Any) -> Iterator[tuple[Any, Any | None]]:
    """Ground-truth frames (ascending key) with the prediction of the same key (stamp or frame index), read
    side by side without holding more than the predictions ahead of the ground truth; counts the unmatched."""
    buffer: dict[int, Any] = {}
    last = -1
    exhausted = False
    for gt in gt_frames:
        key = gt_key(gt)
        while key not in buffer and not exhausted and last <= key:
            p = next(preds, None)
            if p is None:
                exhausted = True
            else:
                buffer[pred_key(p)] = p
                last = max(last, pred_key(p))
        for stale in [k for k in buffer if k < key]:
            del buffer[stale]
            scorer.num_unmatched += 1
        yield gt, buffer.pop(key, None)
    scorer.num_unmatched += len(buffer) + sum(1 for _ in preds)


def _guarded(items: Iterator[Any], result: UnitResult, what: Path) -> Iterator[Any]:
    """``items`` until a damaged bag or file stops them; that becomes the unit's error (one line)."""
    try:
        yield from items
    except DatasetError as exc:
        result.error = result.error or " ".join(str(exc).split())
    except bag_read_errors() as exc:
        result.error = result.error or (f"{what} is corrupt ({' '.join(str(exc).split()) or type(exc).__name__}); "
                                        "the frames before the damage were evaluated")


def _bag_custom_data(bag: Path) -> dict[str, str]:
    try:
        doc = yaml.safe_load((bag / "metadata.yaml").read_text())
        custom = doc["rosbag2_bagfile_information"].get("custom_data") or {}
        return {str(k): str(v) for k, v in custom.items()}
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        return {}


def _timings_components(path: Path, sequence: str | None = None) -> dict[str, list[float]]:
    """The per-frame ``*_ms`` values of a replay's timings.json (empty when there is none); with
    ``sequence``, only the rows that name it (rows without a "sequence" key belong to every sequence)."""
    if not path.is_file():
        return {}
    try:
        rows = json.loads(path.read_text()).get("frames", [])
    except (OSError, ValueError, AttributeError):
        return {}
    out: dict[str, list[float]] = {}
    for r in rows if isinstance(rows, list) else []:
        if not isinstance(r, dict) or (sequence is not None and r.get("sequence", sequence) != sequence):
            continue
        for k, v in r.items():
            if k.endswith("_ms") and isinstance(v, (int, float)):
                out.setdefault(k, []).append(float(v))
    return out


def _check_classes(pred_names: list[str], gt: ClassTable, where: str) -> None:
    if pred_names != gt.names:
        raise DatasetError(f"{where}: the prediction's classes {pred_names} differ from the ground truth's "
                           f"{gt.names}; evaluate a model trained on the ground truth's class table")


def _evaluate_bag(unit: EvaluationUnit) -> UnitResult:
    from panoptic_ros.datasets.rosbag_io import RosbagDataset

    result = UnitResult(unit.name)
    gt_ds = RosbagDataset(unit.gt)
    result.classes = gt_ds.classes
    source = BagSource(unit.pred)
    try:
        namespaces = prediction_namespaces(source.topics)
        for sequence in gt_ds.sequences:
            cam = gt_ds.sequence_info(sequence).camera
            if not cam.has_ground_truth:
                raise DatasetError(f"GT bag {unit.gt} has no ground truth for camera {cam.name} "
                                   f"(no /{cam.name}/ground_truth/panoptic)")
            ns = "/" + cam.name
            if ns not in namespaces:
                raise DatasetError(f"prediction bag {unit.pred} has no {ns}/{PANOPTIC_TOPIC} for camera {cam.name} "
                                   f"of {unit.gt}; it has panoptic images for "
                                   f"{', '.join(n or '/' for n in namespaces) or 'no camera'}")
            info_topic = f"{ns}/{CLASS_INFO_TOPIC}"
            if info_topic in source.topics:
                for message in _guarded(source.messages({info_topic}), result, unit.pred):
                    _check_classes([str(n) for n in source.deserialize(message).names], gt_ds.classes,
                                   f"prediction bag {unit.pred}, {info_topic}")
                    break
                if result.error is not None:
                    return result
            name = unit.name if len(gt_ds.sequences) == 1 else f"{unit.name}/{cam.name}"
            scorer = SequenceScorer(name, gt_ds.classes, unit.options, has_occlusion_info=cam.objects_topic is not None)
            pairs = _joined(_guarded(gt_ds.frames(sequence), result, unit.gt),
                            _guarded(_pred_frames(source, ns), result, unit.pred),
                            scorer, lambda f: f.stamp_ns, lambda p: p.stamp_ns)
            for gt, pred in pairs:
                if pred is None:
                    scorer.add(gt, None, None)
                else:
                    scorer.add(gt, pred.semantic, pred.track, pred.processing_ms)
            if scorer.num_frames:
                result.sequences.append(scorer.finish())
    finally:
        source.close()
    result.components_ms = _timings_components(unit.pred.parent / TIMINGS_NAME)
    return result


def _evaluate_dataset(unit: EvaluationUnit) -> UnitResult:
    from panoptic_ros.datasets.loader import open_dataset

    result = UnitResult(unit.name)
    gt_ds = open_dataset(unit.gt)
    pred_ds = open_dataset(unit.pred)
    result.classes = gt_ds.classes
    _check_classes(pred_ds.classes.names, gt_ds.classes, f"predictions {unit.pred}")
    sequence = unit.sequence or unit.name
    if sequence not in pred_ds.sequences:
        raise DatasetError(f"predictions {unit.pred} have no sequence {sequence!r} of {unit.gt}; they hold "
                           f"{pred_ds.sequences}")
    occlusion = gt_ds.format == "video" and (unit.gt / "sequences.json").is_file()
    scorer = SequenceScorer(sequence, gt_ds.classes, unit.options, has_occlusion_info=occlusion)
    pairs = _joined(_guarded(gt_ds.frames(sequence), result, unit.gt),
                    _guarded(pred_ds.frames(sequence), result, unit.pred), scorer, lambda f: f.frame_index,
                    lambda f: f.frame_index)
    for gt, p in pairs:
        scorer.add(gt, None if p is None else p.semantic, None if p is None else p.instance)
    components = _timings_components(unit.pred / TIMINGS_NAME, None if len(pred_ds.sequences) == 1 else sequence)
    if "processing_ms" in components:
        scorer.latencies_ms = list(components["processing_ms"])
    if scorer.num_frames:
        score = scorer.finish()
        score.untracked = getattr(pred_ds, "info", {}).get("tracked") is False
        result.sequences.append(score)
    result.components_ms = components
    return result


def evaluate_unit(unit: EvaluationUnit) -> UnitResult:
    """Score one unit; bad inputs come back as ``error`` (one line), never as an exception."""
    try:
        return _evaluate_bag(unit) if unit.kind == "bag" else _evaluate_dataset(unit)
    except DatasetError as exc:  # BagError included: the unit cannot be read at all
        return UnitResult(unit.name, error=" ".join(str(exc).split()))
    except bag_read_errors() as exc:
        return UnitResult(unit.name, error=f"{unit.gt} or {unit.pred} is corrupt ({' '.join(str(exc).split())})")


# --------------------------------------------------------------------------- planning units


def _is_bag_path(p: Path) -> bool:
    return (p.is_file() and p.suffix in (".mcap", ".db3")) or (p.is_dir() and (p / "metadata.yaml").is_file())


def _looks_like_bags(p: Path) -> bool:
    if _is_bag_path(p):
        return True
    if p.is_dir():
        return any(_is_bag_path(d) or (d.is_dir() and any(_is_bag_path(e) for e in d.iterdir() if e.is_dir()))
                   for d in p.iterdir() if d.is_dir())
    return False


def _prediction_bags(pred: Path) -> dict[str, Path]:
    """Prediction bags under ``pred`` by the name of the GT bag they came from."""
    if _is_bag_path(pred):
        bag = pred if pred.is_dir() else pred.parent
        return {_source_name(bag): bag}
    found: dict[str, Path] = {}
    for d in sorted(x for x in pred.iterdir() if x.is_dir()):
        for bag in [d] + sorted(e for e in d.iterdir() if e.is_dir()):
            if (bag / "metadata.yaml").is_file():
                found.setdefault(_source_name(bag), bag)
    return found


def _source_name(bag: Path) -> str:
    custom = _bag_custom_data(bag)
    if SOURCE_KEY in custom:
        return custom[SOURCE_KEY]
    return bag.parent.name if bag.name == OUTPUT_BAG_NAME else bag.name


def plan_units(pred: Path, gt: Path, options: EvaluateOptions) -> tuple[list[EvaluationUnit], list[str]]:
    """The units to evaluate, in name order, and one line per ground truth that has no predictions.
    ValueError when the inputs cannot be paired at all."""
    for what, p in (("--gt", gt), ("--pred", pred)):
        if not p.exists():
            raise ValueError(f"{what} {p} does not exist")
    gt_bags, pred_bags = _looks_like_bags(gt), _looks_like_bags(pred)
    if gt_bags != pred_bags:
        raise ValueError(f"--pred {pred} and --gt {gt} must both be rosbag2 bags (or directories of bags) or both "
                         "be dataset directories")
    problems: list[str] = []
    units: list[EvaluationUnit] = []
    if gt_bags:
        try:
            gts = bag_directories(gt)
        except BagError as exc:
            raise ValueError(str(exc)) from None
        found = _prediction_bags(pred)
        if len(gts) == 1 and len(found) == 1:
            units.append(EvaluationUnit(gts[0].name, "bag", gts[0], next(iter(found.values())), options))
        else:
            for g in gts:
                if g.name in found:
                    units.append(EvaluationUnit(g.name, "bag", g, found[g.name], options))
                else:
                    problems.append(f"no prediction bag for GT bag {g.name} under {pred} (replay it first: "
                                    f"panoptic-ros replay {g} --out {pred / g.name})")
    else:
        from panoptic_ros.datasets.loader import open_dataset

        try:
            gt_ds = open_dataset(gt)
        except DatasetError as exc:
            raise ValueError(f"--gt {gt}: {exc}") from None
        for sequence in sorted(gt_ds.sequences):
            units.append(EvaluationUnit(sequence, "dataset", gt, pred, options, sequence))
    return sorted(units, key=lambda u: u.name), problems


# --------------------------------------------------------------------------- the report


def _f(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


@dataclass
class EvaluationReport:
    """The merged result of every unit, in unit-name order."""

    pred: str
    gt: str
    classes: ClassTable
    sequences: list[SequenceScore]
    pq: PQResult
    vpq: VPQResult
    stq: STQResult
    tracking: TrackingResult
    events: EventSwitchResult | None
    latencies_ms: list[float]
    components_ms: dict[str, list[float]]
    failures: list[str] = field(default_factory=list)
    run: dict[str, Any] = field(default_factory=dict)
    pq_interval: PQInterval | None = None  # bootstrap over sequences; None with fewer than two

    # Video and tracking metrics need ids that persist across frames; per-frame segment ids make them noise.
    VIDEO_KEYS = ("vpq", "stq", "idf1", "hota", "mota", "id_switches", "occlusion_events", "occlusion_id_switches",
                  "occlusion_keep_rate")

    @property
    def untracked(self) -> bool:
        """Some sequence's predictions carry no track ids: video and tracking metrics are reported as None."""
        return any(s.untracked for s in self.sequences)

    @classmethod
    def merge(cls, pred: str, gt: str, units: Sequence[UnitResult], failures: Sequence[str] = ()) -> "EvaluationReport":
        """Merge unit results in the given order (callers sort them by name). ValueError when none has a sequence."""
        good = [u for u in units if u.sequences]
        if not good:
            raise ValueError("nothing was evaluated")
        classes = good[0].classes
        for u in good[1:]:
            if u.classes != classes:
                raise ValueError(f"unit {u.name} uses another class table than {good[0].name}; evaluate them apart")
        pq, vpq, stq = PQAccumulator(classes), VPQAccumulator(classes), STQAccumulator(classes)
        sequences = [s for u in good for s in u.sequences]
        for s in sequences:
            pq.merge(s.pq)
            vpq.merge(s.vpq)
            stq.merge(s.stq)
        with_events = [s.events for s in sequences if s.events is not None]
        events = EventSwitchResult(tuple(o for e in with_events for o in e.outcomes)) if with_events else None
        components: dict[str, list[float]] = {}
        for u in good:
            for k, v in u.components_ms.items():
                components.setdefault(k, []).extend(v)
        return cls(pred=pred, gt=gt, classes=classes, sequences=sequences, pq=pq.result(), vpq=vpq.result(),
                   stq=stq.result(), tracking=combine_tracking_results([s.tracking for s in sequences]),
                   events=events, latencies_ms=[v for s in sequences for v in s.latencies_ms],
                   components_ms=components,
                   failures=list(failures) + [f"{u.name}: {u.error}" for u in units if u.error is not None],
                   pq_interval=bootstrap_pq([s.pq.counts for s in sequences], thing_mask(classes))
                   if len(sequences) >= 2 else None)

    @property
    def num_frames(self) -> int:
        return sum(s.num_frames for s in self.sequences)

    def summary(self) -> dict[str, float | int | None]:
        """The headline numbers (what --compare compares)."""
        t, lat = self.tracking, latency_summary(self.latencies_ms)
        miou = self.pq.miou.miou if self.pq.miou is not None else math.nan
        return {
            "pq": _f(self.pq.all.pq), "sq": _f(self.pq.all.sq), "rq": _f(self.pq.all.rq),
            "pq_things": _f(self.pq.things.pq), "pq_stuff": _f(self.pq.stuff.pq), "miou": _f(miou),
            "vpq": _f(self.vpq.vpq), "stq": _f(self.stq.stq), "idf1": _f(t.identity.idf1), "hota": _f(t.hota.hota),
            "mota": _f(t.clear.mota), "id_switches": t.clear.num_switches,
            "occlusion_events": self.events.num_events if self.events else None,
            "occlusion_id_switches": self.events.num_switches if self.events else None,
            "occlusion_keep_rate": _f(self.events.keep_rate) if self.events else None,
            "latency_p50_ms": lat["p50"] if lat else None, "latency_p99_ms": lat["p99"] if lat else None,
            "frames": self.num_frames,
            "frames_without_prediction": sum(s.num_missing for s in self.sequences),
        } | (dict.fromkeys(self.VIDEO_KEYS) if self.untracked else {})

    def to_dict(self) -> dict[str, Any]:
        events = []
        for s in self.sequences:
            for o in (s.events.outcomes if s.events else ()):
                events.append({"sequence": s.name, "track_id": o.event.track_id, "start_frame": o.event.start_frame,
                               "end_frame": o.event.end_frame, "outcome": o.outcome, "id_before": o.hyp_before,
                               "id_after": o.hyp_after})
        return {
            "format": REPORT_FORMAT, "pred": self.pred, "gt": self.gt, "summary": self.summary(),
            "tracked": not self.untracked,
            "counts": {"sequences": len(self.sequences), "frames": self.num_frames,
                       "frames_without_prediction": sum(s.num_missing for s in self.sequences),
                       "predictions_without_ground_truth": sum(s.num_unmatched for s in self.sequences)},
            "pq": self.pq.to_dict(), "vpq": self.vpq.to_dict(), "stq": self.stq.to_dict(),
            "tracking": self.tracking.to_dict(),
            "occlusion": self.events.to_dict() if self.events else None, "occlusion_events": events,
            "latency_ms": latency_summary(self.latencies_ms),
            "latency_components_ms": {k: latency_summary(v) for k, v in sorted(self.components_ms.items())},
            "pq_bootstrap": self.pq_interval.to_dict() if self.pq_interval else None,
            "per_sequence": [self.sequence_summary(s) for s in self.sequences],
            "failures": self.failures, "run": self.run,
        }

    @staticmethod
    def sequence_summary(s: SequenceScore) -> dict[str, Any]:
        pq = s.pq.result()
        t = s.tracking
        lat = latency_summary(s.latencies_ms)
        c = s.pq.counts
        return {"name": s.name, "frames": s.num_frames, "frames_without_prediction": s.num_missing,
                "predictions_without_ground_truth": s.num_unmatched, "pq": _f(pq.all.pq),
                "pq_counts": {"tp": c.tp.tolist(), "fp": c.fp.tolist(), "fn": c.fn.tolist(),
                              "iou_sum": c.iou_sum.tolist()},
                "miou": _f(pq.miou.miou) if pq.miou else None, "idf1": _f(t.identity.idf1), "hota": _f(t.hota.hota),
                "mota": _f(t.clear.mota), "id_switches": t.clear.num_switches,
                "occlusion_events": s.events.num_events if s.events else None,
                "occlusion_id_switches": s.events.num_switches if s.events else None,
                "latency_p50_ms": lat["p50"] if lat else None} | (
            {k: None for k in ("idf1", "hota", "mota", "id_switches", "occlusion_events", "occlusion_id_switches")}
            if s.untracked else {})


def evaluate(pred: str | Path, gt: str | Path, options: EvaluateOptions = EvaluateOptions(),
             plan: ScaleOut | None = None) -> EvaluationReport:
    """Evaluate ``pred`` against ``gt`` (the API the demo uses). ValueError when nothing can be evaluated;
    bad units are listed in ``report.failures``."""
    pred, gt = Path(pred), Path(gt)
    t0 = time.perf_counter()
    units, problems = plan_units(pred, gt, options)
    if not units:
        raise ValueError("; ".join(problems) or f"no ground truth found in {gt}")
    plan = plan or ScaleOut(default_workers(len(units)))
    results = map_ordered(evaluate_unit, units, plan)
    report = EvaluationReport.merge(str(pred), str(gt), results, problems)
    report.run = {"backend": plan.backend, "workers": plan.workers, "ray": plan.ray_address, "units": len(units),
                  "wall_s": time.perf_counter() - t0}
    return report


# --------------------------------------------------------------------------- comparison


@dataclass(frozen=True)
class Rule:
    """A regression: ``key`` got worse than ``tolerance`` (absolute, or a fraction of the baseline)."""

    key: str
    label: str
    higher_is_better: bool
    tolerance: float | None  # None: shown, never flagged
    relative: bool = False
    digits: int = 4  # decimals shown (0 for counts)


RULES = (
    Rule("pq", "PQ", True, 0.005), Rule("sq", "SQ", True, None), Rule("rq", "RQ", True, None),
    Rule("pq_things", "PQ things", True, 0.005), Rule("pq_stuff", "PQ stuff", True, 0.005),
    Rule("miou", "mIoU", True, 0.005), Rule("vpq", "VPQ", True, 0.005), Rule("stq", "STQ", True, 0.005),
    Rule("idf1", "IDF1", True, 0.01), Rule("hota", "HOTA", True, 0.01), Rule("mota", "MOTA", True, 0.01),
    Rule("id_switches", "ID switches", False, None, digits=0),
    Rule("occlusion_id_switches", "ID switches at occlusions", False, None, digits=0),
    Rule("latency_p50_ms", "latency p50 (ms)", False, 0.10, relative=True, digits=1),
    Rule("latency_p99_ms", "latency p99 (ms)", False, None, digits=1),
    Rule("frames", "frames", True, None, digits=0),
)


@dataclass(frozen=True)
class ComparisonRow:
    rule: Rule
    baseline: float | None
    current: float | None
    regressed: bool
    improved: bool

    @property
    def delta(self) -> float | None:
        if self.baseline is None or self.current is None:
            return None
        return self.current - self.baseline


@dataclass(frozen=True)
class Comparison:
    baseline_path: str
    rows: tuple[ComparisonRow, ...]
    pq_difference: PQInterval | None = None  # paired bootstrap of PQ(this run) - PQ(baseline) over sequences
    pq_difference_note: str = ""  # why there is none

    @property
    def regressions(self) -> list[ComparisonRow]:
        return [r for r in self.rows if r.regressed]

    def difference_text(self) -> str:
        d = self.pq_difference
        if d is None:
            return f"No interval for the PQ difference: {self.pq_difference_note}."
        (lo, hi), (tlo, thi), (slo, shi) = d.all, d.things, d.stuff
        verdict = "beyond" if d.excludes_zero() else "within"
        return (f"PQ difference, {d.level:.0%} interval [{lo:+.4f}, {hi:+.4f}] (things [{tlo:+.4f}, {thi:+.4f}], "
                f"stuff [{slo:+.4f}, {shi:+.4f}]; paired bootstrap over {d.units} sequences, {d.resamples} "
                f"resamples): {verdict} what resampling the sequences moves.")

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline_path, "regressed": [r.rule.key for r in self.regressions],
                "rows": [{"metric": r.rule.key, "baseline": r.baseline, "current": r.current, "delta": r.delta,
                          "regressed": r.regressed} for r in self.rows],
                "pq_difference": self.pq_difference.to_dict() if self.pq_difference else None,
                "pq_difference_note": self.pq_difference_note}

    def to_markdown(self) -> str:
        lines = [f"Baseline: `{self.baseline_path}`", "", "| metric | baseline | this run | delta | |",
                 "|---|---:|---:|---:|---|"]
        for r in self.rows:
            flag = "**REGRESSION**" if r.regressed else ("improved" if r.improved else "")
            c = r.rule.digits
            lines.append(f"| {r.rule.label} | {_fmt(r.baseline, c)} | {_fmt(r.current, c)} | {_fmt(r.delta, c, True)} "
                         f"| {flag} |")
        lines += ["", self.difference_text(), "", _rules_text()]
        return "\n".join(lines) + "\n"

    def to_text(self) -> str:
        lines = [f"{'metric':28s} {'baseline':>10s} {'this run':>10s} {'delta':>10s}"]
        for r in self.rows:
            flag = "  REGRESSION" if r.regressed else ("  improved" if r.improved else "")
            c = r.rule.digits
            lines.append(f"{r.rule.label:28s} {_fmt(r.baseline, c):>10s} {_fmt(r.current, c):>10s} "
                         f"{_fmt(r.delta, c, True):>10s}{flag}")
        return "\n".join([*lines, self.difference_text()])


def _rules_text() -> str:
    parts = []
    for r in RULES:
        if r.tolerance is None:
            continue
        amount = f"{r.tolerance:.0%}" if r.relative else f"{r.tolerance:g}"
        parts.append(f"{r.label} {'down' if r.higher_is_better else 'up'} by more than {amount}")
    return "Regression when: " + "; ".join(parts) + "."


def _fmt(v: float | None, digits: int = 4, signed: bool = False) -> str:
    return "n/a" if v is None else f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def compare(current: dict[str, Any], baseline: dict[str, Any], baseline_path: str = "") -> Comparison:
    """Compare two reports' ``summary`` sections under :data:`RULES`."""
    rows = []
    a, b = baseline.get("summary", {}), current.get("summary", {})
    for rule in RULES:
        old, new = a.get(rule.key), b.get(rule.key)
        old = float(old) if isinstance(old, (int, float)) else None
        new = float(new) if isinstance(new, (int, float)) else None
        regressed = improved = False
        if old is not None and new is not None and rule.tolerance is not None:
            worse = (old - new) if rule.higher_is_better else (new - old)
            limit = rule.tolerance * abs(old) if rule.relative else rule.tolerance
            regressed = worse > limit
            improved = -worse > limit
        rows.append(ComparisonRow(rule, old, new, regressed, improved))
    difference, note = _paired_pq_difference(current, baseline)
    return Comparison(baseline_path, tuple(rows), difference, note)


def _sequence_counts(report: dict[str, Any]) -> tuple[dict[str, PQCounts], np.ndarray]:
    """A report.json's PQ counts per sequence name and its thing mask; KeyError/TypeError/ValueError when it
    does not hold them."""
    counts = {}
    for d in report["per_sequence"]:
        c = d["pq_counts"]
        counts[str(d["name"])] = PQCounts(np.asarray(c["tp"], np.int64), np.asarray(c["fp"], np.int64),
                                          np.asarray(c["fn"], np.int64), np.asarray(c["iou_sum"], np.float64))
    per_class = report["pq"]["per_class"]
    is_thing = np.zeros(len(per_class), dtype=bool)
    for c in per_class:
        is_thing[int(c["class_id"])] = bool(c["is_thing"])
    return counts, is_thing


def _paired_pq_difference(current: dict[str, Any], baseline: dict[str, Any]) -> tuple[PQInterval | None, str]:
    try:
        (a, thing_a), (b, thing_b) = _sequence_counts(current), _sequence_counts(baseline)
    except (KeyError, TypeError, ValueError, IndexError):
        return None, "a report without per-sequence PQ counts (written by an older version)"
    if set(a) != set(b):
        return None, "the two reports scored different sequences"
    if thing_a.shape != thing_b.shape or not (thing_a == thing_b).all():
        return None, "the two reports use different class tables"
    if len(a) < 2:
        return None, "fewer than two sequences"
    names = sorted(a)
    try:
        return bootstrap_pq_difference([a[n] for n in names], [b[n] for n in names], thing_a), ""
    except ValueError as exc:
        return None, f"the per-sequence counts do not fit ({exc})"


def load_report(path: Path) -> dict[str, Any]:
    """A report.json; ValueError naming the file when it is not one."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"--compare {path}: cannot read it ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("summary"), dict):
        raise ValueError(f"--compare {path} is not a report.json of panoptic-ros evaluate (no 'summary')")
    return doc


# --------------------------------------------------------------------------- command line


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score predictions against ground truth; write report.md/json, compare runs",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pred", type=Path, required=True,
                   help="predictions: a replay output bag (or a directory of replay outputs), or a dataset directory")
    p.add_argument("--gt", type=Path, required=True,
                   help="ground truth: a bag with ground-truth topics (or a directory of bags), or a dataset directory")
    p.add_argument("--out", type=Path, default=Path("panoptic_eval"), help="report directory (default ./panoptic_eval)")
    p.add_argument("--compare", type=Path, default=None, metavar="OTHER.json",
                   help="a previous report.json: print and write a side-by-side diff, exit 3 on a regression")
    p.add_argument("--iou-threshold", type=float, default=0.5, help="mask IoU for CLEAR MOT / IDF1 matches (0.5)")
    p.add_argument("--skip-missing", action="store_true",
                   help="leave out ground-truth frames without a prediction (default: score them as empty)")
    scale = p.add_mutually_exclusive_group()
    scale.add_argument("--workers", type=int, default=None, help="local worker processes (default min(cores, units))")
    scale.add_argument("--ray", default=None, metavar="ADDRESS",
                       help=f"run on a Ray cluster ('{RAY_LOCAL}' starts a small local one)")
    p.set_defaults(func=run)


def _error(message: str) -> None:
    print(f"panoptic-ros evaluate: error: {message}", file=sys.stderr)


UNTRACKED_NOTE = ("VPQ, STQ, IDF1, HOTA, MOTA, ID switches: n/a, the predictions carry no track ids (written by "
                  "`panoptic-ros predict` without --track)")


def interval_text(ci: PQInterval) -> str:
    def pair(lo_hi: tuple[float, float]) -> str:
        lo, hi = lo_hi
        return "n/a" if not (math.isfinite(lo) and math.isfinite(hi)) else f"{100 * lo:.1f}-{100 * hi:.1f}"

    return (f"PQ {ci.level:.0%} interval {pair(ci.all)} (things {pair(ci.things)}, stuff {pair(ci.stuff)}; "
            f"bootstrap over {ci.units} sequences)")


def summary_text(report: EvaluationReport, files: Sequence[Path]) -> str:
    s = report.summary()

    def pct(key: str) -> str:
        v = s.get(key)
        return "n/a" if v is None else f"{100.0 * float(v):.1f}"

    lines = [f"evaluated {len(report.sequences)} sequence(s), {s['frames']} frame(s) "
             f"({s['frames_without_prediction']} without prediction)",
             f"PQ {pct('pq')} (things {pct('pq_things')}, stuff {pct('pq_stuff')})  SQ {pct('sq')}  RQ {pct('rq')}  "
             f"mIoU {pct('miou')}"]
    if report.pq_interval is not None:
        lines.append(interval_text(report.pq_interval))
    if report.untracked:
        lines.append(UNTRACKED_NOTE)
    else:
        lines.append(f"VPQ {pct('vpq')}  STQ {pct('stq')}  IDF1 {pct('idf1')}  HOTA {pct('hota')}  MOTA {pct('mota')}  "
                     f"ID switches {s['id_switches']}")
    if report.events is not None and not report.untracked:
        lines.append(f"occlusion events {report.events.num_events}: {report.events.num_kept} kept, "
                     f"{report.events.num_switches} switched, {report.events.num_lost} lost, "
                     f"{report.events.num_untracked_before} untracked before")
    lat = latency_summary(report.latencies_ms)
    if lat:
        lines.append(f"latency p50 {lat['p50']:.1f} ms  p99 {lat['p99']:.1f} ms  ({lat['count']} frames)")
    if files:
        lines.append("report: " + ", ".join(str(f) for f in files))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from panoptic_ros.report import write_report

    try:
        options = EvaluateOptions(args.iou_threshold, args.skip_missing)
        baseline = load_report(args.compare) if args.compare is not None else None
        units, problems = plan_units(args.pred, args.gt, options)
        if not units:
            raise ValueError("; ".join(problems) or f"no ground truth found in {args.gt}")
        plan = ScaleOut(args.workers if args.workers is not None else default_workers(len(units)), args.ray)
    except (ValueError, ScaleOutError) as exc:
        _error(str(exc))
        return EXIT_USAGE
    for line in problems:
        _error(line)
    t0 = time.perf_counter()

    def progress(_: int, result: UnitResult) -> None:
        if result.error is not None:
            _error(f"{result.name}: {result.error}")

    try:
        results = map_ordered(evaluate_unit, units, plan, on_result=progress)
    except ScaleOutError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    try:
        report = EvaluationReport.merge(str(args.pred), str(args.gt), results, problems)
    except ValueError as exc:
        if not (problems or any(r.error for r in results)):
            _error(str(exc))
        return EXIT_BAD_INPUT  # every input was bad, and each has said so
    report.run = {"backend": plan.backend, "workers": plan.workers, "ray": plan.ray_address, "units": len(units),
                  "wall_s": time.perf_counter() - t0}
    comparison = compare(report.to_dict(), baseline, str(args.compare)) if baseline is not None else None
    files = write_report(report, args.out, comparison)
    print(summary_text(report, files))
    if comparison is not None:
        print()
        print(comparison.to_text())
        for r in comparison.regressions:
            print(f"REGRESSION: {r.rule.label} {_fmt(r.baseline, r.rule.digits)} -> {_fmt(r.current, r.rule.digits)}",
                  file=sys.stderr)
    if report.failures:
        return EXIT_BAD_INPUT
    return EXIT_REGRESSION if comparison is not None and comparison.regressions else EXIT_OK


__all__ = ["Comparison", "EvaluateOptions", "EvaluationReport", "EvaluationUnit", "IdTimeline", "RULES", "Rule",
           "SequenceScore", "SequenceScorer", "UnitResult", "compare", "evaluate", "evaluate_unit", "load_report",
           "plan_units", "register", "run", "summary_text"]
