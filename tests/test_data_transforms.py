"""MONAI transforms: crop shapes, label remapping, whole-volume evaluation with metadata."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import torch
from data_fixtures import LAS, SHAPE, make_brats_layout, make_hippocampus_layout
from monai.utils import set_determinism

from tcurseg.data.lists import brats_layout_to_list, hippocampus_layout_to_list
from tcurseg.data.transforms import eval_transforms, num_classes, train_transforms

HIPPO_CFG = {"in_channels": 1, "label_values": [0, 1], "roi_size": [16, 16, 16], "num_samples": 2}
BRATS_CFG = {"in_channels": 4, "label_values": [0, 1, 2, 4], "roi_size": [12, 12, 12], "num_samples": 3}
AUG = {"affine_prob": 0.5, "rotate_deg": 10.0, "scale": 0.1, "flip_axes": [0], "intensity": 0.1}


def _entry(root, splits):
    entry = dict(splits["training"][0])
    if isinstance(entry["image"], list):
        entry["image"] = [str(root / p) for p in entry["image"]]
    else:
        entry["image"] = str(root / entry["image"])
    entry["label"] = str(root / entry["label"])
    return entry


def test_num_classes():
    assert num_classes(HIPPO_CFG) == 2 and num_classes(BRATS_CFG) == 4


def test_train_crops_have_roi_shape(tmp_path):
    set_determinism(0)
    root = make_hippocampus_layout(tmp_path / "EADC", n=3)
    crops = train_transforms(HIPPO_CFG, AUG)(_entry(root, hippocampus_layout_to_list(root)))
    assert len(crops) == 2
    for crop in crops:
        assert tuple(crop["image"].shape) == (1, 16, 16, 16)
        assert tuple(crop["label"].shape) == (1, 16, 16, 16)
        assert set(torch.unique(crop["label"]).tolist()) <= {0.0, 1.0}
        assert torch.isfinite(crop["image"]).all()


def test_train_pads_small_volumes_and_remaps_brats_labels(tmp_path):
    set_determinism(0)
    root = make_brats_layout(tmp_path / "BraTS", n=2)
    cfg = dict(BRATS_CFG, roi_size=[24, 24, 24])
    crops = train_transforms(cfg, AUG)(_entry(root, brats_layout_to_list(root, 0.0, 0.0)))
    assert len(crops) == 3
    values = set()
    for crop in crops:
        assert tuple(crop["image"].shape) == (4, 24, 24, 24)
        values |= set(torch.unique(crop["label"]).tolist())
    assert values == {0.0, 1.0, 2.0, 3.0}


def test_eval_keeps_shape_affine_and_maps_labels(tmp_path):
    root = make_brats_layout(tmp_path / "BraTS", n=2)
    entry = _entry(root, brats_layout_to_list(root, 0.0, 0.0))
    data = eval_transforms(BRATS_CFG)(entry)
    image, label = data["image"], data["label"]
    assert tuple(image.shape) == (4, *SHAPE) and tuple(label.shape) == (1, *SHAPE)
    assert set(torch.unique(label).tolist()) == {0.0, 1.0, 2.0, 3.0}
    raw = np.asarray(nib.load(entry["label"]).dataobj)
    assert int((label == 3).sum()) == int((raw == 4).sum())
    np.testing.assert_allclose(np.asarray(image.meta["original_affine"]), LAS)
    ras = nib.as_closest_canonical(nib.load(entry["label"])).affine
    np.testing.assert_allclose(np.asarray(image.affine), ras, atol=1e-5)
    spacing = np.linalg.norm(np.asarray(image.affine)[:3, :3], axis=0)
    np.testing.assert_allclose(spacing, [1.5, 1.5, 2.0], atol=1e-6)
    inside = image[0] != 0
    assert abs(float(image[0][inside].mean())) < 1e-3 and abs(float(image[0][inside].std()) - 1) < 1e-2


def test_eval_without_label(tmp_path):
    root = make_hippocampus_layout(tmp_path / "EADC", n=3)
    entry = {"image": _entry(root, hippocampus_layout_to_list(root))["image"]}
    data = eval_transforms(HIPPO_CFG, with_label=False)(entry)
    assert tuple(data["image"].shape) == (1, *SHAPE) and "label" not in data


def test_merged_label_values_make_a_binary_whole_tumour_label(tmp_path):
    """label_values [0, [1, 2, 4]]: the authors' pretraining label (BraTS 1, 2, 4 -> 1)."""
    from tcurseg.data.transforms import allowed_label_values, class_values

    root = make_brats_layout(tmp_path / "BraTS", n=2)
    entry = _entry(root, brats_layout_to_list(root, 0.0, 0.0, modalities=["t1"]))
    cfg = {"in_channels": 1, "label_values": [0, [1, 2, 4]], "roi_size": [12, 12, 12]}
    assert num_classes(cfg) == 2 and class_values(cfg) == [0, 1] and allowed_label_values(cfg) == [0, 1, 2, 4]
    data = eval_transforms(cfg)(entry)
    raw = np.asarray(nib.load(entry["label"]).dataobj)
    assert tuple(data["image"].shape) == (1, *SHAPE)
    assert set(torch.unique(data["label"]).tolist()) == {0.0, 1.0}
    assert int(data["label"].sum()) == int((raw > 0).sum())


def test_affine_augmentation_moves_the_label_and_keeps_its_values(tmp_path):
    root = make_hippocampus_layout(tmp_path / "EADC", n=3)
    entry = _entry(root, hippocampus_layout_to_list(root))
    cfg = dict(HIPPO_CFG, roi_size=list(SHAPE), num_samples=1)
    still = dict(AUG, affine_prob=0.0, flip_axes=[], intensity=0.0)
    moved = dict(AUG, affine_prob=1.0, rotate_deg=20.0, flip_axes=[], intensity=0.0)
    base = train_transforms(cfg, still)(entry)[0]["label"]
    turned = train_transforms(cfg, moved)
    turned.set_random_state(seed=3)
    label = turned(entry)[0]["label"]
    assert set(torch.unique(label).tolist()) <= {0.0, 1.0}
    assert not torch.equal(label, base)
    assert abs(float(label.sum()) - float(base.sum())) < 0.5 * float(base.sum())
