"""What the end-to-end tests share: the tiny model and data overrides, running an entry point in a subprocess, and
reading its outputs. The two test files (``test_e2e.py``, ``test_e2e_stages.py``) can run in parallel workers."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
N_SUBJECTS = 5
RANK = 8
MODEL = ["model.img_size=[32,32,32]", "model.hidden_size=48", "model.mlp_dim=96", "model.num_heads=4",
         "model.feature_size=8"]
TIMEOUT = 300


def subprocess_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("TCURSEG_DEBUG", "HYDRA_FULL_ERROR", "RANK",
                                                             "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def module_cmd(module: str, *overrides: str) -> list[str]:
    return [sys.executable, "-m", f"tcurseg.{module}", *overrides]


def run_module(module: str, *overrides: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(module_cmd(module, *overrides), cwd=REPO, env=subprocess_env(), capture_output=True,
                          text=True, timeout=TIMEOUT)
    if ok:
        output = f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        assert proc.returncode == 0, f"{module} failed ({proc.returncode}):\n{output}"
    return proc


def data_args(data_dir: Path) -> list[str]:
    return ["data=synth_hippo", f"data.synth.out_dir={data_dir}", f"data.data_list={data_dir}/datalist.json",
            f"data.synth.n_subjects={N_SUBJECTS}", "data.synth.splits=[0.6,0.2,0.2]"]


def train_args(data_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["+experiment=demo", *MODEL, *data_args(data_dir), "pretrained=none", "pretrain_recipe=null",
            "train.epochs=2", "train.val_every=1", "train.ckpt_every=1", f"output_dir={out}", "eval.overlays=1",
            "device=cpu", *extra]


def read_metrics(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def dice_by_case(path: Path) -> dict[tuple[str, str], float]:
    return {(r["case"], r["region"]): float(r["dice"]) for r in read_metrics(path)}


def read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(path))
    return np.asarray(img.dataobj), np.asarray(img.affine, dtype=np.float64)


def assert_clean_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    """Exit code != 0, no traceback, one ``tcurseg: error:`` line on stderr naming ``words``; returns that line."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("tcurseg: error:")]
    assert len(errors) == 1, proc.stderr
    assert lines[0] == errors[0], proc.stderr  # nothing printed before the error line
    for word in words:
        assert word in errors[0], (word, errors[0])
    return errors[0]


def run_script(name: str, *args: str | Path) -> None:
    proc = subprocess.run([sys.executable, f"scripts/{name}", *map(str, args)], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"


STAGE = [*MODEL, "train.epochs=1", "train.val_every=1", "train.ckpt_every=1", "train.batch_size=1",
         "train.num_workers=0", "data.num_samples=1", "device=cpu", "eval.overlays=0"]


def make_data(root: Path) -> Path:
    """The tiny synthetic hippocampus set under ``root/hippo`` (in-process: the same call as the entry points)."""
    from tcurseg.data import synth

    out = root / "hippo"
    spacing, box = synth.PRESETS["synth_hippo"]
    synth.ensure_generated("synth_hippo", out, N_SUBJECTS, 0, spacing, box)
    splits = json.loads((out / "datalist.json").read_text())
    assert [len(splits[s]) for s in ("training", "validation", "test")] == [3, 1, 1]
    return out
