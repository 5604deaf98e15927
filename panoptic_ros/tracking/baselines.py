"""Adapters that feed our per-frame detections to maintained box trackers, for comparisons only.

The baselines come from Roboflow's ``trackers`` package (Apache-2.0;
ByteTrack, OC-SORT, BoT-SORT, McByte, SORT, C-BIoU), which takes
``supervision.Detections``. Both are a bench/test extra, never a run-time
dependency of the core (``trackers`` pulls the non-headless ``opencv-python``
in beside our headless one), so they are imported here, inside functions,
and a missing package is a :class:`BaselineUnavailable` that says how to get it.

Every baseline gets the same ``PanopticResult`` our tracker gets, as boxes
(``xyxy``), ``confidence`` and ``class_id``; each detection carries its index
in ``data["detection_index"]``, so the ids the tracker hands back are mapped
to detections exactly (the libraries reorder their output). Ids come back
as ``tracker_id + 1`` (the libraries count from 0; 0 means "no id" here).

Parameters are the libraries' defaults except ``frame_rate``, which is set
to the sequence's, and the variants named ``*-long``, whose lost-track buffer
is stretched to our tracker's ``max_occluded_frames`` (a sensitivity check:
is a longer memory all it takes?). McByte runs without its mask manager:
that needs SAM and Cutie checkpoints downloaded at run time, which this
project does not do; it is then ByteTrack with clear-match locking and
camera-motion compensation.
"""
from __future__ import annotations

import importlib
import inspect
import warnings
from dataclasses import dataclass, field

import numpy as np

from panoptic_ros.panoptic import PanopticResult


class BaselineUnavailable(ImportError):
    """A baseline tracker's package is not installed (the message says which and how to install it)."""


@dataclass(frozen=True)
class BaselineSpec:
    """One baseline: the library class and what we change from its defaults."""

    name: str
    class_path: str  # "module:Class"
    overrides: dict[str, object] = field(default_factory=dict)  # beyond frame_rate
    uses_frame: bool = False  # camera-motion compensation needs the image
    long_buffer: bool = False  # lost_track_buffer stretched to our max_occluded_frames
    note: str = ""


BASELINES: dict[str, BaselineSpec] = {s.name: s for s in (
    BaselineSpec("bytetrack", "trackers:ByteTrackTracker", note="ByteTrack (Zhang et al. 2022)"),
    BaselineSpec("bytetrack-long", "trackers:ByteTrackTracker", long_buffer=True,
                 note="ByteTrack, lost-track buffer as long as our occluded-track lifetime"),
    BaselineSpec("ocsort", "trackers:OCSORTTracker", note="OC-SORT (Cao et al. 2023)"),
    BaselineSpec("botsort", "trackers:BoTSORTTracker", uses_frame=True,
                 note="BoT-SORT with camera-motion compensation, no ReID model"),
    BaselineSpec("mcbyte", "trackers:McByteTracker", uses_frame=True,
                 note="McByte without its SAM+Cutie mask manager (needs downloaded checkpoints)"),
    BaselineSpec("sort", "trackers:SORTTracker", note="SORT (Bewley et al. 2016)"),
    BaselineSpec("cbiou", "trackers:CBIoUTracker", note="C-BIoU (Yang et al. 2023)"),
)}

_INSTALL_HINT = ("install the bench/test extra: pip install -r requirements/dev.txt && "
                 "pip install --no-deps -r requirements/dev-nodeps.txt")


def _import_class(class_path: str) -> type:
    module, name = class_path.split(":")
    try:
        mod = importlib.import_module(module)
        importlib.import_module("supervision")
    except ImportError as exc:
        raise BaselineUnavailable(f"baseline trackers need the '{exc.name}' package, which is not installed; "
                                  f"{_INSTALL_HINT}") from exc
    try:
        return getattr(mod, name)
    except AttributeError:
        version = getattr(mod, "__version__", "?")
        raise BaselineUnavailable(f"{module} {version} has no {name}; {_INSTALL_HINT}") from None


def library_version() -> str:
    """Versions of the baseline libraries, for reports ('unavailable' when missing)."""
    parts = []
    for name in ("trackers", "supervision"):
        try:
            from importlib.metadata import version
            parts.append(f"{name} {version(name)}")
        except Exception:  # noqa: BLE001 - any metadata failure means "not installed" for a report
            parts.append(f"{name} unavailable")
    return ", ".join(parts)


class BaselineTracker:
    """One instance of a baseline on one camera stream: detections in, an id per detection out."""

    def __init__(self, name: str, fps: float, max_occluded_frames: int = 60) -> None:
        if name not in BASELINES:
            raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
        if not (fps > 0 and np.isfinite(fps)):
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        self.spec = BASELINES[name]
        cls = _import_class(self.spec.class_path)
        kwargs: dict[str, object] = {"frame_rate": float(fps), **self.spec.overrides}
        if self.spec.long_buffer:
            # The libraries count the buffer in 30-fps frames and scale it by frame_rate / 30.
            kwargs["lost_track_buffer"] = int(np.ceil(max_occluded_frames * 30.0 / fps))
        self._tracker = cls(**kwargs)
        self.name = name
        self.parameters = _effective_parameters(cls, kwargs)
        self._sv = importlib.import_module("supervision")

    def update(self, result: PanopticResult, image: np.ndarray | None = None) -> np.ndarray:
        """int64 (N,): the id each of ``result``'s detections got (>= 1), 0 for none.

        ``image`` (H x W x 3 uint8, RGB) is passed on only to baselines that
        compensate camera motion.
        """
        n = result.num_instances
        dets = self._sv.Detections(
            xyxy=np.asarray(result.boxes_xyxy, np.float32).reshape(n, 4),
            confidence=np.asarray(result.scores, np.float32).reshape(n),
            class_id=np.asarray(result.classes, np.int64).reshape(n),
            data={"detection_index": np.arange(n)})
        frame = image if self.spec.uses_frame else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # e.g. "frame unused"; we decide that per tracker
            out = self._tracker.update(dets, frame=frame)
        ids = np.zeros(n, np.int64)
        if len(out):
            idx = np.asarray(out.data["detection_index"], np.int64)
            tid = np.asarray(out.tracker_id, np.int64)
            ok = tid >= 0
            ids[idx[ok]] = tid[ok] + 1
        return ids


def _effective_parameters(cls: type, overrides: dict[str, object]) -> dict[str, object]:
    """The constructor's defaults with our overrides applied (plain values only), for the report."""
    params: dict[str, object] = {}
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name == "self" or p.default is inspect.Parameter.empty:
            continue
        v = overrides.get(p.name, p.default)
        if v is None or isinstance(v, (bool, int, float, str)):
            params[p.name] = v
        elif isinstance(v, type):
            params[p.name] = v.__name__
    return params
