"""Tiny NIfTI datasets written into a temporary folder for the data-layer tests."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (20, 18, 16)
LAS = np.diag([-1.5, 1.5, 2.0, 1.0])
LAS[:3, 3] = [15.0, -10.0, -12.0]


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray = LAS) -> Path:
    """Write ``data`` as NIfTI at ``path`` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def brain_image(rng: np.random.Generator, shape=SHAPE) -> np.ndarray:
    """Positive values in an ellipsoid, zero outside (like a skull-stripped brain)."""
    grid = np.indices(shape).astype(float)
    centre = (np.array(shape) - 1) / 2
    inside = sum(((g - c) / (0.45 * n)) ** 2 for g, c, n in zip(grid, centre, shape)) < 1
    return (inside * (100.0 + 10.0 * rng.standard_normal(shape))).astype(np.float32)


def blob_label(values=(1,), shape=SHAPE) -> np.ndarray:
    """Nested cubes around the centre holding the given label values (outermost first)."""
    label = np.zeros(shape, dtype=np.uint8)
    c = np.array(shape) // 2
    for k, v in enumerate(values):
        r = 4 - k
        label[c[0] - r : c[0] + r, c[1] - r : c[1] + r, c[2] - r : c[2] + r] = v
    return label


def make_hippocampus_layout(root: Path, n: int = 5, seed: int = 0) -> Path:
    """``root/sub{i}/sub{i}_img.nii.gz``, ``_mask.nii.gz`` and train/valid/test.txt (3/1/1 for n=5)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        save_nifti(root / f"sub{i}" / f"sub{i}_img.nii.gz", brain_image(rng))
        save_nifti(root / f"sub{i}" / f"sub{i}_mask.nii.gz", blob_label())
    subs = [f"sub{i}" for i in range(n)]
    n_train = n - 2
    (root / "train.txt").write_text("\n".join(subs[:n_train]) + "\n")
    (root / "valid.txt").write_text(subs[n_train] + "\n")
    (root / "test.txt").write_text("\n".join(subs[n_train + 1 :]) + "\n")
    return root


def make_brats_layout(root: Path, n: int = 5, seed: int = 0) -> Path:
    """``root/BraTS2021_XXXXX/BraTS2021_XXXXX_{flair,t1,t1ce,t2,seg}.nii.gz`` with labels 0,1,2,4."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        case = f"BraTS2021_{i:05d}"
        for m in ("flair", "t1", "t1ce", "t2"):
            save_nifti(root / case / f"{case}_{m}.nii.gz", brain_image(rng))
        save_nifti(root / case / f"{case}_seg.nii.gz", blob_label((2, 4, 1)))
    return root


def write_json(path: Path, content) -> Path:
    """Write ``content`` as JSON at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return path
