"""MONAI transforms: crop shapes, label remapping, whole-volume evaluation with metadata."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from data_fixtures import (
    LAS,
    SHAPE,
    brain_image,
    make_brats_layout,
    make_hippocampus_layout,
    save_nifti,
)
from monai.utils import set_determinism

from tcurseg.data.lists import brats_layout_to_list, hippocampus_layout_to_list
from tcurseg.data.transforms import eval_transforms, num_classes, train_transforms

HIPPO_CFG = {"in_channels": 1, "label_values": [0, 1], "roi_size": [16, 16, 16], "num_samples": 2,
             "spatial_augmentation": "crop"}
BRATS_CFG = {"in_channels": 4, "label_values": [0, 1, 2, 4], "roi_size": [12, 12, 12], "num_samples": 3,
             "spatial_augmentation": "crop"}
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


def _big_case(tmp_path, shape=(48, 44, 40)):
    """A volume much larger than the 12^3 crops (so a crop's margin stays inside it)."""
    rng = np.random.default_rng(1)
    image = save_nifti(tmp_path / "big_img.nii.gz", brain_image(rng, shape))
    label = np.zeros(shape, np.uint8)
    label[20:28, 18:26, 16:24] = 1
    return {"image": str(image), "label": str(save_nifti(tmp_path / "big_mask.nii.gz", label))}


def test_train_crops_dtype_and_values(tmp_path):
    root = make_brats_layout(tmp_path / "BraTS", n=2)
    transform = train_transforms(BRATS_CFG, dict(AUG, affine_prob=1.0))
    transform.set_random_state(seed=1)
    for crop in transform(_entry(root, brats_layout_to_list(root, 0.0, 0.0))):
        assert crop["image"].dtype == torch.float32 and crop["label"].dtype == torch.float32
        assert type(crop["image"]) is torch.Tensor and set(crop) == {"id", "image", "label"}
        assert tuple(crop["image"].shape) == (4, 12, 12, 12) and tuple(crop["label"].shape) == (1, 12, 12, 12)
        assert set(torch.unique(crop["label"]).tolist()) <= {0.0, 1.0, 2.0, 3.0}


def test_same_seed_same_crops_other_seed_other_crops(tmp_path):
    entry = _big_case(tmp_path)
    transform = train_transforms(dict(HIPPO_CFG, roi_size=[12, 12, 12], num_samples=3), AUG)

    def crops(seed):
        transform.set_random_state(seed=seed)
        return [torch.cat([c["image"], c["label"]]) for c in transform(dict(entry))]

    first, again, other = crops(5), crops(5), crops(6)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


def test_the_affine_resamples_the_crop_and_its_margin_not_the_volume(tmp_path, monkeypatch):
    """Rotation and scaling run on the box the crop and its margin need, never on the whole (48 x 44 x 40) volume."""
    entry = _big_case(tmp_path)
    seen = []
    grid_sample = torch.nn.functional.grid_sample

    def spy(inp, grid, **kwargs):
        seen.append((tuple(inp.shape[2:]), tuple(grid.shape[1:4])))
        return grid_sample(inp, grid, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "grid_sample", spy)
    transform = train_transforms(dict(HIPPO_CFG, roi_size=[12, 12, 12], num_samples=4),
                                 dict(AUG, affine_prob=1.0, rotate_deg=10.0, scale=0.1))
    transform.set_random_state(seed=0)
    crops = transform(dict(entry))
    assert len(seen) == 2 * len(crops) == 8  # image and label of every crop
    for box, out in seen:
        assert out == (12, 12, 12)
        assert all(b <= 20 for b in box), box  # 12^3 turned by <= 10 degrees per axis and scaled by <= 1.1


def test_affine_crop_geometry():
    """The identity gives the plain crop; a quarter turn about an axis gives the crop turned in the other two axes;
    the resampling reads only :func:`crop_box`."""
    from tcurseg.data.transforms import _rotation, affine_crop, crop_box

    image = torch.randn(2, 30, 28, 26)
    label = torch.randint(0, 3, (1, 30, 28, 26)).float()
    start, roi = [5, 6, 4], [12, 12, 12]
    box = (slice(None), *(slice(s, s + r) for s, r in zip(start, roi)))
    turned_image, turned_label = affine_crop(image, label, start, roi, np.eye(3))
    torch.testing.assert_close(turned_image, image[box], atol=1e-5, rtol=0)
    assert torch.equal(turned_label, label[box])
    for axis, dims in ((0, (2, 3)), (1, (1, 3)), (2, (1, 2))):
        angles = np.zeros(3)
        angles[axis] = np.pi / 2
        turned_image, turned_label = affine_crop(image, label, start, roi, _rotation(angles))
        torch.testing.assert_close(turned_image, torch.rot90(image[box], -1, dims), atol=1e-5, rtol=0)
        assert torch.equal(turned_label, torch.rot90(label[box], -1, dims))
    lo, hi = crop_box(start, roi, _rotation(np.radians([10.0, 10.0, 10.0])) * 1.1, (30, 28, 26))
    assert np.all(lo >= 0) and np.all(hi <= (30, 28, 26)) and np.all(hi - lo > 12)


@pytest.mark.parametrize("where", ["crop", "volume"])
def test_cropping_and_augmentation_never_write_into_the_cached_case(tmp_path, where):
    """The training cache as the trainer builds it (``cache_options``: without a copy for per-crop augmentation):
    even a consumer that writes into its crops leaves the cached case unchanged."""
    from monai.data import CacheDataset

    from tcurseg.engine.dataload import cache_options

    entry = _big_case(tmp_path)
    transform = train_transforms(dict(HIPPO_CFG, roi_size=[12, 12, 12], num_samples=2, spatial_augmentation=where),
                                 AUG)
    assert cache_options(transform) == {"copy_cache": where == "volume"}
    cache = CacheDataset([entry], transform, progress=False, **cache_options(transform))
    before = {k: v.clone() if isinstance(v, torch.Tensor) else np.copy(v) for k, v in cache._cache[0].items()
              if k != "id"}
    for seed in range(6):
        cache.transform.set_random_state(seed=seed)
        for crop in cache[0]:
            crop["image"] += 1.0
            crop["label"] += 1.0
    for key, value in before.items():
        now = cache._cache[0][key]
        assert (torch.equal(now, value) if isinstance(value, torch.Tensor) else np.array_equal(now, value)), key


def test_the_synthetic_tasks_keep_the_whole_volume_augmentation_they_were_recorded_with(tmp_path):
    """Without ``data.spatial_augmentation`` (the embedded tasks: the demo and the recorded comparison) the volume is
    rotated and scaled before cropping, as MONAI's RandAffined + RandCropByPosNegLabeld; the real-data configs say
    ``crop``; anything else is refused."""
    from monai.transforms import RandAffined, RandCropByPosNegLabeld
    from omegaconf import OmegaConf

    from tcurseg.data.transforms import RandCropAffined
    from tcurseg.paths import conf_dir

    cfg = {k: v for k, v in HIPPO_CFG.items() if k != "spatial_augmentation"}
    kinds = [type(t) for t in train_transforms(cfg, AUG).transforms]
    assert RandAffined in kinds and kinds.index(RandAffined) < kinds.index(RandCropByPosNegLabeld)
    assert RandCropAffined in [type(t) for t in train_transforms(HIPPO_CFG, AUG).transforms]
    for name in ("synth_hippo", "synth_tumor"):
        assert "spatial_augmentation" not in OmegaConf.load(conf_dir() / "data" / f"{name}.yaml")
    for name in ("brats", "brats_gli", "brats_pretrain", "eadc", "hfh", "lpba40", "upenn_gbm", "msd_brain_tumour",
                 "msd_hippocampus"):
        assert OmegaConf.load(conf_dir() / "data" / f"{name}.yaml").spatial_augmentation == "crop"
    with pytest.raises(ValueError, match="data.spatial_augmentation=slice"):
        train_transforms(dict(HIPPO_CFG, spatial_augmentation="slice"), AUG)
