"""The protocol and report logic of scripts/compare.py on fabricated run records (no training)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from scripts_support import load_script

REPO = Path(__file__).resolve().parents[1]


COMPARE = load_script("compare")


@pytest.fixture(scope="module")
def compare():
    return COMPARE


def _grid(values, seeds=(0,)):
    """{(case, seed): value} from one list of values per seed."""
    return {(f"s{i}", seed): v for seed, vs in zip(seeds, values) for i, v in enumerate(vs)}


def test_two_way_bootstrap_known_cases(compare):
    const = compare.two_way_bootstrap(_grid([[0.1] * 30]))
    assert const["mean"] == pytest.approx(0.1) and const["lo"] == pytest.approx(0.1)
    assert const["hi"] == pytest.approx(0.1) and const["excludes_zero"] and const["n"] == 30
    sym = compare.two_way_bootstrap(_grid([[-1.0, 1.0] * 50]))
    assert sym["mean"] == pytest.approx(0.0) and sym["lo"] < 0 < sym["hi"] and not sym["excludes_zero"]
    # one seed, normal differences: the CI is mean +- 1.96 sd / sqrt(n) (here 0.0098), to bootstrap accuracy
    d = np.random.default_rng(1).normal(0.05, 0.1, 400)
    ci = compare.two_way_bootstrap(_grid([d]))
    half = 1.96 * d.std(ddof=1) / math.sqrt(d.size)
    assert (ci["hi"] - ci["lo"]) / 2 == pytest.approx(half, rel=0.08)
    assert (ci["lo"] + ci["hi"]) / 2 == pytest.approx(d.mean(), abs=0.002) and ci["excludes_zero"]
    assert compare.two_way_bootstrap(_grid([[math.nan]]))["n"] == 0


def test_two_way_bootstrap_counts_the_seed_as_a_source_of_variance(compare):
    """24 subjects x 3 seeds whose difference is mostly a per-seed offset (+0.06, -0.02, +0.02), as when one training
    run is luckier than another: resampling the 72 pairs as independent would call the +0.02 mean a win (CI about
    +-0.009); resampling seeds as well as subjects must not."""
    rng = np.random.default_rng(0)
    offsets = (0.06, -0.02, 0.02)
    ci = compare.two_way_bootstrap(_grid([off + rng.normal(0, 0.01, 24) for off in offsets], seeds=(0, 1, 2)))
    assert ci["mean"] == pytest.approx(0.02, abs=0.005) and ci["n"] == 72
    assert not ci["excludes_zero"] and ci["lo"] < -0.01 and ci["hi"] > 0.05


def test_paired_differences_use_common_pairs(compare):
    a = {("s1", 0): {"dice": 0.9}, ("s2", 0): {"dice": 0.8}, ("s3", 0): {"dice": 0.7}}
    b = {("s1", 0): {"dice": 0.85}, ("s2", 0): {"dice": 0.8}}
    assert compare.paired_differences(a, b) == pytest.approx({("s1", 0): 0.05, ("s2", 0): 0.0})


def test_every_method_gets_the_same_budget(compare, tmp_path):
    lora = compare.overrides("lora", "paper", 1, 0.01, 32, 2, tmp_path)
    full = compare.overrides("full", "paper", None, 0.001, 32, 2, tmp_path)
    budget = [o for o in lora if o.startswith(("train.", "+experiment", "seed"))]
    assert budget == [o for o in full if o.startswith(("train.", "+experiment", "seed"))]
    assert "optim.adapter_lr=0.01" in lora and "method.cnn=paper" in lora and "method.rank=1" in lora
    assert "optim.lr=0.001" in full and not any(o.startswith(("method.cnn", "method.rank")) for o in full)
    decoder = compare.overrides("decoder_only", "paper", None, 0.001, 32, 2, tmp_path)
    assert "method.cnn=paper" in decoder  # the same CNN path as the adapters of the preset
    few = compare.overrides("lora", "paper", 1, 0.01, 4, 0, tmp_path)  # 4 subjects: 8x the epochs, same steps
    assert f"train.epochs={compare.EPOCHS * 8}" in few and f"train.val_every={compare.VAL_EVERY * 8}" in few
    assert "train.subjects=4" in few


def _record(compare, method, lr, seed, val, test, study="headline", preset="paper", n_train=32, adapter=100):
    cases = {f"sub{i}": {"dice": t, "hd95": 10 * (1 - t)} for i, t in enumerate(test)}
    return {**compare.run_spec(study, preset, method, compare.RANKS.get(method), lr, n_train, seed),
            "params": {"adapter": adapter, "decoder": 1000, "trainable": adapter + 1000},
            "best": {"epoch": 3, "val_dice": val}, "epochs_run": 5, "stopped_early": True, "step_s": 0.4,
            "peak_memory_mb": 900.0, "wall_s": 60.0, "cases": cases}


PRESETS = tuple(COMPARE.PRESETS)
TWO_POINT_GRID = {p: {"adapter": (1e-3, 1e-2), "base": (3e-4, 1e-3)} for p in PRESETS}
ONE_RATE = {p: {"adapter": (1e-2,), "base": (1e-2,)} for p in PRESETS}


def test_rate_chosen_on_validation_never_on_test(compare, monkeypatch):
    monkeypatch.setattr(compare, "GRID", TWO_POINT_GRID)
    base = [0.80, 0.82, 0.84, 0.86]
    records = []
    for method in compare.ALL_METHODS:
        lo, hi = compare.rate_grid(method, "paper")
        # the smaller rate validates better but tests worse: it must be the one chosen
        records.append(_record(compare, method, lo, 0, 0.9, base))
        records.append(_record(compare, method, hi, 0, 0.8, [b + 0.1 for b in base]))
        for seed in (1, 2):
            records.append(_record(compare, method, lo, seed, 0.9, base))
    runs = compare.final_runs(records, "headline", "paper")
    assert set(runs) == set(compare.ALL_METHODS)
    for method, rs in runs.items():
        assert {r["lr"] for r in rs} == {compare.rate_grid(method, "paper")[0]}
        assert sorted(r["seed"] for r in rs) == [0, 1, 2]
    rows = {r["method"]: r for r in compare.method_rows(runs)}
    assert rows["lora"]["dice"] == pytest.approx(0.83) and rows["lora"]["n"] == 12


def test_rate_table_marks_the_chosen_rate_and_runs_outside_the_grid(compare, monkeypatch):
    """A run at a rate outside the grid (an edge check) is listed as such and never chosen, even when it validates
    best."""
    monkeypatch.setattr(compare, "GRID", TWO_POINT_GRID)
    base = [0.80, 0.82, 0.84, 0.86]
    records = [_record(compare, m, lr, s, 0.8, base) for m in ("decoder_only", "lora") for s in (0, 1)
               for lr in compare.rate_grid(m, "paper")]
    records.append(_record(compare, "lora", 1e-4, 0, 0.95, base))  # validates best, but is not a grid point
    lines, _ = compare.headline_section(records, "paper")
    assert "| LoRA | 0.0001 | 0.9500 | outside the grid (edge check) |" in lines
    assert "| LoRA | 0.001 | 0.8000 | chosen |" in lines and "| LoRA | 0.01 | 0.8000 |  |" in lines


def test_each_preset_searches_its_own_grid(compare, monkeypatch):
    monkeypatch.setattr(compare, "GRID", {"paper": {"adapter": (1e-2,), "base": (1e-2,)},
                                          "default": {"adapter": (1e-3, 1e-2), "base": (1e-2,)}})
    base = [0.80, 0.82, 0.84, 0.86]
    records = [_record(compare, m, 1e-2, 0, 0.8, base, preset=p)
               for p in ("paper", "default") for m in ("lora", "full")]
    assert set(compare.final_runs(records, "headline", "paper")) == {"lora", "full"}
    # `default` has not run its adapters at 1e-3 yet: LoRA has no chosen rate, so it is left out, not run at 1e-2
    assert set(compare.final_runs(records, "headline", "default")) == {"full"}
    records.append(_record(compare, "lora", 1e-3, 0, 0.9, base, preset="default"))
    assert [r["lr"] for r in compare.final_runs(records, "headline", "default")["lora"]] == [1e-3]


def test_report_says_who_beats_whom(compare, tmp_path, monkeypatch):
    monkeypatch.setattr(compare, "GRID", TWO_POINT_GRID)
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.7, 0.9, 24)
    shift = {"decoder_only": 0.0, "full": 0.05, "lora": 0.0, "tcurlora": 0.03}
    records = []
    for method, delta in shift.items():
        lo, hi = compare.rate_grid(method, "paper")
        records.append(_record(compare, method, hi, 0, 0.5, list(truth)))
        for seed in (0, 1, 2):
            noise = rng.normal(0, 0.005, 24)
            records.append(_record(compare, method, lo, seed, 0.9, list(truth + delta + noise)))
    payload = compare.write_report(records, tmp_path / "results.md")
    text = (tmp_path / "results.md").read_text()
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


def test_swin_unetr_runs_their_own_experiment_folder_and_table(compare, tmp_path, monkeypatch):
    monkeypatch.setattr(compare, "GRID", ONE_RATE)
    ov = compare.overrides("tcurlora", "paper", 11, 0.01, 32, 0, tmp_path, "swin_unetr")
    assert ov[0] == "+experiment=demo_swin" and "method.rank=11" in ov
    assert compare.overrides("tcurlora", "paper", 20, 0.01, 32, 0, tmp_path)[0] == "+experiment=compare"
    spec = compare.run_spec("headline", "paper", "tcurlora", 11, 0.01, 32, 0, "swin_unetr")
    assert compare.record_path(spec, tmp_path) == tmp_path / "swin_unetr/headline/paper/tcurlora_r11_lr0.01_n32_s0.json"
    unetr = {k: v for k, v in compare.run_spec("headline", "paper", "lora", 1, 0.01, 32, 0).items() if k != "model"}
    assert compare.record_path(unetr, tmp_path) == tmp_path / "headline/paper/lora_r1_lr0.01_n32_s0.json"

    swin_ranks = compare.MODELS["swin_unetr"][1]
    records = []
    for method, delta in (("decoder_only", 0.0), ("lora", 0.01), ("tcurlora", 0.02)):
        records.append(_record(compare, method, 0.01, 0, 0.5, [0.6 + delta] * 24))  # UNETR (no model key)
        records.append({**_record(compare, method, 0.01, 0, 0.5, [0.3 + delta] * 24), "model": "swin_unetr",
                        "rank": swin_ranks.get(method)})
    assert {r["rank"] for r in compare.final_runs(records, "headline", "paper", "swin_unetr")["tcurlora"]} == {11}
    rows = {r["method"]: r["dice"] for r in compare.method_rows(compare.final_runs(records, "headline", "paper"))}
    assert rows == pytest.approx({"decoder_only": 0.6, "lora": 0.61, "tcurlora": 0.62})
    payload = compare.write_report(records, tmp_path / "results.md")
    swin = {r["method"]: r["dice"] for r in payload["swin_unetr_paper"]["rows"]}
    assert swin == pytest.approx({"decoder_only": 0.3, "lora": 0.31, "tcurlora": 0.32})
    assert "## Headline on SwinUNETR" in (tmp_path / "results.md").read_text()


def test_swin_unetr_ranks_give_the_stated_adapter_sizes(compare):
    """The demo_swin experiment composes, and the ranks of ``MODELS['swin_unetr']`` give the adapter sizes the
    script states (comparable sizes, as for UNETR)."""
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
             for method, rank in compare.MODELS["swin_unetr"][1].items()}
    assert sizes == {"lora": 5_760, "pissa": 5_760, "dora": 9_000, "curlora": 4_608, "lorapt": 6_516,
                     "tcurlora": 5_808}


def test_the_hand_written_reading_goes_into_the_report(compare, tmp_path, monkeypatch):
    records = [_record(compare, "decoder_only", 0.01, 0, 0.5, [0.6] * 4)]
    monkeypatch.setattr(compare, "RECORDS", tmp_path)
    compare.write_report(records, tmp_path / "results.md")
    assert "## Reading the tables" not in (tmp_path / "results.md").read_text()
    (tmp_path / "reading.md").write_text("## Reading the tables\n\nSeed 0 starts late for every method.\n")
    compare.write_report(records, tmp_path / "results.md")
    text = (tmp_path / "results.md").read_text()
    assert "## Reading the tables\n\nSeed 0 starts late for every method.\n" in text
    assert text.index("## Reading the tables") > text.index("### CNN preset `default`")


def test_full_fine_tuning_is_not_run_twice_for_the_two_presets(compare, tmp_path):
    """Full fine-tuning ignores the CNN preset, so its `default` run is its `paper` run, and a curve point with the
    headline's settings is the headline run: the record is copied, not trained again."""
    made = {}
    for method, rank, dice in (("full", None, 0.8), ("lora", 1, 0.6)):
        spec = compare.run_spec("headline", "paper", method, rank, 0.01, 32, 0)
        ov = compare.overrides(method, "paper", rank, 0.01, 32, 0, tmp_path / "work" / "paper")
        made[method] = record = {**_record(compare, method, 0.01, 0, 0.7, [dice] * 4), "overrides": ov,
                                 "fingerprint": compare.protocol_fingerprint(ov)}
        path = compare.record_path(spec, tmp_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))
    full = compare.run_spec("headline", "default", "full", None, 0.01, 32, 0)
    copied = compare.ensure_run(full, tmp_path, tmp_path / "work")  # would train if nothing matched
    assert copied["preset"] == "default" and copied["cases"] == made["full"]["cases"]
    assert compare.record_path(full, tmp_path).is_file()
    ranks = compare.run_spec("ranks", "paper", "lora", 1, 0.01, 32, 0)  # a curve point that is the headline run
    point = compare.ensure_run(ranks, tmp_path, tmp_path / "work")
    assert point["study"] == "ranks" and point["cases"] == made["lora"]["cases"]
    lora_ov = compare.overrides("lora", "default", 1, 0.01, 32, 0, tmp_path / "work" / "default")
    assert compare.identical_run(compare.run_spec("headline", "default", "lora", 1, 0.01, 32, 0),
                                 compare.protocol_fingerprint(lora_ov), tmp_path) is None  # method.cnn differs


def test_a_record_made_under_another_protocol_is_refused(compare, tmp_path, monkeypatch):
    """The fingerprint covers the resolved experiment and pretraining configs, not only the overrides: editing
    conf/experiment/compare.yaml or compare_pretrain.yaml makes the old records stale, and ensure_run refuses them;
    the demo's own pretraining (demo_pretrain.yaml) may change without touching them."""
    ov = compare.overrides("lora", "paper", 1, 0.01, 32, 0, tmp_path / "a")
    fingerprint = compare.protocol_fingerprint(ov)
    assert len(fingerprint) == 16
    assert compare.protocol_fingerprint(compare.overrides("lora", "paper", 1, 0.01, 32, 0, tmp_path / "b")) == fingerprint
    assert compare.protocol_fingerprint([*ov, "augment.affine_prob=0"]) != fingerprint
    assert compare.protocol_fingerprint([*ov, "eval.overlap=0.25"]) == fingerprint  # evaluation only

    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    monkeypatch.setattr(compare, "CONF", conf)
    assert compare.protocol_fingerprint(ov) == fingerprint
    experiment = conf / "experiment" / "compare.yaml"
    experiment.write_text(experiment.read_text().replace("warmup_epochs: 1", "warmup_epochs: 2"))
    edited = compare.protocol_fingerprint(ov)
    assert edited != fingerprint
    demo_pretrain = conf / "experiment" / "demo_pretrain.yaml"
    demo_pretrain.write_text(demo_pretrain.read_text().replace("epochs: 30", "epochs: 31"))
    assert compare.protocol_fingerprint(ov) == edited
    pretrain = conf / "experiment" / "compare_pretrain.yaml"
    pretrain.write_text(pretrain.read_text().replace("epochs: 30", "epochs: 31"))
    assert compare.protocol_fingerprint(ov) not in (fingerprint, edited)

    spec = compare.run_spec("headline", "paper", "lora", 1, 0.01, 32, 0)
    path = compare.record_path(spec, tmp_path / "records")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({**_record(compare, "lora", 0.01, 0, 0.7, [0.6] * 4), "overrides": ov,
                                "fingerprint": fingerprint}))
    with pytest.raises(SystemExit, match="recorded under another protocol .same overrides, but the experiment's config"):
        compare.ensure_run(spec, tmp_path / "records", tmp_path / "work")


def test_curves_are_drawn_for_the_preset_they_were_run_with(compare, tmp_path, monkeypatch):
    monkeypatch.setattr(compare, "GRID", ONE_RATE)
    records = [_record(compare, m, 0.01, 0, 0.7, [0.6] * 4, preset="default") for m in ("lora", "tcurlora")]
    for rank, adapter, dice in ((2, 720, 0.62), (8, 11_520, 0.66)):
        records.append({**_record(compare, "tcurlora", 0.01, 0, 0.7, [dice] * 4, study="ranks", preset="default",
                                  adapter=adapter), "rank": rank})
    compare.write_report(records, tmp_path / "results.md")
    text = (tmp_path / "results.md").read_text()
    assert "### Dice vs adapter size (CNN preset `default`)" in text
    assert "| tCURLoRA | 720 | 0.620 | 0.000 | 1 |" in text and "| tCURLoRA | 11,520 | 0.660 | 0.000 | 1 |" in text
    assert ("chosen per method and rank on seed-0 validation (runs at another rate stay out of the curve): "
            "tCURLoRA r = 2: 0.01; tCURLoRA r = 8: 0.01.") in text
    assert (tmp_path / "results_ranks_default.png").stat().st_size > 1000
    assert "### Dice vs training subjects (CNN preset `paper`)\n\nNot run yet." in text


def test_subjects_curve_pairs_each_method_with_decoder_only_and_lora_at_each_size(compare, monkeypatch):
    """At every number of training subjects the curve's methods get paired differences over (subject, seed)."""
    monkeypatch.setattr(compare, "GRID", ONE_RATE)
    base = [0.50, 0.55, 0.60, 0.65]
    shift = {"decoder_only": -0.02, "lora": 0.0, "tcurlora": 0.05, "full": 0.10}
    records = [_record(compare, m, 0.01, 0, 0.7, base, preset="default") for m in shift]  # the rate's seed-0 runs
    for n in (2, 4):
        records += [_record(compare, m, 0.01, seed, 0.7, [b + d + n / 100 for b in base], study="subjects",
                            preset="default", n_train=n) for m, d in shift.items() for seed in (0, 1)]
    lines = compare.subjects_contrasts(records, "default")
    assert "| 2 | tCURLoRA | +0.070 [+0.070, +0.070] * | +0.050 [+0.050, +0.050] * |" in lines
    assert "| 4 | full fine-tuning | +0.120 [+0.120, +0.120] * | +0.100 [+0.100, +0.100] * |" in lines
    assert "| 4 | LoRA | +0.020 [+0.020, +0.020] * | - |" in lines
    assert not any("| decoder-only |" in line for line in lines)


def test_searched_ranks_are_chosen_on_validation_and_compared_over_common_seeds(compare, monkeypatch):
    """tCURLoRA's and LoRA's ranks come from the seed-0 validation Dice of the headline and the ranks curve, never
    from test; the table uses the seeds every method has."""
    monkeypatch.setattr(compare, "GRID", ONE_RATE)
    base = [0.70, 0.72, 0.74, 0.76]
    records = []
    for method in compare.ALL_METHODS:
        for seed in (0, 1, 2):
            records.append(_record(compare, method, 0.01, seed, 0.7, base, preset="default"))
    for rank, val, shift in ((2, 0.75, -0.05), (8, 0.80, 0.05), (16, 0.78, 0.20)):  # r 16 tests best, r 8 validates
        for seed in (0, 1) if rank != 8 else (0, 1, 2):
            rec = _record(compare, "tcurlora", 0.01, seed, val, [b + shift for b in base], study="ranks",
                          preset="default")
            records.append({**rec, "rank": rank})
    rec = _record(compare, "lora", 0.01, 0, 0.72, [b + 0.01 for b in base], study="ranks", preset="default")
    records.append({**rec, "rank": 4})  # validates better than the headline's r = 1 but has seed 0 only
    lines = "\n".join(compare.rank_choice_section(records, "default"))
    assert "| tCURLoRA | 8 |" in lines and "| LoRA | 4 |" in lines
    assert "seeds 0" in lines and "seeds 0, 1" not in lines  # LoRA r = 4 has seed 0 only: the common seeds
    row = next(line for line in lines.splitlines() if line.startswith("| tCURLoRA"))
    assert "0.780" in row  # seed 0 of r = 8: 0.73 + 0.05
    assert "tCURLoRA beats LoRA (the best other adapter)" in lines  # the other adapters test 0.73 here
    assert compare.rank_choice_section([r for r in records if r["study"] == "headline"], "default") == []


def test_every_rank_gets_its_own_rate_chosen_on_validation(compare, monkeypatch):
    """With a two-point adapter grid each rank of the ranks curve runs at the rate its seed-0 run validates best at,
    not at the headline rank's rate; a rank whose grid has not run is left out of the curve."""
    monkeypatch.setattr(compare, "GRID", {p: {"adapter": (1e-3, 1e-2), "base": (1e-2,)} for p in PRESETS})
    base = [0.70, 0.72, 0.74, 0.76]
    records = [_record(compare, m, 1e-2, s, 0.7, base, preset="default") for m in ("full", "decoder_only")
               for s in (0, 1)]
    for lr, val in ((1e-3, 0.80), (1e-2, 0.70)):  # the headline rank (r = 20) validates best at 1e-3
        records += [_record(compare, "tcurlora", lr, s, val, base, preset="default") for s in (0, 1)]
    for rank, rates in ((2, {1e-3: (0.60, 0.0), 1e-2: (0.75, 0.10)}),     # r = 2 validates best at 1e-2
                        (8, {1e-3: (0.85, 0.05), 1e-2: (0.70, 0.20)})):   # r = 8 at 1e-3 (and tests worse there)
        for lr, (val, shift) in rates.items():
            for seed in (0, 1):
                rec = _record(compare, "tcurlora", lr, seed, val, [b + shift for b in base], study="ranks",
                              preset="default", adapter=rank * 100)
                records.append({**rec, "rank": rank})
    records.append({**_record(compare, "tcurlora", 1e-2, 0, 0.9, base, study="ranks", preset="default",
                              adapter=1600), "rank": 16})  # r = 16: the 1e-3 point of its grid has not run
    for lr, val in ((1e-3, 0.6), (1e-2, 0.7)):
        records += [_record(compare, "lora", lr, s, val, base, preset="default") for s in (0, 1)]
        records += [{**_record(compare, "lora", lr, s, val, base, study="ranks", preset="default"), "rank": 4}
                    for s in (0, 1)]
    assert compare.cell_rate(records, "default", "tcurlora", 2) == 1e-2
    assert compare.cell_rate(records, "default", "tcurlora", 8) == 1e-3
    assert compare.cell_rate(records, "default", "tcurlora", 16) is None
    points = {x: dice for x, dice, _, _ in compare.curve_points(records, "ranks", "default", "adapter")["tcurlora"]}
    assert points == pytest.approx({200: 0.83, 800: 0.78})
    lines = "\n".join(compare.rank_choice_section(records, "default"))
    assert "Not chosen yet: the rate grid of tCURLoRA r = 16 has not run at every rate." in lines
    records = [r for r in records if r["rank"] != 16]
    lines = "\n".join(compare.rank_choice_section(records, "default"))
    assert "| tCURLoRA | 8 |" in lines  # r = 8 at 1e-3 validates best (0.85), beating r = 20 at 1e-3 (0.80)


def test_the_zero_head_preset_trains_longer_and_chooses_its_rates_on_its_own_seed_0(compare, monkeypatch, tmp_path):
    """``paper_zero_head``: the `paper` CNN path, a zero head, twice the epochs (validated as often as the others),
    and each method at the rate its own seed-0 grid validates best at: `paper`'s choice plays no part."""
    monkeypatch.setattr(compare, "GRID", TWO_POINT_GRID)
    ov = compare.overrides("full", "paper_zero_head", None, 0.01, 32, 1, tmp_path)
    assert "head_init=zero" in ov and f"train.epochs={2 * compare.EPOCHS}" in ov
    assert f"train.val_every={2 * compare.VAL_EVERY}" in ov
    assert "method.cnn=paper" in compare.overrides("lora", "paper_zero_head", 1, 0.01, 32, 1, tmp_path)
    assert "head_init=zero" not in compare.overrides("lora", "paper", 1, 0.01, 32, 1, tmp_path)
    base = [0.80, 0.82, 0.84, 0.86]
    records = [_record(compare, "lora", lr, 0, val, base) for lr, val in ((1e-3, 0.7), (1e-2, 0.8))]
    records += [_record(compare, "lora", lr, s, val, base, preset="paper_zero_head")
                for lr, val in ((1e-2, 0.6), (1e-3, 0.9)) for s in (0, 1)]
    assert compare.final_runs(records, "headline", "paper")["lora"][0]["lr"] == 1e-2
    runs = compare.final_runs(records, "headline", "paper_zero_head")
    assert [(r["lr"], r["preset"]) for r in runs["lora"]] == [(1e-3, "paper_zero_head")] * 2
    assert set(runs) == {"lora"}  # the methods it has not run are left out, not shown as empty rows
    lines, _ = compare.headline_section(records, "paper_zero_head")
    assert "| LoRA | 0.001 | 0.9000 | chosen |" in lines and "| LoRA | 0.01 | 0.6000 |  |" in lines


def test_convergence_counts_runs_still_improving_and_their_late_gain(compare, tmp_path, monkeypatch):
    monkeypatch.setattr(compare, "GRID", ONE_RATE)
    rising = {"val_curve": [[2, 0.5], [4, 0.6], [6, 0.65], [8, 0.7]], "epochs_run": 8, "best": {"epoch": 8,
                                                                                                 "val_dice": 0.7}}
    flat = {"val_curve": [[2, 0.5], [4, 0.6], [6, 0.62], [8, 0.61]], "epochs_run": 8, "best": {"epoch": 6,
                                                                                                "val_dice": 0.62}}
    assert compare.late_gain(rising) == pytest.approx(0.05)  # 0.7 at epoch 8 minus 0.65 at epoch 6 (3/4 of 8)
    assert compare.late_gain(flat) == pytest.approx(-0.01)
    assert compare.late_gain({"epochs_run": 8}) is None  # a record made before the curves were kept
    records = [{**_record(compare, "lora", 1e-2, s, 0.7, [0.7] * 4), **(rising if s else flat)} for s in (0, 1, 2)]
    records += [_record(compare, "decoder_only", 1e-2, s, 0.6, [0.6] * 4) for s in (0, 1, 2)]
    records += [{**_record(compare, "tcurlora", 1e-2, s, 0.7, [0.7] * 4), **(rising if s == 2 else {})}
                for s in (0, 1, 2)]
    payload = compare.write_report(records, tmp_path / "results.md")
    text = (tmp_path / "results.md").read_text()
    assert "| LoRA | 2 of 3 | +0.030 |" in text  # (0.05 + 0.05 - 0.01) / 3
    assert "| decoder-only | 0 of 3 | - |" in text  # best at epoch 3 of 5, no curve kept
    assert "| tCURLoRA | 1 of 3 | +0.050 (seed 2) |" in text  # a mean over the seeds that kept their curve, named
    assert "(still improving when the budget ends): 3 of 9." in " ".join(payload["paper"]["summary"])


def test_a_record_keeps_the_validation_curve_of_its_run(compare, tmp_path):
    history = [{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 0.9, "val_dice": 0.4}, {"epoch": 3, "loss": 0.8},
               {"epoch": 4, "loss": 0.7, "val_dice": 0.55}]
    (tmp_path / "eval").mkdir()
    (tmp_path / "summary.json").write_text(json.dumps({"params": {"adapter": 1}, "best": {"epoch": 4, "val_dice": 0.55},
                                                       "epochs_run": 4, "history": history}))
    (tmp_path / "eval" / "metrics.csv").write_text("case,region,dice,hd95\nsub0,hippocampus,0.7,3.0\n")
    record = compare.record_from_run(tmp_path, compare.run_spec("headline", "paper", "lora", 1, 1e-3, 32, 0), 9.0)
    assert record["val_curve"] == [[2, 0.4], [4, 0.55]]
    assert compare.late_gain(record) == pytest.approx(0.15)  # epoch 4 minus epoch 3's last validation (epoch 2)
    assert record["cases"] == {"sub0": {"dice": 0.7, "hd95": 3.0}}


def test_the_long_default_preset_doubles_the_steps_of_default_and_nothing_else(compare, tmp_path):
    long, short = (compare.overrides("lora", p, 1, 1e-3, 32, 0, tmp_path) for p in ("default_long", "default"))
    assert sorted(set(long) ^ set(short)) == sorted([f"train.epochs={2 * compare.EPOCHS}",
                                                     f"train.epochs={compare.EPOCHS}",
                                                     f"train.val_every={2 * compare.VAL_EVERY}",
                                                     f"train.val_every={compare.VAL_EVERY}",
                                                     f"train.ckpt_every={2 * compare.VAL_EVERY}",
                                                     f"train.ckpt_every={compare.VAL_EVERY}"])
    assert compare.PRESETS["default_long"].methods == compare.CURVE_METHODS
    assert compare.preset_title("default") == "CNN preset `default`"  # its own seeds change which runs, not how
    assert compare.preset_title("default_long") == ("Preset `default_long`: CNN preset `default`, 48 epochs "
                                                    "(validation every 4)")


def test_headline_runs_each_presets_own_seeds_for_every_method(compare, monkeypatch):
    ran = []
    monkeypatch.setattr(compare, "chosen_rate", lambda method, preset, rank, model="unetr": 1e-3)
    monkeypatch.setattr(compare, "ensure_run", lambda spec, *a: ran.append((spec["preset"], spec["method"], spec["seed"])))
    compare.headline("default_long")
    compare.headline("default", methods=["lora"])
    compare.headline("paper", methods=["lora"])
    assert sorted(ran) == sorted([("default_long", m, s) for m in compare.CURVE_METHODS for s in range(5)]
                                 + [("default", "lora", s) for s in range(7)]
                                 + [("paper", "lora", s) for s in compare.SEEDS])
    assert compare.SEEDS == (0, 1, 2)


def test_headline_trains_every_method_of_a_seed_before_the_next_seed(compare, monkeypatch):
    ran = []
    monkeypatch.setattr(compare, "chosen_rate", lambda method, preset, rank, model="unetr": 1e-3)
    monkeypatch.setattr(compare, "ensure_run", lambda spec, *a: ran.append((spec["seed"], spec["method"])))
    compare.headline("default_4x")
    assert ran == [(s, m) for s in (0, 1, 2) for m in ("full", "decoder_only", "lora", "tcurlora")]
    assert compare.PRESETS["default_4x"].val_every == 4 * compare.VAL_EVERY
    assert compare.rate_grid("tcurlora", "default_4x") == (3e-4, 1e-3)


def test_default_wide_trains_the_demos_network_and_says_so(compare, tmp_path):
    ov = compare.overrides("tcurlora", "default_wide", 20, 1e-3, compare.FULL_SUBJECTS, 1, tmp_path)
    assert {"model.feature_size=16", "model.img_size=[32,32,32]", "method.cnn=default", "train.epochs=24"} <= set(ov)
    assert compare.preset_title("default_wide") == ("Preset `default_wide`: CNN preset `default`, "
                                                    "`model.feature_size=16`, `model.img_size=[32,32,32]`, 24 epochs "
                                                    "(validation every 2)")
    assert compare.PRESETS["default_wide"].methods == compare.CURVE_METHODS
    assert compare.rate_grid("lora", "default_wide") == (1e-3, 1e-2)
    assert compare.protocol_fingerprint(ov) != compare.protocol_fingerprint(
        compare.overrides("tcurlora", "default", 20, 1e-3, compare.FULL_SUBJECTS, 1, tmp_path))
