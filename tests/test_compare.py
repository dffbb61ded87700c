"""tcurseg.compare: the statistics on known inputs, the protocol and the report on fabricated run records (no
training), and the report rebuilt from the committed records with every number of its tables."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from tcurseg.compare import __main__ as cli
from tcurseg.compare import curves, headline, runs
from tcurseg.compare.config import ALL_METHODS, load_protocol
from tcurseg.compare.records import frame, late_gain, load_records, record_from_run, record_path, run_spec
from tcurseg.compare.report import build
from tcurseg.compare.select import cell_rate, final_runs
from tcurseg.compare.stats import paired_differences, two_way_bootstrap
from tcurseg.compare.tables import method_rows

REPO = Path(__file__).resolve().parents[1]
PROTOCOL = load_protocol(root=REPO)
RANKS = PROTOCOL.ranks["unetr"]
CURVE_METHODS = PROTOCOL.curves.methods


def with_grid(adapter: tuple[float, ...], base: tuple[float, ...], protocol=PROTOCOL):
    """The protocol with every preset's rate grid replaced."""
    presets = {name: dataclasses.replace(spec, grid={"adapter": adapter, "base": base})
               for name, spec in protocol.presets.items()}
    return dataclasses.replace(protocol, presets=presets)


TWO_POINT = with_grid((1e-3, 1e-2), (3e-4, 1e-3))
ONE_RATE = with_grid((1e-2,), (1e-2,))


def _grid(values, seeds=(0,)):
    """{(case, seed): value} from one list of values per seed."""
    return {(f"s{i}", seed): v for seed, vs in zip(seeds, values) for i, v in enumerate(vs)}


def _record(method, lr, seed, val, test, study="headline", preset="paper", n_train=32, adapter=100):
    cases = {f"sub{i}": {"dice": t, "hd95": 10 * (1 - t)} for i, t in enumerate(test)}
    return {**run_spec(study, preset, method, RANKS.get(method), lr, n_train, seed),
            "params": {"adapter": adapter, "decoder": 1000, "trainable": adapter + 1000},
            "best": {"epoch": 3, "val_dice": val}, "epochs_run": 5, "stopped_early": True, "step_s": 0.4,
            "peak_memory_mb": 900.0, "wall_s": 60.0, "cases": cases}


def _rows(records, protocol, preset="paper", study="headline"):
    return {r["method"]: r for r in method_rows(final_runs(frame(records), protocol, study, preset),
                                                protocol.stuck_dice)}


def _report(records, protocol, path):
    payload = build(records, protocol, path)
    return payload, path.read_text()


# ------------------------------------------------------------------------------------------------------ statistics
def test_two_way_bootstrap_known_cases():
    const = two_way_bootstrap(_grid([[0.1] * 30]))
    assert const["mean"] == pytest.approx(0.1) and const["lo"] == pytest.approx(0.1)
    assert const["hi"] == pytest.approx(0.1) and const["excludes_zero"] and const["n"] == 30
    sym = two_way_bootstrap(_grid([[-1.0, 1.0] * 50]))
    assert sym["mean"] == pytest.approx(0.0) and sym["lo"] < 0 < sym["hi"] and not sym["excludes_zero"]
    # two subjects, one seed: a resample's mean is 0, 0.5 or 1 (1/4, 1/2, 1/4), so the 95% CI is [0, 1]
    two = two_way_bootstrap(_grid([[0.0, 1.0]]))
    assert (two["mean"], two["lo"], two["hi"], two["n"]) == (0.5, 0.0, 1.0, 2) and not two["excludes_zero"]
    # one seed, normal differences: the CI is mean +- 1.96 sd / sqrt(n) (here 0.0098), to bootstrap accuracy
    d = np.random.default_rng(1).normal(0.05, 0.1, 400)
    ci = two_way_bootstrap(_grid([d]))
    half = 1.96 * d.std(ddof=1) / math.sqrt(d.size)
    assert (ci["hi"] - ci["lo"]) / 2 == pytest.approx(half, rel=0.08)
    assert (ci["lo"] + ci["hi"]) / 2 == pytest.approx(d.mean(), abs=0.002) and ci["excludes_zero"]
    assert two_way_bootstrap(_grid([[math.nan]]))["n"] == 0
    assert two_way_bootstrap(_grid([d])) == ci  # the same resamples every time


def test_two_way_bootstrap_counts_the_seed_as_a_source_of_variance():
    """24 subjects x 3 seeds whose difference is mostly a per-seed offset (+0.06, -0.02, +0.02), as when one training
    run is luckier than another: resampling the 72 pairs as independent would call the +0.02 mean a win (CI about
    +-0.009); resampling seeds as well as subjects must not."""
    rng = np.random.default_rng(0)
    offsets = (0.06, -0.02, 0.02)
    ci = two_way_bootstrap(_grid([off + rng.normal(0, 0.01, 24) for off in offsets], seeds=(0, 1, 2)))
    assert ci["mean"] == pytest.approx(0.02, abs=0.005) and ci["n"] == 72
    assert not ci["excludes_zero"] and ci["lo"] < -0.01 and ci["hi"] > 0.05


def test_paired_differences_use_common_pairs():
    a = {("s1", 0): 0.9, ("s2", 0): 0.8, ("s3", 0): 0.7}
    b = {("s1", 0): 0.85, ("s2", 0): 0.8}
    assert paired_differences(a, b) == pytest.approx({("s1", 0): 0.05, ("s2", 0): 0.0})


# ------------------------------------------------------------------------------------------------ the protocol
def test_the_presets_are_config_and_each_runs_the_methods_of_its_table():
    presets = PROTOCOL.presets
    assert list(presets) == ["paper", "paper_zero_head", "default", "default_long", "default_4x", "default_wide"]
    assert presets["paper_zero_head"].methods == ALL_METHODS and presets["paper_zero_head"].seeds == (0, 1, 2, 3, 4)
    assert presets["default"].seeds == tuple(range(7)) and presets["paper"].seeds == PROTOCOL.seeds == (0, 1, 2)
    assert presets["default_4x"].rates("tcurlora") == (3e-4, 1e-3) and presets["default_4x"].rates("full") == (1e-2,)
    assert all(set(spec.methods) <= set(ALL_METHODS) for spec in presets.values())
    assert PROTOCOL.primary == {"preset": "paper_zero_head", "method": "tcurlora",
                                "references": ["lora", "decoder_only", "full"], "steps": 768}


def test_every_method_gets_the_same_budget(tmp_path):
    def spec(method, rank, lr, n=32, seed=2):
        return run_spec("headline", "paper", method, rank, lr, n, seed)

    lora = runs.overrides(PROTOCOL, spec("lora", 1, 0.01), tmp_path)
    full = runs.overrides(PROTOCOL, spec("full", None, 0.001), tmp_path)
    budget = [o for o in lora if o.startswith(("train.", "+experiment", "seed"))]
    assert budget == [o for o in full if o.startswith(("train.", "+experiment", "seed"))]
    assert "optim.adapter_lr=0.01" in lora and "method.cnn=paper" in lora and "method.rank=1" in lora
    assert "optim.lr=0.001" in full and not any(o.startswith(("method.cnn", "method.rank")) for o in full)
    assert "method.cnn=paper" in runs.overrides(PROTOCOL, spec("decoder_only", None, 0.001), tmp_path)
    few = runs.overrides(PROTOCOL, spec("lora", 1, 0.01, n=4, seed=0), tmp_path)  # 4 subjects: 8x the epochs
    assert f"train.epochs={PROTOCOL.epochs * 8}" in few and f"train.val_every={PROTOCOL.val_every * 8}" in few
    assert "train.subjects=4" in few


def test_a_run_is_the_real_training_entry_point(monkeypatch):
    calls = []
    monkeypatch.setattr(runs.subprocess, "run", lambda argv, check: calls.append(argv) or type("Done", (), {
        "returncode": 0 if len(calls) == 1 else 1}))
    runs.train(["+experiment=compare", "method=lora"])
    assert calls == [[sys.executable, "-m", "tcurseg.train", "+experiment=compare", "method=lora"]]
    with pytest.raises(SystemExit, match="failed"):
        runs.train(["+experiment=compare"])


def test_the_long_default_preset_doubles_the_steps_of_default_and_nothing_else(tmp_path):
    long, short = (runs.overrides(PROTOCOL, run_spec("headline", p, "lora", 1, 1e-3, 32, 0), tmp_path)
                   for p in ("default_long", "default"))
    epochs, every = PROTOCOL.epochs, PROTOCOL.val_every
    assert sorted(set(long) ^ set(short)) == sorted([f"train.epochs={2 * epochs}", f"train.epochs={epochs}",
                                                     f"train.val_every={2 * every}", f"train.val_every={every}",
                                                     f"train.ckpt_every={2 * every}", f"train.ckpt_every={every}"])
    assert set(PROTOCOL.presets["default_long"].methods) == set(CURVE_METHODS)
    assert headline.title(PROTOCOL, "default") == "CNN preset `default`"  # its own seeds change which runs, not how
    assert headline.title(PROTOCOL, "default_long") == ("Preset `default_long`: CNN preset `default`, 48 epochs "
                                                        "(validation every 4)")


def test_default_wide_trains_the_demos_network_and_says_so(tmp_path):
    spec = run_spec("headline", "default_wide", "tcurlora", 20, 1e-3, 32, 1)
    ov = runs.overrides(PROTOCOL, spec, tmp_path)
    assert {"model.feature_size=16", "model.img_size=[32,32,32]", "method.cnn=default", "train.epochs=24"} <= set(ov)
    assert headline.title(PROTOCOL, "default_wide") == ("Preset `default_wide`: CNN preset `default`, "
                                                        "`model.feature_size=16`, `model.img_size=[32,32,32]`, 24 "
                                                        "epochs (validation every 2)")
    assert PROTOCOL.presets["default_wide"].rates("lora") == (1e-3, 1e-2)
    default = runs.overrides(PROTOCOL, {**spec, "preset": "default"}, tmp_path)
    assert runs.protocol_fingerprint(ov) != runs.protocol_fingerprint(default)


def test_headline_runs_each_presets_own_seeds_grid_and_edge_checks(monkeypatch):
    ran = []
    monkeypatch.setattr(runs, "chosen_rate", lambda protocol, preset, method, rank, model="unetr": 1e-3)
    monkeypatch.setattr(runs, "ensure_run", lambda protocol, spec: ran.append(
        (spec["preset"], spec["method"], spec["seed"], spec["lr"])))
    runs.headline(PROTOCOL, "default_long")
    runs.headline(PROTOCOL, "default", methods=["lora"])
    runs.headline(PROTOCOL, "paper", methods=["lora"])
    assert sorted(ran) == sorted([("default_long", m, s, 1e-3) for m in CURVE_METHODS for s in range(5)]
                                 + [("default", "lora", 0, 3e-4)]  # its edge check
                                 + [("default", "lora", s, 1e-3) for s in range(7)]
                                 + [("paper", "lora", s, 1e-3) for s in PROTOCOL.seeds])


def test_headline_trains_every_method_of_a_seed_before_the_next_seed(monkeypatch):
    ran = []
    monkeypatch.setattr(runs, "chosen_rate", lambda protocol, preset, method, rank, model="unetr": 1e-3)
    monkeypatch.setattr(runs, "ensure_run", lambda protocol, spec: ran.append((spec["seed"], spec["method"])))
    runs.headline(PROTOCOL, "default_wide")
    assert ran == [(s, m) for s in range(5) for m in ("full", "decoder_only", "lora", "tcurlora")]
    assert PROTOCOL.presets["default_4x"].val_every == 4 * PROTOCOL.val_every


def test_the_command_line_runs_a_presets_table_and_all(monkeypatch):
    called = []
    monkeypatch.setattr(runs, "headline", lambda protocol, preset, methods=None, model="unetr": called.append(
        ("headline", preset, methods, model)))
    monkeypatch.setattr(runs, "subjects_curve", lambda protocol, preset: called.append(("subjects", preset)))
    monkeypatch.setattr(runs, "ranks_curve", lambda protocol, preset: called.append(("ranks", preset)))
    cli.main(["run", "headline", "--preset", "paper_zero_head"])
    assert called == [("headline", "paper_zero_head", None, "unetr")]
    called.clear()
    cli.main(["run", "all"])
    assert called == [("headline", p, None, "unetr") for p in PROTOCOL.presets] + [("subjects", "default"),
                                                                                  ("ranks", "default")]
    with pytest.raises(SystemExit):
        cli.main(["run", "headline"])  # a headline names its preset


def test_full_fine_tuning_is_not_run_twice_for_the_two_presets(tmp_path):
    """Full fine-tuning ignores the CNN preset, so its `default` run is its `paper` run, and a curve point with the
    headline's settings is the headline run: the record is copied, not trained again."""
    protocol = dataclasses.replace(PROTOCOL, records=tmp_path, work=tmp_path / "work")
    made = {}
    for method, rank, dice in (("full", None, 0.8), ("lora", 1, 0.6)):
        spec = run_spec("headline", "paper", method, rank, 0.01, 32, 0)
        ov = runs.overrides(protocol, spec, tmp_path / "work" / "paper")
        made[method] = record = {**_record(method, 0.01, 0, 0.7, [dice] * 4), "overrides": ov,
                                 "fingerprint": runs.protocol_fingerprint(ov)}
        path = record_path(spec, tmp_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))
    full = run_spec("headline", "default", "full", None, 0.01, 32, 0)
    copied = runs.ensure_run(protocol, full)  # would train if nothing matched
    assert copied["preset"] == "default" and copied["cases"] == made["full"]["cases"]
    assert record_path(full, tmp_path).is_file()
    point = runs.ensure_run(protocol, run_spec("ranks", "paper", "lora", 1, 0.01, 32, 0))
    assert point["study"] == "ranks" and point["cases"] == made["lora"]["cases"]
    lora = run_spec("headline", "default", "lora", 1, 0.01, 32, 0)
    lora_ov = runs.overrides(protocol, lora, tmp_path / "work" / "default")
    assert runs.identical_run(lora, runs.protocol_fingerprint(lora_ov), tmp_path) is None  # method.cnn differs


def test_a_record_made_under_another_protocol_is_refused(tmp_path):
    """The fingerprint covers the resolved experiment and pretraining configs, not only the overrides: editing
    conf/experiment/compare.yaml or compare_pretrain.yaml makes the old records stale, and ensure_run refuses them;
    the demo's own pretraining (demo_pretrain.yaml) may change without touching them."""
    spec = run_spec("headline", "paper", "lora", 1, 0.01, 32, 0)
    ov = runs.overrides(PROTOCOL, spec, tmp_path / "a")
    fingerprint = runs.protocol_fingerprint(ov)
    assert len(fingerprint) == 16
    assert runs.protocol_fingerprint(runs.overrides(PROTOCOL, spec, tmp_path / "b")) == fingerprint
    assert runs.protocol_fingerprint([*ov, "augment.affine_prob=0"]) != fingerprint
    assert runs.protocol_fingerprint([*ov, "eval.overlap=0.25"]) == fingerprint  # evaluation only

    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    assert runs.protocol_fingerprint(ov, conf) == fingerprint
    experiment = conf / "experiment" / "compare.yaml"
    experiment.write_text(experiment.read_text().replace("warmup_epochs: 1", "warmup_epochs: 2"))
    edited = runs.protocol_fingerprint(ov, conf)
    assert edited != fingerprint
    demo_pretrain = conf / "experiment" / "demo_pretrain.yaml"
    demo_pretrain.write_text(demo_pretrain.read_text().replace("epochs: 30", "epochs: 31"))
    assert runs.protocol_fingerprint(ov, conf) == edited
    pretrain = conf / "experiment" / "compare_pretrain.yaml"
    pretrain.write_text(pretrain.read_text().replace("epochs: 30", "epochs: 31"))
    assert runs.protocol_fingerprint(ov, conf) not in (fingerprint, edited)

    protocol = dataclasses.replace(PROTOCOL, records=tmp_path / "records", work=tmp_path / "work")
    path = record_path(spec, protocol.records)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({**_record("lora", 0.01, 0, 0.7, [0.6] * 4), "overrides": ov,
                                "fingerprint": fingerprint}))
    with pytest.raises(SystemExit, match="recorded under another protocol .same overrides, but the experiment"):
        runs.ensure_run(protocol, spec, conf)


def test_a_record_keeps_the_validation_curve_of_its_run(tmp_path):
    history = [{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 0.9, "val_dice": 0.4}, {"epoch": 3, "loss": 0.8},
               {"epoch": 4, "loss": 0.7, "val_dice": 0.55}]
    (tmp_path / "eval").mkdir()
    (tmp_path / "summary.json").write_text(json.dumps({"params": {"adapter": 1}, "best": {"epoch": 4, "val_dice": 0.55},
                                                       "epochs_run": 4, "history": history}))
    (tmp_path / "eval" / "metrics.csv").write_text("case,region,dice,hd95\nsub0,hippocampus,0.7,3.0\n")
    record = record_from_run(tmp_path, run_spec("headline", "paper", "lora", 1, 1e-3, 32, 0), 9.0)
    assert record["val_curve"] == [[2, 0.4], [4, 0.55]]
    assert late_gain(record) == pytest.approx(0.15)  # epoch 4 minus epoch 3's last validation (epoch 2)
    assert record["cases"] == {"sub0": {"dice": 0.7, "hd95": 3.0}}


# ------------------------------------------------------------------------------- rates and ranks chosen on validation
def test_rate_chosen_on_validation_never_on_test():
    base = [0.80, 0.82, 0.84, 0.86]
    records = []
    for method in ALL_METHODS:
        lo, hi = TWO_POINT.presets["paper"].rates(method)
        # the smaller rate validates better but tests worse: it must be the one chosen
        records.append(_record(method, lo, 0, 0.9, base))
        records.append(_record(method, hi, 0, 0.8, [b + 0.1 for b in base]))
        records += [_record(method, lo, seed, 0.9, base) for seed in (1, 2)]
    final = final_runs(frame(records), TWO_POINT, "headline", "paper")
    assert set(final) == set(ALL_METHODS)
    for method, rows in final.items():
        assert set(rows.lr) == {TWO_POINT.presets["paper"].rates(method)[0]}
        assert sorted(set(rows.seed)) == [0, 1, 2]
    rows = _rows(records, TWO_POINT)
    assert rows["lora"]["dice"] == pytest.approx(0.83) and rows["lora"]["n"] == 12


def test_rate_table_marks_the_chosen_rate_and_runs_outside_the_grid():
    """A run at a rate outside the grid (an edge check) is listed as such and never chosen, even when it validates
    best."""
    base = [0.80, 0.82, 0.84, 0.86]
    records = [_record(m, lr, s, 0.8, base) for m in ("decoder_only", "lora") for s in (0, 1)
               for lr in TWO_POINT.presets["paper"].rates(m)]
    records.append(_record("lora", 1e-4, 0, 0.95, base))  # validates best, but is not a grid point
    table = frame(records)
    lines = headline.section(headline.compute(table, TWO_POINT, "paper"), table, TWO_POINT)
    assert "| LoRA | 0.0001 | 0.9500 | outside the grid (edge check) |" in lines
    assert "| LoRA | 0.001 | 0.8000 | chosen |" in lines and "| LoRA | 0.01 | 0.8000 |  |" in lines


def test_each_preset_searches_its_own_grid():
    protocol = dataclasses.replace(PROTOCOL, presets={
        "paper": dataclasses.replace(PROTOCOL.presets["paper"], grid={"adapter": (1e-2,), "base": (1e-2,)}),
        "default": dataclasses.replace(PROTOCOL.presets["default"], grid={"adapter": (1e-3, 1e-2), "base": (1e-2,)})})
    base = [0.80, 0.82, 0.84, 0.86]
    records = [_record(m, 1e-2, 0, 0.8, base, preset=p) for p in ("paper", "default") for m in ("lora", "full")]
    assert set(final_runs(frame(records), protocol, "headline", "paper")) == {"lora", "full"}
    # `default` has not run its adapters at 1e-3 yet: LoRA has no chosen rate, so it is left out, not run at 1e-2
    assert set(final_runs(frame(records), protocol, "headline", "default")) == {"full"}
    records.append(_record("lora", 1e-3, 0, 0.9, base, preset="default"))
    assert set(final_runs(frame(records), protocol, "headline", "default")["lora"].lr) == {1e-3}


def test_the_zero_head_preset_trains_longer_and_chooses_its_rates_on_its_own_seed_0(tmp_path):
    """``paper_zero_head``: the `paper` CNN path, a zero head, twice the epochs (validated as often as the others),
    and each method at the rate its own seed-0 grid validates best at: `paper`'s choice plays no part."""
    ov = runs.overrides(TWO_POINT, run_spec("headline", "paper_zero_head", "full", None, 0.01, 32, 1), tmp_path)
    assert "head_init=zero" in ov and f"train.epochs={2 * PROTOCOL.epochs}" in ov
    assert f"train.val_every={2 * PROTOCOL.val_every}" in ov
    lora = run_spec("headline", "paper_zero_head", "lora", 1, 0.01, 32, 1)
    assert "method.cnn=paper" in runs.overrides(TWO_POINT, lora, tmp_path)
    assert "head_init=zero" not in runs.overrides(TWO_POINT, {**lora, "preset": "paper"}, tmp_path)
    base = [0.80, 0.82, 0.84, 0.86]
    records = [_record("lora", lr, 0, val, base) for lr, val in ((1e-3, 0.7), (1e-2, 0.8))]
    records += [_record("lora", lr, s, val, base, preset="paper_zero_head")
                for lr, val in ((1e-2, 0.6), (1e-3, 0.9)) for s in (0, 1)]
    table = frame(records)
    assert set(final_runs(table, TWO_POINT, "headline", "paper")["lora"].lr) == {1e-2}
    final = final_runs(table, TWO_POINT, "headline", "paper_zero_head")
    assert set(final) == {"lora"}  # the methods it has not run are left out, not shown as empty rows
    assert set(zip(final["lora"].lr, final["lora"].preset)) == {(1e-3, "paper_zero_head")}
    lines = headline.section(headline.compute(table, TWO_POINT, "paper_zero_head"), table, TWO_POINT)
    assert "| LoRA | 0.001 | 0.9000 | chosen |" in lines and "| LoRA | 0.01 | 0.6000 |  |" in lines


def test_every_rank_gets_its_own_rate_chosen_on_validation():
    """With a two-point adapter grid each rank of the ranks curve runs at the rate its seed-0 run validates best at,
    not at the headline rank's rate; a rank whose grid has not run is left out of the curve."""
    protocol = with_grid((1e-3, 1e-2), (1e-2,))
    base = [0.70, 0.72, 0.74, 0.76]
    records = [_record(m, 1e-2, s, 0.7, base, preset="default") for m in ("full", "decoder_only") for s in (0, 1)]
    for lr, val in ((1e-3, 0.80), (1e-2, 0.70)):  # the headline rank (r = 20) validates best at 1e-3
        records += [_record("tcurlora", lr, s, val, base, preset="default") for s in (0, 1)]
    for rank, rates in ((2, {1e-3: (0.60, 0.0), 1e-2: (0.75, 0.10)}),     # r = 2 validates best at 1e-2
                        (8, {1e-3: (0.85, 0.05), 1e-2: (0.70, 0.20)})):   # r = 8 at 1e-3 (and tests worse there)
        for lr, (val, shift) in rates.items():
            records += [{**_record("tcurlora", lr, seed, val, [b + shift for b in base], study="ranks",
                                   preset="default", adapter=rank * 100), "rank": rank} for seed in (0, 1)]
    records.append({**_record("tcurlora", 1e-2, 0, 0.9, base, study="ranks", preset="default", adapter=1600),
                    "rank": 16})  # r = 16: the 1e-3 point of its grid has not run
    for lr, val in ((1e-3, 0.6), (1e-2, 0.7)):
        records += [_record("lora", lr, s, val, base, preset="default") for s in (0, 1)]
        records += [{**_record("lora", lr, s, val, base, study="ranks", preset="default"), "rank": 4} for s in (0, 1)]
    table = frame(records)
    assert cell_rate(table, protocol, "default", "tcurlora", 2) == 1e-2
    assert cell_rate(table, protocol, "default", "tcurlora", 8) == 1e-3
    assert cell_rate(table, protocol, "default", "tcurlora", 16) is None
    points = {x: dice for x, dice, _, _ in curves.curve_points(table, protocol, "ranks", "default")["tcurlora"]}
    assert points == pytest.approx({200: 0.83, 800: 0.78})
    lines = "\n".join(curves.rank_choice_section(table, protocol, "default"))
    assert "Not chosen yet: the rate grid of tCURLoRA r = 16 has not run at every rate." in lines
    table = frame([r for r in records if r["rank"] != 16])
    lines = "\n".join(curves.rank_choice_section(table, protocol, "default"))
    assert "| tCURLoRA | 8 |" in lines  # r = 8 at 1e-3 validates best (0.85), beating r = 20 at 1e-3 (0.80)


def test_searched_ranks_are_chosen_on_validation_and_compared_over_common_seeds():
    """tCURLoRA's and LoRA's ranks come from the seed-0 validation Dice of the headline and the ranks curve, never
    from test; the table uses the seeds every method has."""
    base = [0.70, 0.72, 0.74, 0.76]
    records = [_record(m, 0.01, seed, 0.7, base, preset="default") for m in ALL_METHODS for seed in (0, 1, 2)]
    for rank, val, shift in ((2, 0.75, -0.05), (8, 0.80, 0.05), (16, 0.78, 0.20)):  # r 16 tests best, r 8 validates
        records += [{**_record("tcurlora", 0.01, seed, val, [b + shift for b in base], study="ranks",
                               preset="default"), "rank": rank} for seed in ((0, 1) if rank != 8 else (0, 1, 2))]
    records.append({**_record("lora", 0.01, 0, 0.72, [b + 0.01 for b in base], study="ranks", preset="default"),
                    "rank": 4})  # validates better than the headline's r = 1 but has seed 0 only
    lines = "\n".join(curves.rank_choice_section(frame(records), ONE_RATE, "default"))
    assert "| tCURLoRA | 8 |" in lines and "| LoRA | 4 |" in lines
    assert "seeds 0 (" in lines  # LoRA r = 4 has seed 0 only: the common seeds
    row = next(line for line in lines.splitlines() if line.startswith("| tCURLoRA"))
    assert "0.780" in row  # seed 0 of r = 8: 0.73 + 0.05
    assert "tCURLoRA beats LoRA (the best other adapter)" in lines  # the other adapters test 0.73 here
    headline_only = frame([r for r in records if r["study"] == "headline"])
    assert curves.rank_choice_section(headline_only, ONE_RATE, "default") == []


def test_subjects_curve_pairs_each_method_with_decoder_only_and_lora_at_each_size(tmp_path):
    """At every number of training subjects the curve's methods get paired differences over (subject, seed)."""
    base = [0.50, 0.55, 0.60, 0.65]
    shift = {"decoder_only": -0.02, "lora": 0.0, "tcurlora": 0.05, "full": 0.10}
    records = [_record(m, 0.01, 0, 0.7, base, preset="default") for m in shift]  # the rate's seed-0 runs
    for n in (2, 4):
        records += [_record(m, 0.01, seed, 0.7, [b + d + n / 100 for b in base], study="subjects", preset="default",
                            n_train=n) for m, d in shift.items() for seed in (0, 1)]
    lines = curves.section(frame(records), ONE_RATE, "subjects", "default", tmp_path / "s.png", draw=False)
    assert "| 2 | tCURLoRA | +0.070 [+0.070, +0.070] * | +0.050 [+0.050, +0.050] * |" in lines
    assert "| 4 | full fine-tuning | +0.120 [+0.120, +0.120] * | +0.100 [+0.100, +0.100] * |" in lines
    assert "| 4 | LoRA | +0.020 [+0.020, +0.020] * | - |" in lines
    assert not any(line.startswith("| 2 | decoder-only |") for line in lines)
    assert "`python -m tcurseg.compare run subjects --preset default` runs this curve." in lines


# ------------------------------------------------------------------------------------ the report, fabricated
def test_report_says_who_beats_whom(tmp_path):
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.7, 0.9, 24)
    shift = {"decoder_only": 0.0, "full": 0.05, "lora": 0.0, "tcurlora": 0.03}
    records = []
    for method, delta in shift.items():
        lo, hi = TWO_POINT.presets["paper"].rates(method)
        records.append(_record(method, hi, 0, 0.5, list(truth)))
        records += [_record(method, lo, seed, 0.9, list(truth + delta + rng.normal(0, 0.005, 24)))
                    for seed in (0, 1, 2)]
    payload, text = _report(records, TWO_POINT, tmp_path / "results.md")
    summary = payload["paper"]["summary"]
    assert summary[0].startswith("full fine-tuning beats decoder-only: paired Dice difference +0.04")
    assert summary[0].endswith("over 72 (subject, seed) pairs (95% bootstrap CI excludes 0).")
    assert summary[1].startswith("tCURLoRA beats decoder-only")
    assert summary[2].startswith("LoRA does not differ from decoder-only")
    assert summary[3].startswith("tCURLoRA beats LoRA")
    assert "(target <= 0.01)" in summary[-1]
    assert "### CNN preset `default`\n\nNot run yet." in text
    assert "| tCURLoRA | 20 | 0.001 | 100 | 1,000 | " in text
    assert payload["paper"]["contrasts"]["tcurlora"]["lora"]["dice"]["n"] == 72
    answer = text[text.index("## Answer"):text.index("## Protocol")]
    assert "| `paper` | the paper's (CNN encoder path frozen) | 384 (24) | 3 | +0.0" in answer
    assert "| **`paper_zero_head` (primary)** | the paper's, zero head | 768 (48) | - | - | - | - | - | - |" in answer


def test_convergence_counts_runs_still_improving_and_their_late_gain(tmp_path):
    rising = {"val_curve": [[2, 0.5], [4, 0.6], [6, 0.65], [8, 0.7]], "epochs_run": 8,
              "best": {"epoch": 8, "val_dice": 0.7}}
    flat = {"val_curve": [[2, 0.5], [4, 0.6], [6, 0.62], [8, 0.61]], "epochs_run": 8,
            "best": {"epoch": 6, "val_dice": 0.62}}
    assert late_gain(rising) == pytest.approx(0.05)  # 0.7 at epoch 8 minus 0.65 at epoch 6 (3/4 of 8)
    assert late_gain(flat) == pytest.approx(-0.01)
    assert late_gain({"epochs_run": 8}) is None  # a record made before the curves were kept
    records = [{**_record("lora", 1e-2, s, 0.7, [0.7] * 4), **(rising if s else flat)} for s in (0, 1, 2)]
    records += [_record("decoder_only", 1e-2, s, 0.6, [0.6] * 4) for s in (0, 1, 2)]
    records += [{**_record("tcurlora", 1e-2, s, 0.7, [0.7] * 4), **(rising if s == 2 else {})} for s in (0, 1, 2)]
    payload, text = _report(records, ONE_RATE, tmp_path / "results.md")
    assert "| LoRA | 2 of 3 | +0.030 |" in text  # (0.05 + 0.05 - 0.01) / 3
    assert "| decoder-only | 0 of 3 | - |" in text  # best at epoch 3 of 5, no curve kept
    assert "| tCURLoRA | 1 of 3 | +0.050 (seed 2) |" in text  # a mean over the seeds that kept their curve, named
    assert "(still improving when the budget ends): 3 of 9." in " ".join(payload["paper"]["summary"])
    assert "| `paper` | the paper's (CNN encoder path frozen) | 384 (24) | 3 |" in text
    assert "| no (3 of 9 still improving) |" not in text and "| yes (3 of 9 still improving) |" in text


def test_swin_unetr_runs_their_own_experiment_folder_and_table(tmp_path):
    spec = run_spec("headline", "paper", "tcurlora", 11, 0.01, 32, 0, "swin_unetr")
    ov = runs.overrides(ONE_RATE, spec, tmp_path)
    assert ov[0] == "+experiment=demo_swin" and "method.rank=11" in ov
    unetr = {k: v for k, v in run_spec("headline", "paper", "lora", 1, 0.01, 32, 0).items() if k != "model"}
    assert runs.overrides(ONE_RATE, unetr, tmp_path)[0] == "+experiment=compare"
    assert record_path(spec, tmp_path) == tmp_path / "swin_unetr/headline/paper/tcurlora_r11_lr0.01_n32_s0.json"
    assert record_path(unetr, tmp_path) == tmp_path / "headline/paper/lora_r1_lr0.01_n32_s0.json"

    swin_ranks = ONE_RATE.ranks["swin_unetr"]
    records = []
    for method, delta in (("decoder_only", 0.0), ("lora", 0.01), ("tcurlora", 0.02)):
        unetr_record = _record(method, 0.01, 0, 0.5, [0.6 + delta] * 24)
        del unetr_record["model"]  # the first records carry no model
        records.append(unetr_record)
        records.append({**_record(method, 0.01, 0, 0.5, [0.3 + delta] * 24), "model": "swin_unetr",
                        "rank": swin_ranks.get(method)})
    table = frame(records)
    assert set(final_runs(table, ONE_RATE, "headline", "paper", "swin_unetr")["tcurlora"]["rank"]) == {11}
    rows = {m: r["dice"] for m, r in _rows(records, ONE_RATE).items()}
    assert rows == pytest.approx({"decoder_only": 0.6, "lora": 0.61, "tcurlora": 0.62})
    payload, text = _report(records, ONE_RATE, tmp_path / "results.md")
    swin = {r["method"]: r["dice"] for r in payload["swin_unetr_paper"]["rows"]}
    assert swin == pytest.approx({"decoder_only": 0.3, "lora": 0.31, "tcurlora": 0.32})
    assert "## Headline on SwinUNETR" in text
    assert "`python -m tcurseg.compare run headline --preset paper --model swin_unetr` runs this table" in text


def test_swin_unetr_ranks_give_the_stated_adapter_sizes():
    """The demo_swin experiment composes, and the protocol's SwinUNETR ranks give the adapter sizes it states
    (comparable sizes, as for UNETR)."""
    import copy

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from tcurseg.models.networks import build_network
    from tcurseg.peft import apply, trainable_report

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        cfg = compose(config_name="config", overrides=["+experiment=demo_swin"])
        recipe = compose(config_name="config", overrides=[f"+experiment={cfg.pretrain_recipe}"])
    assert cfg.model.name == recipe.model.name == "swin_unetr" and recipe.method.name == "full"
    assert cfg.pretrained == f"{recipe.output_dir}/model_best.pt"
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    base = build_network({**model_cfg, "in_channels": 1, "out_channels": 2})
    sizes = {method: trainable_report(apply(copy.deepcopy(base), {"name": method, "rank": rank,
                                                                   "groups": model_cfg["adapter_groups"]}))["adapter"]
             for method, rank in PROTOCOL.ranks["swin_unetr"].items()}
    assert sizes == {"lora": 5_760, "pissa": 5_760, "dora": 9_000, "curlora": 4_608, "lorapt": 6_516,
                     "tcurlora": 5_808}


def test_curves_are_drawn_for_the_preset_they_were_run_with(tmp_path):
    records = [_record(m, 0.01, 0, 0.7, [0.6] * 4, preset="default") for m in ("lora", "tcurlora")]
    for rank, adapter, dice in ((2, 720, 0.62), (8, 11_520, 0.66)):
        records.append({**_record("tcurlora", 0.01, 0, 0.7, [dice] * 4, study="ranks", preset="default",
                                  adapter=adapter), "rank": rank})
    _, text = _report(records, ONE_RATE, tmp_path / "results.md")
    assert "### Dice vs adapter size (CNN preset `default`)" in text
    assert "| tCURLoRA | 720 | 0.620 | 0.000 | 1 |" in text and "| tCURLoRA | 11,520 | 0.660 | 0.000 | 1 |" in text
    assert ("chosen per method and rank on seed-0 validation (runs at another rate stay out of the curve): "
            "tCURLoRA r = 2: 0.01; tCURLoRA r = 8: 0.01.") in text
    assert (tmp_path / "results_ranks_default.png").stat().st_size > 1000
    assert "### Dice vs training subjects (CNN preset `default`)\n\nNot run yet." in text


# ----------------------------------------------------------------------------- the report, from the committed records
NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")
# Every table of docs/results.md as scripts/compare.py wrote it before the comparison became a package: per table
# (its heading's first 40 characters and first two column names) its rows and a digest of each row's first cell and
# numbers (:func:`_table_digests`). The recipe log's table, pasted in then, is linked now. The cost tables are
# measurements (`scripts/bench_methods.py`, docs/bench_methods*.json), pinned as last measured.
OLD_TABLES = {
    'CNN preset `paper` | method | rank': (8, '2c27fb986649'),
    'CNN preset `paper` | method | Dice vs decoder-only': (8, 'f09f91365856'),
    'CNN preset `paper` | method | seed 0': (8, '7e1dfe4319b2'),
    'CNN preset `paper` | method | best at the last validation': (8, '71a264ebfc25'),
    'CNN preset `paper` | method | rate': (14, 'fdcd6e06562e'),
    'Preset `paper_zero_head`: CNN preset `pa | method | rank': (8, '753c3c53ae4f'),
    'Preset `paper_zero_head`: CNN preset `pa | method | Dice vs decoder-only': (8, '87c68ea6c000'),
    'Preset `paper_zero_head`: CNN preset `pa | method | seed 0': (8, '12d40e957679'),
    'Preset `paper_zero_head`: CNN preset `pa | method | best at the last validation': (8, 'eadf258fe73c'),
    'Preset `paper_zero_head`: CNN preset `pa | method | rate': (17, '3b5c43ec95bf'),
    'CNN preset `default` | method | rank': (8, '7c5b1e361f13'),
    'CNN preset `default` | method | Dice vs decoder-only': (8, '4aaf6ace39bb'),
    'CNN preset `default` | method | seed 0': (8, 'e462e182b0bf'),
    'CNN preset `default` | method | best at the last validation': (8, 'df5a26323de3'),
    'CNN preset `default` | method | rate': (20, '1acf05a196e6'),
    'Preset `default_long`: CNN preset `defau | method | rank': (4, '8e15a300f9e6'),
    'Preset `default_long`: CNN preset `defau | method | Dice vs decoder-only': (4, 'a6e5f0f279a5'),
    'Preset `default_long`: CNN preset `defau | method | seed 0': (4, 'efd60872ca53'),
    'Preset `default_long`: CNN preset `defau | method | best at the last validation': (4, 'a39164c319bd'),
    'Preset `default_long`: CNN preset `defau | method | rate': (6, 'd5b37cc40672'),
    'Preset `default_4x`: CNN preset `default | method | rank': (4, '0e6dd5092053'),
    'Preset `default_4x`: CNN preset `default | method | Dice vs decoder-only': (4, '4139d5e2fa63'),
    'Preset `default_4x`: CNN preset `default | method | seed 0': (4, '081f57e41436'),
    'Preset `default_4x`: CNN preset `default | method | best at the last validation': (4, '601c9819f9e8'),
    'Preset `default_4x`: CNN preset `default | method | rate': (9, 'c7ed0c258f92'),
    'Preset `default_wide`: CNN preset `defau | method | rank': (4, '033f58249489'),
    'Preset `default_wide`: CNN preset `defau | method | Dice vs decoder-only': (4, '7b6fceedeb79'),
    'Preset `default_wide`: CNN preset `defau | method | seed 0': (4, '4b15145bd660'),
    'Preset `default_wide`: CNN preset `defau | method | best at the last validation': (4, '37973005c0f2'),
    'Preset `default_wide`: CNN preset `defau | method | rate': (6, 'edfeb05259ae'),
    "Cost (UNETR-B, the paper's network) | method | adapter params": (8, '885c2ccda986'),
    'Cost (SwinUNETR, feature 48, depths 2/2/ | method | adapter params': (8, 'bc0dfb8da976'),
    'Dice vs training subjects (CNN preset `d | method | training subjects': (20, 'f185a0f43071'),
    'Dice vs training subjects (CNN preset `d | training subjects | method': (15, '9119a95523d7'),
    'Dice vs adapter size (CNN preset `defaul | method | encoder adapter parameters': (8, '2f6f189a3e75'),
    'tCURLoRA and LoRA at the rank chosen on  | method | rank': (8, '878a5f60e2c9'),
}


def _table_digests(text: str) -> dict[str, tuple[int, str]]:
    """{table: (rows, digest of every row's first cell and the numbers of its other cells)} of the Markdown tables
    that start a line."""
    tables: dict[str, list[list[str]]] = {}
    heading, key = "", None
    for line in text.splitlines():
        if line.startswith("#"):
            heading, key = line.lstrip("# ").strip(), None
        elif line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if key is None:
                key = heading[:40] + " | " + " | ".join(cells[:2])
                tables[key] = []
            elif not set(line) <= set("|-: "):
                tables[key].append(cells)
        else:
            key = None
    return {key: (len(rows), hashlib.sha256("\n".join(
        r[0] + ":" + " ".join(n for c in r[1:] for n in NUMBER.findall(c)) for r in rows).encode()).hexdigest()[:12])
        for key, rows in tables.items()}


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory):
    """The report rebuilt from the committed records (the curves' PNGs not redrawn)."""
    path = tmp_path_factory.mktemp("report") / "results.md"
    payload = build(load_records(PROTOCOL.records), PROTOCOL, path, plots=False)
    return path.read_text(), payload


def test_the_rebuilt_report_keeps_every_number_of_the_old_tables(rebuilt):
    text, _ = rebuilt
    new = _table_digests(text)
    changed = {key: (old, new.get(key)) for key, old in OLD_TABLES.items() if new.get(key) != old}
    assert not changed, changed


def test_the_committed_report_is_the_one_the_records_make(rebuilt):
    text, payload = rebuilt
    assert text == (REPO / "docs" / "results.md").read_text(), "run: python -m tcurseg.compare report"
    assert json.loads(json.dumps(payload, default=str)) == json.loads((REPO / "docs" / "results.json").read_text())


def test_the_report_opens_with_the_answer(rebuilt):
    text, _ = rebuilt
    first_screen = text.splitlines()[:22]
    assert first_screen[4] == "## Answer: does tCURLoRA beat LoRA?"
    primary = next(line for line in first_screen if line.startswith("| **`paper_zero_head` (primary)**"))
    assert "| 768 (48) | 5 | **-0.022 [-0.042, -0.002]** * | +0.081 [+0.055, +0.109] * | " in primary
    assert "-0.158 [-0.184, -0.134] * | 0.0257 | no (38 of 40 still improving) |" in primary
    assert any(line.startswith("| `default` | ours (whole CNN path trains) | 384 (24) | 7 | +0.019 [+0.012, +0.028] *")
               for line in first_screen)
    sentences = next(line for line in first_screen if line.startswith("In the paper's setting"))
    assert "tCURLoRA trails LoRA (-0.022 [-0.042, -0.002] Dice)" in sentences and "{" not in sentences
    assert "This is a small synthetic benchmark" in text[:text.index("## Protocol")]


def test_the_report_links_the_long_reading_the_recipe_and_the_void_runs(rebuilt):
    text, _ = rebuilt
    for link in ("(compare/reading.md)", "(recipe.md)", "(compare_void/README.md)"):
        assert link in text
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert len(headings) == len(set(headings))  # no heading twice
    assert "## Reading the tables" not in text and "## Recipe" not in text and "## Void" not in text
    assert "scripts/compare.py" not in text


def test_every_command_in_the_report_runs_exactly_the_runs_of_its_table(monkeypatch):
    """Each `python -m tcurseg.compare run ...` beside a table, run against the committed records, asks for exactly
    the records its table reads: none missing (nothing would train), none more."""
    records = load_records(PROTOCOL.records)
    asked = []

    def recorded(protocol, spec, conf=None):
        path = record_path(spec, protocol.records)
        assert path.is_file(), f"{path} would be trained"
        asked.append(path)
        return json.loads(path.read_text())

    monkeypatch.setattr(runs, "ensure_run", recorded)
    table = frame(records)
    paths = [record_path(r, PROTOCOL.records) for r in records]
    every = table.drop_duplicates("run")
    for preset in PROTOCOL.presets:
        asked.clear()
        runs.headline(PROTOCOL, preset)
        read = set(every[(every.study == "headline") & (every.preset == preset) & (every.seed == 0)].run)
        for rows in final_runs(table, PROTOCOL, "headline", preset).values():
            read |= set(rows.run)
        assert set(asked) == {paths[i] for i in read}, preset
    for study, command in (("subjects", runs.subjects_curve), ("ranks", runs.ranks_curve)):
        asked.clear()
        command(PROTOCOL, PROTOCOL.curves.preset)
        read = set(every[(every.study == study) & (every.preset == PROTOCOL.curves.preset)].run)
        points = curves.curve_runs(table, PROTOCOL, study, PROTOCOL.curves.preset, curves.X[study][0])
        shown = set().union(*(set(rows.run) for rows in points.values()))
        if study == "ranks":  # each rank's rate is chosen on its own seed-0 grid runs
            shown |= set(every[(every.study == study) & (every.seed == 0)].run)
        assert {p for p in asked if f"/{study}/" in p.as_posix()} == {paths[i] for i in read & shown}, study
