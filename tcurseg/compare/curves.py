"""The curves (Dice vs training subjects, Dice vs adapter size) and the table of tCURLoRA and LoRA at the rank chosen
on validation."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from tcurseg.compare.config import ALL_METHODS, NAMES, NO_ADAPTER, Protocol
from tcurseg.compare.records import runs_of
from tcurseg.compare.render import ci, rank, table, verdict
from tcurseg.compare.select import cell_rate, curve_runs, final_runs, rank_choice, rank_runs
from tcurseg.compare.tables import contrast, curve_point, method_rows

TITLES = {"subjects": "Dice vs training subjects", "ranks": "Dice vs adapter size"}
X = {"subjects": ("n_train", "training subjects"), "ranks": ("adapter", "encoder adapter parameters")}
SEARCHED_RANKS = ("tcurlora", "lora")  # the methods of the ranks curve, whose rank can be chosen on validation


def command(study: str, preset: str) -> str:
    """The command that runs a curve's runs."""
    return f"python -m tcurseg.compare run {study} --preset {preset}"


def curve_points(table_: pd.DataFrame, protocol: Protocol, study: str,
                 preset: str) -> dict[str, list[tuple[int, float, float, int]]]:
    """{method: [(x, mean Dice, 95% CI half-width, runs)]} of a curve."""
    points: dict[str, list[tuple]] = defaultdict(list)
    for (method, key), rows in curve_runs(table_, protocol, study, preset, X[study][0]).items():
        points[method].append((key, *curve_point(rows, protocol.bootstrap)))
    return dict(points)


def plot_curve(points: Mapping[str, list[tuple]], path: Path, xlabel: str, title: str) -> None:
    """The curve on a log x axis, a plain-number tick at every x of the points."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig = Figure(figsize=(6.5, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for method, pts in points.items():
        xs, ys, es = zip(*[(p[0], p[1], p[2]) for p in pts])
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=NAMES[method])
    ax.set_xscale("log")
    ax.set_xticks(sorted({p[0] for pts in points.values() for p in pts}))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.tick_params(axis="x", labelsize=7, labelrotation=30)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test Dice (mean, 95% CI)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def section(table_: pd.DataFrame, protocol: Protocol, study: str, preset: str, png: Path,
            draw: bool = True) -> list[str]:
    """A curve's table, its rates, its figure (drawn into ``png`` with ``draw``, else left as it is) and, for the
    subjects curve, its paired differences per size."""
    title = TITLES[study]
    lines = [f"### {title} (CNN preset `{preset}`)", ""]
    points = curve_points(table_, protocol, study, preset)
    if not points:
        return [*lines, "Not run yet.", ""]
    label = X[study][1]
    if draw:
        plot_curve(points, png, label, title)
    lines += [f"`{command(study, preset)}` runs this curve.", ""]
    lines += table(["method", label, "test Dice", "95% CI half-width", "seeds"],
                   ([NAMES[m], f"{key:,}", f"{mean:.3f}", f"{half:.3f}", n] for m, pts in points.items()
                    for key, mean, half, n in pts), right=(1, 4))
    runs = runs_of(table_)
    cells = runs[(runs.study == study) & (runs.preset == preset) & (runs.model == "unetr")][["method", "rank"]]
    cells = sorted({(m, None if pd.isna(k) else int(k)) for m, k in cells.itertuples(index=False)},
                   key=lambda c: (ALL_METHODS.index(c[0]), c[1] or 0))
    rates = [f"{NAMES[m]}{f' r = {k}' if k is not None else ''}: "
             + (f"{lr:g}" if (lr := cell_rate(table_, protocol, preset, m, k)) is not None else "not chosen yet")
             for m, k in cells]
    lines += ["", "Rates, chosen per method and rank on seed-0 validation (runs at another rate stay out of the "
              "curve): " + "; ".join(rates) + ".", "", f"![{title}]({png.name})", ""]
    return lines + (_subjects_contrasts(table_, protocol, preset) if study == "subjects" else [])


def _subjects_contrasts(table_: pd.DataFrame, protocol: Protocol, preset: str) -> list[str]:
    """Per number of training subjects, every curve method's paired Dice difference to decoder-only and to LoRA over
    the (test subject, seed) pairs both ran."""
    by_n: dict[int, dict[str, pd.DataFrame]] = defaultdict(dict)
    for (method, n), rows in curve_runs(table_, protocol, "subjects", preset, "n_train").items():
        by_n[n][method] = rows
    body = []
    for n, runs in sorted(by_n.items()):
        for method in (m for m in protocol.curves.methods if m in runs and m != "decoder_only"):
            cs = [contrast(runs, method, ref, protocol.bootstrap) for ref in ("decoder_only", "lora")]
            body.append([n, NAMES[method], *(ci(c["dice"]) if c else "-" for c in cs)])
    return ["Paired differences in test Dice at each number of training subjects (95% CI, test subjects and seeds "
            "resampled; `*`: the CI excludes 0):", "",
            *table(["training subjects", "method", "vs decoder-only", "vs LoRA"], body, right=(0,)), ""]


def rank_choice_section(table_: pd.DataFrame, protocol: Protocol, preset: str) -> list[str]:
    """tCURLoRA and LoRA at the rank whose seed-0 run has the best validation Dice (each rank at its own chosen rate)
    among their headline and ranks-curve runs, beside the other methods of the headline, over the seeds every method
    has. Empty until a ranks curve exists."""
    heading = f"### tCURLoRA and LoRA at the rank chosen on validation (CNN preset `{preset}`)"
    headline = final_runs(table_, protocol, "headline", preset)
    runs = {m: rows for m, rows in headline.items() if m not in SEARCHED_RANKS}
    chosen = {}
    for method in SEARCHED_RANKS:
        if method not in headline:
            return []
        best, pending = rank_choice(table_, protocol, preset, method)
        if pending:
            return [heading, "", f"Not chosen yet: the rate grid of {NAMES[method]} r = "
                    f"{', '.join(map(str, pending))} has not run at every rate.", ""]
        if best is None:
            return []
        chosen[method] = best
        runs[method] = rank_runs(table_, protocol, preset, method, best)
    seeds = sorted(set.intersection(*(set(rows.seed.tolist()) for rows in runs.values())))
    runs = {m: rows[rows.seed.isin(seeds)] for m, rows in runs.items()}
    rows = sorted(method_rows(runs, protocol.stuck_dice), key=lambda r: -r["dice"])
    body = []
    for r in rows:
        cs = [contrast(runs, r["method"], ref, protocol.bootstrap) for ref in ("decoder_only", "lora")]
        body.append([NAMES[r["method"]], rank(r["rank"]), f"{r['adapter']:,}", f"{r['dice']:.3f}",
                     *(ci(c["dice"]) if c else "-" for c in cs), f"{r['hd95']:.2f}"])
    rival = next(r["method"] for r in rows if r["method"] not in (*NO_ADAPTER, "tcurlora"))  # LoRA at the least
    return [heading, "",
            f"`{command('ranks', preset)}` runs the ranks beside the headline's runs "
            f"(`python -m tcurseg.compare run headline --preset {preset}`). "
            "Each of the two at the rank whose seed-0 run has the best validation Dice among its headline and "
            "adapter-size runs, every rank at the rate chosen for it on validation "
            f"(tCURLoRA r = {chosen['tcurlora']}, LoRA r = {chosen['lora']}); the other methods at "
            f"the headline's ranks, which were not searched; seeds {', '.join(map(str, seeds))} (those every method "
            "has). Paired differences as in the headline tables.", "",
            *table(["method", "rank", "adapter params", "test Dice", "vs decoder-only", "vs LoRA", "HD95 mm"], body,
                   right=(2,)),
            "", verdict(NAMES["tcurlora"], NAMES[rival] + " (the best other adapter)",
                        contrast(runs, "tcurlora", rival, protocol.bootstrap)), ""]
