"""Launch the comparison's training runs: each one ``python -m tcurseg.train`` with the Hydra overrides of its preset,
recorded once it finishes; a run whose record exists is never run again."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from tcurseg.compare.config import NO_ADAPTER, Protocol
from tcurseg.compare.records import frame, load_records, mean_dice, model_of, record_from_run, record_path, run_spec
from tcurseg.compare.select import cell_rate, rank_choice
from tcurseg.paths import conf_dir


def overrides(protocol: Protocol, spec: Mapping, run_dir: Path) -> list[str]:
    """Hydra overrides of one run: the same experiment, budget and stopping rule for every method. With fewer
    training subjects the epochs (and validation interval) grow so that every run takes the same number of steps."""
    preset = protocol.presets[spec["preset"]]
    method, n_train = spec["method"], spec["n_train"]
    scale = max(1, protocol.subjects // n_train)
    every = preset.val_every * scale
    rate = "optim.lr" if method in NO_ADAPTER else "optim.adapter_lr"
    patience = "null" if protocol.patience is None else protocol.patience
    ov = [f"+experiment={protocol.experiments[model_of(spec)]}", f"method={method}", f"seed={spec['seed']}",
          f"output_dir={run_dir}", "resume=true", f"{rate}={spec['lr']:g}", f"train.epochs={preset.epochs * scale}",
          f"train.val_every={every}", f"train.patience={patience}", f"train.ckpt_every={every}", "eval.overlays=0",
          *preset.overrides]
    if method != "full":  # decoder-only trains the same CNN path as the adapters; full trains everything anyway
        ov.append(f"method.cnn={preset.cnn}")
    if spec["rank"] is not None:
        ov.append(f"method.rank={spec['rank']}")
    if n_train != protocol.subjects:
        ov.append(f"train.subjects={n_train}")
    return ov


def protocol_fingerprint(ov: Sequence[str], conf: Path | None = None) -> str:
    """What makes a run's result, as 16 hex digits of a sha256: the resolved training config of its overrides
    (:func:`tcurseg.engine.runconfig.training_config`: without where it is written), the pretrained weights stood for
    by the training config of the experiment that makes them (``pretrain_recipe``), and the version of the synthetic
    data generator. A record whose fingerprint differs from its run's was made under another protocol: an edited
    experiment file, pretraining recipe or default changes it even where the overrides stay the same."""
    from hydra import compose, initialize_config_dir

    from tcurseg.data.synth import GENERATOR_VERSION
    from tcurseg.engine.runconfig import training_config

    with initialize_config_dir(config_dir=str(conf or conf_dir()), version_base=None):
        cfg = compose(config_name="config", overrides=list(ov))
        flat = training_config(cfg)
        if cfg.get("pretrain_recipe"):
            recipe = compose(config_name="config", overrides=[f"+experiment={cfg.pretrain_recipe}"])
            flat["pretrained"] = {k: v for k, v in training_config(recipe).items() if k != "pretrained"}
    flat["synth_generator_version"] = GENERATOR_VERSION
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _protocol_overrides(ov: Iterable[str]) -> list[str]:
    """The overrides that define a run, without where it was written."""
    return [o for o in ov if not o.startswith("output_dir=")]


def identical_run(spec: Mapping, fingerprint: str, records: Path) -> dict | None:
    """A record of the same run (the same protocol fingerprint) made for another study or preset, if there is one:
    full fine-tuning ignores the CNN preset, and a curve point can be a headline run."""
    for path in sorted(records.rglob("*.json")):
        record = json.loads(path.read_text())
        if record.get("fingerprint") == fingerprint and path != record_path(spec, records):
            return record
    return None


def train(ov: Sequence[str]) -> None:
    """One training run through the real entry point, in a fresh process (it logs into its run folder)."""
    done = subprocess.run([sys.executable, "-m", "tcurseg.train", *ov], check=False)
    if done.returncode != 0:
        raise SystemExit(f"python -m tcurseg.train {' '.join(ov)} failed (exit {done.returncode})")


def ensure_run(protocol: Protocol, spec: Mapping, conf: Path | None = None) -> dict:
    """The record of one run: read it if it exists (refused if made under another protocol), copy it from the same
    run made for another study or preset, else train and write it."""
    path = record_path(spec, protocol.records)
    run_dir = protocol.work.resolve() / path.relative_to(protocol.records).with_suffix("")
    ov = overrides(protocol, spec, run_dir)
    fingerprint = protocol_fingerprint(ov, conf)
    if path.is_file():
        record = json.loads(path.read_text())
        if record.get("fingerprint") != fingerprint:
            stale = sorted(set(_protocol_overrides(record.get("overrides", []))) ^ set(_protocol_overrides(ov)))
            raise SystemExit(f"{path}: recorded under another protocol ("
                             + (", ".join(stale) if stale else "same overrides, but the experiment's config, the "
                                "pretraining recipe or the data generator changed")
                             + "); move the old records away to rerun them")
        return record
    twin = identical_run(spec, fingerprint, protocol.records)
    path.parent.mkdir(parents=True, exist_ok=True)
    if twin is not None:
        record = {**twin, **spec}
        path.write_text(json.dumps(record, indent=1) + "\n")
        print(f"run {path.stem} ({spec['study']}, {spec['preset']}): the same run as "
              f"{record_path(twin, protocol.records)}; record copied", flush=True)
        return record
    print(f"run {path.stem} ({spec['study']}, {spec['preset']}): {' '.join(ov)}", flush=True)
    started = time.perf_counter()
    train(ov)
    record = record_from_run(run_dir, spec, time.perf_counter() - started)
    path.write_text(json.dumps({**record, "overrides": ov, "fingerprint": fingerprint}, indent=1) + "\n")
    print(f"    val {record['best']['val_dice']:.4f}, test {mean_dice(record):.4f}, {record['wall_s']:.0f} s",
          flush=True)
    return record


def chosen_rate(protocol: Protocol, preset: str, method: str, rank: int | None, study: str = "headline",
                model: str = "unetr") -> float:
    """Train the rate grid of ``method`` at ``rank`` (seed 0, all training subjects) and return the rate it validates
    best at (:func:`tcurseg.compare.select.cell_rate`)."""
    runs = [ensure_run(protocol, run_spec(study, preset, method, rank, lr, protocol.subjects, 0, model))
            for lr in protocol.presets[preset].rates(method)]
    return cell_rate(frame(runs), protocol, preset, method, rank, model)


def headline(protocol: Protocol, preset: str, methods: Sequence[str] | None = None, model: str = "unetr") -> None:
    """Train a headline table: every method's seed-0 rate grid and edge checks, then the seeds one after another (all
    methods of a seed before the next seed), so that a stopped run leaves whole seeds behind."""
    spec = protocol.presets[preset]
    ranks = protocol.ranks[model]
    methods = spec.methods if methods is None else methods
    order = [m for m in ["full", "decoder_only", *[m for m in methods if m not in NO_ADAPTER]] if m in methods]
    rates = {m: chosen_rate(protocol, preset, m, ranks.get(m), model=model) for m in order}
    for method in order:
        for lr in spec.edge_checks.get(method, ()):
            ensure_run(protocol, run_spec("headline", preset, method, ranks.get(method), lr, protocol.subjects, 0,
                                          model))
    for seed in spec.seeds:
        for method in order:
            ensure_run(protocol, run_spec("headline", preset, method, ranks.get(method), rates[method],
                                          protocol.subjects, seed, model))


def subjects_curve(protocol: Protocol, preset: str) -> None:
    """Train Dice vs training subjects: the curve's methods at their headline rates, every size and seed."""
    ranks, curves = protocol.ranks["unetr"], protocol.curves
    for seed in curves.seeds:
        for n in curves.subjects:
            for method in curves.methods:
                lr = chosen_rate(protocol, preset, method, ranks.get(method))
                ensure_run(protocol, run_spec("subjects", preset, method, ranks.get(method), lr, n, seed))


def ranks_curve(protocol: Protocol, preset: str) -> None:
    """Train Dice vs adapter size: every rank at its own chosen rate and the curve's seeds, then the rank of each
    method chosen on validation at ``chosen_rank_seeds``, and the curve's extra runs."""
    curves = protocol.curves

    def at_rank(method: str, rank: int, seed: int) -> None:
        lr = chosen_rate(protocol, preset, method, rank, study="ranks")
        ensure_run(protocol, run_spec("ranks", preset, method, rank, lr, protocol.subjects, seed))

    for seed in curves.seeds:
        for method, ranks in curves.ranks.items():
            for rank in ranks:
                at_rank(method, rank, seed)
    table = frame(load_records(protocol.records))
    for method in curves.ranks:
        best, _ = rank_choice(table, protocol, preset, method)
        if best is not None and best != protocol.ranks["unetr"].get(method):
            for seed in curves.chosen_rank_seeds:
                at_rank(method, best, seed)
    for extra in curves.extra:
        for seed in extra["seeds"]:
            at_rank(extra["method"], extra["rank"], seed)
