"""The run records: one JSON file per finished run under ``docs/compare/`` (per-case test Dice and HD95, validation
Dice and curve, parameters, times, overrides and protocol fingerprint), and the table they load into."""

from __future__ import annotations

import csv
import json
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from tcurseg.compare.config import rate_key

RUN_COLUMNS = ("run", "study", "preset", "model", "method", "rank", "lr", "n_train", "seed", "adapter", "decoder",
               "trainable", "val_dice", "best_epoch", "epochs_run", "step_s", "wall_s", "late_gain", "test_dice")
COLUMNS = (*RUN_COLUMNS, "case", "dice", "hd95")


def run_spec(study: str, preset: str, method: str, rank: int | None, lr: float, n_train: int, seed: int,
             model: str = "unetr") -> dict:
    """What identifies a run: the fields every record starts with."""
    return {"study": study, "preset": preset, "method": method, "rank": rank, "lr": lr, "rate": rate_key(method),
            "n_train": n_train, "seed": seed, "model": model}


def model_of(record: Mapping) -> str:
    """The network of a record (the first records, UNETR only, carry no model)."""
    return record.get("model", "unetr")


def tag(spec: Mapping) -> str:
    """The file name of a run's record, without ``.json``."""
    rank = spec["rank"] if spec["rank"] is not None else "-"
    return f"{spec['method']}_r{rank}_lr{spec['lr']:g}_n{spec['n_train']}_s{spec['seed']}"


def record_path(spec: Mapping, root: Path) -> Path:
    """``root/[model/]study/preset/<tag>.json`` (UNETR's records directly under ``root``)."""
    folder = root if model_of(spec) == "unetr" else root / model_of(spec)
    return folder / spec["study"] / spec["preset"] / f"{tag(spec)}.json"


def load_records(root: Path) -> list[dict]:
    """Every record under ``root``, in the order of their paths."""
    return [json.loads(p.read_text()) for p in sorted(root.rglob("*.json"))]


def _per_case(metrics_csv: Path) -> dict[str, dict]:
    """{case: {"dice", "hd95"}}, each the mean over the evaluation's regions."""
    acc: dict[str, list] = defaultdict(list)
    with metrics_csv.open() as f:
        for row in csv.DictReader(f):
            acc[row["case"]].append((float(row["dice"]), float(row["hd95"])))
    return {case: {"dice": statistics.fmean(d for d, _ in v), "hd95": statistics.fmean(h for _, h in v)}
            for case, v in acc.items()}


def record_from_run(run_path: Path, spec: Mapping, wall_s: float) -> dict:
    """The record of a finished run folder (``summary.json`` and ``eval/metrics.csv``)."""
    summary = json.loads((run_path / "summary.json").read_text())
    return {**spec, "params": summary["params"], "best": summary.get("best"), "epochs_run": summary.get("epochs_run"),
            "stopped_early": summary.get("stopped_early"), "step_s": summary.get("step_s"),
            "peak_memory_mb": summary.get("peak_memory_mb"), "wall_s": wall_s,
            "val_curve": [[h["epoch"], h["val_dice"]] for h in summary.get("history", []) if "val_dice" in h],
            "cases": _per_case(run_path / "eval" / "metrics.csv")}


def mean_dice(record: Mapping) -> float:
    """Test Dice of a run: the mean over its test subjects."""
    return statistics.fmean(c["dice"] for c in record["cases"].values())


def late_gain(record: Mapping) -> float | None:
    """How far a run was from converging: its validation Dice at the last validation minus that at the last validation
    within the first three quarters of its epochs; None for a record that does not keep its validation curve."""
    curve = record.get("val_curve")
    early = [v for e, v in curve or () if e <= 3 * record["epochs_run"] // 4]
    return curve[-1][1] - early[-1] if early else None


def frame(records: Iterable[Mapping]) -> pd.DataFrame:
    """The records as one table, one row per (run, test subject): the run's fields (``run`` numbers the records in
    their order; ``rank`` is nullable) beside the subject's ``case``, ``dice`` and ``hd95``."""
    rows = []
    for i, r in enumerate(records):
        run = {"run": i, "study": r["study"], "preset": r["preset"], "model": model_of(r), "method": r["method"],
               "rank": r["rank"], "lr": r["lr"], "n_train": r["n_train"], "seed": r["seed"],
               "adapter": r["params"]["adapter"], "decoder": r["params"]["decoder"],
               "trainable": r["params"]["trainable"], "val_dice": r["best"]["val_dice"],
               "best_epoch": r["best"]["epoch"], "epochs_run": r["epochs_run"], "step_s": r["step_s"],
               "wall_s": r["wall_s"], "late_gain": late_gain(r), "test_dice": mean_dice(r)}
        rows += [{**run, "case": case, "dice": m["dice"], "hd95": m["hd95"]} for case, m in r["cases"].items()]
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    return table.astype({"rank": "Int64", "late_gain": "float64", "lr": "float64"})


def runs_of(table: pd.DataFrame) -> pd.DataFrame:
    """One row per run of a (run, test subject) table, in record order."""
    return table.drop_duplicates("run")[list(RUN_COLUMNS)]
