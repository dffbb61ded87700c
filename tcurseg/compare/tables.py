"""The numbers of the report's tables, computed from (run, test subject) rows: per-method summaries, paired contrasts
with their bootstrap CIs, and curve points."""

from __future__ import annotations

import statistics
from collections.abc import Mapping

import pandas as pd

from tcurseg.compare.records import runs_of
from tcurseg.compare.stats import Cell, half_width, paired_differences, two_way_bootstrap


def keyed(rows: pd.DataFrame, metric: str) -> dict[Cell, float]:
    """{(case, seed): metric} of a method's rows (a later run of the same seed and case wins)."""
    return dict(zip(zip(rows.case, rows.seed.tolist()), rows[metric]))


def _int_or_none(value) -> int | None:
    return None if pd.isna(value) else int(value)


def method_row(rows: pd.DataFrame, stuck_dice: float) -> dict:
    """One method's line of a headline table: its rank, rate, sizes, test Dice and HD95 over its (subject, seed)
    pairs (mean and sd), mean best validation Dice, runs stuck, runs best at their last validation, and the
    validation Dice gained over the last quarter of each run that keeps its curve."""
    runs = runs_of(rows)
    first = runs.iloc[0]
    dice, hd = list(keyed(rows, "dice").values()), list(keyed(rows, "hd95").values())
    gains = runs.dropna(subset=["late_gain"])
    return {"method": first.method, "rank": _int_or_none(first["rank"]), "lr": float(first.lr),
            "seeds": sorted(runs.seed.tolist()), "n": len(dice), "adapter": int(first.adapter),
            "decoder": int(first.decoder), "trainable": int(first.trainable),
            "dice": statistics.fmean(dice), "dice_sd": statistics.stdev(dice) if len(dice) > 1 else 0.0,
            "hd95": statistics.fmean(hd), "hd95_sd": statistics.stdev(hd) if len(hd) > 1 else 0.0,
            "val": statistics.fmean(runs.val_dice.tolist()),
            "stuck": int((runs.val_dice < stuck_dice).sum()),
            "best_last": int((runs.best_epoch == runs.epochs_run).sum()),
            "late_gain": dict(zip(gains.seed.tolist(), gains.late_gain.tolist())),
            "epochs": statistics.fmean(runs.epochs_run.tolist()),
            "step_s": statistics.median(runs.step_s.tolist()),
            "wall_s": statistics.fmean(runs.wall_s.tolist())}


def method_rows(runs: Mapping[str, pd.DataFrame], stuck_dice: float) -> list[dict]:
    """:func:`method_row` of every method, in the order given."""
    return [method_row(rows, stuck_dice) for rows in runs.values() if len(rows)]


def contrast(runs: Mapping[str, pd.DataFrame], method: str, reference: str, n_boot: int) -> dict | None:
    """``method`` minus ``reference`` in Dice and HD95 over the (subject, seed) pairs both have, with two-way
    bootstrap CIs; None where either has not run."""
    if method not in runs or reference not in runs or method == reference:
        return None
    a, b = runs[method], runs[reference]
    return {metric: two_way_bootstrap(paired_differences(keyed(a, metric), keyed(b, metric)), n_boot)
            for metric in ("dice", "hd95")}


def per_seed(rows: pd.DataFrame) -> dict[int, tuple[float, float]]:
    """{seed: (test Dice, best validation Dice)} of a method's runs (a later run of a seed wins)."""
    runs = runs_of(rows)
    return {seed: (test, val) for seed, test, val in zip(runs.seed.tolist(), runs.test_dice, runs.val_dice)}


def curve_point(rows: pd.DataFrame, n_boot: int) -> tuple[float, float, int]:
    """(mean test Dice, 95% CI half-width with subjects and seeds resampled, runs) of one curve point."""
    ci = two_way_bootstrap(keyed(rows, "dice"), n_boot)
    return ci["mean"], half_width(ci), len(runs_of(rows))
