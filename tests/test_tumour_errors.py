"""scripts/tumour_errors.py: the whole-tumour diagnostics of the synthetic tumour task (docs/recipe.md row 32)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scripts_support import load_script


@pytest.fixture(scope="module")
def tumour_errors():
    return load_script("tumour_errors")


def test_coreless_whole_tumour_components_are_removed(tumour_errors):
    pred = np.zeros((12, 12, 12), np.int64)
    pred[1:5, 1:5, 1:5] = 2      # oedema around a core: kept
    pred[2:4, 2:4, 2:4] = 1
    pred[3, 3, 3] = 4
    pred[8:11, 8:11, 8:11] = 2   # oedema alone: removed
    pred[8, 1, 1] = 2            # a single coreless voxel: removed
    out = tumour_errors.drop_coreless_wt(pred)
    assert (out[:6, :6, :6] == pred[:6, :6, :6]).all()
    assert (out[7:] == 0).all()
    assert int((out > 0).sum()) == 64
    assert (pred[8:11, 8:11, 8:11] == 2).all()  # the input is left as it was


def test_threshold_is_chosen_on_training_and_scored_elsewhere(tumour_errors, tmp_path):
    rng = np.random.default_rng(0)
    entries = {}
    for split, n in (("training", 2), ("validation", 1), ("test", 1)):
        entries[split] = []
        for i in range(n):
            case = f"{split}{i}"
            image = rng.uniform(1.0, 2.0, (10, 10, 10)).astype(np.float32)
            label = np.zeros((10, 10, 10), np.uint8)
            label[2:6, 2:6, 2:6] = 2
            image[label > 0] = 10.0   # bright lesion: a threshold separates it exactly
            for kind, data in (("img", image), ("mask", label)):
                nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / f"{case}_{kind}.nii.gz")
            entries[split].append({"id": case, "image": f"{case}_img.nii.gz", "label": f"{case}_mask.nii.gz"})
    (tmp_path / "datalist.json").write_text(json.dumps(entries))
    result = tumour_errors.threshold_wt(tmp_path, entries, np.linspace(0.0, 3.0, 31))
    assert result["training"] == result["validation"] == result["test"] == 1.0
    brightest_tissue = max(
        float(tumour_errors.z_scored(tumour_errors.load(tmp_path / e["image"]))[0][
            tumour_errors.load(tmp_path / e["label"]) == 0].max())
        for e in entries["training"])
    assert brightest_tissue < result["threshold_z"] <= brightest_tissue + 0.1   # the first threshold that separates
