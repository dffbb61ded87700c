"""The paper's two stages end to end, on tiny data laid out as users download it (subprocesses, real entry points).

  * stage 1: ``python -m tcurseg.pretrain +experiment=brats_pretrain`` on a BraTS 2021 tree
    (``scripts/convert_brats.py --modalities t1``: one channel, binary whole tumour);
  * stage 2: ``python -m tcurseg.train +experiment=eadc pretrained=<stage 1 model_best.pt>`` on the authors'
    hippocampus layout (``scripts/convert_hippocampus.py``): the whole encoder of stage 1 loaded and frozen;
  * the adapter route of evaluate (base + adapter file): with the stage-1 base it gives the stage-2 run's Dice; on a
    random base (which evaluate cannot rebuild) the adapter file is refused in one clear "different base" line.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from e2e_support import (
    MODEL,
    N_SUBJECTS,
    STAGE,
    assert_clean_error,
    data_args,
    dice_by_case,
    make_data,
    run_module,
    run_script,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("e2e_stages"))


@pytest.fixture(scope="module")
def pretrained(data_dir) -> Path:
    """Stage 1: ``tcurseg.pretrain +experiment=brats_pretrain`` (full training, 1 epoch) on a BraTS 2021 tree made
    from synthetic tumour subjects (each modality a copy of the one image; labels 1/2/4), converted with
    ``--modalities t1``. Returns its ``model_best.pt``."""
    from tcurseg.data import synth

    root = data_dir.parent
    spacing, box = synth.PRESETS["synth_tumor"]
    lists = json.loads(synth.ensure_generated("synth_tumor", root / "tumor", N_SUBJECTS, 0, spacing, box).read_text())
    brats = root / "BraTS2021_Training_Data"
    for i, entry in enumerate(e for split in ("training", "validation", "test") for e in lists[split]):
        case = brats / f"BraTS2021_{i:05d}"
        case.mkdir(parents=True)
        for modality in ("flair", "t1", "t1ce", "t2"):
            shutil.copy(root / "tumor" / entry["image"], case / f"{case.name}_{modality}.nii.gz")
        shutil.copy(root / "tumor" / entry["label"], case / f"{case.name}_seg.nii.gz")
    run_script("convert_brats.py", "--root", brats, "--out", root / "brats_t1.json", "--modalities", "t1",
               "--val-frac", "0.2", "--test-frac", "0.2")
    out = root / "brats_pretrain"
    run_module("pretrain", "+experiment=brats_pretrain", f"data.data_list={root / 'brats_t1.json'}",
               f"data.data_root={brats}", f"output_dir={out}", "evaluate_after=false", *STAGE)
    state = torch.load(out / "model_best.pt", weights_only=True)
    assert state["config"]["method"]["name"] == "full" and state["config"]["data"]["in_channels"] == 1
    return out / "model_best.pt"


def test_two_stages_and_the_adapter_route(data_dir, pretrained):
    # Stage 2 on the authors' hippocampus layout (sub{i}/sub{i}_img|mask.nii.gz + train/valid/test.txt).
    eadc = data_dir.parent / "eadc"
    shutil.copytree(data_dir, eadc, ignore=shutil.ignore_patterns("datalist.json"))
    lists = json.loads((data_dir / "datalist.json").read_text())
    for split, name in (("training", "train.txt"), ("validation", "valid.txt"), ("test", "test.txt")):
        (eadc / name).write_text("".join(f"{e['id']}\n" for e in lists[split]))
    run_script("convert_hippocampus.py", "--root", eadc, "--out", eadc.parent / "eadc.json")
    ft = eadc.parent / "eadc_tcurlora"
    data = [f"data.data_list={eadc.parent / 'eadc.json'}", f"data.data_root={eadc}"]
    run_module("train", "+experiment=eadc", f"pretrained={pretrained}", *data, f"output_dir={ft}", *STAGE)
    base = torch.load(pretrained, weights_only=True)["model"]
    encoder = [k for k in base if k.startswith("vit.") and "norm_cross_attn" not in k]
    assert f"encoder: {len(encoder)}/{len(encoder)} tensors" in (ft / "train.log").read_text()
    tuned = torch.load(ft / "model.pt", weights_only=True)["model"]
    assert all(torch.equal(tuned[k], base[k]) for k in encoder)  # loaded from stage 1 and kept frozen
    assert any(k.endswith("dU.real") for k in tuned)

    # Base + adapter file -> the stage-2 run's Dice.
    run_module("evaluate", "+experiment=eadc", *MODEL, *data, f"pretrained={pretrained}",
               f"adapter={ft / 'adapter.safetensors'}", "device=cpu")
    trained = dice_by_case(ft / "eval" / "metrics.csv")
    evaluated = dice_by_case(ft / "eval_test" / "metrics.csv")  # results go next to the adapter file
    assert evaluated.keys() == trained.keys() and trained
    for key, value in trained.items():
        assert evaluated[key] == pytest.approx(value, abs=1e-6)

    # The same adapter file on a random base (pretrained=none): evaluate cannot rebuild a base it never saw, so the
    # adapter is refused by its base hash, in one clear line.
    proc = run_module("evaluate", *MODEL, *data_args(data_dir), "pretrained=none",
                      f"adapter={ft / 'adapter.safetensors'}", "device=cpu", ok=False)
    assert_clean_error(proc, "different base", "adapter.safetensors")
