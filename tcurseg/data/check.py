"""Validate a dataset before training: every problem is collected and reported with its file.

``check_dataset`` returns the problem lines; ``assert_dataset_ok`` raises DataError listing them
all. Files are read fully with nibabel so a truncated .nii.gz is detected (SimpleITK and the
nibabel header read do not notice it; MONAI raises a bare EOFError naming no file).
CLI: ``python -m tcurseg.data.check --data-list X.json [--data-root D] --label-values 0 1 --in-channels 1``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from tcurseg.data.errors import DataError
from tcurseg.data.lists import SPLITS, load_data_list
from tcurseg.data.transforms import allowed_label_values

__all__ = ["DataError", "check_dataset", "assert_dataset_ok", "check_entries", "main"]

AFFINE_TOL_MM = 1e-3
ANISOTROPY_WARN = 3.0
"""A largest / smallest voxel size above this is warned about (not an error: some datasets are like that)."""
log = logging.getLogger(__name__)


class _Volume:
    """A fully read NIfTI file (data and affine), or None data with a problem recorded."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.data: np.ndarray | None = None
        self.affine: np.ndarray | None = None
        if Path(path).is_dir():
            problems.append(f"{path}: is a directory, expected a NIfTI file")
            return
        if not Path(path).is_file():
            problems.append(f"{path}: file not found")
            return
        try:
            img = nib.load(path)
            data = np.asarray(img.dataobj)
        except Exception as err:  # nibabel raises many types for corrupt/truncated files
            problems.append(f"{path}: unreadable or truncated NIfTI ({type(err).__name__}: {err})")
            return
        self.data = data
        self.affine = np.asarray(img.affine, dtype=float)


def _load_cached(path: str, cache: dict[str, _Volume], problems: list[str]) -> _Volume:
    if path not in cache:
        cache[path] = _Volume(path, problems)
    return cache[path]


def _check_case(entry: dict, split: str, cfg: Any, need_label: bool) -> list[str]:
    problems: list[str] = []
    cache: dict[str, _Volume] = {}
    in_channels = int(cfg.get("in_channels", 1))
    label_values = allowed_label_values({"label_values": cfg.get("label_values", [0, 1])})
    image = entry["image"]
    files = list(image) if isinstance(image, (list, tuple)) else [image]
    case = f"[{split}/{entry.get('id')}]"

    if isinstance(image, (list, tuple)) and len(files) != in_channels:
        problems.append(
            f"{files[0]}: wrong number of channels {case}: {len(files)} image files, expected in_channels={in_channels}"
        )
    spatial: tuple | None = None
    ref_affine: np.ndarray | None = None
    ref_file = files[0]
    for f in files:
        vol = _load_cached(str(f), cache, problems)
        if vol.data is None:
            continue
        data = vol.data
        if len(files) == 1 and data.ndim == 4:
            if data.shape[3] != in_channels:
                problems.append(
                    f"{f}: wrong number of channels: 4th dimension is {data.shape[3]}, expected in_channels={in_channels}"
                )
        elif data.ndim != 3:
            problems.append(f"{f}: image is not 3D (shape {data.shape})")
            continue
        elif len(files) == 1 and in_channels != 1:
            problems.append(f"{f}: wrong number of channels: one 3D image, expected in_channels={in_channels}")
        if not np.issubdtype(data.dtype, np.integer) and not np.all(np.isfinite(data)):
            problems.append(f"{f}: image has non-finite values (NaN/Inf) in {int((~np.isfinite(data)).sum())} voxel(s)")
        elif data.size and data.min() == data.max():
            problems.append(f"{f}: image is constant ({float(data.flat[0]):g} everywhere): nothing to normalise")
        spacing = np.linalg.norm(vol.affine[:3, :3], axis=0)
        if spacing.min() > 0 and spacing.max() / spacing.min() > ANISOTROPY_WARN:
            log.warning("%s: strongly anisotropic spacing %s mm", f, " x ".join(f"{v:g}" for v in spacing))
        if spatial is None:
            spatial, ref_affine, ref_file = data.shape[:3], vol.affine, str(f)
        else:
            if data.shape[:3] != spatial:
                problems.append(f"{f}: shape mismatch with {ref_file}: {data.shape[:3]} vs {spatial}")
            elif np.abs(vol.affine - ref_affine).max() > AFFINE_TOL_MM:
                diff = np.abs(vol.affine - ref_affine).max()
                problems.append(f"{f}: affine mismatch with {ref_file} (max difference {diff:.4g} > {AFFINE_TOL_MM})")

    label = entry.get("label")
    if label is None:
        if need_label:
            problems.append(f"{files[0]}: entry {case} has no label")
        return problems
    vol = _load_cached(str(label), cache, problems)
    if vol.data is None:
        return problems
    data = vol.data
    if data.ndim != 3:
        problems.append(f"{label}: label is not 3D (shape {data.shape})")
        return problems
    if spatial is not None:
        if data.shape != spatial:
            problems.append(f"{label}: label shape {data.shape} does not match image {ref_file} shape {spatial}")
        elif np.abs(vol.affine - ref_affine).max() > AFFINE_TOL_MM:
            problems.append(
                f"{label}: affine mismatch between label and image {ref_file} "
                f"(max difference {np.abs(vol.affine - ref_affine).max():.4g} > {AFFINE_TOL_MM})"
            )
    if not np.issubdtype(data.dtype, np.integer):
        finite = np.isfinite(data)
        if not finite.all():
            problems.append(f"{label}: label has non-finite values (NaN/Inf)")
            return problems
        if not np.array_equal(data, np.round(data)):
            problems.append(f"{label}: label is not integer-valued (e.g. {data[data != np.round(data)].flat[0]:g})")
            return problems
    values = np.unique(data).astype(np.int64)
    if split == "training" and not (values != 0).any():
        log.warning("%s: training label has no foreground voxel %s", label, case)
    bad = sorted(set(values.tolist()) - set(label_values))
    if bad:
        problems.append(f"{label}: label values {bad} outside label_values {label_values}")
    return problems


def check_entries(splits: dict[str, list[dict]], cfg: Any, source: str, names: Sequence[str] = SPLITS) -> list[str]:
    """Check already-loaded splits; ``source`` (the data list path) names split-level problems."""
    problems: list[str] = []
    total = 0
    for split in names:
        entries = splits.get(split)
        if entries is None:
            problems.append(f"{source}: split {split!r} missing")
            continue
        if not entries:
            problems.append(f"{source}: split {split!r} is empty")
        total += len(entries)
    if total == 0:
        problems.append(f"{source}: all splits empty ({', '.join(names)})")
    ids = Counter(e.get("id") for split in splits for e in splits[split])
    for case_id, count in ids.items():
        if count > 1:
            problems.append(f"{source}: duplicate id {case_id!r} ({count} entries)")
    images = Counter(str(e.get("image")) for split in splits for e in splits[split])
    for image, count in images.items():
        if count > 1:
            problems.append(f"{image}: listed {count} times in {source}")
    for split in names:
        for entry in splits.get(split) or []:
            problems.extend(_check_case(entry, split, cfg, need_label=split != "test"))
    _warn_mixed_spacings([e for split in names for e in splits.get(split) or []], source, cfg)
    return problems


def _warn_mixed_spacings(entries: Sequence[dict], source: str, cfg: Any) -> None:
    """Warn when the images of a data set come at different voxel sizes and ``data.spacing`` does not resample them
    (headers only; unreadable files are the problems reported above)."""
    spacings: Counter = Counter()
    for entry in entries:
        first = entry["image"][0] if isinstance(entry.get("image"), list) else entry.get("image")
        try:
            affine = nib.load(str(first)).affine
            spacings[tuple(round(float(v), 2) for v in np.linalg.norm(affine[:3, :3], axis=0))] += 1
        except Exception:  # noqa: BLE001 - reported as a problem by the case check
            continue
    if len(spacings) > 1 and not cfg.get("spacing"):
        shown = ", ".join(f"{' x '.join(f'{v:g}' for v in sp)} mm ({n})" for sp, n in spacings.most_common(3))
        log.warning("%s: mixed voxel spacings across the cases: %s; set data.spacing to resample them", source, shown)


def check_dataset(cfg: Any, splits: Sequence[str] = SPLITS) -> list[str]:
    """Return every problem of the dataset described by ``cfg`` (``data_list``, ``data_root``,
    ``in_channels``, ``label_values``) in the given splits; an empty list means OK."""
    path = str(cfg["data_list"])
    root = cfg.get("data_root")
    try:
        loaded = load_data_list(path, root)
    except DataError as err:
        return [str(err)]
    return check_entries(loaded, cfg, path, tuple(splits))


def assert_dataset_ok(cfg: Any, splits: Sequence[str] = SPLITS) -> None:
    """Raise DataError listing all problems (one line each, naming the file) if any."""
    problems = check_dataset(cfg, splits)
    if problems:
        raise DataError(f"dataset check failed ({len(problems)} problems):\n" + "\n".join(problems))


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; prints ``OK: N cases`` or the problem lines and returns 0 or 1."""
    parser = argparse.ArgumentParser(description="Check a tcurseg data list and its NIfTI files.")
    parser.add_argument("--data-list", required=True)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--label-values", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--in-channels", type=int, default=1)
    parser.add_argument("--splits", nargs="+", default=list(SPLITS))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    cfg = {
        "data_list": args.data_list,
        "data_root": args.data_root,
        "label_values": args.label_values,
        "in_channels": args.in_channels,
    }
    problems = check_dataset(cfg, args.splits)
    if problems:
        print("\n".join(problems))
        return 1
    n = sum(len(v) for k, v in load_data_list(args.data_list, args.data_root).items() if k in args.splits)
    print(f"OK: {n} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
