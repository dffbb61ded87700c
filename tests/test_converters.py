"""Converters for the downloaded layouts: BraTS 2023/2024 glioma, the Decathlon, UPENN-GBM, EADC's flagged subjects.

Each layout is fabricated with tiny NIfTI files (8 x 8 x 8 voxels); broken trees must report every problem at once.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tcurseg.data.check import check_entries
from tcurseg.data.errors import DataError
from tcurseg.data.lists import (
    EADC_FLAGGED,
    SPLITS,
    brats_gli_layout_to_list,
    brats_layout_to_list,
    decathlon_layout_to_list,
    decathlon_properties,
    detect_brats_layout,
    hippocampus_layout_to_list,
    load_data_list,
    upenn_gbm_layout_to_list,
    write_data_list,
)
from tcurseg.data.transforms import eval_transforms

REPO = Path(__file__).resolve().parents[1]
SIZE = (8, 8, 8)
AFFINE = np.diag([1.5, 1.5, 2.0, 1.0])
GLI_ORDER = ("t2f", "t1n", "t1c", "t2w")
UPENN_ORDER = ("T1", "T1GD", "T2", "FLAIR")
MSD_BRAIN = {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
MSD_BRAIN_LABELS = {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"}


def _save(path: Path, data: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, AFFINE), path)
    return path


def _image(rng: np.random.Generator, channels: int | None = None) -> np.ndarray:
    shape = SIZE if channels is None else (*SIZE, channels)
    return (1.0 + 100.0 * rng.random(shape)).astype(np.float32)


def _label(values: tuple[int, ...]) -> np.ndarray:
    """Nested cubes holding ``values`` (outermost first)."""
    label = np.zeros(SIZE, np.uint8)
    for k, value in enumerate(values):
        label[1 + k : 7 - k, 1 + k : 7 - k, 1 + k : 7 - k] = value
    return label


def _splits_ids(splits: dict) -> list[list[str]]:
    return [[e["id"] for e in splits[s]] for s in SPLITS]


def _problems(err: pytest.ExceptionInfo) -> list[str]:
    return str(err.value).splitlines()[1:]


def _run(script: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / script), *map(str, args)],
                          capture_output=True, text=True, check=False)


# ----------------------------------------------------------------------------------------------- BraTS 2023/2024


def make_gli(root: Path, n: int) -> Path:
    """``root/BraTS-GLI-XXXXX-000/BraTS-GLI-XXXXX-000-{t1n,t1c,t2w,t2f,seg}.nii.gz`` with labels 1, 2, 3."""
    rng = np.random.default_rng(0)
    for i in range(n):
        case = f"BraTS-GLI-{i:05d}-000"
        for m in ("t1n", "t1c", "t2w", "t2f"):
            _save(root / case / f"{case}-{m}.nii.gz", _image(rng))
        _save(root / case / f"{case}-seg.nii.gz", _label((2, 1, 3)))
    return root


def test_brats_gli_layout(tmp_path):
    root = make_gli(tmp_path / "BraTS2023-GLI", n=10)
    assert detect_brats_layout(root) == "gli"
    splits = brats_gli_layout_to_list(root, val_frac=0.1, test_frac=0.2, seed=0)
    ids = _splits_ids(splits)
    assert [len(s) for s in ids] == [7, 1, 2]
    assert sorted(i for split in ids for i in split) == [f"BraTS-GLI-{i:05d}-000" for i in range(10)]
    entry = splits["test"][0]
    case = entry["id"]
    assert entry["image"] == [f"{case}/{case}-{m}.nii.gz" for m in GLI_ORDER]
    assert entry["label"] == f"{case}/{case}-seg.nii.gz"
    assert brats_gli_layout_to_list(root, 0.1, 0.2, seed=0) == splits
    assert _splits_ids(brats_gli_layout_to_list(root, 0.1, 0.2, seed=1)) != ids
    assert brats_gli_layout_to_list(root, 0.0, 0.0, modalities=["t1n"])["training"][0]["image"] == [
        "BraTS-GLI-00000-000/BraTS-GLI-00000-000-t1n.nii.gz"]

    path = write_data_list(tmp_path / "brats_gli.json", splits)
    loaded = load_data_list(path, root)
    assert loaded["test"][0]["image"][0] == str(root / case / f"{case}-t2f.nii.gz")
    assert all(Path(f).is_file() for s in loaded.values() for e in s for f in [*e["image"], e["label"]])


def test_brats_gli_broken_tree_lists_every_problem(tmp_path):
    root = make_gli(tmp_path / "GLI", n=3)
    (root / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-t1c.nii.gz").unlink()
    (root / "BraTS-GLI-00002-000" / "BraTS-GLI-00002-000-t2f.nii.gz").unlink()
    (root / "BraTS-GLI-00002-000" / "BraTS-GLI-00002-000-seg.nii.gz").unlink()
    with pytest.raises(DataError) as err:
        brats_gli_layout_to_list(root)
    assert str(err.value).splitlines()[0] == "BraTS 2023/2024 glioma layout: 3 problem(s):"
    assert _problems(err) == [
        f"{root}/BraTS-GLI-00001-000/BraTS-GLI-00001-000-t1c.nii.gz: file not found",
        f"{root}/BraTS-GLI-00002-000/BraTS-GLI-00002-000-t2f.nii.gz: file not found",
        f"{root}/BraTS-GLI-00002-000/BraTS-GLI-00002-000-seg.nii.gz: file not found",
    ]
    with pytest.raises(DataError, match=r"unknown BraTS 2023/2024 glioma modalities \['flair'\]"):
        brats_gli_layout_to_list(root, modalities=["flair", "t1n"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no case folders"):
        brats_gli_layout_to_list(tmp_path / "empty")


def test_brats_2021_collects_all_problems_and_ignores_gli_folders(tmp_path):
    root = tmp_path / "BraTS2021"
    rng = np.random.default_rng(1)
    for case in ("BraTS2021_00000", "BraTS2021_00001"):
        for m in ("flair", "t1", "t1ce", "t2", "seg"):
            _save(root / case / f"{case}_{m}.nii.gz", _label((1,)) if m == "seg" else _image(rng))
    (root / "BraTS2021_00000" / "BraTS2021_00000_t2.nii.gz").unlink()
    (root / "BraTS2021_00001" / "BraTS2021_00001_seg.nii.gz").unlink()
    assert detect_brats_layout(root) == "2021"
    with pytest.raises(DataError) as err:
        brats_layout_to_list(root, 0.0, 0.0)
    assert [p.split(": ")[0].split("/")[-1] for p in _problems(err)] == [
        "BraTS2021_00000_t2.nii.gz", "BraTS2021_00001_seg.nii.gz"]
    gli = make_gli(tmp_path / "GLI", n=1)
    with pytest.raises(DataError, match=r"no case folders \(BraTS2021_XXXXX/\) found"):
        brats_layout_to_list(gli)


# ----------------------------------------------------------------------------------------------- Decathlon


def make_msd(root: Path, prefix: str, n: int, channels: int | None, label_values: tuple[int, ...]) -> Path:
    """``root/dataset.json`` + ``imagesTr/{prefix}_XXX.nii.gz``, ``labelsTr/`` and unlabelled ``imagesTs/``."""
    rng = np.random.default_rng(2)
    training = []
    for i in range(1, n + 1):
        name = f"{prefix}_{i:03d}.nii.gz"
        _save(root / "imagesTr" / name, _image(rng, channels))
        _save(root / "labelsTr" / name, _label(label_values))
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    _save(root / "imagesTs" / f"{prefix}_900.nii.gz", _image(rng, channels))
    modality = MSD_BRAIN if channels == 4 else {"0": "MRI"}
    labels = MSD_BRAIN_LABELS if channels == 4 else {"0": "background", "1": "Anterior", "2": "Posterior"}
    content = {"name": prefix, "modality": modality, "labels": labels, "numTraining": n, "numTest": 1,
               "training": training, "test": [f"./imagesTs/{prefix}_900.nii.gz"]}
    (root / "dataset.json").write_text(json.dumps(content))
    return root


def test_decathlon_task01_four_d_images(tmp_path):
    root = make_msd(tmp_path / "Task01_BrainTumour", "BRATS", n=5, channels=4, label_values=(1, 2, 3))
    splits = decathlon_layout_to_list(root, val_frac=0.2, test_frac=0.2, seed=0)
    ids = _splits_ids(splits)
    assert [len(s) for s in ids] == [3, 1, 1]
    assert sorted(i for split in ids for i in split) == [f"BRATS_{i:03d}" for i in range(1, 6)]
    first = next(e for s in splits.values() for e in s if e["id"] == "BRATS_001")
    assert first == {"id": "BRATS_001", "image": "imagesTr/BRATS_001.nii.gz", "label": "labelsTr/BRATS_001.nii.gz"}
    assert decathlon_layout_to_list(root, 0.2, 0.2, seed=0) == splits
    assert _splits_ids(decathlon_layout_to_list(root, 0.2, 0.2, seed=3)) != ids
    properties = decathlon_properties(root)
    assert properties == {"name": "BRATS", "modality": MSD_BRAIN, "labels": MSD_BRAIN_LABELS}

    path = write_data_list(tmp_path / "msd.json", splits, extra=properties)
    loaded = load_data_list(path, root)
    assert loaded["training"][0]["image"] == str(root / "imagesTr" / f"{ids[0][0]}.nii.gz")
    assert json.loads(path.read_text())["modality"] == MSD_BRAIN
    cfg = {"in_channels": 4, "label_values": [0, 1, 2, 3]}
    assert check_entries(loaded, cfg, str(path)) == []
    wrong = check_entries(loaded, dict(cfg, in_channels=1), str(path))
    assert len(wrong) == 5 and all("4th dimension is 4, expected in_channels=1" in p for p in wrong)


def test_decathlon_task01_eval_transforms_put_the_four_channels_first(tmp_path):
    root = make_msd(tmp_path / "Task01_BrainTumour", "BRATS", n=1, channels=4, label_values=(1, 2, 3))
    entry = decathlon_layout_to_list(root, 0.0, 0.0)["training"][0]
    entry = {k: str(root / v) if k != "id" else v for k, v in entry.items()}
    data = eval_transforms({"label_values": [0, 1, 2, 3]}, with_label=True)(dict(entry))
    assert tuple(data["image"].shape) == (4, *SIZE) and tuple(data["label"].shape) == (1, *SIZE)
    original = np.asarray(nib.load(entry["image"]).dataobj)
    loaded = data["image"].numpy()
    corr = np.corrcoef(loaded.reshape(4, -1), original.reshape(-1, 4).T.reshape(4, -1))[:4, 4:]
    assert np.allclose(np.diag(corr), 1.0, atol=1e-4)
    assert np.abs(corr - np.diag(np.diag(corr))).max() < 0.5
    assert sorted(np.unique(data["label"].numpy()).tolist()) == [0, 1, 2, 3]


def test_decathlon_task04_hippocampus(tmp_path):
    root = make_msd(tmp_path / "Task04_Hippocampus", "hippocampus", n=10, channels=None, label_values=(1, 2))
    splits = decathlon_layout_to_list(root, val_frac=0.1, test_frac=0.2, seed=0)
    assert [len(s) for s in _splits_ids(splits)] == [7, 1, 2]
    assert splits["validation"][0]["image"].startswith("imagesTr/hippocampus_")
    assert decathlon_properties(root)["labels"] == {"0": "background", "1": "Anterior", "2": "Posterior"}
    path = write_data_list(tmp_path / "hippo.json", splits)
    loaded = load_data_list(path, root)
    assert check_entries(loaded, {"in_channels": 1, "label_values": [0, 1, 2]}, str(path)) == []
    assert not any("_900" in e["image"] for s in loaded.values() for e in s)


def test_decathlon_broken_tree_lists_every_problem(tmp_path):
    root = make_msd(tmp_path / "Task04_Hippocampus", "hippocampus", n=3, channels=None, label_values=(1,))
    content = json.loads((root / "dataset.json").read_text())
    del content["training"][2]["label"]
    (root / "dataset.json").write_text(json.dumps(content))
    (root / "imagesTr" / "hippocampus_001.nii.gz").unlink()
    (root / "labelsTr" / "hippocampus_002.nii.gz").unlink()
    with pytest.raises(DataError) as err:
        decathlon_layout_to_list(root)
    source = root / "dataset.json"
    assert str(err.value).splitlines()[0] == "Decathlon layout: 3 problem(s):"
    assert _problems(err) == [
        f"{root}/imagesTr/hippocampus_001.nii.gz: file not found (listed in {source})",
        f"{root}/labelsTr/hippocampus_002.nii.gz: file not found (listed in {source})",
        f"{source}: training[2] needs one 'image' and one 'label' path",
    ]
    source.write_text("{not json")
    with pytest.raises(DataError, match="dataset.json: unreadable Decathlon dataset.json"):
        decathlon_layout_to_list(root)
    source.write_text(json.dumps({"name": "x"}))
    with pytest.raises(DataError, match="unreadable Decathlon dataset.json .*training not specified"):
        decathlon_layout_to_list(root)
    source.unlink()
    with pytest.raises(DataError, match="dataset.json: not found"):
        decathlon_layout_to_list(root)


# ----------------------------------------------------------------------------------------------- UPENN-GBM


def make_upenn(root: Path, cases: dict[str, str | None]) -> Path:
    """TCIA layout: ``root/images_structural/<case>/<case>_{T1,T1GD,T2,FLAIR}.nii.gz``; each case's manual
    segmentation in ``images_segm/`` (``"segm"``), in its case folder (``"case"``) or absent (None)."""
    rng = np.random.default_rng(3)
    for case, where in cases.items():
        folder = root / "images_structural" / case
        for m in UPENN_ORDER:
            _save(folder / f"{case}_{m}.nii.gz", _image(rng))
        if where is not None:
            _save((root / "images_segm" if where == "segm" else folder) / f"{case}_segm.nii.gz", _label((2, 1, 4)))
    _save(root / "automated_segm" / f"{next(iter(cases))}_automated_approx_segm.nii.gz", _label((1,)))
    return root


UPENN_CASES = {f"UPENN-GBM-{i:05d}_11": "segm" for i in range(1, 9)} | {"UPENN-GBM-00009_11": "case",
                                                                          "UPENN-GBM-00010_11": "segm"}


def test_upenn_gbm_tcia_layout(tmp_path):
    root = make_upenn(tmp_path / "NIfTI-files", UPENN_CASES)
    splits = upenn_gbm_layout_to_list(root, val_frac=0.1, test_frac=0.2, seed=0)
    ids = _splits_ids(splits)
    assert [len(s) for s in ids] == [7, 1, 2]
    assert sorted(i for split in ids for i in split) == sorted(UPENN_CASES)
    entries = {e["id"]: e for s in splits.values() for e in s}
    case = "UPENN-GBM-00001_11"
    assert entries[case]["image"] == [f"images_structural/{case}/{case}_{m}.nii.gz" for m in UPENN_ORDER]
    assert entries[case]["label"] == f"images_segm/{case}_segm.nii.gz"
    case = "UPENN-GBM-00009_11"
    assert entries[case]["label"] == f"images_structural/{case}/{case}_segm.nii.gz"
    assert upenn_gbm_layout_to_list(root, 0.1, 0.2, seed=0) == splits
    assert _splits_ids(upenn_gbm_layout_to_list(root, 0.1, 0.2, seed=1)) != ids

    loaded = load_data_list(write_data_list(tmp_path / "upenn.json", splits), root)
    assert all(Path(f).is_file() for s in loaded.values() for e in s for f in [*e["image"], e["label"]])
    cfg = {"in_channels": 4, "label_values": [0, 1, 2, 4]}
    assert check_entries(loaded, cfg, "upenn.json") == []


def test_upenn_gbm_case_folders_and_skip_unlabelled(tmp_path):
    root = make_upenn(tmp_path / "tcia", {"UPENN-GBM-00001_11": "case", "UPENN-GBM-00002_11": "case",
                                          "UPENN-GBM-00002_21": None})
    flat = tmp_path / "flat"
    (root / "images_structural").rename(flat)
    splits = upenn_gbm_layout_to_list(flat, 0.0, 0.5, seed=0, skip_unlabelled=True)
    assert [len(s) for s in _splits_ids(splits)] == [1, 0, 1]
    follow_up = "UPENN-GBM-00002_21"
    images = [f"{follow_up}/{follow_up}_{m}.nii.gz" for m in UPENN_ORDER]
    assert splits["unlabelled"] == [{"id": follow_up, "image": images}]
    case = splits["training"][0]["id"]
    assert splits["training"][0]["label"] == f"{case}/{case}_segm.nii.gz"
    loaded = load_data_list(write_data_list(tmp_path / "u.json", splits), flat)
    assert set(loaded) == set(SPLITS) and sum(len(s) for s in loaded.values()) == 2


def test_upenn_gbm_broken_tree_lists_every_problem(tmp_path):
    root = make_upenn(tmp_path / "NIfTI-files", {"UPENN-GBM-00001_11": "segm", "UPENN-GBM-00002_11": None,
                                                 "UPENN-GBM-00003_11": "segm"})
    (root / "images_structural" / "UPENN-GBM-00003_11" / "UPENN-GBM-00003_11_T1GD.nii.gz").unlink()
    with pytest.raises(DataError) as err:
        upenn_gbm_layout_to_list(root)
    assert _problems(err) == [
        (f"{root}/images_segm/UPENN-GBM-00002_11_segm.nii.gz: manual segmentation not found "
         f"(nor {root}/images_structural/UPENN-GBM-00002_11/UPENN-GBM-00002_11_segm.nii.gz)"),
        f"{root}/images_structural/UPENN-GBM-00003_11/UPENN-GBM-00003_11_T1GD.nii.gz: file not found",
        f"{root}: 1 case(s) without a manual segmentation (skip_unlabelled, or --skip-unlabelled, leaves them out)",
    ]
    with pytest.raises(DataError) as err:
        upenn_gbm_layout_to_list(root, skip_unlabelled=True)
    assert len(_problems(err)) == 1 and "T1GD" in _problems(err)[0]
    with pytest.raises(DataError, match="no case folders"):
        upenn_gbm_layout_to_list(tmp_path / "NIfTI-files" / "automated_segm")


# ----------------------------------------------------------------------------------------------- EADC


def make_hippocampus(root: Path, splits: dict[str, list[str]]) -> Path:
    """The authors' layout: ``root/sub{i}/sub{i}_img.nii.gz``, ``_mask.nii.gz`` and train/valid/test.txt."""
    rng = np.random.default_rng(4)
    for name, subs in zip(("train.txt", "valid.txt", "test.txt"), splits.values()):
        for sub in subs:
            _save(root / sub / f"{sub}_img.nii.gz", _image(rng))
            _save(root / sub / f"{sub}_mask.nii.gz", _label((1,)))
        (root / name).write_text("\n".join(subs) + "\n")
    return root


EADC_SUBJECTS = {"training": ["sub1", "sub8", "sub9", "sub35"], "validation": ["sub2", "sub134"], "test": ["sub3"]}


def test_eadc_flagged_subjects_are_left_out(tmp_path):
    root = make_hippocampus(tmp_path / "EADC", EADC_SUBJECTS)
    splits = hippocampus_layout_to_list(root, exclude=EADC_FLAGGED)
    assert _splits_ids(splits) == [["sub1", "sub9"], ["sub2"], ["sub3"]]
    assert [e["id"] for e in splits["excluded"]] == ["sub8", "sub35", "sub134"]
    assert _splits_ids(hippocampus_layout_to_list(root)) == list(EADC_SUBJECTS.values())
    assert "excluded" not in hippocampus_layout_to_list(root)
    path = write_data_list(tmp_path / "eadc.json", splits)
    loaded = load_data_list(path, root)
    assert set(loaded) == set(SPLITS) and loaded["validation"][0]["label"] == str(root / "sub2" / "sub2_mask.nii.gz")
    assert [e["id"] for e in json.loads(path.read_text())["excluded"]] == ["sub8", "sub35", "sub134"]


def test_hippocampus_broken_tree_lists_every_problem(tmp_path):
    root = make_hippocampus(tmp_path / "EADC", EADC_SUBJECTS)
    (root / "sub9" / "sub9_img.nii.gz").unlink()
    (root / "sub8" / "sub8_mask.nii.gz").unlink()  # flagged: not checked when excluded
    (root / "test.txt").unlink()
    with pytest.raises(DataError) as err:
        hippocampus_layout_to_list(root, exclude=EADC_FLAGGED)
    assert _problems(err) == [f"{root}/sub9/sub9_img.nii.gz: file not found (listed in {root}/train.txt)",
                              f"{root}/test.txt: split file not found"]
    with pytest.raises(DataError) as err:
        hippocampus_layout_to_list(root)
    assert len(_problems(err)) == 3 and "sub8_mask.nii.gz: file not found" in _problems(err)[0]


# ----------------------------------------------------------------------------------------------- scripts


def test_scripts_convert_and_fail_cleanly(tmp_path):
    out = tmp_path / "lists"
    gli = make_gli(tmp_path / "GLI", n=3)
    run = _run("convert_brats.py", "--root", gli, "--out", out / "gli.json", "--val-frac", "0.34", "--test-frac", "0")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == (f"{out / 'gli.json'}: training 2, validation 1, test 0 "
                                  "(BraTS 2023/2024 glioma layout; channels t2f, t1n, t1c, t2w)")

    task01 = make_msd(tmp_path / "Task01_BrainTumour", "BRATS", n=3, channels=4, label_values=(1, 2, 3))
    run = _run("convert_decathlon.py", "--root", task01, "--out", out / "msd.json", "--test-frac", "0.34")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        f"{out / 'msd.json'}: training 2, validation 0, test 1",
        ("BRATS: channels 0 FLAIR, 1 T1w, 2 t1gd, 3 T2w; labels 0 background, 1 edema, 2 non-enhancing tumor, "
         "3 enhancing tumour")]

    upenn = make_upenn(tmp_path / "NIfTI-files", {"UPENN-GBM-00001_11": "segm", "UPENN-GBM-00001_21": None})
    run = _run("convert_upenn_gbm.py", "--root", upenn, "--out", out / "upenn.json", "--test-frac", "0")
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.startswith("error: UPENN-GBM layout: 2 problem(s):\n")
    assert "UPENN-GBM-00001_21_segm.nii.gz: manual segmentation not found" in run.stderr
    run = _run("convert_upenn_gbm.py", "--root", upenn, "--out", out / "upenn.json", "--test-frac", "0",
               "--skip-unlabelled")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[1] == ("note: left out 1 case(s) without a manual segmentation: UPENN-GBM-00001_21 "
                                          f"(listed under 'unlabelled' in {out / 'upenn.json'})")

    eadc = make_hippocampus(tmp_path / "eadc_v2", EADC_SUBJECTS)
    run = _run("convert_hippocampus.py", "--root", eadc, "--out", out / "eadc.json")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        f"{out / 'eadc.json'}: training 2, validation 1, test 1",
        "note: left out the EADC subjects whose label does not match the image: sub8, sub35, sub134 (--keep-flagged)"]
    run = _run("convert_hippocampus.py", "--root", eadc, "--out", out / "eadc_all.json", "--keep-flagged")
    assert run.stdout.strip() == f"{out / 'eadc_all.json'}: training 4, validation 2, test 1"
    lpba = make_hippocampus(tmp_path / "LPBA40", EADC_SUBJECTS)
    assert "validation 2" in _run("convert_hippocampus.py", "--root", lpba, "--out", out / "lpba.json").stdout
    run = _run("convert_hippocampus.py", "--root", lpba, "--out", out / "lpba.json", "--exclude-flagged")
    assert "note: left out" in run.stdout

    (gli / "BraTS-GLI-00000-000" / "BraTS-GLI-00000-000-t2w.nii.gz").unlink()
    (gli / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-seg.nii.gz").unlink()
    (eadc / "sub9" / "sub9_img.nii.gz").unlink()
    (eadc / "valid.txt").unlink()
    for script, root, names in (("convert_brats.py", gli, ("00000-000-t2w.nii.gz: file", "00001-000-seg.nii.gz: file")),
                                ("convert_hippocampus.py", eadc, ("sub9_img.nii.gz: file", "valid.txt: split file"))):
        run = _run(script, "--root", root, "--out", out / "broken.json")
        assert run.returncode == 1 and "Traceback" not in run.stderr
        # one line names the problem (a library warning may come before it)
        assert any(line.endswith("layout: 2 problem(s):") for line in run.stderr.splitlines())
        assert all(any(f"{name} not found" in line for line in run.stderr.splitlines()) for name in names)
    assert not (out / "broken.json").exists()


# ----------------------------------------------------------------------------------------------- killed; fabricated


KILL_DURING_WRITE = """
import os, runpy, signal, sys
def killed(fd):  # the list is written but not yet renamed into place: the process dies here
    os.kill(os.getpid(), signal.SIGKILL)
os.fsync = killed
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_a_killed_conversion_leaves_nothing_that_passes_for_a_list(tmp_path):
    root = make_gli(tmp_path / "GLI", n=3)
    out = tmp_path / "lists" / "gli.json"
    run = subprocess.run([sys.executable, "-c", KILL_DURING_WRITE, str(REPO / "scripts" / "convert_brats.py"),
                          "--root", str(root), "--out", str(out)], capture_output=True, text=True, check=False)
    assert run.returncode == -9
    assert not out.exists()
    left = list(out.parent.iterdir())
    assert len(left) == 1 and left[0].name.startswith(".gli.json.") and left[0].name.endswith(".tmp")
    with pytest.raises(DataError, match="data list not found"):
        load_data_list(out, root)
    assert _run("convert_brats.py", "--root", root, "--out", out).returncode == 0
    assert len(load_data_list(out, root)["training"]) == 2


@pytest.mark.parametrize("release, names, values", [
    ("2021", ("flair", "t1", "t1ce", "t2", "seg"), {0, 1, 2, 4}),
    ("gli", ("t2f", "t1n", "t1c", "t2w", "seg"), {0, 1, 2, 3}),
])
def test_fabricated_brats_tree_has_the_release_layout(tmp_path, release, names, values):
    """The fabricated tree at a coarse spacing (the real grid: 240 x 240 x 155 at 1 mm): names, geometry, labels,
    and the converter reads it."""
    from tcurseg.data.brats_tree import brats_grid, case_name, write_brats_tree

    assert brats_grid(1.0)[0] == (240, 240, 155)
    np.testing.assert_array_equal(brats_grid(1.0)[1], [[-1, 0, 0, 0], [0, -1, 0, 239], [0, 0, 1, 0], [0, 0, 0, 1]])
    root = tmp_path / release
    write_brats_tree(root, 2, release, spacing=8.0, workers=1)
    case = case_name(release, 1)
    sep = "_" if release == "2021" else "-"
    assert sorted(p.name for p in root.iterdir()) == sorted(case_name(release, i) for i in range(2))
    files = [root / case / f"{case}{sep}{name}.nii.gz" for name in names]
    assert sorted(p.name for p in (root / case).iterdir()) == sorted(f.name for f in files)
    for f in files:
        img = nib.load(f)
        assert img.shape == (30, 30, 19) and np.allclose(img.header.get_zooms(), 8.0)
        assert img.get_data_dtype() == (np.uint8 if f.name.endswith("seg.nii.gz") else np.int16)
    label = np.asarray(nib.load(files[-1]).dataobj)
    assert set(np.unique(label).tolist()) <= values and (label > 0).any()
    splits = brats_layout_to_list(root, 0.0, 0.5) if release == "2021" else brats_gli_layout_to_list(root, 0.0, 0.5)
    assert [len(splits[s]) for s in SPLITS] == [1, 0, 1]
