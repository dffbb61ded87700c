"""A dataset's fingerprint, as nnU-Net makes one before planning: voxel spacings, shapes, orientations, intensity
percentiles per channel (inside the brain: voxels > 0), label volumes per value, and the ``data.spacing`` and roi it
suggests. ``python -m tcurseg.data.fingerprint --data-list L [--data-root R] [--json out.json]``."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from tcurseg.data.errors import DataError
from tcurseg.data.lists import load_data_list

PERCENTILES = (0.5, 50.0, 99.5)
PATCH = 16        # the ViT patch: every roi side is a multiple of it
MAX_ROI = 128     # UNETR-B's roi in the paper


def spacing_of(affine: np.ndarray) -> tuple[float, ...]:
    """Voxel size in mm along each array axis: the column norms of the affine."""
    return tuple(float(v) for v in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))


def case_fingerprint(entry: Mapping) -> dict:
    """Spacing, shape, orientation, per-channel intensity percentiles inside the brain, brain extent (mm) and the
    label's volume per value (mL) of one case."""
    files = entry["image"] if isinstance(entry["image"], (list, tuple)) else [entry["image"]]
    first = nib.load(str(files[0]))
    data = [np.asarray(nib.load(str(f)).dataobj, dtype=np.float32) for f in files]
    channels = [c for d in data for c in (np.moveaxis(d, -1, 0) if d.ndim == 4 else [d])]
    spacing = spacing_of(first.affine)
    brain = np.any([c > 0 for c in channels], axis=0)
    extent = [0.0, 0.0, 0.0]
    if brain.any():
        idx = np.argwhere(brain)
        extent = [float((hi - lo + 1) * s) for lo, hi, s in zip(idx.min(0), idx.max(0), spacing)]
    out = {"id": entry.get("id"), "spacing": list(spacing), "shape": list(channels[0].shape),
           "orientation": "".join(nib.aff2axcodes(first.affine)), "brain_extent_mm": extent,
           "intensity": [dict(zip(map(str, PERCENTILES), map(float, np.percentile(c[brain] if brain.any() else c,
                                                                                  PERCENTILES)))) for c in channels]}
    if entry.get("label"):
        label = np.asarray(nib.load(str(entry["label"])).dataobj).astype(np.int64)
        voxel_ml = float(np.prod(spacing)) / 1000.0
        values, counts = np.unique(label, return_counts=True)
        out["label_ml"] = {str(v): float(c * voxel_ml) for v, c in zip(values, counts) if v != 0}
    return out


def suggest(cases: Sequence[Mapping]) -> dict:
    """``data.spacing``: the median spacing per axis (nnU-Net's choice). roi: the median brain extent at that spacing,
    rounded down to a multiple of 16 (the ViT patch), between 16 and 128 per side."""
    spacing = [statistics.median(c["spacing"][i] for c in cases) for i in range(3)]
    extent = [statistics.median(c["brain_extent_mm"][i] for c in cases) for i in range(3)]
    roi = [int(min(MAX_ROI, max(PATCH, (e / s) // PATCH * PATCH))) for e, s in zip(extent, spacing)]
    return {"spacing": [round(s, 3) for s in spacing], "roi": roi}


def fingerprint(entries: Sequence[Mapping]) -> dict:
    """The dataset's fingerprint: per case, summaries over cases, the suggestion, and warnings."""
    cases = [case_fingerprint(e) for e in entries]
    spacings = Counter(tuple(round(v, 2) for v in c["spacing"]) for c in cases)
    labels = sorted({v for c in cases for v in c.get("label_ml", {})}, key=int)
    summary = {
        "cases": len(cases),
        "spacings": {" x ".join(f"{v:g}" for v in s): n for s, n in spacings.most_common()},
        "orientations": dict(Counter(c["orientation"] for c in cases).most_common()),
        "shape_median": [statistics.median(c["shape"][i] for c in cases) for i in range(3)],
        "intensity_median": [{p: statistics.median(c["intensity"][ch][p] for c in cases) for p in map(str, PERCENTILES)}
                             for ch in range(len(cases[0]["intensity"]))],
        "label_ml": {v: {"mean": statistics.fmean(vols), "min": min(vols), "max": max(vols)}
                     for v in labels for vols in [[c.get("label_ml", {}).get(v, 0.0) for c in cases]]},
    }
    warnings = []
    if len(spacings) > 1:
        warnings.append(f"mixed spacings: {len(spacings)} different voxel sizes (set data.spacing to resample)")
    anisotropic = [c["id"] for c in cases if max(c["spacing"]) > 3 * min(c["spacing"])]
    if anisotropic:
        warnings.append(f"strongly anisotropic spacing (> 3x) in {len(anisotropic)} case(s), e.g. {anisotropic[0]}")
    return {"summary": summary, "suggested": suggest(cases), "warnings": warnings, "per_case": cases}


def format_fingerprint(fp: Mapping) -> str:
    s, sug = fp["summary"], fp["suggested"]
    lines = [f"cases: {s['cases']}", f"spacings (mm): {s['spacings']}", f"orientations: {s['orientations']}",
             f"median shape: {s['shape_median']}"]
    for ch, pct in enumerate(s["intensity_median"]):
        lines.append(f"channel {ch} intensity percentiles inside the brain (median over cases): "
                     + ", ".join(f"{p}%: {v:.4g}" for p, v in pct.items()))
    for value, vol in s["label_ml"].items():
        lines.append(f"label {value}: {vol['mean']:.2f} mL (min {vol['min']:.2f}, max {vol['max']:.2f})")
    lines.append(f"suggested: data.spacing={sug['spacing']} model.img_size={sug['roi']}")
    lines += [f"warning: {w}" for w in fp["warnings"]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fingerprint a data list: spacings, shapes, orientations, "
                                                 "intensities, label volumes, and a suggested spacing and roi.")
    parser.add_argument("--data-list", required=True)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--splits", nargs="+", default=["training"])
    parser.add_argument("--json", default=None, help="also write the fingerprint (with every case) here")
    args = parser.parse_args(argv)
    try:
        splits = load_data_list(args.data_list, args.data_root)
        entries = [e for split in args.splits for e in splits.get(split, [])]
        if not entries:
            raise DataError(f"{args.data_list}: no cases in {args.splits}")
        fp = fingerprint(entries)
    except (DataError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(format_fingerprint(fp))
    if args.json:
        Path(args.json).write_text(json.dumps(fp, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
