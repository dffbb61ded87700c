#!/usr/bin/env python
"""Compare fine-tuning methods x seeds on one experiment through the same code path, then write a report.

    python scripts/compare.py --experiment demo --seeds 0 1 2 --out outputs/compare [--epochs N]
    python scripts/compare.py --out outputs/compare --report-only      # rebuild the report from the run summaries

Every run is ``tcurseg.train.run`` on the Hydra config ``+experiment=<exp> method=<m> seed=<s>
output_dir=<out>/<m>/seed<s> [method.rank=<r>] [train.epochs=N] <overrides...>``, each in a fresh process (so the
peak memory, the process's peak RSS on the CPU, is per run). Same schedule, budget and seeds for every method; no
per-method tuning. A run whose ``summary.json`` exists is skipped, so an interrupted comparison resumes (and a run
interrupted mid-training resumes from its newest checkpoint).

Writes ``<out>/results.md`` (command, machine, ranks, a table and an honest comparison of tCURLoRA with decoder-only
and LoRA generated from the numbers), ``<out>/results.png`` (test Dice vs trainable parameters) and
``<out>/results.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
ALL_METHODS = ("full", "decoder_only", "lora", "dora", "pissa", "curlora", "lorapt", "tcurlora")
# Ranks giving comparable encoder-adapter sizes on the demo's small UNETR (hidden 192, mlp 384, 12 blocks):
# LoRA / PiSSA r = 1: 27,648; CURLoRA r = 24: 27,648; tCURLoRA r = 20: 28,800; LoRA-PT r = 1: 32,295;
# DoRA r = 1: 43,776 (LoRA + the magnitudes). r = 1 is the smallest a matrix method can have.
DEFAULT_RANKS = {"lora": 1, "dora": 1, "pissa": 1, "curlora": 24, "lorapt": 1, "tcurlora": 20}
NAMES = {"full": "full fine-tuning", "decoder_only": "decoder-only", "lora": "LoRA", "dora": "DoRA",
         "pissa": "PiSSA", "curlora": "CURLoRA", "lorapt": "LoRA-PT", "tcurlora": "tCURLoRA"}
RUN_INFO = "compare.json"


# ----------------------------------------------------------------------------------------------- running the runs
def run_dir(out: Path, method: str, seed: int) -> Path:
    return Path(out) / method / f"seed{seed}"


def run_overrides(experiment: str, method: str, seed: int, out: Path, rank: int | None, epochs: int | None,
                  extra: Sequence[str]) -> list[str]:
    overrides = [f"+experiment={experiment}", f"method={method}", f"seed={seed}",
                 f"output_dir={run_dir(out, method, seed)}"]
    if rank is not None:
        overrides.append(f"method.rank={rank}")
    if epochs is not None:
        overrides.append(f"train.epochs={epochs}")
    return [*overrides, *extra]


def _train_one(overrides: list[str], run_path: str) -> None:
    """Child process: compose the config and train + evaluate one run (logs into the run folder)."""
    import logging

    import torch
    from hydra import compose, initialize_config_dir

    from tcurseg.train import run

    path = Path(run_path)
    path.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        handlers=[logging.FileHandler(path / "compare.log")], force=True)
    started = time.perf_counter()
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(config_name="config", overrides=overrides)
        run(cfg, path)
    info = {"overrides": overrides, "rank": cfg.method.get("rank"), "wall_s": time.perf_counter() - started,
            "torch_threads": torch.get_num_threads()}
    (path / RUN_INFO).write_text(json.dumps(info, indent=2) + "\n")


def train_all(args: argparse.Namespace, ranks: Mapping[str, int]) -> None:
    ctx = multiprocessing.get_context("spawn")
    todo = [(m, s) for m in args.methods for s in args.seeds
            if not (run_dir(args.out, m, s) / "summary.json").is_file()]
    print(f"{len(todo)} of {len(args.methods) * len(args.seeds)} runs to do", flush=True)
    for i, (method, seed) in enumerate(todo, 1):
        overrides = run_overrides(args.experiment, method, seed, args.out, ranks.get(method), args.epochs,
                                  args.overrides)
        started = time.perf_counter()
        print(f"[{i}/{len(todo)}] {method} seed {seed}: {' '.join(overrides)}", flush=True)
        proc = ctx.Process(target=_train_one, args=(overrides, str(run_dir(args.out, method, seed))))
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            raise SystemExit(f"run {method} seed {seed} failed (exit {proc.exitcode}); "
                             f"see {run_dir(args.out, method, seed) / 'compare.log'}")
        print(f"    done in {time.perf_counter() - started:.0f} s", flush=True)


# ---------------------------------------------------------------------------------------------- collecting results
def _adapter_rank(path: Path) -> int | None:
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("tcurseg", "{}"))
        return meta.get("config", {}).get("rank")
    except Exception:  # noqa: BLE001 - a missing or foreign file just leaves the rank unknown
        return None


def load_run(path: Path, method: str, seed: int) -> dict | None:
    """One run's record from its ``summary.json`` (None if the run has not finished)."""
    summary_file = path / "summary.json"
    if not summary_file.is_file():
        return None
    summary = json.loads(summary_file.read_text())
    info = json.loads((path / RUN_INFO).read_text()) if (path / RUN_INFO).is_file() else {}
    test = summary.get("test") or {}
    adapter_file = path / "adapter.safetensors"
    params = summary["params"]
    return {
        "method": method,
        "seed": seed,
        "rank": info.get("rank", _adapter_rank(adapter_file)),
        "adapter_params": int(params["adapter"]),
        "decoder_params": int(params["decoder"]),
        "trainable_params": int(params["trainable"]),
        # the per-seed score: mean over the test cases (and over regions when there are several)
        "dice": statistics.fmean(r["dice_mean"] for r in test.values()) if test else math.nan,
        "hd95": statistics.fmean(r["hd95_mean"] for r in test.values()) if test else math.nan,
        "empty_pred": sum(int(r.get("n_empty_pred", 0)) for r in test.values()),
        "test_cases": sum(int(r.get("n_cases", 0)) for r in test.values()),
        "step_s": float(summary.get("step_s", math.nan)),
        "peak_memory_mb": float(summary.get("peak_memory_mb", math.nan)),
        "adapter_kb": adapter_file.stat().st_size / 1024 if adapter_file.is_file() else math.nan,
        "wall_s": float(info.get("wall_s", summary.get("train_wall_s", math.nan))),
        "epochs": summary.get("epochs"),
    }


def collect_runs(out: Path, methods: Sequence[str], seeds: Sequence[int]) -> list[dict]:
    records = []
    for method in methods:
        for seed in seeds:
            record = load_run(run_dir(out, method, seed), method, seed)
            if record is not None:
                records.append(record)
    return records


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single value) of the finite values."""
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(records: Sequence[Mapping], methods: Sequence[str]) -> list[dict]:
    """One row per method (in ``methods`` order) over its seeds."""
    rows = []
    for method in methods:
        runs = [r for r in records if r["method"] == method]
        if not runs:
            continue
        dice, dice_std = mean_std([r["dice"] for r in runs])
        hd95, hd95_std = mean_std([r["hd95"] for r in runs])
        ranks = sorted({r["rank"] for r in runs if r["rank"] is not None})
        rows.append({
            "method": method,
            "rank": ranks[0] if len(ranks) == 1 else (ranks or None),
            "seeds": sorted(r["seed"] for r in runs),
            "adapter_params": runs[0]["adapter_params"],
            "decoder_params": runs[0]["decoder_params"],
            "trainable_params": runs[0]["trainable_params"],
            "dice_mean": dice, "dice_std": dice_std, "hd95_mean": hd95, "hd95_std": hd95_std,
            "step_s": statistics.median(r["step_s"] for r in runs),
            "peak_memory_mb": max(r["peak_memory_mb"] for r in runs),
            "adapter_kb": statistics.median(r["adapter_kb"] for r in runs),
            "wall_s": sum(r["wall_s"] for r in runs if math.isfinite(r["wall_s"])),
            "empty_pred": sum(r.get("empty_pred", 0) for r in runs),
            "test_cases": sum(r.get("test_cases", 0) for r in runs),
        })
    return rows


def compare_sentence(rows: Sequence[Mapping], method: str = "tcurlora", other: str = "decoder_only") -> str:
    """An honest one-line comparison of the mean test Dice of two methods over seeds."""
    by = {r["method"]: r for r in rows}
    if method not in by or other not in by:
        missing = [NAMES.get(m, m) for m in (method, other) if m not in by]
        return f"{NAMES.get(method, method)} vs {NAMES.get(other, other)}: no result for {', '.join(missing)}."
    a, b = by[method], by[other]
    diff = a["dice_mean"] - b["dice_mean"]
    spread = max(a["dice_std"], b["dice_std"])
    n = min(len(a["seeds"]), len(b["seeds"]))
    if n < 2:
        verdict = "one seed only, so no spread to judge the difference against"
    elif abs(diff) <= spread:
        verdict = "within one std over seeds: no clear difference"
    else:
        verdict = f"{'better' if diff > 0 else 'worse'} by more than one std over seeds ({n} seeds, not a significance test)"
    return (f"{NAMES.get(method, method)} Dice {a['dice_mean']:.3f} ± {a['dice_std']:.3f} vs "
            f"{NAMES.get(other, other)} {b['dice_mean']:.3f} ± {b['dice_std']:.3f} ({diff:+.3f}, {verdict}).")


# --------------------------------------------------------------------------------------------------- the report
def machine_info() -> dict:
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return {"cpu": model, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version()}


def _fmt_int(value: int) -> str:
    return f"{value:,}"


def _fmt_pm(mean: float, std: float, digits: int) -> str:
    return "n/a" if not math.isfinite(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def table(rows: Sequence[Mapping]) -> str:
    lines = ["| method | rank | adapter params | decoder params | trainable | Dice | HD95 (mm) | step (s) | "
             "peak mem (MB) | adapter file (KB) | empty preds | seeds |",
             "|---|---|---:|---:|---:|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        rank = "-" if r["rank"] is None else str(r["rank"])
        lines.append(
            f"| {NAMES.get(r['method'], r['method'])} | {rank} | {_fmt_int(r['adapter_params'])} | "
            f"{_fmt_int(r['decoder_params'])} | {_fmt_int(r['trainable_params'])} | "
            f"{_fmt_pm(r['dice_mean'], r['dice_std'], 3)} | {_fmt_pm(r['hd95_mean'], r['hd95_std'], 2)} | "
            f"{r['step_s']:.3f} | {r['peak_memory_mb']:.0f} | {r['adapter_kb']:.0f} | "
            f"{r.get('empty_pred', 0)}/{r.get('test_cases', 0)} | "
            f"{','.join(str(s) for s in r['seeds'])} |")
    return "\n".join(lines)


def render_markdown(rows: Sequence[Mapping], meta: Mapping) -> str:
    machine = meta["machine"]
    ranks = ", ".join(f"{NAMES.get(r['method'], r['method'])} r = {r['rank']}" for r in rows if r["rank"] is not None)
    epochs = sorted({e for e in meta.get("epochs", []) if e is not None})
    lines = [
        f"# Method comparison: `{meta['experiment']}`",
        "",
        f"- Command: `{meta['command']}`",
        f"- Rebuild this report from the runs: `{meta['report_command']}`",
        f"- Machine: {machine['cpu']} ({machine['cpu_count']} logical CPUs, torch {machine['torch']} with "
        f"{machine['torch_threads']} threads{', GPU ' + machine['cuda'] if machine.get('cuda') else ', CPU only'}).",
        f"- Total wall time of the runs: {meta['total_wall_s'] / 60:.1f} min ({meta['n_runs']} runs; "
        f"training, validation and test evaluation).",
        f"- Epochs per run: {', '.join(map(str, epochs)) or 'n/a'}; seeds: {', '.join(map(str, meta['seeds']))}; "
        "same schedule, optimiser and budget for every method, no per-method tuning.",
        f"- Ranks: {ranks}. Chosen so the encoder adapters have comparable sizes (about 28k parameters; r = 1 is the "
        "smallest a matrix method can have, DoRA adds its magnitude vectors); the CNN path (decoder params) trains "
        "in every method.",
        "",
        "## Comparison",
        "",
        *[f"- {s}" for s in meta["sentences"]],
        "",
        "## Results",
        "",
        table(rows),
        "",
        "Dice and HD95: mean ± sample std over seeds of each seed's mean over the test cases. Step time: median over "
        "seeds of the run's median per-epoch mean step time. Empty preds: test cases x seeds with no foreground "
        "predicted (HD95 is then the volume diagonal). Peak memory: "
        + ("CUDA max allocated" if machine.get("cuda") else "peak resident set size of the run's process (CPU)")
        + ", max over seeds. Adapter file: `adapter.safetensors`, which holds every trainable tensor (the decoder "
        "too) plus the recorded indices.",
        "",
        "![Dice vs trainable parameters](results.png)",
        "",
    ]
    return "\n".join(lines)


def plot(rows: Sequence[Mapping], path: Path, title: str) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    markers = "osD^v<>PX*"
    for i, r in enumerate(rows):
        if not math.isfinite(r["dice_mean"]):
            continue
        ax.errorbar(r["trainable_params"], r["dice_mean"], yerr=r["dice_std"], fmt=markers[i % len(markers)],
                    capsize=4, markersize=7, alpha=0.85,
                    label=f"{NAMES.get(r['method'], r['method'])} ({r['trainable_params']:,})")
    ax.legend(fontsize=7, loc="best")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (adapter + decoder, log scale)")
    ax.set_ylabel("test Dice (mean ± std over seeds)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def write_report(out: Path, records: Sequence[Mapping], methods: Sequence[str], meta: Mapping) -> dict:
    rows = aggregate(records, methods)
    sentences = [compare_sentence(rows, "tcurlora", "decoder_only"), compare_sentence(rows, "tcurlora", "lora")]
    best = max((r for r in rows if math.isfinite(r["dice_mean"])), key=lambda r: r["dice_mean"], default=None)
    if best is not None:
        sentences.append(f"Highest mean Dice: {NAMES.get(best['method'], best['method'])} "
                         f"({best['dice_mean']:.3f} ± {best['dice_std']:.3f}).")
        if best["dice_mean"] < 0.5:
            empty = sum(r.get("empty_pred", 0) for r in rows)
            cases = sum(r.get("test_cases", 0) for r in rows)
            sentences.append(f"Caution: no method reaches a mean Dice of 0.5 ({empty} of {cases} test predictions "
                             "empty): at this schedule the models have not learnt the task, so the table does not "
                             "rank the methods; rerun with more epochs.")
    meta = {**meta, "sentences": sentences, "total_wall_s": sum(r["wall_s"] for r in rows), "n_runs": len(records),
            "epochs": [r["epochs"] for r in records]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(render_markdown(rows, meta))
    plot(rows, out / "results.png", f"{meta['experiment']}: Dice vs trainable parameters")
    payload = {**meta, "rows": rows, "runs": list(records)}
    (out / "results.json").write_text(json.dumps(payload, indent=2, allow_nan=True) + "\n")
    return payload


# ------------------------------------------------------------------------------------------------------------ main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--experiment", default="demo")
    p.add_argument("--methods", nargs="+", default=list(ALL_METHODS), choices=ALL_METHODS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", type=Path, default=Path("outputs/compare"))
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs for every run")
    p.add_argument("--ranks", nargs="*", default=[], metavar="METHOD=R",
                   help=f"override the per-method ranks (default {DEFAULT_RANKS})")
    p.add_argument("--overrides", nargs="*", default=[], help="extra Hydra overrides for every run")
    p.add_argument("--report-only", action="store_true", help="only rebuild the report from existing summaries")
    args = p.parse_args(argv)
    if "decoder_only" not in args.methods:  # the reference every adapter must beat
        args.methods = ["decoder_only", *args.methods]
    return args


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    ranks = dict(DEFAULT_RANKS)
    for item in args.ranks:
        method, _, value = item.partition("=")
        ranks[method] = int(value)
    command = "python scripts/compare.py " + " ".join(shlex.quote(a) for a in argv)
    previous = args.out / "results.json"
    if args.report_only and previous.is_file():
        command = json.loads(previous.read_text()).get("command", command)  # keep the command that made the runs
    started = time.perf_counter()
    if not args.report_only:
        train_all(args, ranks)
    records = collect_runs(args.out, args.methods, args.seeds)
    if not records:
        raise SystemExit(f"no finished runs under {args.out}")
    report_argv = [a for a in argv if a not in ("--report-only",)]
    meta = {"experiment": args.experiment, "command": command,
            "report_command": "python scripts/compare.py " + " ".join(shlex.quote(a) for a in report_argv)
            + " --report-only",
            "machine": machine_info(), "seeds": args.seeds, "methods": args.methods, "ranks": ranks,
            "extra_overrides": args.overrides, "this_invocation_s": time.perf_counter() - started}
    write_report(args.out, records, args.methods, meta)
    print((args.out / "results.md").read_text())


if __name__ == "__main__":
    main()
