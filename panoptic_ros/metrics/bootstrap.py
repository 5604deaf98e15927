"""Bootstrap over independent units: the resampling behind the PQ and IDF1 intervals.

Frames of one sequence are correlated, so the unit of resampling is the
sequence: a resample draws as many sequences as there are, with replacement
(``unit_weights[r, u]`` = how often unit u is in resample r), and a metric is
recomputed from the summed counts of each resample. The interval is the
percentile interval of those values. Seeded, so the same data give the same
interval; two runs over the same units resampled with the same weights give a
*paired* interval for their difference, in which what the units share (how
hard each sequence is) cancels.
"""
from __future__ import annotations

import math

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95


def unit_weights(units: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """(resamples, units) float64: copies of each unit in each resample. ValueError for fewer than 2 units."""
    if units < 2:
        raise ValueError(f"a bootstrap needs at least 2 units (sequences), got {units}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    rng = np.random.default_rng(seed)
    return rng.multinomial(units, np.full(units, 1.0 / units), size=resamples).astype(np.float64)


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The central ``level`` percentile interval of the finite values (NaN, NaN when there are none)."""
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).any():
        return math.nan, math.nan
    lo, hi = np.nanpercentile(values, [50.0 * (1.0 - level), 50.0 * (1.0 + level)])
    return float(lo), float(hi)


def excludes_zero(interval: tuple[float, float]) -> bool:
    """For an interval of a difference: it lies wholly on one side of 0 (a change beyond resampling noise)."""
    lo, hi = interval
    return bool(lo > 0.0 or hi < 0.0)


__all__ = ["LEVEL", "RESAMPLES", "excludes_zero", "percentile_interval", "unit_weights"]
