"""Data lists: loading, writing and the layout converters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from data_fixtures import make_brats_layout, make_hippocampus_layout, write_json
from omegaconf import OmegaConf

from tcurseg.data.errors import DataError
from tcurseg.data.lists import (
    brats_layout_to_list,
    hippocampus_layout_to_list,
    load_data_list,
    write_data_list,
)

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


def test_write_is_atomic_an_interrupted_write_leaves_the_old_list(tmp_path, monkeypatch):
    import os

    path = write_data_list(tmp_path / "l.json", {"training": [{"id": "old", "image": "o.nii.gz"}]})
    old = path.read_text()

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_data_list(path, {"training": [{"id": "new", "image": "n.nii.gz"}]})
    with pytest.raises(KeyboardInterrupt):
        write_data_list(tmp_path / "fresh.json", {"training": []})
    assert path.read_text() == old and not (tmp_path / "fresh.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.json"]


def _brats_cfg(tmp_path, root, **overrides):
    from hydra import compose, initialize_config_dir

    from tcurseg.paths import conf_dir

    args = ["+experiment=brats", f"data.data_list={tmp_path / 'data_lists' / 'brats.json'}",
            *[f"{k}={v}" for k, v in overrides.items()]]
    if root is not None:
        args.append(f"data.data_root={root}")
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        return compose(config_name="config", overrides=args)


def test_prepare_data_makes_a_missing_list_from_the_tree(tmp_path, caplog):
    """``+experiment=brats`` with BRATS_ROOT set and no list: the list is made with the converter's seeded split."""
    import logging

    from tcurseg.cli import prepare_data
    from tcurseg.data.layouts import ensure_data_list

    root = make_brats_layout(tmp_path / "BraTS2021", n=10)
    cfg = _brats_cfg(tmp_path, root)
    with caplog.at_level(logging.INFO, logger="tcurseg.data.layouts"):
        prepare_data(cfg.data, splits=("training", "validation", "test"))
    path = tmp_path / "data_lists" / "brats.json"
    assert load_data_list(path, root) == load_data_list(write_data_list(tmp_path / "by_hand.json",
                                                                         brats_layout_to_list(root)), root)
    said = (f"{path} not found: made it from {root} (BraTS 2021 layout; channels flair, t1, t1ce, t2; seeded split: "
            "seed 0, validation 0.1, test 0.2): training 7, validation 1, test 2")
    assert [r.getMessage() for r in caplog.records] == [said]
    stamp = path.stat().st_mtime_ns
    assert ensure_data_list(cfg.data) is None and path.stat().st_mtime_ns == stamp  # an existing list is kept


def test_missing_list_without_a_root_names_the_variable_and_the_command(tmp_path, monkeypatch):
    from tcurseg.cli import prepare_data

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BRATS_ROOT", raising=False)
    cfg = _brats_cfg(tmp_path, None)
    with pytest.raises(DataError) as err:
        prepare_data(cfg.data, splits=("training",))
    path = tmp_path / "data_lists" / "brats.json"
    assert str(err.value) == (
        f"{path}: data list not found, and data_root Datasets/BraTS2021 is not a folder: set "
        "BRATS_ROOT=/path/to/the/dataset (the list is then made from it), or make the list with: python "
        f"scripts/convert_brats.py --root /path/to/the/dataset --out {path}")
    assert not path.exists()


@pytest.mark.parametrize("experiment, command", [
    ("brats_pretrain", "convert_brats.py --root /path/to/the/dataset --out data_lists/brats_t1.json --modalities t1"),
    ("eadc", "convert_hippocampus.py --root /path/to/the/dataset --out data_lists/eadc.json --exclude-flagged"),
    ("upenn_gbm", "convert_upenn_gbm.py --root /path/to/the/dataset --out data_lists/upenn_gbm.json --skip-unlabelled"),
    ("msd_hippocampus", "convert_decathlon.py --root /path/to/the/dataset --out data_lists/msd_hippocampus.json"),
    ("brats_gli", "convert_brats.py --root /path/to/the/dataset --out data_lists/brats_gli.json"),
    ("hfh", "convert_hippocampus.py --root /path/to/the/dataset --out data_lists/hfh.json"),
    ("lpba40", "convert_hippocampus.py --root /path/to/the/dataset --out data_lists/lpba40.json"),
    ("msd_brain_tumour", "convert_decathlon.py --root /path/to/the/dataset --out data_lists/msd_brain_tumour.json"),
])
def test_every_real_data_experiment_names_its_command(tmp_path, monkeypatch, experiment, command):
    from hydra import compose, initialize_config_dir

    from tcurseg.data.layouts import ensure_data_list
    from tcurseg.paths import conf_dir

    monkeypatch.chdir(tmp_path)
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        cfg = compose(config_name="config", overrides=[f"+experiment={experiment}"])
    variable = str(OmegaConf.to_container(cfg.data, resolve=False)["data_root"]).split(":")[1].split(",")[0]
    monkeypatch.delenv(variable, raising=False)
    with pytest.raises(DataError) as err:
        ensure_data_list(cfg.data)
    assert f"set {variable}=/path/to/the/dataset" in str(err.value)
    assert str(err.value).endswith(f"make the list with: python scripts/{command}")


def test_made_lists_match_the_converters_for_each_layout(tmp_path):
    """The automatic list is the converter's: hippocampus split files (flagged EADC subjects left out), options."""
    from tcurseg.data.layouts import convert, ensure_data_list

    eadc = make_hippocampus_layout(tmp_path / "EADC", n=5)
    made = ensure_data_list({"data_list": str(tmp_path / "eadc.json"), "data_root": str(eadc),
                             "layout": {"name": "hippocampus", "exclude_flagged": True}})
    by_hand = write_data_list(tmp_path / "h.json", hippocampus_layout_to_list(eadc))
    assert load_data_list(made) == load_data_list(by_hand)
    unknown = "data layout brats has no option skip_unlabelled; its options: modalities, release"
    with pytest.raises(DataError, match=unknown):
        convert("brats", eadc, skip_unlabelled=True)
    with pytest.raises(DataError, match="unknown data layout 'nifti'"):
        convert("nifti", eadc)
