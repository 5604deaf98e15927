"""Figures the reliability tests hand to tools/reliability.py (which sets PANOPTIC_RELIABILITY_REPORT)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def record(test_file: str, check: str, **figures: Any) -> None:
    """Append one check's figures to the reliability report, if one is being written."""
    path = os.environ.get("PANOPTIC_RELIABILITY_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"check": check, "file": Path(test_file).name, **figures}) + "\n")
