"""``panoptic-ros track-compare``: our tracker beside maintained baselines, on occlusion-heavy synthetic streets.

One run generates ``--sequences`` held-out synthetic sequences (seeds from
``--seed`` upward, never the training seeds 0..4999) with scripted full
occlusions behind buses and trucks, builds per-frame detections from them
-- ``gt``: the ground truth degraded by noise and dropouts
(:mod:`panoptic_ros.tracking.degrade`); ``model``: the demo model's own
detections -- and feeds the *same* detections of each frame to every
tracker: ours (with and without appearance embeddings) and the baselines of
:mod:`panoptic_ros.tracking.baselines` (ByteTrack, OC-SORT, ...).

Scoring is the same for every tracker. A tracker's output is an id per
detection (ours through ``TrackedFrame.track_ids_by_detection``, the
baselines through the detection index each output carries), so each
tracker's hypothesis is the id map "detection mask -> its id", and it is
scored against the ground-truth instance map by mask IoU at 0.5
(``TrackingFrame`` from id maps): IDF1, HOTA, MOTA, ID switches, and ID
switches across the generator's full-occlusion events of 10-40 frames
(:func:`~panoptic_ros.metrics.mot.id_switches_in_events`). Box trackers are
not disadvantaged by the masks: every tracker labels the same masks, only
the ids differ. Ground-truth things showing less than the detector's
``--min-visible`` fraction of themselves are "don't care": their pixels are
removed from both sides, so no tracker is charged for what no detection
could show.

Outputs in ``--out``: ``compare.json`` (everything, per-event outcomes
included), ``compare.md`` (a table per input), ``compare.png`` (grouped
bars) and ``id_timeline.png`` (ids over time per ground-truth object, ours
against ByteTrack, occlusions shaded).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from panoptic_ros.classes import CITYSCAPES, ClassTable
from panoptic_ros.metrics.bootstrap import RESAMPLES, excludes_zero
from panoptic_ros.metrics.mot import (EventSwitchResult, OcclusionEvent, TrackingFrame, TrackingResult,
                                      bootstrap_idf1_difference, clear_mot_matches, combine_tracking_results,
                                      evaluate_tracking, id_switches_in_events)
from panoptic_ros.panoptic import PanopticResult, unique_inverse
from panoptic_ros.params import TrackerParams
from panoptic_ros.tracking.degrade import EMBEDDING_MODES, DegradeConfig, degrade_frame

INPUTS = ("gt", "model")
OUR_TRACKERS = ("ours", "ours-noemb")
DEFAULT_TRACKERS = ("ours", "ours-noemb", "bytetrack", "bytetrack-long", "ocsort", "botsort", "mcbyte")
TRAINING_SEEDS = range(0, 5000)  # model.train.TrainSettings: train_seed_start=0, train_sequences=5000
DEFAULT_SEED = 200_000
TIMELINE_TRACKERS = ("ours", "bytetrack")
BAR_SWITCH_RATIO = 1.0 / 3.0  # issue 5: our switches on occlusion events at most a third of ByteTrack's
BAR_MIN_IDF1 = 0.90
IDEAL = ("gt", "true-ids")  # the gt input scored with the detections' true ids (a reference, not a tracker)


# --------------------------------------------------------------------------- scoring (pure)


@dataclass(frozen=True)
class DetectionOverlap:
    """One frame's pixel overlap of ground-truth objects and detections, counted once for all trackers.

    ``counts[g, d]``: pixels of ground-truth ``gt_ids[g - 1]`` (row 0: no
    object) under detection ``d - 1`` (column 0: no detection), after the
    don't-care pixels were removed from both. Any assignment of ids to
    detections then gives the same IoU matrix as
    ``TrackingFrame.from_id_maps(gt_map, ids[det_map])`` without another
    pass over the image.
    """

    gt_ids: np.ndarray  # int64 (G,)
    counts: np.ndarray  # int64 (G + 1, N + 1)

    @classmethod
    def build(cls, gt_ids_hw: np.ndarray, det_labels_hw: np.ndarray, num_detections: int,
              ignore_hw: np.ndarray | None = None) -> "DetectionOverlap":
        """``det_labels_hw``: 1 + detection index per pixel, 0 = none (a PanopticResult's instance map)."""
        g = np.asarray(gt_ids_hw).astype(np.int64)
        d = np.asarray(det_labels_hw).astype(np.int64)
        if g.shape != d.shape or g.ndim != 2:
            raise ValueError(f"ground-truth map {g.shape} and detection map {d.shape} must be one (H, W) size")
        if d.size and (d.min() < 0 or d.max() > num_detections):
            raise ValueError(f"detection labels {int(d.min())}..{int(d.max())} exceed 0..{num_detections}")
        if ignore_hw is not None:
            g = np.where(ignore_hw, 0, g)
            d = np.where(ignore_hw, 0, d)
        ids, inverse = unique_inverse(np.concatenate([[0], g.ravel()]))  # ids[0] == 0
        n1 = num_detections + 1
        joint = np.bincount(inverse[1:] * n1 + d.ravel(), minlength=ids.size * n1).reshape(ids.size, n1)
        return cls(gt_ids=ids[1:].astype(np.int64), counts=joint.astype(np.int64))

    def tracking_frame(self, ids_per_detection: np.ndarray) -> TrackingFrame:
        """The frame as a tracker scored it: detections labelled ``ids_per_detection`` (0 = no id)."""
        ids = np.asarray(ids_per_detection, np.int64).reshape(-1)
        n = self.counts.shape[1] - 1
        if ids.size != n:
            raise ValueError(f"got {ids.size} ids for {n} detections")
        per_det = self.counts[:, 1:]
        shown = (ids > 0) & (per_det.sum(axis=0) > 0)
        hyp, col = np.unique(ids[shown], return_inverse=True)
        assign = np.zeros((n, hyp.size), np.int64)
        assign[shown.nonzero()[0], col] = 1
        inter = (per_det @ assign).astype(np.float64)  # (G + 1, H)
        gt_area = self.counts.sum(axis=1).astype(np.float64)
        hyp_area = inter.sum(axis=0)
        inter_g = inter[1:]
        union = gt_area[1:, None] + hyp_area[None, :] - inter_g
        sim = np.divide(inter_g, union, out=np.zeros_like(inter_g), where=union > 0)
        return TrackingFrame(self.gt_ids, hyp.astype(np.int64), sim)


def ignore_mask(frame_instance_hw: np.ndarray, ignore_track_ids: list[int]) -> np.ndarray | None:
    """bool (H, W) pixels of the don't-care things, or None when there are none."""
    if not ignore_track_ids:
        return None
    return np.isin(frame_instance_hw, np.asarray(ignore_track_ids, np.int64))


# --------------------------------------------------------------------------- trackers under test


class FrameTracker(Protocol):
    """A tracker as the comparison drives it: one frame's detections in, an id per detection out (0 = none)."""

    name: str
    parameters: dict[str, object]

    def update(self, result: PanopticResult, stamp_s: float, image: np.ndarray | None) -> np.ndarray: ...


class OurTracker:
    """:class:`~panoptic_ros.tracking.tracker.Tracker` behind the comparison's interface.

    ``use_embeddings=False`` hides the appearance vectors from it: the
    baselines get none, so this is the like-for-like variant.
    """

    def __init__(self, name: str, params: TrackerParams, class_table: ClassTable, use_embeddings: bool) -> None:
        from panoptic_ros.tracking.tracker import Tracker

        self.name = name
        self._tracker = Tracker(params, class_table)
        self._use_embeddings = use_embeddings
        self.parameters = {**dataclasses.asdict(params), "use_embeddings": use_embeddings}

    def update(self, result: PanopticResult, stamp_s: float, image: np.ndarray | None) -> np.ndarray:
        if not self._use_embeddings:
            result = dataclasses.replace(result, embeddings=np.zeros((result.num_instances, 0), np.float32))
        return self._tracker.update(result, stamp_s, image).track_ids_by_detection(result.num_instances)


class _Baseline:
    def __init__(self, name: str, fps: float, max_occluded_frames: int) -> None:
        from panoptic_ros.tracking.baselines import BaselineTracker

        self._tracker = BaselineTracker(name, fps, max_occluded_frames)
        self.name = name
        self.parameters = self._tracker.parameters

    def update(self, result: PanopticResult, stamp_s: float, image: np.ndarray | None) -> np.ndarray:
        return self._tracker.update(result, image)


def make_tracker(name: str, fps: float, params: TrackerParams = TrackerParams(),
                 class_table: ClassTable = CITYSCAPES) -> FrameTracker:
    """A fresh tracker by name: 'ours', 'ours-noemb', or a baseline of baselines.BASELINES."""
    if name == "ours":
        return OurTracker(name, params, class_table, use_embeddings=True)
    if name == "ours-noemb":
        return OurTracker(name, params, class_table, use_embeddings=False)
    return _Baseline(name, fps, params.max_occluded_frames)


def tracker_names() -> tuple[str, ...]:
    from panoptic_ros.tracking.baselines import BASELINES

    return (*OUR_TRACKERS, *BASELINES)


# --------------------------------------------------------------------------- settings and results


@dataclass(frozen=True)
class CompareSettings:
    out: Path
    sequences: int = 10
    frames: int = 200
    height: int = 256
    width: int = 512
    seed: int = DEFAULT_SEED
    inputs: tuple[str, ...] = INPUTS
    trackers: tuple[str, ...] = DEFAULT_TRACKERS
    model: str = ""  # empty: the shipped demo model
    device: str = "auto"
    threads: int = 0  # torch threads for the model input; 0 = torch's default
    degrade: DegradeConfig = DegradeConfig()
    occlusion_rate: float = 4.0  # scripted full occlusions per 100 frames (SynthConfig)
    event_min_frames: int = 10
    event_max_frames: int = 40
    iou_threshold: float = 0.5
    timeline_sequence: int = -1  # index into the sequences; -1: the one with the most events in range
    progress: bool = True

    def __post_init__(self) -> None:
        if self.sequences < 1 or self.frames < 2:
            raise ValueError(f"need at least 1 sequence of 2 frames, got {self.sequences} x {self.frames}")
        seeds = range(self.seed, self.seed + self.sequences)
        if seeds.start < TRAINING_SEEDS.stop and TRAINING_SEEDS.start < seeds.stop:
            raise ValueError(f"seeds {seeds.start}..{seeds.stop - 1} overlap the training seeds "
                             f"{TRAINING_SEEDS.start}..{TRAINING_SEEDS.stop - 1}; evaluate on held-out seeds, "
                             f"e.g. --seed {DEFAULT_SEED}")
        bad = [i for i in self.inputs if i not in INPUTS]
        if bad or not self.inputs or len(set(self.inputs)) != len(self.inputs):
            raise ValueError(f"--inputs must list distinct names of {', '.join(INPUTS)}, got {','.join(self.inputs)}")
        known = tracker_names()
        bad = [t for t in self.trackers if t not in known]
        if bad or not self.trackers or len(set(self.trackers)) != len(self.trackers):
            raise ValueError(f"--trackers must list distinct names of {', '.join(known)}, got "
                             f"{','.join(self.trackers)}")
        if not 1 <= self.event_min_frames <= self.event_max_frames:
            raise ValueError(f"event length range must be 1 <= min <= max, got "
                             f"{self.event_min_frames}:{self.event_max_frames}")
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError(f"--iou must lie in (0, 1], got {self.iou_threshold}")
        if not (self.timeline_sequence == -1 or 0 <= self.timeline_sequence < self.sequences):
            raise ValueError(f"--timeline-sequence must be -1 or 0..{self.sequences - 1}, "
                             f"got {self.timeline_sequence}")

    def command(self) -> str:
        """The command line that reproduces this run (every setting explicit)."""
        d = self.degrade
        args = ["panoptic-ros", "track-compare", "--out", str(self.out), "--sequences", str(self.sequences),
                "--frames", str(self.frames), "--size", f"{self.height}x{self.width}", "--seed", str(self.seed),
                "--inputs", ",".join(self.inputs), "--trackers", ",".join(self.trackers)]
        if "model" in self.inputs:
            args += ["--model", self.model or "(demo)", "--device", self.device]
        args += ["--embeddings", d.embeddings, "--embedding-noise", f"{d.embedding_noise:g}",
                 "--miss-rate", f"{d.miss_rate:g}", "--false-positives", f"{d.false_positives_per_frame:g}",
                 "--min-visible", f"{d.min_visible_fraction:g}", "--occlusion-rate", f"{self.occlusion_rate:g}",
                 "--event-frames", f"{self.event_min_frames}:{self.event_max_frames}"]
        return " ".join(shlex.quote(a) for a in args)


@dataclass(frozen=True)
class EventRecord:
    """One full-occlusion event of the evaluated length and what one tracker did across it."""

    input: str
    tracker: str
    seed: int
    track_id: int
    occluder_track_id: int
    occluder_class: str
    start_frame: int
    end_frame: int
    length: int
    outcome: str  # kept / switched / lost / untracked_before
    hyp_before: int | None
    hyp_after: int | None


@dataclass(frozen=True)
class TrackerScore:
    input: str
    tracker: str
    idf1: float
    idp: float
    idr: float
    hota: float
    deta: float
    assa: float
    mota: float
    id_switches: int
    false_positives: int
    misses: int
    gt_detections: int
    events: int  # full-occlusion events of the evaluated length
    event_switches: int
    event_kept: int
    event_lost: int
    event_untracked_before: int
    ms_per_frame: float  # the tracker's own update time, wall clock
    # Paired bootstrap interval (95 %) over the sequences of this IDF1 minus ours on the same input; None for ours
    idf1_minus_ours: tuple[float, float] | None = None


@dataclass(frozen=True)
class SequenceInfo:
    seed: int
    frames: int
    events_all: int  # full-occlusion events of any length
    events_in_range: int
    event_lengths: list[int]


@dataclass
class DetectionStats:
    """Totals over all frames of the gt-degraded input."""

    frames: int = 0
    visible: int = 0
    hidden: int = 0
    missed: int = 0
    detected: int = 0
    fragments: int = 0
    false_positives: int = 0

    @property
    def miss_rate(self) -> float:
        d = self.detected + self.missed
        return self.missed / d if d else math.nan


@dataclass
class CompareReport:
    settings: CompareSettings
    command: str
    date: str
    machine: str
    libraries: str
    sequences: list[SequenceInfo]
    scores: list[TrackerScore]
    events: list[EventRecord]
    tracker_parameters: dict[str, dict[str, object]]
    detection_stats: DetectionStats
    reference: TrackerScore | None = None  # gt input scored with the true ids: what association could reach
    timeline: "Timeline | None" = None
    seconds: float = 0.0

    @property
    def num_events(self) -> int:
        return sum(s.events_in_range for s in self.sequences)

    def score(self, input_name: str, tracker: str) -> TrackerScore | None:
        return next((s for s in self.scores if s.input == input_name and s.tracker == tracker), None)

    def bar(self) -> dict | None:
        """Issue 5's bar on the gt input: switches on events <= 1/3 of ByteTrack's, IDF1 >= 0.90."""
        ours, byte = self.score("gt", "ours"), self.score("gt", "bytetrack")
        if ours is None or byte is None:
            return None
        switches_ok = ours.event_switches <= BAR_SWITCH_RATIO * byte.event_switches
        idf1_ok = ours.idf1 >= BAR_MIN_IDF1
        return {"ours_event_switches": ours.event_switches, "bytetrack_event_switches": byte.event_switches,
                "ours_idf1": ours.idf1, "switches_ok": bool(switches_ok), "idf1_ok": bool(idf1_ok),
                "passed": bool(switches_ok and idf1_ok)}

    def to_json(self) -> dict:
        s = dataclasses.asdict(self.settings)
        s["out"] = str(self.settings.out)
        st = self.detection_stats
        return {
            "command": self.command, "date": self.date, "machine": self.machine, "libraries": self.libraries,
            "seconds": round(self.seconds, 1), "settings": s,
            "evaluation": {"matching": "mask IoU of each tracker's id map (detection masks labelled with the "
                                       "tracker's ids) against the ground-truth instance map",
                           "iou_threshold": self.settings.iou_threshold,
                           "dont_care": f"ground-truth things with visible fraction < "
                                        f"{self.settings.degrade.min_visible_fraction:g} (both sides)",
                           "event_lengths": [self.settings.event_min_frames, self.settings.event_max_frames]},
            "num_sequences": len(self.sequences), "num_events": self.num_events,
            "sequences": [dataclasses.asdict(q) for q in self.sequences],
            "detections_gt": {**dataclasses.asdict(st), "realised_miss_rate": _num(st.miss_rate),
                              "false_positives_per_frame": _num(st.false_positives / st.frames if st.frames
                                                                else math.nan)},
            "scores": [{k: _num(v) for k, v in dataclasses.asdict(x).items()} for x in self.scores],
            "reference_gt": None if self.reference is None else {
                **{k: _num(v) for k, v in dataclasses.asdict(self.reference).items()},
                "meaning": "the gt-degraded detections labelled with their true track ids (fragments and false "
                           "positives unlabelled) from their first frame: the best any association could score"},
            "bar": self.bar(),
            "tracker_parameters": self.tracker_parameters,
            "events": [dataclasses.asdict(e) for e in self.events],
        }


def _num(v: object) -> object:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


# --------------------------------------------------------------------------- the run


@dataclass
class Timeline:
    """What the ID-timeline picture of one sequence needs, for the two trackers it shows."""

    seed: int
    frames: int
    input: str
    visible: dict[int, np.ndarray]  # gt track -> bool (F,) scored (visible, not don't-care) per frame
    matches: dict[str, tuple[dict[int, int], ...]]  # tracker -> per frame gt id -> hyp id
    events: list[EventRecord] = field(default_factory=list)  # of the shown trackers


def run_compare(settings: CompareSettings) -> CompareReport:
    """Generate, detect, track and score; nothing is written (see :func:`write_outputs`)."""
    from tqdm import tqdm

    from panoptic_ros.synth import SynthConfig, SyntheticSequence

    t_start = time.perf_counter()
    fps = 10.0
    predictor = _load_predictor(settings) if "model" in settings.inputs else None
    class_table = predictor.classes if predictor is not None else CITYSCAPES
    cfg = SynthConfig(height=settings.height, width=settings.width, fps=fps,
                      occlusion_events_per_100_frames=settings.occlusion_rate)
    params = TrackerParams()
    pairs = [(i, t) for i in settings.inputs for t in settings.trackers]
    scored = pairs + ([IDEAL] if "gt" in settings.inputs else [])
    parameters = {t: make_tracker(t, fps, params, class_table).parameters for t in settings.trackers}
    results: dict[tuple[str, str], list[TrackingResult]] = {p: [] for p in scored}
    outcomes: dict[tuple[str, str], list[EventSwitchResult]] = {p: [] for p in scored}
    seconds: dict[tuple[str, str], float] = {p: 0.0 for p in scored}
    records: list[EventRecord] = []
    infos: list[SequenceInfo] = []
    stats = DetectionStats()
    timelines: list[Timeline] = []
    n_frames = 0
    bar = tqdm(total=settings.sequences, unit="seq", desc="track-compare", disable=not settings.progress)
    for si in range(settings.sequences):
        seed = settings.seed + si
        seq = SyntheticSequence(seed, settings.frames, cfg)
        trackers = {p: make_tracker(p[1], fps, params, class_table) for p in pairs}
        frames: dict[tuple[str, str], list[TrackingFrame]] = {p: [] for p in scored}
        visible: dict[int, np.ndarray] = {}
        for k in range(settings.frames):
            fr = seq.render(k)
            stamp = fr.stamp_ns * 1e-9
            hidden = [o.track_id for o in fr.objects if o.area_px > 0
                      and o.visible_fraction < settings.degrade.min_visible_fraction]
            ignore = ignore_mask(fr.instance, hidden)
            for o in fr.objects:
                if o.area_px > 0 and o.track_id not in hidden:
                    visible.setdefault(o.track_id, np.zeros(settings.frames, bool))[k] = True
            for inp in settings.inputs:
                if inp == "gt":
                    deg = degrade_frame(fr, seed, settings.degrade, class_table)
                    result = deg.result
                    _add_stats(stats, deg.stats)
                else:
                    result = predictor.predict([fr.image])[0]
                overlap = DetectionOverlap.build(fr.instance, result.instance_map, result.num_instances, ignore)
                if inp == "gt":
                    frames[IDEAL].append(overlap.tracking_frame(np.where(deg.is_fragment, 0, deg.source_track_ids)))
                for name in settings.trackers:
                    t0 = time.perf_counter()
                    ids = trackers[(inp, name)].update(result, stamp, fr.image)
                    seconds[(inp, name)] += time.perf_counter() - t0
                    frames[(inp, name)].append(overlap.tracking_frame(ids))
            n_frames += 1
        all_events = seq.occlusion_events()  # the frames' annotations are cached: no re-rendering
        chosen = [e for e in all_events if settings.event_min_frames <= e.length <= settings.event_max_frames]
        occluder_class = _occluder_classes(seq, chosen, class_table)
        metric_events = [OcclusionEvent(e.track_id, e.start_frame, e.end_frame) for e in chosen]
        infos.append(SequenceInfo(seed, settings.frames, len(all_events), len(chosen), [e.length for e in chosen]))
        for p in scored:
            results[p].append(evaluate_tracking(frames[p], settings.iou_threshold))
            ev = id_switches_in_events(frames[p], metric_events, settings.iou_threshold)
            outcomes[p].append(ev)
            for e, o in zip(chosen, ev.outcomes):
                records.append(EventRecord(p[0], p[1], seed, e.track_id, e.occluder_track_id,
                                           occluder_class[e.occluder_track_id], e.start_frame, e.end_frame,
                                           e.length, o.outcome, o.hyp_before, o.hyp_after))
        shown = [t for t in TIMELINE_TRACKERS if t in settings.trackers] or list(settings.trackers[:2])
        inp0 = settings.inputs[0]
        timelines.append(Timeline(
            seed=seed, frames=settings.frames, input=inp0, visible=visible,
            matches={t: clear_mot_matches(frames[(inp0, t)], settings.iou_threshold) for t in shown},
            events=[r for r in records if r.seed == seed and r.input == inp0 and r.tracker in shown]))
        bar.update(1)
        bar.set_postfix(events=sum(i.events_in_range for i in infos))
    bar.close()

    scores = []
    for p in scored:
        combined = combine_tracking_results(results[p])
        ev = EventSwitchResult(tuple(o for r in outcomes[p] for o in r.outcomes))
        score = tracker_score(p, combined, ev, 1e3 * seconds[p] / max(n_frames, 1))
        ours = (p[0], "ours")
        if p != ours and ours in results and len(results[p]) >= 2:
            score = dataclasses.replace(score, idf1_minus_ours=bootstrap_idf1_difference(
                [r.identity for r in results[p]], [r.identity for r in results[ours]]))
        scores.append(score)
    reference = scores.pop() if IDEAL in scored else None
    records = [r for r in records if (r.input, r.tracker) != IDEAL]
    if settings.timeline_sequence >= 0:
        timeline = timelines[settings.timeline_sequence]
    else:
        in_range = {i.seed: i.events_in_range for i in infos}
        timeline = max(timelines, key=lambda t: (in_range[t.seed], -t.seed))
    return CompareReport(
        settings=settings, command=settings.command(), date=_dt.datetime.now().astimezone().isoformat(
            timespec="seconds"), machine=_machine(predictor), libraries=_libraries(settings),
        sequences=infos, scores=scores, events=records, tracker_parameters=parameters, detection_stats=stats,
        reference=reference, timeline=timeline, seconds=time.perf_counter() - t_start)


def _add_stats(total: DetectionStats, s) -> None:
    total.frames += 1
    total.visible += s.visible
    total.hidden += s.hidden
    total.missed += s.missed
    total.detected += s.detected
    total.fragments += s.fragments
    total.false_positives += s.false_positives


def tracker_score(pair: tuple[str, str], r: TrackingResult, ev: EventSwitchResult, ms: float) -> TrackerScore:
    """One (input, tracker) row from its combined tracking metrics and occlusion-event outcomes."""
    c, i, h = r.clear, r.identity, r.hota
    return TrackerScore(input=pair[0], tracker=pair[1], idf1=i.idf1, idp=i.idp, idr=i.idr, hota=h.hota,
                        deta=h.det_a, assa=h.ass_a, mota=c.mota, id_switches=c.num_switches,
                        false_positives=c.num_false_positives, misses=c.num_misses, gt_detections=c.num_objects,
                        events=ev.num_events, event_switches=ev.num_switches, event_kept=ev.num_kept,
                        event_lost=ev.num_lost, event_untracked_before=ev.num_untracked_before, ms_per_frame=ms)


def _occluder_classes(seq, events, class_table: ClassTable) -> dict[int, str]:
    """Class name of each event's occluder (from the frame before the event; 'stuff' for none)."""
    out: dict[int, str] = {0: "stuff"}
    for e in events:
        if e.occluder_track_id in out:
            continue
        name = "?"
        for k in (e.start_frame, max(e.start_frame - 1, 0)):
            cls = {o.track_id: o.class_id for o in seq.objects(k)}.get(e.occluder_track_id)
            if cls is not None:
                name = class_table.names[cls] if 0 <= cls < len(class_table) else str(cls)
                break
        out[e.occluder_track_id] = name
    return out


def _load_predictor(settings: CompareSettings):
    from panoptic_ros.params import ModelParams
    from panoptic_ros.pipeline import load_predictor, resolve_model_path

    path = resolve_model_path(settings.model)
    if not path.is_file():
        raise ValueError(f"model file {path} does not exist; pass --model PATH (a .safetensors model) or leave "
                         f"the model detections out with --inputs gt")
    if settings.threads > 0:
        import torch
        torch.set_num_threads(settings.threads)
    return load_predictor(ModelParams(path=str(path), device=settings.device))


def _machine(predictor) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}"
    if predictor is not None:
        text += f", model on {predictor.device}"
    return text


def _libraries(settings: CompareSettings) -> str:
    if all(t in OUR_TRACKERS for t in settings.trackers):
        return "no baselines"
    from panoptic_ros.tracking.baselines import library_version
    return library_version()


# --------------------------------------------------------------------------- outputs


def write_outputs(report: CompareReport, out: Path) -> list[Path]:
    """compare.json, compare.md, compare.png and id_timeline.png in ``out``; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "compare.json", out / "compare.md", out / "compare.png"]
    paths[0].write_text(json.dumps(report.to_json(), indent=2) + "\n")
    paths[1].write_text(markdown(report))
    plot_scores(report, paths[2])
    if report.timeline is not None:
        paths.append(out / "id_timeline.png")
        plot_timeline(report.timeline, paths[3])
    return paths


def _f(v: float, digits: int = 3) -> str:
    return "n/a" if not math.isfinite(v) else f"{v:.{digits}f}"


def _interval(lo_hi: tuple[float, float] | None) -> str:
    if lo_hi is None or not all(math.isfinite(v) for v in lo_hi):
        return "-"
    lo, hi = lo_hi
    return f"[{lo:+.3f}, {hi:+.3f}]{'' if excludes_zero(lo_hi) else ' (tie)'}"


def _row(s: TrackerScore, name: str, timed: bool = True) -> str:
    return (f"| {name} | {_f(s.idf1)} | {_interval(s.idf1_minus_ours)} | {_f(s.hota)} | {_f(s.mota)} | "
            f"{s.id_switches} | {s.events} | "
            f"{s.event_switches} | {s.event_kept} | {s.event_lost} | {s.event_untracked_before} | "
            f"{_f(s.ms_per_frame, 2) if timed else '-'} |")


def score_table(report: CompareReport, input_name: str) -> str:
    """A markdown table: one row per tracker on one input."""
    rows = ["| tracker | IDF1 | IDF1 - ours, 95 % interval | HOTA | MOTA | ID switches | events | switched on events | "
            "kept | lost | untracked before | ms/frame |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in report.scores:
        if s.input != input_name:
            continue
        rows.append(_row(s, s.tracker))
    if input_name == "gt" and report.reference is not None:
        rows.append(_row(report.reference, "*true ids (upper bound)*", timed=False))
    return "\n".join(rows) + "\n"


INPUT_TITLES = {"gt": "gt-degraded (ground truth with noise and dropouts)", "model": "model (demo model detections)"}


def markdown(report: CompareReport) -> str:
    s = report.settings
    st = report.detection_stats
    seeds = f"{s.seed}..{s.seed + s.sequences - 1}"
    lines = [
        "# Tracker comparison on occlusion-heavy synthetic sequences", "",
        f"- command: `{report.command}`",
        f"- date: {report.date}; machine: {report.machine}; {report.libraries}; run time {report.seconds:.0f} s",
        f"- {len(report.sequences)} sequences (seeds {seeds}, held out from training) x {s.frames} frames at "
        f"{s.height}x{s.width}, 10 fps; **{report.num_events} full-occlusion events of {s.event_min_frames}-"
        f"{s.event_max_frames} frames** (of {sum(q.events_all for q in report.sequences)} of any length)",
        f"- scoring: mask IoU >= {s.iou_threshold:g} of each tracker's id map (the detections' masks labelled with "
        f"its ids) against the ground truth; things showing < {s.degrade.min_visible_fraction:g} of themselves are "
        f"don't-care; ID switches on events: same id before and after a full occlusion (kept) or not (switched), "
        f"no match after it (lost); IDF1 - ours: a paired bootstrap over the sequences ({RESAMPLES} resamples), a "
        f"tie when the interval holds 0",
    ]
    if "gt" in s.inputs:
        d = s.degrade
        lines.append(
            f"- gt-degraded detections: miss rate {d.miss_rate:g} (realised {_f(st.miss_rate)}), "
            f"{_f(st.false_positives / max(st.frames, 1), 2)} false positives per frame, boundary jitter "
            f"+-{d.boundary_jitter_px:g} px at 256 rows, fragments {d.fragment_rate:g}, score noise "
            f"{d.score_noise_std:g}; embeddings: {d.embeddings}"
            + (f" (per-track unit vector + noise of norm {d.embedding_noise:g}, dim {d.embedding_dim})"
               if d.embeddings == "noisy" else ""))
    lines.append("")
    for inp in s.inputs:
        lines += [f"## Input: {INPUT_TITLES[inp]}", "", score_table(report, inp)]
    bar = report.bar()
    if bar is not None:
        verdict = "PASSED" if bar["passed"] else "NOT MET"
        lines += [f"Issue 5 bar (gt input): ours {bar['ours_event_switches']} switches on events vs ByteTrack "
                  f"{bar['bytetrack_event_switches']} (needs <= 1/3), IDF1 {_f(bar['ours_idf1'])} (needs >= "
                  f"{BAR_MIN_IDF1:.2f}): **{verdict}**", ""]
    lines += ["## Tracker parameters", ""]
    for name, params in report.tracker_parameters.items():
        items = ", ".join(f"{k}={_param_text(v)}" for k, v in params.items())
        lines.append(f"- **{name}**: {items}")
    lines.append("")
    return "\n".join(lines)


def _param_text(v: object) -> str:
    """A parameter value as one token: lists as ``[a; b]`` (commas separate the parameters)."""
    if isinstance(v, (list, tuple)):
        return "[" + "; ".join(_param_text(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + "; ".join(f"{k}: {_param_text(x)}" for k, x in v.items()) + "}"
    return str(v)


def plot_scores(report: CompareReport, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    inputs = list(report.settings.inputs)
    trackers = list(report.settings.trackers)
    fig, axes = plt.subplots(len(inputs), 2, figsize=(13, 3.6 * len(inputs)), squeeze=False)
    x = np.arange(len(trackers))
    for row, inp in enumerate(inputs):
        sc = [report.score(inp, t) for t in trackers]
        ax = axes[row, 0]
        width = 0.38
        for j, (metric, colour) in enumerate((("idf1", "#1f77b4"), ("hota", "#ff7f0e"))):
            vals = [getattr(s, metric) for s in sc]
            bars = ax.bar(x + (j - 0.5) * width, vals, width, label=metric.upper(), color=colour)
            ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.set_xticks(x, trackers, rotation=20, fontsize=8)
        ax.set_ylim(0, 1.15)
        ax.set_title(f"{inp}: IDF1 and HOTA")
        ax.legend(fontsize=8, loc="upper right", ncol=2)
        ax = axes[row, 1]
        bottom = np.zeros(len(trackers))
        for attr, label, colour in (("event_switches", "switched", "#d62728"), ("event_lost", "lost", "#ff9896"),
                                    ("event_kept", "kept", "#2ca02c")):
            vals = np.array([getattr(s, attr) for s in sc], float)
            bars = ax.bar(x, vals, 0.6, bottom=bottom, label=label, color=colour)
            if attr == "event_switches":
                ax.bar_label(bars, fmt="%d", label_type="center", fontsize=8, color="white")
            bottom += vals
        ax.set_xticks(x, trackers, rotation=20, fontsize=8)
        n_ev = sc[0].events if sc else 0
        ax.set_title(f"{inp}: outcome of {n_ev} full occlusions of {report.settings.event_min_frames}-"
                     f"{report.settings.event_max_frames} frames")
        ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_timeline(tl: Timeline, path: Path, max_rows: int = 40) -> None:
    """Per ground-truth object a bar over time, coloured by the id it got; occlusions shaded."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    with_event = {r.track_id for r in tl.events}
    tracks = [t for t, v in tl.visible.items() if v.sum() >= 3]
    tracks.sort(key=lambda t: (t not in with_event, -int(tl.visible[t].sum())))
    tracks = sorted(tracks[:max_rows], key=lambda t: int(np.argmax(tl.visible[t])))
    names = list(tl.matches)
    fig, axes = plt.subplots(1, len(names), figsize=(8 * len(names), 0.28 * len(tracks) + 1.8), squeeze=False,
                             sharey=True)
    cmap = plt.get_cmap("tab20")
    row_of = {t: i for i, t in enumerate(tracks)}
    for ax, name in zip(axes[0], names):
        matches = tl.matches[name]
        colour_of: dict[int, tuple] = {}
        for t in tracks:
            y = row_of[t]
            vis = tl.visible[t]
            ax.broken_barh(_runs(vis), (y - 0.08, 0.16), color="#bbbbbb")  # visible, whatever the tracker did
            hyp = np.array([m.get(t, 0) for m in matches], np.int64)
            prev = 0
            for start, length in _runs_by_value(hyp):
                h = int(hyp[start])
                if h == 0:
                    continue
                c = colour_of.setdefault(h, cmap(len(colour_of) % 20))
                ax.broken_barh([(start, length)], (y - 0.35, 0.7), color=c)
                if h != prev:
                    ax.text(start, y, str(h), fontsize=6, va="center", ha="left")
                prev = h
        for r in tl.events:
            if r.tracker != name or r.track_id not in row_of:
                continue
            y = row_of[r.track_id]
            ax.add_patch(plt.Rectangle((r.start_frame, y - 0.45), r.length, 0.9, color="#555555", alpha=0.25,
                                       lw=0))
            if r.outcome == "switched":
                ax.plot([r.end_frame + 1], [y], marker="x", color="red", ms=7, mew=2)
            elif r.outcome == "lost":
                ax.plot([r.end_frame + 1], [y], marker="o", mfc="none", color="red", ms=6)
        n_sw = sum(1 for r in tl.events if r.tracker == name and r.outcome == "switched")
        n_ev = sum(1 for r in tl.events if r.tracker == name)
        ax.set_title(f"{name}: {n_sw} of {n_ev} occlusion events switched (seed {tl.seed}, {tl.input} input)")
        ax.set_xlim(0, tl.frames)
        ax.set_xlabel("frame")
        ax.set_yticks(range(len(tracks)), [f"gt {t}" for t in tracks], fontsize=7)
        ax.invert_yaxis()
    handles = [Patch(color="#bbbbbb", label="object visible"), Patch(color="#555555", alpha=0.25,
                                                                    label="full occlusion (10-40 frames)"),
               plt.Line2D([], [], marker="x", color="red", ls="", label="id switched"),
               plt.Line2D([], [], marker="o", mfc="none", color="red", ls="", label="not re-acquired")]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of the True runs."""
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    d = np.diff(m.astype(np.int8))
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    return [(int(s), int(e - s)) for s, e in zip(starts, ends)]


def _runs_by_value(values: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of runs of equal values."""
    if values.size == 0:
        return []
    cut = np.flatnonzero(np.diff(values) != 0) + 1
    starts = np.concatenate([[0], cut])
    ends = np.concatenate([cut, [values.size]])
    return [(int(s), int(e - s)) for s, e in zip(starts, ends)]


# --------------------------------------------------------------------------- command line


def _names(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _event_frames(text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not MIN:MAX frames, e.g. 10:40") from None
    return lo, hi


def register(subparsers: argparse._SubParsersAction) -> None:
    from panoptic_ros.argtypes import parse_size
    from panoptic_ros.synth.command import _positive_int, _seed

    p = subparsers.add_parser("track-compare", help="compare our tracker with ByteTrack, OC-SORT, ... on "
                                                    "occlusion-heavy synthetic sequences",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = DegradeConfig()
    p.add_argument("--out", required=True, type=Path, help="output directory (created; files are overwritten)")
    p.add_argument("--sequences", type=_positive_int, default=10, help="number of sequences (default 10)")
    p.add_argument("--frames", type=_positive_int, default=200, help="frames per sequence (default 200)")
    p.add_argument("--size", type=parse_size, default=(256, 512), metavar="HxW",
                   help="image height x width in pixels (default 256x512)")
    p.add_argument("--seed", type=_seed, default=DEFAULT_SEED,
                   help=f"seed of the first sequence, sequence i uses seed+i; must avoid the training seeds "
                        f"0..4999 (default {DEFAULT_SEED})")
    p.add_argument("--inputs", type=_names, default=INPUTS, metavar="LIST",
                   help="detections to track: gt (degraded ground truth), model (the demo model's); default gt,model")
    p.add_argument("--trackers", type=_names, default=DEFAULT_TRACKERS, metavar="LIST",
                   help=f"trackers to run (default {','.join(DEFAULT_TRACKERS)}; also sort, cbiou)")
    p.add_argument("--model", default="", help="model file for the model input (default: the shipped demo model)")
    p.add_argument("--device", default="auto", help="model device: auto, cpu, cuda, cuda:N (default auto)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads for the model (default: torch's)")
    p.add_argument("--embeddings", choices=EMBEDDING_MODES, default=d.embeddings,
                   help="gt input: 'noisy' per-track identity vectors with strong noise, or 'none' (default noisy)")
    p.add_argument("--embedding-noise", type=float, default=d.embedding_noise,
                   help=f"norm of the noise added to each identity vector (default {d.embedding_noise:g})")
    p.add_argument("--miss-rate", type=float, default=d.miss_rate,
                   help=f"gt input: probability a visible thing is not detected (default {d.miss_rate:g})")
    p.add_argument("--false-positives", type=float, default=d.false_positives_per_frame,
                   help=f"gt input: mean false positives per frame (default {d.false_positives_per_frame:g})")
    p.add_argument("--min-visible", type=float, default=d.min_visible_fraction,
                   help=f"things less visible than this are never detected and are don't-care in scoring "
                        f"(default {d.min_visible_fraction:g})")
    p.add_argument("--occlusion-rate", type=float, default=4.0,
                   help="scripted full occlusions per 100 frames in the generator (default 4)")
    p.add_argument("--event-frames", type=_event_frames, default=(10, 40), metavar="MIN:MAX",
                   help="length of the full-occlusion events scored (default 10:40)")
    p.add_argument("--iou", type=float, default=0.5, help="IoU threshold of a match (default 0.5)")
    p.add_argument("--timeline-sequence", type=int, default=-1,
                   help="sequence index shown in id_timeline.png (default: the one with most events)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> CompareSettings:
    degrade = dataclasses.replace(DegradeConfig(), embeddings=args.embeddings, embedding_noise=args.embedding_noise,
                                  miss_rate=args.miss_rate, false_positives_per_frame=args.false_positives,
                                  min_visible_fraction=args.min_visible)
    return CompareSettings(out=args.out, sequences=args.sequences, frames=args.frames, height=args.size[0],
                           width=args.size[1], seed=args.seed, inputs=tuple(args.inputs),
                           trackers=tuple(args.trackers), model=args.model, device=args.device,
                           threads=args.threads, degrade=degrade, occlusion_rate=args.occlusion_rate,
                           event_min_frames=args.event_frames[0], event_max_frames=args.event_frames[1],
                           iou_threshold=args.iou, timeline_sequence=args.timeline_sequence,
                           progress=not args.no_progress)


def run(args: argparse.Namespace) -> int:
    from panoptic_ros.tracking.baselines import BaselineUnavailable

    try:
        settings = settings_from_args(args)
        for name in settings.trackers:  # fail before any work when a baseline is missing
            make_tracker(name, 10.0)
        report = run_compare(settings)
    except (ValueError, BaselineUnavailable) as exc:
        print(f"panoptic-ros track-compare: error: {exc}", file=sys.stderr)
        return 2
    paths = write_outputs(report, settings.out)
    print(score_summary(report))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def score_summary(report: CompareReport) -> str:
    lines = [f"{len(report.sequences)} sequences, {report.num_events} full-occlusion events of "
             f"{report.settings.event_min_frames}-{report.settings.event_max_frames} frames"]
    for inp in report.settings.inputs:
        lines += [f"[{inp}]", score_table(report, inp)]
    return "\n".join(lines)
