"""The ``panoptic-ros`` command: one entry point, one sub-command per tool.

Each sub-command lives in the module that does the work; that module exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a
callable taking the parsed arguments and returning an exit code. Modules are
imported only when listed here, so ``panoptic-ros --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# (sub-command, module that registers it)
SUBCOMMANDS: list[tuple[str, str]] = [
    ("synth", "panoptic_ros.synth.command"),
    ("train", "panoptic_ros.model.train"),
    ("predict", "panoptic_ros.model.predict_command"),
    ("export", "panoptic_ros.model.export"),
    ("track-compare", "panoptic_ros.tracking.compare"),
    ("replay", "panoptic_ros.replay"),
    ("evaluate", "panoptic_ros.evaluate"),
    ("demo", "panoptic_ros.demo"),
    ("bench", "panoptic_ros.bench"),
    ("params", "panoptic_ros.params_command"),
]


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="panoptic-ros",
        description="Panoptic segmentation and tracking for ROS 2 cameras: data, training, evaluation, replay.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in SUBCOMMANDS:
        if only is not None and name != only:
            sub.add_parser(name, help=f"(see panoptic-ros {name} --help)")
            continue
        try:
            importlib.import_module(module).register(sub)
        except ModuleNotFoundError as exc:
            if exc.name and module.startswith(exc.name):
                continue  # not built yet
            raise
    return parser


def main(argv: list[str] | None = None) -> int:
    # Sleep instead of spinning while waiting for OpenMP work: on a shared
    # 2-core machine spinning threads made training ~10x slower under load.
    # Must be set before torch loads (sub-command modules import it).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    argv = list(sys.argv[1:] if argv is None else argv)
    # Import only the module of the chosen sub-command (torch and friends load slowly).
    chosen = next((a for a in argv if not a.startswith("-")), None)
    known = {name for name, _ in SUBCOMMANDS}
    parser = build_parser(chosen if chosen in known else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
