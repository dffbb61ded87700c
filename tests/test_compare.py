"""The protocol and report logic of scripts/compare.py on fabricated run records (no training)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("compare_script", REPO / "scripts" / "compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paired_bootstrap_known_cases(compare):
    const = compare.paired_bootstrap([0.1] * 30)
    assert const["mean"] == pytest.approx(0.1) and const["lo"] == pytest.approx(0.1)
    assert const["hi"] == pytest.approx(0.1) and const["excludes_zero"] and const["n"] == 30
    sym = compare.paired_bootstrap([-1.0, 1.0] * 50)
    assert sym["mean"] == pytest.approx(0.0) and sym["lo"] < 0 < sym["hi"] and not sym["excludes_zero"]
    # normal differences: the CI is mean +- 1.96 sd / sqrt(n) (here 0.0098), to bootstrap accuracy
    d = np.random.default_rng(1).normal(0.05, 0.1, 400)
    ci = compare.paired_bootstrap(d)
    half = 1.96 * d.std(ddof=1) / math.sqrt(d.size)
    assert (ci["hi"] - ci["lo"]) / 2 == pytest.approx(half, rel=0.08)
    assert (ci["lo"] + ci["hi"]) / 2 == pytest.approx(d.mean(), abs=0.002) and ci["excludes_zero"]
    assert compare.paired_bootstrap([math.nan])["n"] == 0


def test_paired_differences_use_common_pairs(compare):
    a = {("s1", 0): {"dice": 0.9}, ("s2", 0): {"dice": 0.8}, ("s3", 0): {"dice": 0.7}}
    b = {("s1", 0): {"dice": 0.85}, ("s2", 0): {"dice": 0.8}}
    assert compare.paired_differences(a, b) == pytest.approx([0.05, 0.0])


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


TWO_POINT_GRID = {"adapter": (1e-3, 1e-2), "base": (3e-4, 1e-3)}


def test_rate_chosen_on_validation_never_on_test(compare, monkeypatch):
    monkeypatch.setattr(compare, "GRID", TWO_POINT_GRID)
    base = [0.80, 0.82, 0.84, 0.86]
    records = []
    for method in compare.ALL_METHODS:
        lo, hi = compare.GRID[compare.rate_key(method)]
        # the smaller rate validates better but tests worse: it must be the one chosen
        records.append(_record(compare, method, lo, 0, 0.9, base))
        records.append(_record(compare, method, hi, 0, 0.8, [b + 0.1 for b in base]))
        for seed in (1, 2):
            records.append(_record(compare, method, lo, seed, 0.9, base))
    runs = compare.final_runs(records, "headline", "paper")
    assert set(runs) == set(compare.ALL_METHODS)
    for method, rs in runs.items():
        assert {r["lr"] for r in rs} == {compare.GRID[compare.rate_key(method)][0]}
        assert sorted(r["seed"] for r in rs) == [0, 1, 2]
    rows = {r["method"]: r for r in compare.method_rows(runs)}
    assert rows["lora"]["dice"] == pytest.approx(0.83) and rows["lora"]["n"] == 12


def test_report_says_who_beats_whom(compare, tmp_path, monkeypatch):
    monkeypatch.setattr(compare, "GRID", TWO_POINT_GRID)
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.7, 0.9, 24)
    shift = {"decoder_only": 0.0, "full": 0.05, "lora": 0.0, "tcurlora": 0.03}
    records = []
    for method, delta in shift.items():
        lo, hi = compare.GRID[compare.rate_key(method)]
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
