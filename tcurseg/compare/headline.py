"""One headline table: every method of a preset at its chosen rate, paired contrasts, seeds, convergence, the rate
choice, and what it shows."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import pandas as pd

from tcurseg.compare.config import ALL_METHODS, NAMES, NO_ADAPTER, Protocol
from tcurseg.compare.records import runs_of
from tcurseg.compare.render import ci, rank, table, verdict
from tcurseg.compare.select import final_runs
from tcurseg.compare.stats import half_width
from tcurseg.compare.tables import contrast, method_rows, per_seed

REFERENCES = ("decoder_only", "lora")  # every method's contrasts in the table


@dataclass
class Headline:
    """The numbers of one headline table."""

    preset: str
    model: str
    runs: dict[str, pd.DataFrame]
    rows: list[dict]
    contrasts: dict[str, dict[str, dict | None]]
    vs_full: dict | None = None
    summary: list[str] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return sorted({s for rows in self.runs.values() for s in rows.seed.unique().tolist()})

    @property
    def still_improving(self) -> tuple[int, int]:
        """(runs best at their last validation, runs)."""
        return sum(r["best_last"] for r in self.rows), sum(len(r["seeds"]) for r in self.rows)

    @property
    def half_widths(self) -> list[float]:
        """Half-widths of the CIs of every paired Dice difference of the table."""
        return [half_width(c["dice"]) for m in self.contrasts.values() for c in m.values() if c and c["dice"]["n"]]

    def payload(self) -> dict:
        """What ``results.json`` keeps of the table."""
        return {"rows": self.rows, "contrasts": self.contrasts, "summary": self.summary} if self.rows else {}


def compute(table_: pd.DataFrame, protocol: Protocol, preset: str, model: str = "unetr") -> Headline:
    """The numbers of ``preset``'s headline table on ``model``."""
    runs = final_runs(table_, protocol, "headline", preset, model)
    rows = method_rows(runs, protocol.stuck_dice)
    contrasts = {r["method"]: {ref: contrast(runs, r["method"], ref, protocol.bootstrap) for ref in REFERENCES}
                 for r in rows}
    head = Headline(preset, model, runs, rows, contrasts)
    if rows:
        head.vs_full = contrast(runs, "tcurlora", "full", protocol.bootstrap)
        head.summary = _summary(head, protocol)
    return head


def _summary(head: Headline, protocol: Protocol) -> list[str]:
    def get(method: str, reference: str) -> dict | None:
        return head.contrasts.get(method, {}).get(reference)

    summary = [verdict(NAMES["full"], NAMES["decoder_only"], get("full", "decoder_only"))]
    summary += [verdict(NAMES[m], NAMES["decoder_only"], get(m, "decoder_only")) for m in ("tcurlora", "lora")]
    summary.append(verdict(NAMES["tcurlora"], NAMES["lora"], get("tcurlora", "lora")))
    summary.append(verdict(NAMES["tcurlora"], NAMES["full"], head.vs_full))
    adapters = [r for r in head.rows if r["method"] not in NO_ADAPTER]
    if adapters:
        best = max(adapters, key=lambda r: r["dice"])
        summary.append(f"Best encoder adapter by mean test Dice: {NAMES[best['method']]} ({best['dice']:.3f}, "
                       f"{best['adapter']:,} adapter parameters).")
        if best["method"] not in ("tcurlora", "lora"):  # tCURLoRA vs LoRA is stated above
            summary.append(verdict(NAMES["tcurlora"], NAMES[best["method"]],
                                   contrast(head.runs, "tcurlora", best["method"], protocol.bootstrap)))
    still, total = head.still_improving
    summary.append(f"Runs whose best validation is their last (still improving when the budget ends): {still} of "
                   f"{total}.")
    widths = head.half_widths
    if widths:
        summary.append(f"CI half-width of the paired Dice differences: median {statistics.median(widths):.4f}, "
                       f"max {max(widths):.4f} (target <= {protocol.ci_target:g}).")
    return summary


def title(protocol: Protocol, preset: str) -> str:
    """``CNN preset `paper```, or for a preset that trains otherwise than its CNN preset's plain runs, what it
    changes."""
    spec = protocol.presets[preset]
    if not spec.changes_training:
        return f"CNN preset `{preset}`"
    return (f"Preset `{preset}`: CNN preset `{spec.cnn}`, " + "".join(f"`{o}`, " for o in spec.overrides)
            + f"{spec.epochs} epochs (validation every {spec.val_every})")


def command(preset: str, model: str = "unetr") -> str:
    """The command that runs a headline table's runs."""
    model_flag = "" if model == "unetr" else f" --model {model}"
    return f"python -m tcurseg.compare run headline --preset {preset}{model_flag}"


def section(head: Headline, table_: pd.DataFrame, protocol: Protocol) -> list[str]:
    """The Markdown of one headline table."""
    lines = [f"### {title(protocol, head.preset)}" + ("" if head.model == "unetr" else f", {head.model}"), ""]
    if not head.rows:
        return [*lines, "Not run yet.", ""]
    spec = protocol.presets[head.preset]
    lines += [f"`{command(head.preset, head.model)}` runs this table: {len(spec.methods)} methods x "
              f"{len(spec.seeds)} seeds, each method's seed-0 rate grid"
              + (" and edge checks" if spec.edge_checks else "") + ".", ""]
    lines += table(["method", "rank", "rate", "adapter params", "CNN params", "test Dice (mean ± sd)", "HD95 mm",
                    "val Dice", "runs stuck", "n"],
                   ([NAMES[r["method"]], rank(r["rank"]), f"{r['lr']:g}", f"{r['adapter']:,}", f"{r['decoder']:,}",
                     f"{r['dice']:.3f} ± {r['dice_sd']:.3f}", f"{r['hd95']:.2f} ± {r['hd95_sd']:.2f}",
                     f"{r['val']:.3f}", f"{r['stuck']} of {len(r['seeds'])}", r["n"]] for r in head.rows),
                   right=(3, 4, 8, 9))
    lines += ["", "sd: over the (test subject, seed) pairs. n: pairs. val Dice: best validation Dice, mean over seeds. "
              f"Runs stuck: seeds whose best validation Dice stayed below {protocol.stuck_dice} (the network never "
              "started to segment within the budget).",
              "", "Paired differences (method minus reference) over (test subject, seed), mean [95% bootstrap CI, "
              "subjects and seeds resampled]; `*`: the CI excludes 0.", ""]
    cells = {m: [c for c in (vs["decoder_only"], vs["lora"])] for m, vs in head.contrasts.items()}
    lines += table(["method", "Dice vs decoder-only", "Dice vs LoRA", "HD95 vs decoder-only (mm)", "HD95 vs LoRA (mm)"],
                   ([NAMES[m], *(ci(c["dice"]) if c else "-" for c in cs),
                     *(ci(c["hd95"], 2) if c else "-" for c in cs)] for m, cs in cells.items()))
    seeds = head.seeds
    lines += ["", "Per seed (test Dice, mean over the test subjects; validation Dice in brackets): how much of a "
              "method's spread is the seed.", ""]
    by_seed = {m: per_seed(rows) for m, rows in head.runs.items()}
    lines += table(["method", *(f"seed {s}" for s in seeds)],
                   ([NAMES[m], *(f"{v[s][0]:.3f} ({v[s][1]:.3f})" if s in v else "-" for s in seeds)]
                    for m, v in by_seed.items()))
    lines += ["", "Convergence: the seeds whose best validation is their last (still improving when the budget ends), "
              "and the validation Dice gained over the last quarter of the budget (mean over the seeds, named where "
              "only some records keep the validation curve; - where none does: the earliest records).", ""]
    lines += table(["method", "best at the last validation", "val Dice gain, last quarter"],
                   ([NAMES[r["method"]], f"{r['best_last']} of {len(r['seeds'])}", _gain(r)] for r in head.rows))
    lines += _rate_table(head, table_, protocol)
    return [*lines, "", "What this shows:", "", *[f"- {s}" for s in head.summary], ""]


def _gain(row: dict) -> str:
    gains = row["late_gain"]
    if not gains:
        return "-"
    text = f"{statistics.fmean(gains.values()):+.3f}"
    if len(gains) < len(row["seeds"]):
        text += f" (seed{'s' if len(gains) > 1 else ''} {', '.join(str(s) for s in sorted(gains))})"
    return text


def _rate_table(head: Headline, table_: pd.DataFrame, protocol: Protocol) -> list[str]:
    """Every seed-0 run of the rate choice with its validation Dice, the chosen rate marked."""
    spec = protocol.presets[head.preset]
    chosen = {m: float(rows.lr.iloc[0]) for m, rows in head.runs.items()}
    runs = runs_of(table_)
    grid = runs[(runs.study == "headline") & (runs.preset == head.preset) & (runs.seed == 0)
                & (runs.n_train == protocol.subjects) & (runs.model == head.model)]
    grid = sorted(grid.itertuples(index=False), key=lambda r: (ALL_METHODS.index(r.method), r.lr))

    def role(r) -> str:
        if r.lr not in spec.rates(r.method):
            return "outside the grid (edge check)"
        return "chosen" if r.lr == chosen.get(r.method) else ""

    return ["", "Rate selection (seed 0, validation Dice; the test split plays no part; a run outside the grid checks "
            "whether the grid's edge binds and is never chosen):", "",
            *table(["method", "rate", "validation Dice", ""],
                   ([NAMES[r.method], f"{r.lr:g}", f"{r.val_dice:.4f}", role(r)] for r in grid))]
