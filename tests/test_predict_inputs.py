"""What ``python -m tcurseg.predict input=...`` accepts: a file, a folder (one file per case, or nnU-Net's naming
for several channels), a data list with a root; wrong channel counts refused in one line."""

from __future__ import annotations

import json

import pytest

from tcurseg.data.errors import DataError
from tcurseg.predict import check_channels, input_entries


def _touch(folder, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def test_nnunet_named_folder_groups_channels(tmp_path):
    _touch(tmp_path / "in", "BraTS_002_0001.nii.gz", "BraTS_001_0000.nii.gz", "BraTS_001_0001.nii.gz",
           "BraTS_002_0000.nii.gz")
    entries = input_entries(tmp_path / "in")
    assert [e["id"] for e in entries] == ["BraTS_001", "BraTS_002"]
    assert [p.rsplit("/", 1)[1] for p in entries[0]["image"]] == ["BraTS_001_0000.nii.gz", "BraTS_001_0001.nii.gz"]
    check_channels(entries, 2, "in")
    with pytest.raises(DataError, match=r"in: the model takes 4 channel\(s\); cases BraTS_001, BraTS_002"):
        check_channels(entries, 4, "in")


def test_one_channel_nnunet_folder_and_plain_files(tmp_path):
    _touch(tmp_path / "nn", "case_a_0000.nii.gz", "case_b_0000.nii.gz")
    assert input_entries(tmp_path / "nn") == [{"id": "case_a", "image": str(tmp_path / "nn" / "case_a_0000.nii.gz")},
                                              {"id": "case_b", "image": str(tmp_path / "nn" / "case_b_0000.nii.gz")}]
    _touch(tmp_path / "plain", "sub1_img.nii.gz", "sub2.nii")
    assert [e["id"] for e in input_entries(tmp_path / "plain")] == ["sub1_img", "sub2"]
    with pytest.raises(DataError, match="the model takes 4 channel"):
        check_channels(input_entries(tmp_path / "plain"), 4, "plain")


def test_incomplete_nnunet_channels_are_listed(tmp_path):
    _touch(tmp_path / "in", "a_0000.nii.gz", "a_0002.nii.gz", "b_0000.nii.gz", "b_0001.nii.gz")
    with pytest.raises(DataError) as err:
        input_entries(tmp_path / "in")
    lines = str(err.value).splitlines()
    assert lines[0].endswith("case a has channels [0, 2], expected 0..1") and len(lines) == 1


def test_data_list_with_a_root(tmp_path):
    _touch(tmp_path / "root" / "c1", "t1.nii.gz", "t2.nii.gz")
    listed = {"training": [], "validation": [], "test": [{"id": "c1", "image": ["c1/t1.nii.gz", "c1/t2.nii.gz"],
                                                           "label": "c1/seg.nii.gz"}]}
    (tmp_path / "list.json").write_text(json.dumps(listed))
    entries = input_entries(tmp_path / "list.json", tmp_path / "root")
    assert entries == [{"id": "c1", "image": [str(tmp_path / "root" / "c1" / "t1.nii.gz"),
                                              str(tmp_path / "root" / "c1" / "t2.nii.gz")]}]
