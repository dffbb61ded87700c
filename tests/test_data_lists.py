"""Data lists: loading, writing and the layout converters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from data_fixtures import make_brats_layout, make_hippocampus_layout, write_json

from tcurseg.data.errors import DataError
from tcurseg.data.lists import brats_layout_to_list, hippocampus_layout_to_list, load_data_list, write_data_list

REPO = Path(__file__).resolve().parents[1]


def test_load_resolves_relative_paths_against_json_folder_or_data_root(tmp_path):
    path = write_json(
        tmp_path / "lists" / "x.json",
        {
            "training": [{"id": "a", "image": "a/img.nii.gz", "label": "a/seg.nii.gz"}],
            "test": [{"image": ["/abs/t1.nii.gz", "b/t2.nii.gz"]}],
            "synth": {"seed": 0},
        },
    )
    splits = load_data_list(path)
    assert splits["training"][0]["image"] == str(tmp_path / "lists" / "a/img.nii.gz")
    assert splits["test"][0]["image"] == ["/abs/t1.nii.gz", str(tmp_path / "lists" / "b/t2.nii.gz")]
    assert splits["test"][0]["id"] == "t1" and "label" not in splits["test"][0]
    assert set(splits) == {"training", "test"}
    rooted = load_data_list(path, data_root=tmp_path / "data")
    assert rooted["training"][0]["label"] == str(tmp_path / "data" / "a/seg.nii.gz")


@pytest.mark.parametrize(
    "content, words",
    [(None, "not found"), ("{not json", "not valid JSON"), ("[1, 2]", "JSON object"), ('{"training": [{"label": "x"}]}', "no 'image'")],
)
def test_load_errors_name_the_file(tmp_path, content, words):
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError) as err:
        load_data_list(path)
    assert str(path) in str(err.value) and words in str(err.value)


def test_write_then_load_roundtrip(tmp_path):
    splits = {"training": [{"id": "s", "image": "s.nii.gz", "label": "l.nii.gz"}], "validation": [], "test": []}
    path = write_data_list(tmp_path / "out" / "l.json", splits, extra={"note": 1})
    loaded = load_data_list(path)
    assert loaded["training"][0]["image"] == str(tmp_path / "out" / "s.nii.gz")
    assert loaded["validation"] == [] and loaded["test"] == []


def test_hippocampus_layout(tmp_path):
    root = make_hippocampus_layout(tmp_path / "EADC")
    splits = hippocampus_layout_to_list(root)
    assert [len(splits[s]) for s in ("training", "validation", "test")] == [3, 1, 1]
    assert splits["training"][0] == {"id": "sub0", "image": "sub0/sub0_img.nii.gz", "label": "sub0/sub0_mask.nii.gz"}


def test_hippocampus_layout_errors(tmp_path):
    root = make_hippocampus_layout(tmp_path / "EADC")
    (root / "sub4" / "sub4_mask.nii.gz").unlink()
    with pytest.raises(DataError, match="sub4_mask.nii.gz: file not found"):
        hippocampus_layout_to_list(root)
    (root / "valid.txt").unlink()
    with pytest.raises(DataError, match="valid.txt: split file not found"):
        hippocampus_layout_to_list(root)


def test_brats_layout_split_is_seeded_and_complete(tmp_path):
    root = make_brats_layout(tmp_path / "BraTS", n=10)
    splits = brats_layout_to_list(root, val_frac=0.1, test_frac=0.2, seed=0)
    assert [len(splits[s]) for s in ("training", "validation", "test")] == [7, 1, 2]
    ids = sorted(e["id"] for s in splits.values() for e in s)
    assert ids == [f"BraTS2021_{i:05d}" for i in range(10)]
    entry = splits["training"][0]
    case = entry["id"]
    assert entry["image"] == [f"{case}/{case}_{m}.nii.gz" for m in ("flair", "t1", "t1ce", "t2")]
    assert entry["label"] == f"{case}/{case}_seg.nii.gz"
    assert brats_layout_to_list(root, 0.1, 0.2, seed=0) == splits
    assert brats_layout_to_list(root, 0.1, 0.2, seed=1) != splits


def test_brats_layout_missing_modality(tmp_path):
    root = make_brats_layout(tmp_path / "BraTS", n=2)
    (root / "BraTS2021_00001" / "BraTS2021_00001_t1ce.nii.gz").unlink()
    with pytest.raises(DataError, match="BraTS2021_00001_t1ce.nii.gz: file not found"):
        brats_layout_to_list(root)


def test_converter_scripts(tmp_path):
    hippo = make_hippocampus_layout(tmp_path / "EADC")
    brats = make_brats_layout(tmp_path / "BraTS", n=3)
    out = tmp_path / "lists"
    for script, root, name in (("convert_hippocampus.py", hippo, "eadc.json"), ("convert_brats.py", brats, "brats.json")):
        run = subprocess.run(
            [sys.executable, str(REPO / "scripts" / script), "--root", str(root), "--out", str(out / name)],
            capture_output=True, text=True, check=False,
        )
        assert run.returncode == 0, run.stderr
        splits = load_data_list(out / name, data_root=root)
        assert all(Path(e["label"]).is_file() for s in splits.values() for e in s)
    (hippo / "test.txt").unlink()
    run = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "convert_hippocampus.py"), "--root", str(hippo), "--out", str(out / "x.json")],
        capture_output=True, text=True, check=False,
    )
    assert run.returncode != 0 and "test.txt: split file not found" in run.stderr
