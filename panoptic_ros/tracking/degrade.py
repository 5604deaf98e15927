"""Ground truth made into a noisy detector: per-frame ``PanopticResult`` s for tracker comparisons.

A tracker comparison needs detections that look like a segmenter's, with
its usual faults, yet whose errors are known and the same for every
tracker. :func:`degrade_frame` takes a generator frame (exact instance ids)
and returns what a decent but imperfect instance segmenter might report:

- **hidden objects dropped**: a thing showing less than
  ``min_visible_fraction`` of itself is never detected (detectors miss
  slivers; the full-occlusion episodes of the generator are exactly that);
- **missed detections**: every other thing is missed with probability
  ``miss_rate``, independently per frame;
- **boundary jitter**: each mask is eroded or dilated by up to
  ``boundary_jitter_px`` (at 256 rows; scaled with the image height).
  Dilation only takes background (stuff) pixels, so instances never overlap;
- **mask fragments**: with probability ``fragment_rate`` a strip of 15-35 %
  of the mask is cut off along one axis and reported as a separate, weaker
  detection of the same class (an instance split in two);
- **false positives**: Poisson(``false_positives_per_frame``) blobs of thing
  classes on background pixels, with scores spread over 0.1-0.75;
- **scores**: ``0.9 - 0.35 (1 - visible fraction) + N(0, score_noise_std)``
  clipped to [0.05, 1], so partly hidden things land in the low-score band
  (where ByteTrack's second association stage looks for them);
- **embeddings** (``embeddings="noisy"``): per ground-truth track a fixed
  random unit vector, plus isotropic Gaussian noise of norm about
  ``embedding_noise`` per observation, normalised. With the default 1.0 two
  observations of one object have a cosine of about 0.5, of two objects
  about 0: identity information that helps but cannot be trusted alone.
  ``embeddings="none"`` gives zero-width embeddings (D = 0).

Everything is drawn from generators seeded by (sequence seed, frame index)
or (sequence seed, track id), so a frame degrades identically whatever order
frames are processed in, and reruns are byte-identical.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from panoptic_ros.classes import CITYSCAPES, VOID, ClassTable
from panoptic_ros.datasets.types import PanopticFrame
from panoptic_ros.panoptic import PanopticResult

EMBEDDING_MODES = ("noisy", "none")
_FRAME_STREAM = 0x64656772  # separates the random streams of frames and of track embeddings
_TRACK_STREAM = 0x656D6264
_MIN_FRAGMENT_PX = 6  # a cut-off strip smaller than this is not reported separately
_KERNEL = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


@dataclass(frozen=True)
class DegradeConfig:
    """How ground truth becomes detections (see the module docstring for each fault)."""

    miss_rate: float = 0.05  # probability a detectable thing is missed in a frame (docs/PERFORMANCE.md sweeps 0-0.1)
    min_visible_fraction: float = 0.15  # things showing less of themselves are never detected
    boundary_jitter_px: float = 1.0  # largest erosion/dilation, px at 256 image rows
    fragment_rate: float = 0.03  # probability a detection is split into two
    false_positives_per_frame: float = 0.3  # mean of the Poisson count of spurious blobs
    score_noise_std: float = 0.08
    embeddings: str = "noisy"  # "noisy" or "none"
    embedding_dim: int = 64
    embedding_noise: float = 1.0  # norm of the per-observation noise added to the unit identity vector

    def __post_init__(self) -> None:
        for name in ("miss_rate", "min_visible_fraction", "fragment_rate"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
                raise ValueError(f"DegradeConfig.{name} is a fraction in [0, 1], got {v!r}")
        for name in ("boundary_jitter_px", "false_positives_per_frame", "score_noise_std", "embedding_noise"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0.0):
                raise ValueError(f"DegradeConfig.{name} must be a number >= 0, got {v!r}")
        if self.embeddings not in EMBEDDING_MODES:
            raise ValueError(f"DegradeConfig.embeddings must be one of {', '.join(EMBEDDING_MODES)}, "
                             f"got {self.embeddings!r}")
        if not (isinstance(self.embedding_dim, int) and 1 <= self.embedding_dim <= 4096):
            raise ValueError(f"DegradeConfig.embedding_dim must be an integer in 1..4096, got {self.embedding_dim!r}")


@dataclass(frozen=True)
class DegradeStats:
    """What happened to one frame's ground truth (counts of things)."""

    visible: int  # things with at least one visible pixel
    hidden: int  # of those, below min_visible_fraction: never detected
    missed: int  # detectable but dropped at random
    detected: int  # detectable and reported (fragments not counted)
    fragments: int  # extra detections split off a detected thing
    false_positives: int


@dataclass
class DegradedFrame:
    """A frame's detections and where each came from."""

    result: PanopticResult
    source_track_ids: np.ndarray  # int64 (N,): the ground-truth track a detection came from, 0 = false positive
    is_fragment: np.ndarray  # bool (N,): split off another detection of the same track
    stats: DegradeStats
    ignore_track_ids: list[int] = field(default_factory=list)  # visible but below min_visible_fraction


def track_embedding(seed: int, track_id: int, dim: int) -> np.ndarray:
    """float32 (dim,) unit vector: the identity of ground-truth track ``track_id`` of sequence ``seed``."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _TRACK_STREAM, int(track_id)]))
    v = rng.standard_normal(dim)
    return (v / np.linalg.norm(v)).astype(np.float32)


def degrade_frame(frame: PanopticFrame, seed: int, config: DegradeConfig = DegradeConfig(),
                  class_table: ClassTable = CITYSCAPES) -> DegradedFrame:
    """Noisy detections of ``frame``'s things, deterministic in (``seed``, ``frame.frame_index``).

    ``seed`` is the sequence's seed (it keys both the per-frame noise and the
    per-track identity vectors).
    """
    inst = np.asarray(frame.instance)
    sem = np.asarray(frame.semantic)
    if inst.ndim != 2 or sem.shape != inst.shape:
        raise ValueError(f"frame.instance {inst.shape} and frame.semantic {sem.shape} must be one (H, W) size")
    h, w = inst.shape
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _FRAME_STREAM, int(frame.frame_index)]))
    thing = class_table.is_thing_mask
    # At least a pixel whenever jitter is asked for: a small image still has ragged mask boundaries.
    jitter = max(1, int(round(config.boundary_jitter_px * h / 256.0))) if config.boundary_jitter_px > 0 else 0

    out = np.zeros((h, w), np.int32)
    # Pixels a dilation may take: background (stuff or void), not another thing.
    free = inst == 0
    masks: list[tuple[int, int, np.ndarray]] = []  # (y0, x0, bool crop)
    sources: list[int] = []
    fragment: list[bool] = []
    classes: list[int] = []
    scores: list[float] = []
    vis_of: list[float] = []
    hidden, missed, detected, fragments = 0, 0, 0, 0
    ignore: list[int] = []
    visible = sorted((o for o in frame.objects if o.area_px > 0 and 0 <= o.class_id < len(thing)
                      and thing[o.class_id]), key=lambda o: o.track_id)
    for o in visible:
        # Draw every random number of this object whatever branch it takes: one object's fate never
        # shifts another's noise.
        u_miss, r_jit, u_frag, axis, side, cut, s_noise, frag_s = (
            rng.random(), int(rng.integers(-jitter, jitter + 1)), rng.random(), int(rng.integers(2)),
            int(rng.integers(2)), rng.uniform(0.15, 0.35), rng.normal(0.0, config.score_noise_std),
            rng.uniform(0.3, 0.8))
        if o.visible_fraction < config.min_visible_fraction:
            hidden += 1
            ignore.append(int(o.track_id))
            continue
        if u_miss < config.miss_rate:
            missed += 1
            continue
        ys, xs = _bbox_of(inst, o.track_id, o.amodal_box_xyxy)
        if ys is None:
            hidden += 1
            ignore.append(int(o.track_id))
            continue
        pad = abs(r_jit) + 1
        y0, y1 = max(ys[0] - pad, 0), min(ys[1] + pad, h)
        x0, x1 = max(xs[0] - pad, 0), min(xs[1] + pad, w)
        own = inst[y0:y1, x0:x1] == o.track_id
        m = _jitter(own, r_jit, free[y0:y1, x0:x1] | own)
        m &= out[y0:y1, x0:x1] == 0  # a pixel another detection already took stays theirs
        if not m.any():
            m = own & (out[y0:y1, x0:x1] == 0)
        if not m.any():
            missed += 1
            continue
        vf = min(max(o.visible_fraction, 0.0), 1.0)
        score = float(np.clip(0.9 - 0.35 * (1.0 - vf) + s_noise, 0.05, 1.0))
        piece = None
        if u_frag < config.fragment_rate:
            m, piece = _split(m, axis, side, cut)
        detected += 1
        _paint(out, masks, y0, x0, m)
        sources.append(int(o.track_id))
        fragment.append(False)
        classes.append(int(o.class_id))
        scores.append(score)
        vis_of.append(vf)
        if piece is not None:
            fragments += 1
            _paint(out, masks, y0, x0, piece)
            sources.append(int(o.track_id))
            fragment.append(True)
            classes.append(int(o.class_id))
            scores.append(float(np.clip(score * frag_s, 0.05, 1.0)))
            vis_of.append(vf)

    num_fp = int(rng.poisson(config.false_positives_per_frame)) if config.false_positives_per_frame > 0 else 0
    fp_made = 0
    thing_ids = class_table.thing_ids
    common = [class_table.by_name(c).train_id for c in ("car", "person") if c in class_table.names] or thing_ids
    for _ in range(num_fp):
        cls = int(rng.choice(common)) if rng.random() < 0.8 else int(rng.choice(thing_ids))
        bh = float(rng.uniform(8.0, 40.0)) * h / 256.0
        bw = bh * (0.45 if cls in _narrow(class_table) else float(rng.uniform(1.1, 2.0)))
        cy = float(rng.uniform(0.35 * h, 0.95 * h))
        cx = float(rng.uniform(0.0, w))
        score = float(rng.uniform(0.1, 0.75))
        y0, y1 = int(max(cy - bh / 2, 0)), int(min(cy + bh / 2 + 1, h))
        x0, x1 = int(max(cx - bw / 2, 0)), int(min(cx + bw / 2 + 1, w))
        if y1 - y0 < 2 or x1 - x0 < 2:
            continue
        blob = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.ellipse(blob, ((cx - x0, cy - y0), (bw, bh), 0.0), 1, -1)
        m = (blob > 0) & free[y0:y1, x0:x1] & (out[y0:y1, x0:x1] == 0)
        if int(m.sum()) < _MIN_FRAGMENT_PX:
            continue
        fp_made += 1
        _paint(out, masks, y0, x0, m)
        sources.append(0)
        fragment.append(False)
        classes.append(cls)
        scores.append(score)
        vis_of.append(1.0)

    n = len(sources)
    boxes = np.zeros((n, 4), np.float32)
    areas = np.zeros(n, np.int64)
    for i, (y0, x0, m) in enumerate(masks):
        rr, cc = np.nonzero(m)
        boxes[i] = (x0 + cc.min(), y0 + rr.min(), x0 + cc.max() + 1, y0 + rr.max() + 1)
        areas[i] = rr.size
    src = np.array(sources, np.int64).reshape(n)
    emb = _embeddings(config, seed, src, rng)
    class_arr = np.array(classes, np.int64).reshape(n)
    # Thing pixels nobody detected become void (fusion leaves them to no instance); stuff stays exact.
    thing_lut = np.zeros(256, bool)
    thing_lut[:len(thing)] = thing
    class_map = sem.astype(np.uint8, copy=True)
    class_map[thing_lut[class_map]] = VOID
    if n:
        lut = np.concatenate([[0], class_arr]).astype(np.int64)
        det = out > 0
        class_map[det] = lut[out[det]].astype(np.uint8)
    result = PanopticResult(class_map=class_map, instance_map=out, classes=class_arr,
                            scores=np.array(scores, np.float32).reshape(n), boxes_xyxy=boxes, embeddings=emb,
                            areas_px=areas)
    stats = DegradeStats(visible=len(visible), hidden=hidden, missed=missed, detected=detected,
                         fragments=fragments, false_positives=fp_made)
    return DegradedFrame(result=result, source_track_ids=src, is_fragment=np.array(fragment, bool).reshape(n),
                         stats=stats, ignore_track_ids=ignore)


# --------------------------------------------------------------------------- helpers


def _narrow(table: ClassTable) -> set[int]:
    """Upright classes (taller than wide)."""
    return {table.by_name(n).train_id for n in ("person", "rider", "bicycle", "motorcycle") if n in table.names}


def _bbox_of(inst: np.ndarray, track_id: int, amodal_xyxy: tuple[float, float, float, float]
             ) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """Row and column span [lo, hi) of ``track_id``'s pixels, searched inside its (clipped) amodal box."""
    h, w = inst.shape
    x0, y0, x1, y1 = amodal_xyxy
    xa, xb = max(int(math.floor(x0)) - 1, 0), min(int(math.ceil(x1)) + 1, w)
    ya, yb = max(int(math.floor(y0)) - 1, 0), min(int(math.ceil(y1)) + 1, h)
    crop = inst[ya:yb, xa:xb] == track_id if (xb > xa and yb > ya) else np.zeros((0, 0), bool)
    if not crop.any():  # the annotation box missed it (never expected): search the whole image
        ya, xa = 0, 0
        crop = inst == track_id
        if not crop.any():
            return None, None
    rows = np.flatnonzero(crop.any(axis=1))
    cols = np.flatnonzero(crop.any(axis=0))
    return (ya + int(rows[0]), ya + int(rows[-1]) + 1), (xa + int(cols[0]), xa + int(cols[-1]) + 1)


def _jitter(own: np.ndarray, radius: int, allowed: np.ndarray) -> np.ndarray:
    """Erode (radius < 0) or dilate (radius > 0) a mask by |radius| px, dilating only into ``allowed``."""
    if radius == 0:
        return own.copy()
    m = own.astype(np.uint8)
    if radius < 0:
        eroded = cv2.erode(m, _KERNEL, iterations=-radius).astype(bool)
        # Erosion that would leave less than a third of a thin object keeps the object instead.
        return eroded if eroded.sum() * 3 >= own.sum() else own.copy()
    return cv2.dilate(m, _KERNEL, iterations=radius).astype(bool) & allowed


def _split(m: np.ndarray, axis: int, side: int, cut: float) -> tuple[np.ndarray, np.ndarray | None]:
    """Cut a strip of ``cut`` of the mask's extent off one side; (rest, strip) or (mask, None) if too small."""
    spans = np.flatnonzero(m.any(axis=1 - axis))
    lo, hi = int(spans[0]), int(spans[-1]) + 1
    at = lo + int(round(cut * (hi - lo))) if side == 0 else hi - int(round(cut * (hi - lo)))
    sel = np.zeros(m.shape[axis], bool)
    if side == 0:
        sel[:at] = True
    else:
        sel[at:] = True
    strip = m & (sel[:, None] if axis == 0 else sel[None, :])
    rest = m & ~strip
    if strip.sum() < _MIN_FRAGMENT_PX or rest.sum() < _MIN_FRAGMENT_PX:
        return m, None
    return rest, strip


def _paint(out: np.ndarray, masks: list, y0: int, x0: int, m: np.ndarray) -> None:
    """Write detection ``len(masks)`` (label len(masks) + 1) into ``out``."""
    label = len(masks) + 1
    out[y0:y0 + m.shape[0], x0:x0 + m.shape[1]][m] = label
    masks.append((y0, x0, m))


def _embeddings(config: DegradeConfig, seed: int, sources: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = sources.size
    if config.embeddings == "none":
        return np.zeros((n, 0), np.float32)
    d = config.embedding_dim
    noise = rng.standard_normal((n, d)) * (config.embedding_noise / math.sqrt(d))
    base = np.zeros((n, d))
    for i, t in enumerate(sources.tolist()):
        if t > 0:
            base[i] = track_embedding(seed, t, d)
        else:  # a false positive looks like nothing seen before
            v = rng.standard_normal(d)
            base[i] = v / np.linalg.norm(v)
    e = base + noise
    e /= np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    return e.astype(np.float32)
