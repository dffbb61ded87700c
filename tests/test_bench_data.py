"""``scripts/bench_data.py --quick`` runs the benchmark's code on tiny fabricated cases, so that the script cannot rot
(the numbers are not checked: scripts are never timed in tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROWS = ["uncached", "cached", "cached, affine on every crop", "cached, no affine"]


def test_bench_data_quick(tmp_path):
    out = tmp_path / "bench_data.json"
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_data.py"), "--quick", "--out", str(out)],
                         capture_output=True, text=True, check=False, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    assert list(result["rows"]) == ROWS and result["quick"] and result["threads"] == 1
    for row in result["rows"].values():
        assert row["s_per_crop"] > 0 and row["crops_per_s"] > 0 and row["workers_needed"] >= 1
    assert result["roi"] == [32, 32, 32] and len(result["cached_image_shape"]) == 4 and result["cache_mib_per_case"] > 0
    assert all(f"| {name} |" in run.stdout for name in ROWS) and f"wrote {out}" in run.stdout
