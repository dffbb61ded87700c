"""What the end-to-end tests share: the tiny model and data overrides, running an entry point in a subprocess,
reading its outputs, and the one tiny trained run (:func:`make_trained_run`) that ``test_e2e.py`` and
``test_e2e_flows.py`` use through the session fixture ``trained_run`` of ``conftest.py``. The e2e files can run in
parallel pytest workers.

Every run pins what ``auto`` would choose from the machine (data-loading workers, cache rate), so that the same code
path runs on 2 CPUs and on 64; ``test_e2e.py``'s resume test runs one worker process on purpose."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
N_SUBJECTS = 5
RANK = 8
MODEL = ["model.img_size=[32,32,32]", "model.hidden_size=48", "model.mlp_dim=96", "model.num_heads=4",
         "model.feature_size=8"]
MACHINE = ["train.num_workers=0", "train.cache_rate=1.0", "device=cpu"]
"""What ``auto`` would take from the machine, pinned (a test that needs workers sets them)."""
TIMEOUT = 300
TRAINED_EPOCHS = 10
"""The shared run: 10 epochs of 2 steps (2 cases x 4 crops) take the tiny UNETR from Dice 0.05 (what foreground
everywhere scores) to about 0.35 on the test case; validation and checkpoints at epochs 5 and 10."""


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
            *MACHINE, *extra]


def read_metrics(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def dice_by_case(path: Path) -> dict[tuple[str, str], float]:
    return {(r["case"], r["region"]): float(r["dice"]) for r in read_metrics(path)}


def read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(path))
    return np.asarray(img.dataobj), np.asarray(img.affine, dtype=np.float64)


def assert_clean_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    """Exit code != 0, no traceback, exactly one ``tcurseg: error:`` line on stderr, naming ``words``; returns that
    line. Other lines (a library's import-time warning, say) are not the program's error and may come and go."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("tcurseg: error:")]
    assert len(errors) == 1, proc.stderr
    for word in words:
        assert word in errors[0], (word, errors[0])
    return errors[0]


def run_script(name: str, *args: str | Path) -> None:
    proc = subprocess.run([sys.executable, f"scripts/{name}", *map(str, args)], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"


STAGE = [*MODEL, "train.epochs=1", "train.val_every=1", "train.ckpt_every=1", "train.batch_size=1",
         "data.num_samples=1", "eval.overlays=0", *MACHINE]


def make_data(root: Path) -> Path:
    """The tiny synthetic hippocampus set under ``root/hippo`` (in-process: the same call as the entry points)."""
    from tcurseg.data import synth

    out = root / "hippo"
    spacing, box = synth.PRESETS["synth_hippo"]
    synth.ensure_generated("synth_hippo", out, N_SUBJECTS, 0, spacing, box)
    splits = json.loads((out / "datalist.json").read_text())
    assert [len(splits[s]) for s in ("training", "validation", "test")] == [3, 1, 1]
    return out


def foreground_dice(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(Dice of ``pred > 0`` against ``truth > 0``, Dice of predicting foreground everywhere): the second is what a
    trivial model scores, the floor a trained one must clear."""
    p, t = pred > 0, truth > 0
    return 2.0 * (p & t).sum() / (p.sum() + t.sum()), 2.0 * t.sum() / (t.size + t.sum())


@dataclass(frozen=True)
class TrainedRun:
    """The shared tiny run: its data, folder, the base weights it fine-tuned, and the training overrides."""

    data_dir: Path
    run_dir: Path
    base: Path
    overrides: tuple[str, ...]

    def args(self, out: Path, *extra: str) -> list[str]:
        """The run's training overrides with another output folder (the same training configuration)."""
        return [*self.overrides, f"output_dir={out}", *extra]


def trained_run_overrides(data_dir: Path, base: Path) -> tuple[str, ...]:
    return ("+experiment=demo", *MODEL, *data_args(data_dir), f"pretrained={base}", "pretrain_recipe=null",
            f"train.epochs={TRAINED_EPOCHS}", "train.val_every=5", "train.ckpt_every=5", "data.num_samples=4",
            "eval.overlays=1", *MACHINE)


def make_trained_run(root: Path) -> TrainedRun:
    """Under ``root``: the tiny data set, a base model file (the tiny UNETR at seed 0, MONAI's layout: what
    ``pretrained=`` loads, so that the adapter route of evaluate can rebuild the base), and one tCURLoRA run of
    :data:`TRAINED_EPOCHS` epochs through ``python -m tcurseg.train`` with its test evaluation (mirroring, the two
    largest components: the demo's). Already there: returned as it is."""
    import torch

    from tcurseg.models import build_unetr

    data_dir, run_dir, base = root / "hippo", root / "run", root / "base_unetr.pt"
    run = TrainedRun(data_dir, run_dir, base, trained_run_overrides(data_dir, base))
    if (root / "complete").is_file():
        return run
    make_data(root)
    torch.manual_seed(0)
    torch.save(build_unetr({"img_size": [32, 32, 32], "hidden_size": 48, "mlp_dim": 96, "num_heads": 4,
                            "feature_size": 8, "in_channels": 1, "out_channels": 2}).state_dict(), base)
    run_module("train", *run.args(run_dir))
    (root / "complete").write_text("")
    return run
