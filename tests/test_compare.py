"""The report logic of scripts/compare.py on fake run summaries (no training)."""

from __future__ import annotations

import importlib.util
import json
import math
import statistics
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("compare_script", REPO / "scripts" / "compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# per method: (adapter params, rank, per-seed Dice of the single test region, HD95)
FAKE = {
    "decoder_only": (0, None, [0.70, 0.72, 0.68], [5.0, 4.0, 6.0]),
    "lora": (27648, 1, [0.60, 0.62, 0.58], [7.0, 7.5, 6.5]),
    "tcurlora": (28800, 20, [0.71, 0.73, 0.69], [4.5, 4.0, 5.0]),
}
DECODER = 840562


def _fake_run(path: Path, method: str, seed: int, dice: float, hd95: float, adapter: int, rank: int | None) -> None:
    path.mkdir(parents=True)
    summary = {
        "method": method,
        "params": {"method": method, "adapter": adapter, "decoder": DECODER, "trainable": adapter + DECODER,
                   "total": 5_000_000},
        "epochs": 4, "step_s": 0.5 + seed * 0.1, "peak_memory_mb": 1000.0 + seed,
        "test": {"hippocampus": {"dice_mean": dice, "dice_std": 0.05, "hd95_mean": hd95, "hd95_std": 1.0,
                                 "n_cases": 3, "n_empty_pred": 0, "n_empty_truth": 0}},
    }
    (path / "summary.json").write_text(json.dumps(summary))
    (path / "compare.json").write_text(json.dumps({"rank": rank, "wall_s": 60.0}))
    (path / "adapter.safetensors").write_bytes(b"\0" * (2048 * (1 + adapter // 10000)))


@pytest.fixture()
def out(tmp_path, compare):
    for method, (adapter, rank, dices, hds) in FAKE.items():
        for seed, (dice, hd) in enumerate(zip(dices, hds)):
            _fake_run(compare.run_dir(tmp_path, method, seed), method, seed, dice, hd, adapter, rank)
    return tmp_path


def test_overrides_are_the_same_code_path(compare, tmp_path):
    ov = compare.run_overrides("demo", "lora", 2, tmp_path, 1, 5, ["train.val_every=5"])
    assert ov == ["+experiment=demo", "method=lora", "seed=2", f"output_dir={tmp_path}/lora/seed2", "method.rank=1",
                  "train.epochs=5", "train.val_every=5"]
    assert "method.rank" not in " ".join(compare.run_overrides("demo", "full", 0, tmp_path, None, None, []))


def test_rows_mean_std(compare, out):
    records = compare.collect_runs(out, ["full", "decoder_only", "lora", "tcurlora"], [0, 1, 2])
    assert len(records) == 9  # "full" has no runs: skipped, not an error
    rows = compare.aggregate(records, ["decoder_only", "lora", "tcurlora"])
    assert [r["method"] for r in rows] == ["decoder_only", "lora", "tcurlora"]
    t = rows[2]
    assert t["rank"] == 20 and t["seeds"] == [0, 1, 2]
    assert (t["adapter_params"], t["decoder_params"], t["trainable_params"]) == (28800, DECODER, 28800 + DECODER)
    assert t["dice_mean"] == pytest.approx(0.71)
    assert t["dice_std"] == pytest.approx(statistics.stdev([0.71, 0.73, 0.69]))  # sample std over seeds = 0.02
    assert t["dice_std"] == pytest.approx(0.02)
    assert t["hd95_mean"] == pytest.approx(4.5) and t["hd95_std"] == pytest.approx(0.5)
    assert t["step_s"] == pytest.approx(0.6)  # median over seeds
    assert t["peak_memory_mb"] == pytest.approx(1002.0)  # max over seeds
    assert t["adapter_kb"] == pytest.approx(6.0)
    assert t["wall_s"] == pytest.approx(180.0)
    assert rows[0]["rank"] is None


def test_honesty_sentences(compare, out):
    rows = compare.aggregate(compare.collect_runs(out, list(FAKE), [0, 1, 2]), list(FAKE))
    assert compare.compare_sentence(rows, "tcurlora", "decoder_only") == (
        "tCURLoRA Dice 0.710 ± 0.020 vs decoder-only 0.700 ± 0.020 (+0.010, within one std over seeds: "
        "no clear difference).")
    lora = compare.compare_sentence(rows, "tcurlora", "lora")
    assert lora.startswith("tCURLoRA Dice 0.710 ± 0.020 vs LoRA 0.600 ± 0.020 (+0.110, better by more than one std")
    worse = compare.compare_sentence(rows, "lora", "decoder_only")
    assert "(-0.100, worse by more than one std" in worse
    assert "no result for DoRA" in compare.compare_sentence(rows, "tcurlora", "dora")
    single = compare.aggregate(compare.collect_runs(out, list(FAKE), [0]), list(FAKE))
    assert "one seed only" in compare.compare_sentence(single, "tcurlora", "decoder_only")


def test_report_files(compare, out):
    meta = {"experiment": "demo", "command": "python scripts/compare.py --epochs 4",
            "report_command": "python scripts/compare.py --epochs 4 --report-only",
            "machine": {"cpu": "Fake CPU", "cpu_count": 2, "torch_threads": 2, "torch": "2.x", "cuda": None},
            "seeds": [0, 1, 2]}
    records = compare.collect_runs(out, list(FAKE), [0, 1, 2])
    payload = compare.write_report(out, records, list(FAKE), meta)
    text = (out / "results.md").read_text()
    assert "`python scripts/compare.py --epochs 4`" in text and "Fake CPU" in text
    assert "Total wall time of the runs: 9.0 min (9 runs" in text
    assert "tCURLoRA r = 20" in text and "LoRA r = 1" in text
    assert "| tCURLoRA | 20 | 28,800 | 840,562 | 869,362 | 0.710 ± 0.020 | 4.50 ± 0.50 |" in text
    assert "| 0/9 | 0,1,2 |" in text and "Caution" not in text
    assert "| decoder-only | - | 0 | 840,562 | 840,562 | 0.700 ± 0.020 |" in text
    assert "- tCURLoRA Dice 0.710 ± 0.020 vs decoder-only 0.700 ± 0.020 (+0.010, within one std" in text
    assert "Highest mean Dice: tCURLoRA" in text
    assert (out / "results.png").stat().st_size > 1000
    saved = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in saved["rows"]] == ["decoder_only", "lora", "tcurlora"]
    assert len(saved["runs"]) == 9 and saved["sentences"] == payload["sentences"]


def test_caution_when_nothing_learnt(compare, tmp_path):
    for seed, dice in enumerate([0.1, 0.0, 0.2]):
        _fake_run(compare.run_dir(tmp_path, "decoder_only", seed), "decoder_only", seed, dice, 100.0, 0, None)
    meta = {"experiment": "demo", "command": "c", "report_command": "r", "seeds": [0, 1, 2],
            "machine": {"cpu": "x", "cpu_count": 2, "torch_threads": 2, "torch": "2.x", "cuda": None}}
    payload = compare.write_report(tmp_path, compare.collect_runs(tmp_path, ["decoder_only"], [0, 1, 2]),
                                   ["decoder_only"], meta)
    assert any(s.startswith("Caution: no method reaches a mean Dice of 0.5") for s in payload["sentences"])


def test_report_only_cli(compare, out, capsys):
    compare.main(["--methods", "lora", "tcurlora", "--seeds", "0", "1", "2", "--out", str(out), "--report-only"])
    text = (out / "results.md").read_text()
    assert "| decoder-only |" in text  # always included
    assert "--report-only" in text
    assert math.isclose(json.loads((out / "results.json").read_text())["rows"][0]["dice_mean"], 0.70)
