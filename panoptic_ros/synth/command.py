"""``panoptic-ros synth``: render synthetic street sequences and write them in standard dataset layouts.

Sequence ``i`` is rendered with seed ``--seed + i``, so any one sequence can be
regenerated alone. ``--format all`` writes every layout into its own
subdirectory (``cityscapes/``, ``coco/``, ``video/``, ``rosbag/``); a single
format writes straight into ``--out``. Bags hold one sequence each:
``rosbag/<sequence>/`` (or ``<out>/<sequence>/``), a directory of bags that
``open_dataset`` reads as one multi-sequence dataset.
"""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from panoptic_ros.argtypes import parse_size

FORMATS = ("cityscapes", "coco", "video", "rosbag")
CAMERA_NAME = "camera"
CONTACT_SHEET_NAME = "contact_sheet.png"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value < 2 ** 32:
        raise argparse.ArgumentTypeError(f"seed must lie in 0..2**32-1, got {value}")
    return value


def _fps(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.1 <= value <= 1000.0:
        raise argparse.ArgumentTypeError(f"fps must lie in 0.1..1000, got {value}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="render synthetic street sequences with panoptic ground truth",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="output directory (must not exist or be empty)")
    p.add_argument("--sequences", type=_positive_int, default=1, help="number of sequences (default 1)")
    p.add_argument("--frames", type=_positive_int, default=30, help="frames per sequence (default 30)")
    p.add_argument("--size", type=parse_size, default=(256, 512), metavar="HxW",
                   help="image height x width in pixels (default 256x512)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the first sequence; sequence i uses seed+i")
    p.add_argument("--format", choices=(*FORMATS, "all"), default="all", help="layout(s) to write (default all)")
    p.add_argument("--split", default="train", help="split name in the dataset layouts (default train)")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="rosbag2 storage (default mcap)")
    p.add_argument("--compressed", nargs="?", const="jpeg", choices=("jpeg", "png"), default=None,
                   help="write image/compressed (jpeg unless 'png' is given) instead of raw images in bags")
    p.add_argument("--fps", type=_fps, default=10.0, help="frame rate, sets the stamps (default 10)")
    p.add_argument("--contact-sheet", action="store_true",
                   help=f"also write {CONTACT_SHEET_NAME}: images and ground truth of sampled frames")
    p.set_defaults(func=run)


@dataclass(frozen=True)
class SynthSummary:
    """What one ``synth`` run produced."""

    sequences: int
    frames: int
    objects: int  # distinct tracks over all sequences
    visible_object_frames: int  # (object, frame) pairs with visible pixels
    occlusion_events: int
    formats: tuple[str, ...]
    out: Path
    contact_sheet: Path | None = None

    def line(self) -> str:
        sheet = f"; contact sheet {self.contact_sheet}" if self.contact_sheet is not None else ""
        return (f"wrote {self.frames} frames in {self.sequences} sequence(s) as {', '.join(self.formats)} to "
                f"{self.out}: {self.objects} objects ({self.visible_object_frames} visible object-frames), "
                f"{self.occlusion_events} occlusion events{sheet}")


class _Writers:
    """The open dataset writers of one run; bags open per sequence."""

    def __init__(self, args: argparse.Namespace, formats: tuple[str, ...], root_of: dict[str, Path]) -> None:
        from panoptic_ros.datasets.cityscapes import CityscapesPanopticWriter
        from panoptic_ros.datasets.coco import CocoPanopticWriter
        from panoptic_ros.datasets.video_panoptic import VideoPanopticWriter

        self.args = args
        self.root_of = root_of
        self.writers: list[Any] = []
        if "cityscapes" in formats:
            self.writers.append(CityscapesPanopticWriter(root_of["cityscapes"], args.split))
        if "coco" in formats:
            self.writers.append(CocoPanopticWriter(root_of["coco"], args.split))
        if "video" in formats:
            self.writers.append(VideoPanopticWriter(root_of["video"], args.split, fps=args.fps))
        self.bag: Any = None

    def start_sequence(self, name: str) -> None:
        if "rosbag" in self.root_of:
            from panoptic_ros.datasets.rosbag_io import RosbagWriter
            directory = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "sequence"
            self.bag = RosbagWriter(self.root_of["rosbag"] / directory, CAMERA_NAME, self.args.storage,
                                    self.args.compressed)

    def add(self, frame: Any) -> None:
        for w in self.writers:
            w.add(frame)
        if self.bag is not None:
            self.bag.add(frame)

    def end_sequence(self) -> None:
        if self.bag is not None:
            self.bag.close()
            self.bag = None

    def close(self) -> None:
        self.end_sequence()
        for w in self.writers:
            w.close()


def run(args: argparse.Namespace) -> int:
    from panoptic_ros.datasets.types import DatasetError

    try:
        summary = synthesize(args)
    except (DatasetError, ValueError) as exc:
        print(f"panoptic-ros synth: error: {exc}", file=sys.stderr)
        return 2
    print(summary.line())
    return 0


def synthesize(args: argparse.Namespace) -> SynthSummary:
    """Render and write; raises ValueError (DatasetError included) for bad arguments or outputs."""
    out: Path = args.out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} exists and is not an empty directory; choose a new one")
    if not re.fullmatch(r"[A-Za-z0-9-]+", args.split):
        raise ValueError(f"--split {args.split!r} must be letters, digits or '-'")
    if args.format != "rosbag" and args.format != "all" and (args.compressed or args.storage != "mcap"):
        raise ValueError("--storage and --compressed apply to bags: use them with --format rosbag or all")
    from tqdm import tqdm

    from panoptic_ros.synth import SynthConfig, SyntheticSequence

    write_sheet = None
    if args.contact_sheet:
        try:
            from panoptic_ros.synth.contact_sheet import write_contact_sheet as write_sheet
        except ModuleNotFoundError as exc:
            if exc.name != "panoptic_ros.synth.contact_sheet":
                raise
            raise ValueError("--contact-sheet needs panoptic_ros.synth.contact_sheet, which this installation "
                             "lacks; run without --contact-sheet") from None

    formats = FORMATS if args.format == "all" else (args.format,)
    root_of = {f: (out / f if args.format == "all" else out) for f in formats}
    height, width = args.size
    config = SynthConfig(height=height, width=width, fps=args.fps)
    out.mkdir(parents=True, exist_ok=True)
    writers = _Writers(args, formats, root_of)
    sheet_frames: list[Any] = []
    tracks: set[tuple[str, int]] = set()
    visible = events = frames_written = 0
    with tqdm(total=args.sequences * args.frames, unit="frame", desc="synth", disable=None) as bar:
        for i in range(args.sequences):
            sequence = SyntheticSequence(args.seed + i, args.frames, config)
            name = None
            for k in range(args.frames):
                frame = sequence.render(k)
                if name is None:
                    name = frame.sequence or f"seq-{args.seed + i:06d}"
                    writers.start_sequence(name)
                frame.sequence = name
                writers.add(frame)
                tracks.update((name, o.track_id) for o in frame.objects)
                visible += sum(1 for o in frame.objects if o.area_px > 0)
                frames_written += 1
                if args.contact_sheet and k in {0, args.frames // 2, args.frames - 1}:
                    sheet_frames.append(frame)
                bar.update(1)
            writers.end_sequence()
            events += len(sequence.occlusion_events())
    writers.close()
    sheet_path = None
    if write_sheet is not None:
        sheet_path = Path(write_sheet(sheet_frames, out / CONTACT_SHEET_NAME))
    return SynthSummary(args.sequences, frames_written, len(tracks), visible, events, formats, out, sheet_path)

