"""Fabricated BraTS trees at the real geometry, from the embedded anatomy (design.md section 5), for benchmarks and
tries of the real-data experiments without the download.

A case is the MNI152 T1 brain (shrunk to 90 %, the size of a brain in BraTS's SRI24 space) under a random affine and
smooth deformation (``synth._source_points``), with 1-3 lesions painted by ``synth._paint_lesions`` (necrotic core 1,
oedema 2, enhancing rim 4). Four contrasts are derived from it: T1 (lesion dark), T1ce (enhancing rim bright), T2
(fluid bright, oedema bright) and FLAIR (T2 with the fluid suppressed), each with its own bias field, gamma, blur and
Rician noise, stored as int16 like the release. The grid is BraTS's: 240 x 240 x 155 voxels of 1 mm, affine
diag(-1, -1, 1) with the origin of the release; ``spacing`` keeps that field of view at coarser voxels (small trees).

Layouts: BraTS 2021 ``BraTS2021_XXXXX/BraTS2021_XXXXX_{flair,t1,t1ce,t2,seg}.nii.gz`` (labels 0, 1, 2, 4) and
BraTS 2023 adult glioma ``BraTS-GLI-XXXXX-000/BraTS-GLI-XXXXX-000-{t2f,t1n,t1c,t2w,seg}.nii.gz`` (labels 0, 1, 2, 3).
Case i is drawn from ``np.random.default_rng([seed, i])``. Each case is written into a hidden folder renamed into
place when complete, so an interrupted run leaves no case that looks finished.
CLI: ``scripts/make_brats_tree.py``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np

from tcurseg.data import synth
from tcurseg.data.errors import DataError
from tcurseg.machine import available_cpus

FIELD_MM = (240.0, 240.0, 155.0)
"""BraTS's field of view: 240 x 240 x 155 voxels of 1 mm."""
BRAIN_CENTRE_MM = (0.5, -21.5, 9.8)
"""Centre of the MNI152 brain (mean of its voxels > 0), put at the centre of the grid."""
BRAIN_SIZE = 0.9
"""Size of the fabricated brain relative to MNI152 (larger than the SRI24 brains BraTS is registered to)."""
RELEASES = ("2021", "gli")
CONTRASTS = {"2021": ("flair", "t1", "t1ce", "t2"), "gli": ("t2f", "t1n", "t1c", "t2w")}
"""File suffixes per release, in the order FLAIR, T1, T1ce, T2."""
ENHANCING = {"2021": 4, "gli": 3}


def case_name(release: str, i: int) -> str:
    """Folder (and file prefix) of case ``i``: ``BraTS2021_0000i`` or ``BraTS-GLI-0000i-000``."""
    return f"BraTS2021_{i:05d}" if release == "2021" else f"BraTS-GLI-{i:05d}-000"


def _file(release: str, case: str, suffix: str) -> str:
    return f"{case}_{suffix}.nii.gz" if release == "2021" else f"{case}-{suffix}.nii.gz"


def brats_grid(spacing: float = 1.0) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of BraTS's grid at ``spacing`` mm: 240 x 240 x 155 at 1 mm, diag(-1, -1, 1) with the
    release's origin (0, 239, 0)."""
    if spacing <= 0:
        raise DataError(f"invalid spacing {spacing}: give a positive voxel size in mm")
    shape = tuple(max(8, round(f / spacing)) for f in FIELD_MM)
    affine = np.diag([-spacing, -spacing, spacing, 1.0])
    affine[1, 3] = (shape[1] - 1) * spacing
    return shape, affine


def _sampling_affine(shape: Sequence[int], spacing: float) -> np.ndarray:
    """Output voxel -> MNI mm before the random deformation: the grid centre on the brain centre, the brain at
    :data:`BRAIN_SIZE`."""
    step = spacing / BRAIN_SIZE
    affine = np.diag([-step, -step, step, 1.0])
    affine[:3, 3] = np.asarray(BRAIN_CENTRE_MM) - np.diag(affine)[:3] * (np.asarray(shape) - 1) / 2
    return affine


def _contrasts(rng: np.random.Generator, anatomy: np.ndarray, t1ce: np.ndarray, label: np.ndarray,
               brain: np.ndarray) -> list[np.ndarray]:
    """FLAIR, T1, T1ce, T2 (float32, before the intensity artefacts) from the T1 anatomy and the lesion label."""
    white = float(np.percentile(anatomy[brain], 95))
    rel = np.clip(anatomy / white, 0.0, 1.2)
    fluid = brain & (rel < 0.45)
    t2 = np.where(brain, np.clip(1.35 - rel, 0.2, 1.1), 0.0) * white
    flair = np.where(fluid, 0.35 * t2, t2)
    t1 = anatomy.copy()
    tissue = {1: (0.25, 1.25, 0.4), 2: (0.7, 1.05, 1.15), 4: (0.75, 0.85, 0.9)}  # label: T1, T2, FLAIR / white
    for value, (t1_rel, t2_rel, flair_rel) in tissue.items():
        mask = label == value
        jitter = rng.normal(1.0, 0.06, int(mask.sum()))
        t1[mask] = t1_rel * white * jitter
        t2[mask] = t2_rel * white * jitter
        flair[mask] = flair_rel * white * jitter
    return [flair.astype(np.float32), t1, t1ce, t2.astype(np.float32)]


def make_brats_case(rng: np.random.Generator, spacing: float = 1.0) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """One fabricated case: ([FLAIR, T1, T1ce, T2] as int16, label uint8 with values 0, 1, 2, 4, affine)."""
    shape, affine = brats_grid(spacing)
    template, template_affine = synth._template()
    points = synth._source_points(rng, shape, _sampling_affine(shape, spacing))
    anatomy = synth._sample(template, template_affine, points)
    del points
    brain = anatomy > synth.BRAIN_LEVEL
    t1ce = anatomy.copy()
    label = synth._paint_lesions(rng, t1ce, brain, spacing)
    images = []
    for contrast in _contrasts(rng, anatomy, t1ce, label, brain):
        scaled = synth._intensity(rng, contrast, brain)
        images.append(np.clip(np.rint(scaled), 0, np.iinfo(np.int16).max).astype(np.int16))
    return images, label, affine


def _save(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, path)


def write_case(out: str | Path, release: str, i: int, seed: int = 0, spacing: float = 1.0) -> Path:
    """Write case ``i`` of ``release`` (``2021`` or ``gli``) under ``out``; return its folder."""
    if release not in RELEASES:
        raise DataError(f"unknown BraTS release {release!r}; choose one of {', '.join(RELEASES)}")
    out = Path(out)
    case = case_name(release, i)
    images, label, affine = make_brats_case(np.random.default_rng([seed, i]), spacing)
    if release == "gli":
        label[label == ENHANCING["2021"]] = ENHANCING["gli"]
    partial = out / f".{case}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for suffix, image in zip(CONTRASTS[release], images):
        _save(image, affine, partial / _file(release, case, suffix))
    _save(label, affine, partial / _file(release, case, "seg"))
    final = out / case
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    return final


def write_brats_tree(out: str | Path, n: int, release: str = "2021", seed: int = 0, spacing: float = 1.0,
                     workers: int | None = None) -> list[Path]:
    """Write cases 0..n-1 of ``release`` under ``out`` (in ``workers`` processes, default one per CPU); return their
    folders."""
    if release not in RELEASES:
        raise DataError(f"unknown BraTS release {release!r}; choose one of {', '.join(RELEASES)}")
    if n < 1:
        raise DataError(f"n={n}: write at least one case")
    Path(out).mkdir(parents=True, exist_ok=True)
    workers = min(n, workers or available_cpus())
    jobs = [(out, release, i, seed, spacing) for i in range(n)]
    if workers > 1 and "fork" in mp.get_all_start_methods():
        synth._template()
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
            return list(pool.map(write_case, *zip(*jobs)))
    return [write_case(*job) for job in jobs]
