"""``docs/results.md`` (with ``results.json`` and the curves' PNGs) from the run records alone."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from tcurseg.compare import answer, curves, headline
from tcurseg.compare.config import ALL_METHODS, NAMES, Protocol
from tcurseg.compare.records import frame, runs_of
from tcurseg.compare.render import table

BENCHES = (("bench_methods.json", "UNETR-B, the paper's network"),
           ("bench_methods_swin_unetr.json", "SwinUNETR, feature 48, depths 2/2/2/2"))


def protocol_section(protocol: Protocol, runs: pd.DataFrame) -> list[str]:
    """What every run shares, the presets' changes, seeds, rate grids, ranks and the statistics."""
    presets = protocol.presets
    changed = "; ".join(headline.title(protocol, p) for p, spec in presets.items() if spec.changes_training)
    stop = ("no early stop" if protocol.patience is None
            else f"early stop after {protocol.patience} validations without a better Dice")
    own_seeds = "; ".join(f"`{p}`: {', '.join(map(str, spec.seeds))}" for p, spec in presets.items()
                          if spec.seeds != protocol.seeds)
    grids = "; ".join(f"`{p}`: adapters {', '.join(f'{v:g}' for v in spec.grid['adapter'])}, full and decoder-only "
                      f"{', '.join(f'{v:g}' for v in spec.grid['base'])}" for p, spec in presets.items())
    ranks = ", ".join(f"{NAMES[m]} r = {r}" for m, r in protocol.ranks["unetr"].items())
    return ["## Protocol", "",
            f"- Machine: {protocol.machine}. Runs: {len(runs)}, {runs.wall_s.sum() / 3600:.2f} h of wall time in all.",
            f"- Task: `+experiment={protocol.experiments['unetr']}` (fine-tune the UNETR pretrained on `synth_tumor` "
            f"to `synth_hippo`: {protocol.subjects} training, 8 validation, 24 test subjects). Every run: the same data, "
            f"{protocol.epochs} epochs with validation every {protocol.val_every}, {stop}, the best-validation "
            f"checkpoint evaluated on the test split ({changed}). The task's recipe is kept in "
            "`conf/experiment/compare.yaml` (its pretraining in `compare_pretrain.yaml`) while the demo's moves on; "
            "every record carries a fingerprint of its resolved config and pretraining recipe, and a record made "
            "under another one is refused, never mixed in. Presets, seeds, grids and ranks: `conf/compare/`.",
            f"- Seeds {', '.join(map(str, protocol.seeds))} for the tables ({own_seeds}), "
            f"{', '.join(map(str, protocol.curves.seeds))} for the curves; the same seeds and data for every method.",
            "- Learning rate: each method's own rate (`optim.adapter_lr` for methods that add parameters, the CNN "
            "path at the task's `optim.lr`; `optim.lr` for full fine-tuning and decoder-only) is chosen by the best "
            "validation Dice of seed 0, as PEFT papers tune their rates; the test split is never used to choose. "
            f"Grids: {grids}.",
            f"- Ranks: {ranks}: encoder adapters of about 28k parameters (r = 1 is the smallest a matrix method can "
            "have).",
            "- Paired differences over (test subject, seed) with a 95% percentile bootstrap CI "
            f"({protocol.bootstrap:,} resamples; each draws the test subjects and, independently, the seeds with "
            "replacement: the subjects of one run share its seed, so the run-to-run spread belongs in the CI, and "
            "resampling the (subject, seed) pairs as independent would leave it out); a method beats another only "
            "when the CI excludes 0. HD95 in mm (lower is better); an empty prediction scores Dice 0 and HD95 = the "
            "volume diagonal.", ""]


def cost_section(bench: Path, network: str) -> list[str]:
    """The cost of each method on a full-size network, from ``scripts/bench_methods.py`` (every method in one
    interleaved run)."""
    if not bench.is_file():
        return []
    data = json.loads(bench.read_text())
    methods, lora = data["methods"], data["methods"]["lora"]
    model = " --model swin_unetr" if "swin" in bench.stem else ""
    batch = data.get("batch", 1)
    cmd = (f"python scripts/bench_methods.py{model} --size {data['size']} --rank {data['rank']}"
           f"{f' --batch {batch}' if batch != 1 else ''} --device {data['device']} --threads {data['threads']} "
           f"--steps {data['steps']} --warmup {data['warmup']} --json docs/{bench.name}")
    body = [[NAMES[name], f"{m['adapter']:,}", f"{m['step_s']:.2f}", f"{m['step_s'] / lora['step_s']:.2f}",
             f"{m['train_mb'] / lora['train_mb']:.2f}"] for name in ALL_METHODS if (m := methods.get(name))]
    return [f"## Cost ({network})", "",
            f"`{cmd}` measures this table (r = {data['rank']}, batch {batch}, {data['device']} with {data['threads']} "
            "threads, every method in one interleaved run; the demo's small networks are too small for their costs "
            "to mean much).", "",
            *table(["method", "adapter params", "step s", "step x LoRA", "training memory x LoRA"], body,
                   right=(1, 2, 3, 4)), ""]


def links() -> list[str]:
    """What the page links to instead of pasting."""
    return ["More: [the reading of these tables](compare/reading.md) (hand-written, with the history of each preset); "
            "[the recipe log](recipe.md) (what was tried, one lever at a time, to make the task's recipe); "
            "[the void runs](compare_void/README.md) (8 records made on a collapsed encoder, not read here).", ""]


def build(records: Sequence[Mapping], protocol: Protocol, path: Path, plots: bool = True) -> dict:
    """Write the report to ``path`` (``results.json`` and, with ``plots``, the PNG curves beside it); returns what
    ``results.json`` holds."""
    table_ = frame(records)
    runs = runs_of(table_)
    heads = {p: headline.compute(table_, protocol, p) for p in protocol.presets}
    lines = ["# Results on the embedded benchmark", "",
             "Generated by `python -m tcurseg.compare report` from the run records in `docs/compare/`; the command "
             "beside each table runs the runs it reads (a run whose record exists is skipped), `python -m "
             "tcurseg.compare run all` all of them.", ""]
    lines += answer.section(protocol, heads)
    lines += links()
    lines += protocol_section(protocol, runs)
    lines += ["## Headline tables, one per preset", ""]
    for preset, head in heads.items():
        lines += headline.section(head, table_, protocol)
    payload = {p: head.payload() for p, head in heads.items()}
    swin = table_[table_.model == "swin_unetr"]
    if len(swin):
        lines += ["## Headline on SwinUNETR (`--model swin_unetr`)", "",
                  "`+experiment=demo_swin`: the small SwinUNETR (`model=swin_unetr_small`, feature 12, depths "
                  "2/2/2/2, roi 64^3) pretrained on `synth_tumor` by `demo_swin_pretrain`, fine-tuned as above (same "
                  "data, budget, seeds and rate rule). Ranks: "
                  + ", ".join(f"{NAMES[m]} r = {r}" for m, r in protocol.ranks["swin_unetr"].items())
                  + " (encoder adapters of 4.6k-9k parameters; CURLoRA at its largest rank, 12).", ""]
        for preset in protocol.model_presets["swin_unetr"]:
            head = headline.compute(swin, protocol, preset, "swin_unetr")
            lines += headline.section(head, swin, protocol)
            payload[f"swin_unetr_{preset}"] = head.payload()
    for bench, network in BENCHES:
        lines += cost_section(protocol.report.parent / bench, network)
    lines += ["## Curves", ""]
    for study in ("subjects", "ranks"):
        for preset in sorted(set(runs[runs.study == study].preset)) or [protocol.curves.preset]:
            png = path.parent / f"results_{study}_{preset}.png"
            lines += curves.section(table_, protocol, study, preset, png, draw=plots)
    for preset in sorted(set(runs[runs.study == "ranks"].preset)):
        lines += curves.rank_choice_section(table_, protocol, preset)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    (path.parent / "results.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    return payload
