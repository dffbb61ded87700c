"""The paper's workflow, one command per stage, on tiny data laid out as users download it:
stage 1 ``python -m tcurseg.pretrain +experiment=brats_pretrain`` on a BraTS 2021 tree (converted with
``scripts/convert_brats.py --modalities t1``: one channel, binary whole tumour), stage 2
``python -m tcurseg.train +experiment=eadc pretrained=<stage 1 model_best.pt>`` on the authors' hippocampus layout
(converted with ``scripts/convert_hippocampus.py``). Stage 2 must load the whole encoder of stage 1 and keep it
frozen under tCURLoRA."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tcurseg.data import synth

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
N_SUBJECTS = 5
TINY = ["model.img_size=[32,32,32]", "model.hidden_size=48", "model.mlp_dim=96", "model.num_heads=4",
        "model.feature_size=8", "train.epochs=1", "train.val_every=1", "train.ckpt_every=1", "train.batch_size=1",
        "train.num_workers=0", "data.num_samples=1", "device=cpu", "eval.overlays=0"]


def _run(*cmd: str | Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("TCURSEG_DEBUG", "RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, *map(str, cmd)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"{cmd[:3]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def _brats_tree(tmp: Path) -> Path:
    """BraTS2021_XXXXX/BraTS2021_XXXXX_{flair,t1,t1ce,t2,seg}.nii.gz from synthetic tumour subjects (labels 1/2/4)."""
    spacing, box = synth.PRESETS["synth_tumor"]
    data_list = synth.ensure_generated("synth_tumor", tmp / "synth_tumor", N_SUBJECTS, 0, spacing, box)
    lists = json.loads(data_list.read_text())
    root = tmp / "BraTS2021_Training_Data"
    for i, entry in enumerate(e for split in ("training", "validation", "test") for e in lists[split]):
        case = root / f"BraTS2021_{i:05d}"
        case.mkdir(parents=True)
        for modality in ("flair", "t1", "t1ce", "t2"):
            shutil.copy(tmp / "synth_tumor" / entry["image"], case / f"{case.name}_{modality}.nii.gz")
        shutil.copy(tmp / "synth_tumor" / entry["label"], case / f"{case.name}_seg.nii.gz")
    return root


def _eadc_tree(tmp: Path) -> Path:
    """The authors' hippocampus layout: sub{i}/sub{i}_img.nii.gz, sub{i}_mask.nii.gz, train/valid/test.txt."""
    spacing, box = synth.PRESETS["synth_hippo"]
    synth.ensure_generated("synth_hippo", tmp / "eadc", N_SUBJECTS, 0, spacing, box, splits=(0.6, 0.2, 0.2))
    lists = json.loads((tmp / "eadc" / "datalist.json").read_text())
    for split, name in (("training", "train.txt"), ("validation", "valid.txt"), ("test", "test.txt")):
        (tmp / "eadc" / name).write_text("".join(f"{e['id']}\n" for e in lists[split]))
    (tmp / "eadc" / "datalist.json").unlink()
    return tmp / "eadc"


def test_pretrain_on_brats_then_fine_tune_on_eadc(tmp_path):
    brats = _brats_tree(tmp_path)
    _run("scripts/convert_brats.py", "--root", brats, "--out", tmp_path / "brats_t1.json", "--modalities", "t1",
         "--val-frac", "0.2", "--test-frac", "0.2")
    assert len(json.loads((tmp_path / "brats_t1.json").read_text())["training"][0]["image"]) == 1
    stage1 = tmp_path / "brats_pretrain"
    _run("-m", "tcurseg.pretrain", "+experiment=brats_pretrain", f"data.data_list={tmp_path / 'brats_t1.json'}",
         f"data.data_root={brats}", f"output_dir={stage1}", "evaluate_after=false", *TINY)
    pretrained = stage1 / "model_best.pt"
    state1 = torch.load(pretrained, weights_only=True)
    assert state1["config"]["method"]["name"] == "full" and state1["config"]["data"]["in_channels"] == 1

    eadc = _eadc_tree(tmp_path)
    _run("scripts/convert_hippocampus.py", "--root", eadc, "--out", tmp_path / "eadc.json")
    stage2 = tmp_path / "eadc_tcurlora"
    log = _run("-m", "tcurseg.train", "+experiment=eadc", f"pretrained={pretrained}",
               f"data.data_list={tmp_path / 'eadc.json'}", f"data.data_root={eadc}", f"output_dir={stage2}", *TINY)
    encoder = [k for k in state1["model"] if k.startswith("vit.") and "norm_cross_attn" not in k]
    assert f"encoder: {len(encoder)}/{len(encoder)} tensors" in (stage2 / "train.log").read_text() + log
    state2 = torch.load(stage2 / "model.pt", weights_only=True)
    assert all(torch.equal(state2["model"][k], state1["model"][k]) for k in encoder)  # frozen, from stage 1
    assert any(k.endswith("dU.real") for k in state2["model"])
    summary = json.loads((stage2 / "summary.json").read_text())
    assert summary["method"] == "tcurlora" and 0.0 <= summary["test"]["hippocampus"]["dice_mean"] <= 1.0
