"""scripts/gpu_check.py at tiny sizes on the CPU (``--device cpu --quick``): the same code the GPU machine runs, so
that the script cannot rot between the rare runs on a GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from e2e_support import subprocess_env

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_every_check_on_the_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--device", "cpu", "--quick",
                           "--out", str(out)], cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    checks = report["checks"]
    assert report["ok"] and set(checks) == {"versions", "train_bf16", "train_fp16", "torchrun", "methods",
                                            "host_syncs", "tcur_paths", "precision", "inference", "data"}
    assert checks["train_bf16"]["resumed"] and 0.0 <= checks["train_bf16"]["test_dice"] <= 1.0
    assert checks["torchrun"]["backend"] == "gloo"
    rows = checks["methods"]["rows"]
    assert len(rows) == 8 and rows["lora"]["step_vs_lora"] == 1.0 and rows["full"]["step_vs_full"] == 1.0
    assert all(r["step_ms"] > 0 for r in rows.values())
    assert checks["precision"]["bf16"]["argmax_agreement"] >= 0.99
    assert checks["inference"]["plain"]["finite"] and checks["inference"]["mirrored_lr"]["finite"]
    assert "all checks passed" in proc.stdout


def test_gpu_check_refuses_cuda_where_there_is_none(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--out", str(tmp_path / "x.json")],
                          cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "CUDA is not available" in proc.stderr


def test_a_failed_command_brings_its_cause_and_output_into_the_report(tmp_path):
    """Only the report comes back from a GPU machine: the cause is the last line that says something (not Hydra's
    hint nor torchrun's banner), and the end of the output is kept."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    script = ("import sys; print('RuntimeError: Skimage.measure required.', file=sys.stderr); "
              "print('Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.', file=sys.stderr); "
              "print('=' * 60, file=sys.stderr); sys.exit(1)")

    def failing(device, sizes, workdir):
        gpu_check._run([sys.executable, "-c", script], workdir / "failing.log")
        return {}

    result = gpu_check.Check("failing", failing)(__import__("torch").device("cpu"), {}, tmp_path)
    assert not result["ok"]
    assert result["error"] == "SubprocessFailed: exit 1: RuntimeError: Skimage.measure required."
    assert result["output"].splitlines()[0] == "RuntimeError: Skimage.measure required."
    assert "failing" in gpu_check.summary_lines({"checks": {"failing": result}})[2]
