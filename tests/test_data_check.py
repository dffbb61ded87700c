"""Dataset check: every failure class is reported, all together, each line naming its file."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from data_fixtures import LAS, SHAPE, blob_label, brain_image, save_nifti, write_json

from tcurseg.data.check import DataError, assert_dataset_ok, check_dataset, main

CFG = {"in_channels": 1, "label_values": [0, 1]}


def _case(root, name, image=None, label=None, affine=LAS, label_affine=None):
    rng = np.random.default_rng(len(name))
    img = save_nifti(root / f"{name}_img.nii.gz", brain_image(rng) if image is None else image, affine)
    seg = save_nifti(root / f"{name}_seg.nii.gz", blob_label() if label is None else label, affine if label_affine is None else label_affine)
    return {"id": name, "image": img.name, "label": seg.name}


def _cfg(tmp_path, splits, **kw):
    return dict(CFG, data_list=str(write_json(tmp_path / "list.json", splits)), data_root=str(tmp_path), **kw)


def test_good_dataset_passes(tmp_path, capsys):
    splits = {"training": [_case(tmp_path, "a"), _case(tmp_path, "b")], "validation": [_case(tmp_path, "c")], "test": [_case(tmp_path, "d")]}
    cfg = _cfg(tmp_path, splits)
    assert check_dataset(cfg) == []
    assert_dataset_ok(cfg)
    assert main(["--data-list", cfg["data_list"], "--data-root", str(tmp_path), "--label-values", "0", "1", "--in-channels", "1"]) == 0
    assert capsys.readouterr().out.strip() == "OK: 4 cases"


def test_brats_like_multichannel_dataset_passes(tmp_path):
    rng = np.random.default_rng(0)
    files = [save_nifti(tmp_path / f"m{k}.nii.gz", brain_image(rng)).name for k in range(4)]
    seg = save_nifti(tmp_path / "seg.nii.gz", blob_label((2, 4, 1))).name
    splits = {"training": [{"id": "x", "image": files, "label": seg}], "validation": [], "test": []}
    assert check_dataset(_cfg(tmp_path, splits, in_channels=4, label_values=[0, 1, 2, 4]), splits=("training",)) == []


def _bad_dataset(tmp_path):
    rng = np.random.default_rng(1)
    training = [_case(tmp_path, "good")]
    # 1 missing image, 2 missing label
    training.append({"id": "noimg", "image": "absent_img.nii.gz", "label": _case(tmp_path, "noimg")["label"]})
    training.append({"id": "noseg", "image": _case(tmp_path, "noseg")["image"], "label": "absent_seg.nii.gz"})
    # 3 truncated gzip: cut in half
    trunc = _case(tmp_path, "trunc")
    path = tmp_path / trunc["image"]
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    training.append(trunc)
    # 4 not a NIfTI at all
    junk = _case(tmp_path, "junk")
    (tmp_path / junk["label"]).write_bytes(gzip.compress(b"this is not nifti" * 10))
    training.append(junk)
    # 5 two image files for in_channels 1, 6 a 4D image with 2 channels
    two = _case(tmp_path, "two")
    training.append(dict(two, image=[two["image"], two["image"]]))
    training.append(_case(tmp_path, "fourd", image=np.stack([brain_image(rng)] * 2, axis=-1)))
    # 7 a 2D image, 8 label shape mismatch, 9 affine mismatch
    training.append(_case(tmp_path, "flat", image=np.ones(SHAPE[:2], np.float32)))
    training.append(_case(tmp_path, "shape", label=np.zeros((SHAPE[0], SHAPE[1], SHAPE[2] + 1), np.uint8)))
    shifted = LAS.copy()
    shifted[0, 3] += 0.01
    training.append(_case(tmp_path, "affine", label_affine=shifted))
    # 10 label values outside, 11 NaN image, 12 non-integer label
    training.append(_case(tmp_path, "values", label=blob_label((3,))))
    nan = brain_image(rng)
    nan[3, 3, 3] = np.nan
    training.append(_case(tmp_path, "nan", image=nan))
    training.append(_case(tmp_path, "frac", label=blob_label().astype(np.float32) * 0.5))
    # 13 duplicate id, 14 entry without label, 15 empty validation split
    test = [_case(tmp_path, "good2"), dict(_case(tmp_path, "dup"), id="good")]
    training.append({"id": "nolabel", "image": _case(tmp_path, "nolabel")["image"]})
    return {"training": training, "validation": [], "test": test}


EXPECTED = [
    ("absent_img.nii.gz", "file not found"),
    ("absent_seg.nii.gz", "file not found"),
    ("trunc_img.nii.gz", "unreadable or truncated"),
    ("junk_seg.nii.gz", "unreadable or truncated"),
    ("two_img.nii.gz", "wrong number of channels"),
    ("fourd_img.nii.gz", "wrong number of channels"),
    ("flat_img.nii.gz", "not 3D"),
    ("shape_seg.nii.gz", "does not match image"),
    ("affine_seg.nii.gz", "affine mismatch"),
    ("values_seg.nii.gz", "outside label_values"),
    ("nan_img.nii.gz", "non-finite"),
    ("frac_seg.nii.gz", "not integer-valued"),
    ("list.json", "duplicate id 'good'"),
    ("nolabel_img.nii.gz", "has no label"),
    ("list.json", "split 'validation' is empty"),
]


def test_every_problem_is_reported_together(tmp_path):
    cfg = _cfg(tmp_path, _bad_dataset(tmp_path))
    problems = check_dataset(cfg)
    for name, words in EXPECTED:
        assert any(name in p and words in p for p in problems), (name, words, problems)
    assert not any("good_" in p for p in problems)
    with pytest.raises(DataError) as err:
        assert_dataset_ok(cfg)
    lines = str(err.value).splitlines()
    assert lines[0].startswith(f"dataset check failed ({len(problems)} problems)")
    assert lines[1:] == problems
    assert len(problems) >= len(EXPECTED)


def test_cli_prints_problems_and_fails(tmp_path, capsys):
    cfg = _cfg(tmp_path, _bad_dataset(tmp_path))
    assert main(["--data-list", cfg["data_list"], "--data-root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "trunc_img.nii.gz: unreadable or truncated" in out and "nan_img.nii.gz" in out


@pytest.mark.parametrize(
    "content, words",
    [
        (None, "data list not found"),
        ("{oops", "not valid JSON"),
        ('{"training": [], "validation": [], "test": []}', "all splits empty"),
    ],
)
def test_list_level_problems(tmp_path, content, words):
    path = tmp_path / "list.json"
    if content is not None:
        path.write_text(content)
    problems = check_dataset(dict(CFG, data_list=str(path)))
    assert any(str(path) in p and words in p for p in problems), problems


def test_splits_argument_limits_the_check(tmp_path):
    splits = {"training": [_case(tmp_path, "a")], "test": []}
    cfg = _cfg(tmp_path, splits)
    assert check_dataset(cfg, splits=("training",)) == []
    assert any("split 'validation' missing" in p for p in check_dataset(cfg))


def test_review_gaps_directory_constant_image_duplicate_file(tmp_path):
    good = _case(tmp_path, "a")
    (tmp_path / "dir_img.nii.gz").mkdir()
    constant = _case(tmp_path, "c", image=np.full(SHAPE, 3.0, dtype=np.float32))
    twin = dict(_case(tmp_path, "b"), image=good["image"])
    splits = {"training": [good, {"id": "d", "image": "dir_img.nii.gz", "label": good["label"]}, constant],
              "validation": [twin], "test": []}
    problems = check_dataset(_cfg(tmp_path, splits), splits=("training", "validation"))
    assert f"{tmp_path / 'dir_img.nii.gz'}: is a directory, expected a NIfTI file" in problems
    assert f"{tmp_path / 'c_img.nii.gz'}: image is constant (3 everywhere): nothing to normalise" in problems
    assert f"{tmp_path / 'a_img.nii.gz'}: listed 2 times in {tmp_path / 'list.json'}" in problems
    assert not any("file not found" in p for p in problems)


def test_warnings_do_not_stop_training(tmp_path, caplog):
    empty = _case(tmp_path, "e", label=np.zeros(SHAPE, dtype=np.uint8))
    flat = np.diag([1.0, 1.0, 20.0, 1.0])
    thick = _case(tmp_path, "t", affine=flat)
    splits = {"training": [empty, thick], "validation": [_case(tmp_path, "v")], "test": []}
    with caplog.at_level("WARNING", logger="tcurseg.data.check"):
        assert check_dataset(_cfg(tmp_path, splits), splits=("training", "validation")) == []
    text = caplog.text
    assert f"{tmp_path / 'e_seg.nii.gz'}: training label has no foreground voxel [training/e]" in text
    assert f"{tmp_path / 't_img.nii.gz'}: strongly anisotropic spacing 1 x 1 x 20 mm" in text
