"""Paired differences and their two-way bootstrap CI over a crossed (test subject x seed) design."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import numpy as np

Cell = tuple[str, int]  # (test subject, seed)


def two_way_bootstrap(values: Mapping[Cell, float], n_boot: int = 10_000, seed: int = 0) -> dict:
    """Mean of values indexed by (test subject, seed) and its 95% percentile bootstrap CI, resampling the subjects and
    the seeds independently (the two-way bootstrap of a crossed design, Owen 2007): every subject of one training run
    shares that run's luck, so the (subject, seed) pairs are not independent draws, and resampling them as if they were
    leaves the run-to-run variance out of the CI. Missing or non-finite cells are left out of each resample's mean.

    Returns {"mean", "lo", "hi", "n" (finite cells), "excludes_zero"}."""
    cases = sorted({c for c, _ in values})
    seeds = sorted({s for _, s in values})
    grid = np.full((len(cases), len(seeds)), np.nan)
    for (case, s), v in values.items():
        if math.isfinite(v):
            grid[cases.index(case), seeds.index(s)] = v
    n = int(np.isfinite(grid).sum())
    if n == 0:
        return {"mean": math.nan, "lo": math.nan, "hi": math.nan, "n": 0, "excludes_zero": False}
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(cases), size=(n_boot, len(cases)))
    cols = rng.integers(0, len(seeds), size=(n_boot, len(seeds)))
    sample = grid[rows[:, :, None], cols[:, None, :]].reshape(n_boot, -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample of only missing cells has no mean
        means = np.nanmean(sample, axis=1)
    lo, hi = np.nanpercentile(means, [2.5, 97.5])
    return {"mean": float(np.nanmean(grid)), "lo": float(lo), "hi": float(hi), "n": n,
            "excludes_zero": bool(lo > 0 or hi < 0)}


def paired_differences(a: Mapping[Cell, float], b: Mapping[Cell, float]) -> dict[Cell, float]:
    """{cell: a[cell] - b[cell]} over the cells both have."""
    return {k: a[k] - b[k] for k in sorted(set(a) & set(b))}


def half_width(ci: Mapping) -> float:
    """Half the width of a CI from :func:`two_way_bootstrap`."""
    return (ci["hi"] - ci["lo"]) / 2
