"""The dataset fingerprint on fabricated cases with known spacing, orientation, intensities and label volumes."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np

from tcurseg.data.fingerprint import fingerprint, main


def _case(tmp_path, name: str, spacing: tuple[float, float, float], flip: bool = False) -> dict:
    affine = np.diag([*spacing, 1.0])
    if flip:
        affine[0, 0] = -spacing[0]
    image = np.zeros((40, 40, 20), np.float32)
    image[4:36, 4:36, 2:18] = np.linspace(1, 100, 32 * 32 * 16).reshape(32, 32, 16)   # the "brain"
    label = np.zeros(image.shape, np.uint8)
    label[10:20, 10:20, 5:10] = 1                                                     # 500 voxels
    for data, suffix in ((image, "img"), (label, "seg")):
        nib.save(nib.Nifti1Image(data, affine), tmp_path / f"{name}_{suffix}.nii.gz")
    return {"id": name, "image": str(tmp_path / f"{name}_img.nii.gz"), "label": str(tmp_path / f"{name}_seg.nii.gz")}


def test_fingerprint_numbers(tmp_path):
    cases = [_case(tmp_path, "a", (1.0, 1.0, 2.0)), _case(tmp_path, "b", (1.0, 1.0, 2.0), flip=True),
             _case(tmp_path, "c", (1.0, 1.0, 4.0))]
    fp = fingerprint(cases)
    s = fp["summary"]
    assert s["cases"] == 3 and s["spacings"] == {"1 x 1 x 2": 2, "1 x 1 x 4": 1}
    assert s["orientations"] == {"RAS": 2, "LAS": 1}
    assert s["shape_median"] == [40, 40, 20]
    pct = s["intensity_median"][0]
    assert pct["0.5"] < 2 and 49 < pct["50.0"] < 52 and pct["99.5"] > 99          # inside the brain only
    assert fp["per_case"][0]["label_ml"] == {"1": 1.0} and fp["per_case"][2]["label_ml"] == {"1": 2.0}
    assert s["label_ml"]["1"]["max"] == 2.0
    # median spacing 1 x 1 x 2; brain 32 x 32 x 16 voxels -> 32, 32, 32 mm -> roi 32, 32, 16
    assert fp["suggested"] == {"spacing": [1.0, 1.0, 2.0], "roi": [32, 32, 16]}
    assert any(w.startswith("mixed spacings: 2") for w in fp["warnings"])
    assert any("anisotropic" in w and "c" in w for w in fp["warnings"])


def test_cli_prints_and_writes_json(tmp_path, capsys):
    listed = {"training": [_case(tmp_path, "a", (1.0, 1.0, 1.0))], "validation": [], "test": []}
    (tmp_path / "list.json").write_text(json.dumps(listed))
    assert main(["--data-list", str(tmp_path / "list.json"), "--json", str(tmp_path / "fp.json")]) == 0
    out = capsys.readouterr().out
    assert "suggested: data.spacing=[1.0, 1.0, 1.0] model.img_size=[32, 32, 16]" in out
    assert json.loads((tmp_path / "fp.json").read_text())["summary"]["cases"] == 1
    assert main(["--data-list", str(tmp_path / "missing.json")]) == 1


def test_dataset_check_warns_on_mixed_spacings(tmp_path, caplog):
    from tcurseg.data.check import check_entries

    splits = {"training": [_case(tmp_path, "a", (1.0, 1.0, 1.0)), _case(tmp_path, "b", (1.0, 1.0, 2.0))],
              "validation": [], "test": []}
    cfg = {"label_values": [0, 1], "in_channels": 1}
    with caplog.at_level("WARNING"):
        check_entries(splits, cfg, "list.json", ("training",))
    assert any("mixed voxel spacings across the cases: 1 x 1 x 1 mm (1), 1 x 1 x 2 mm (1)" in r.message
               for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING"):
        check_entries(splits, {**cfg, "spacing": [1, 1, 1]}, "list.json", ("training",))
    assert not any("mixed" in r.message for r in caplog.records)
