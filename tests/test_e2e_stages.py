"""The paper's two stages and the 4-channel BraTS task end to end, on tiny data laid out as users download it
(subprocesses, real entry points). The data grids are the synthetic generator's (3 mm tumour, 1.5 mm hippocampus
subjects), so the experiments resample at those spacings (``data.spacing``) instead of upsampling to 1 mm.

  * stage 1: ``python -m tcurseg.pretrain +experiment=brats_pretrain`` on a BraTS 2021 tree
    (``scripts/convert_brats.py --modalities t1``: one channel, binary whole tumour);
  * stage 2: ``python -m tcurseg.train +experiment=eadc pretrained=<stage 1 model_best.pt>`` on the authors'
    hippocampus layout (``scripts/convert_hippocampus.py``): the whole encoder of stage 1 loaded and frozen, the
    adapter cores and the CNN path trained;
  * ``python -m tcurseg.train +experiment=brats`` on the same tree with its 4 modalities and 3 regions (TC, WT, ET),
    its test evaluation, and ``python -m tcurseg.evaluate`` of that run reproducing it.

The adapter route of evaluate (base + adapter file) runs on the session's trained run, in ``test_e2e_flows.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from e2e_support import (
    N_SUBJECTS,
    STAGE,
    dice_by_case,
    make_data,
    read_metrics,
    read_nifti,
    run_module,
    run_script,
)

pytestmark = pytest.mark.e2e

MODALITIES = ("flair", "t1", "t1ce", "t2")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("e2e_stages"))


@pytest.fixture(scope="module")
def brats(data_dir) -> Path:
    """A BraTS 2021 tree made from synthetic tumour subjects (each modality a copy of the one image; labels 1/2/4)."""
    from tcurseg.data import synth

    root = data_dir.parent
    spacing, box = synth.PRESETS["synth_tumor"]
    lists = json.loads(synth.ensure_generated("synth_tumor", root / "tumor", N_SUBJECTS, 0, spacing, box).read_text())
    tree = root / "BraTS2021_Training_Data"
    for i, entry in enumerate(e for split in ("training", "validation", "test") for e in lists[split]):
        case = tree / f"BraTS2021_{i:05d}"
        case.mkdir(parents=True)
        for modality in MODALITIES:
            shutil.copy(root / "tumor" / entry["image"], case / f"{case.name}_{modality}.nii.gz")
        shutil.copy(root / "tumor" / entry["label"], case / f"{case.name}_seg.nii.gz")
    return tree


@pytest.fixture(scope="module")
def pretrained(brats) -> Path:
    """Stage 1: ``tcurseg.pretrain +experiment=brats_pretrain`` (full training, 1 epoch) on the tree converted with
    ``--modalities t1``. Returns its ``model_best.pt``."""
    root = brats.parent
    run_script("convert_brats.py", "--root", brats, "--out", root / "brats_t1.json", "--modalities", "t1",
               "--val-frac", "0.2", "--test-frac", "0.2")
    out = root / "brats_pretrain"
    run_module("pretrain", "+experiment=brats_pretrain", f"data.data_list={root / 'brats_t1.json'}",
               f"data.data_root={brats}", "data.spacing=[3.0,3.0,3.0]", f"output_dir={out}", "evaluate_after=false",
               *STAGE)
    state = torch.load(out / "model_best.pt", weights_only=True)
    assert state["config"]["method"]["name"] == "full" and state["config"]["data"]["in_channels"] == 1
    return out / "model_best.pt"


def test_two_stages(data_dir, pretrained):
    # Stage 2 on the authors' hippocampus layout (sub{i}/sub{i}_img|mask.nii.gz + train/valid/test.txt).
    eadc = data_dir.parent / "eadc"
    shutil.copytree(data_dir, eadc, ignore=shutil.ignore_patterns("datalist.json"))
    lists = json.loads((data_dir / "datalist.json").read_text())
    for split, name in (("training", "train.txt"), ("validation", "valid.txt"), ("test", "test.txt")):
        (eadc / name).write_text("".join(f"{e['id']}\n" for e in lists[split]))
    run_script("convert_hippocampus.py", "--root", eadc, "--out", eadc.parent / "eadc.json")
    ft = eadc.parent / "eadc_tcurlora"
    run_module("train", "+experiment=eadc", f"pretrained={pretrained}", f"data.data_list={eadc.parent / 'eadc.json'}",
               f"data.data_root={eadc}", "data.spacing=[1.5,1.5,1.5]", f"output_dir={ft}", "evaluate_after=false",
               *STAGE)
    base = torch.load(pretrained, weights_only=True)["model"]
    encoder = [k for k in base if k.startswith("vit.") and "norm_cross_attn" not in k]
    assert len(encoder) > 100
    assert f"encoder: {len(encoder)}/{len(encoder)} tensors" in (ft / "train.log").read_text()
    tuned = torch.load(ft / "model.pt", weights_only=True)["model"]
    assert all(torch.equal(tuned[k], base[k]) for k in encoder)  # loaded from stage 1 and kept frozen
    cores = [k for k in tuned if k.startswith("adapter_groups.") and k.endswith("dU.real")]
    assert len(cores) == 3 and all(tuned[k].abs().max() > 0 for k in cores)  # trained from their zero start
    cnn = [k for k in base if k.startswith("decoder") and k.endswith(".weight")]
    assert cnn and all(not torch.equal(tuned[k], base[k]) for k in cnn)  # the CNN path trained


def test_brats_four_modalities_three_regions(brats, tmp_path):
    """``+experiment=brats``: 4 input channels in the data list's order, labels 0/1/2/4 as classes, evaluation of TC,
    WT and ET per case on each scan's own grid; evaluate of the run gives the same metrics and predictions."""
    listed = tmp_path / "brats.json"
    run_script("convert_brats.py", "--root", brats, "--out", listed, "--val-frac", "0.2", "--test-frac", "0.2")
    test_entries = json.loads(listed.read_text())["test"]
    assert [len(e["image"]) for e in test_entries] == [4] * len(test_entries)
    out = tmp_path / "brats_run"
    run_module("train", "+experiment=brats", "pretrained=none", f"data.data_list={listed}", f"data.data_root={brats}",
               "data.spacing=[3.0,3.0,3.0]", f"output_dir={out}", *STAGE, "train.epochs=2", "eval.overlays=1")
    model = torch.load(out / "model.pt", weights_only=True)
    assert model["config"]["data"]["in_channels"] == 4
    assert model["model"]["vit.patch_embedding.patch_embeddings.weight"].shape[1] == 4
    assert model["model"]["out.conv.conv.weight"].shape[0] == 4  # background and labels 1, 2, 4

    rows = read_metrics(out / "eval" / "metrics.csv")
    cases = [e["id"] for e in test_entries]
    assert [(r["case"], r["region"]) for r in rows] == [(c, region) for c in cases for region in ("TC", "WT", "ET")]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["test"]) == {"TC", "WT", "ET"}
    case = cases[0]
    pred, affine = read_nifti(out / "eval" / "predictions" / f"{case}.nii.gz")
    image, image_affine = read_nifti(brats / case / f"{case}_t1.nii.gz")
    assert pred.shape == image.shape and set(np.unique(pred).tolist()) <= {0, 1, 2, 4}
    assert (pred > 0).sum() > 0  # foreground predicted, so that the comparison below compares something
    np.testing.assert_array_equal(affine, image_affine)
    assert (out / "eval" / "overlays" / f"{case}.png").is_file()

    run_module("evaluate", f"run={out}", "device=cpu", "eval.overlays=0")
    evaluated = dice_by_case(out / "eval" / "test-best" / "metrics.csv")
    trained = dice_by_case(out / "eval" / "metrics.csv")
    assert evaluated.keys() == trained.keys() and len(trained) == 3 * len(cases)
    for key, value in trained.items():
        assert evaluated[key] == pytest.approx(value, abs=1e-6)
    np.testing.assert_array_equal(read_nifti(out / "eval" / "test-best" / "predictions" / f"{case}.nii.gz")[0], pred)
