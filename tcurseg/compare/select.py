"""Which runs make a table: each method's rate (and, for the searched ranks, its rank) chosen on seed-0 validation,
never on test, and the runs at that choice."""

from __future__ import annotations

import pandas as pd

from tcurseg.compare.config import ALL_METHODS, Protocol
from tcurseg.compare.records import runs_of

SELECTION_STUDIES = ("headline", "ranks")  # the studies whose seed-0 runs choose a rate


def same_rank(ranks: pd.Series, rank: int | None) -> pd.Series:
    """Where a nullable rank column equals ``rank`` (None: the methods without one)."""
    return ranks.isna() if rank is None else (ranks == rank).fillna(False).astype(bool)


def cell_rate(table: pd.DataFrame, protocol: Protocol, preset: str, method: str, rank: int | None,
              model: str = "unetr") -> float | None:
    """The rate of ``method`` at ``rank`` chosen on validation: the grid rate whose seed-0 run (of the headline or the
    ranks curve, with all training subjects) has the best validation Dice, ties to the smaller rate; None until every
    rate of the grid has run. The test split plays no part."""
    grid = protocol.presets[preset].rates(method)
    runs = runs_of(table)
    pool = runs[(runs.preset == preset) & (runs.model == model) & (runs.method == method)
                & same_rank(runs["rank"], rank) & runs.study.isin(SELECTION_STUDIES) & (runs.seed == 0)
                & (runs.n_train == protocol.subjects) & runs.lr.isin(grid)]
    val = pool.groupby("lr").val_dice.last()  # a copied record (the same run) counts once
    if len(val) < len(grid):
        return None
    return float(val.idxmax())


def final_runs(table: pd.DataFrame, protocol: Protocol, study: str, preset: str,
               model: str = "unetr") -> dict[str, pd.DataFrame]:
    """Per method, the (run, subject) rows of ``study`` and ``preset`` at the rate chosen at its headline rank; the
    methods without a chosen rate or without runs are left out."""
    ranks = protocol.ranks[model]
    table = table[(table.model == model) & (table.preset == preset)]
    out = {}
    for method in ALL_METHODS:
        lr = cell_rate(table, protocol, preset, method, ranks.get(method), model)
        rows = table[(table.study == study) & (table.method == method) & (table.lr == lr)]
        if lr is not None and len(rows):
            out[method] = rows
    return out


def curve_runs(table: pd.DataFrame, protocol: Protocol, study: str, preset: str,
               x: str) -> dict[tuple[str, int], pd.DataFrame]:
    """{(method, x): rows} of a curve (x: ``adapter`` parameters or ``n_train``), each point at the rate chosen for
    its method and rank (:func:`cell_rate`); a point whose grid has not run is left out."""
    table = table[(table.preset == preset) & (table.model == "unetr")]
    cells = list(zip(table.method, (None if pd.isna(k) else int(k) for k in table["rank"])))
    rates = {cell: cell_rate(table, protocol, preset, *cell) for cell in set(cells)}
    chosen = pd.Series([rates[cell] for cell in cells], index=table.index, dtype="float64")
    points = table[(table.study == study) & (table.lr == chosen)]
    return {(method, int(key)): rows for (method, key), rows in points.groupby(["method", x], sort=True)}


def rank_choice(table: pd.DataFrame, protocol: Protocol, preset: str, method: str) -> tuple[int | None, list[int]]:
    """The rank of ``method`` whose seed-0 run validates best among its headline and ranks-curve runs (each rank at
    its own chosen rate), and the ranks whose grid has not run at every rate yet (then no rank is chosen: one of them
    could still be the best). (None, []) where fewer than two ranks have run."""
    pool = table[(table.preset == preset) & (table.model == "unetr") & (table.method == method)
                 & table.study.isin(SELECTION_STUDIES) & (table.n_train == protocol.subjects)]
    ranks = sorted({int(k) for k in runs_of(pool)["rank"].dropna()})
    rates = {k: cell_rate(pool, protocol, preset, method, k) for k in ranks}
    pending = [k for k, lr in rates.items() if lr is None]
    if pending:
        return None, pending
    runs = runs_of(pool)
    seed0 = runs[(runs.seed == 0) & (runs.lr == runs["rank"].map(rates).astype("float64"))]
    val = dict(zip(seed0["rank"].astype(int), seed0.val_dice))
    if len(val) < 2:
        return None, []
    return max(sorted(val), key=lambda k: val[k]), []


def rank_runs(table: pd.DataFrame, protocol: Protocol, preset: str, method: str, rank: int) -> pd.DataFrame:
    """The (run, subject) rows of ``method`` at ``rank`` and its chosen rate among the headline and ranks-curve runs
    with all training subjects, one run per seed (a copied record counts once)."""
    lr = cell_rate(table, protocol, preset, method, rank)
    rows = table[(table.preset == preset) & (table.model == "unetr") & (table.method == method)
                 & table.study.isin(SELECTION_STUDIES) & (table.n_train == protocol.subjects)
                 & same_rank(table["rank"], rank) & (table.lr == lr)]
    last = runs_of(rows).drop_duplicates("seed", keep="last")
    return rows[rows.run.isin(last.run)]
