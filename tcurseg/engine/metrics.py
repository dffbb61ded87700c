"""Per-case, per-region segmentation metrics: Dice and HD95 (mm), with explicit empty-mask handling.

Conventions (see design.md sections 3 and 8):

* A region is the union of listed label values (BraTS: TC = {1, 4}, WT = {1, 2, 4}, ET = {4}); masks
  P (prediction) and T (truth) are binary.
* Dice = 2 |P ∩ T| / (|P| + |T|).
* HD95 follows MONAI (``compute_hausdorff_distance(percentile=95)``): surface voxels are the mask minus its
  binary erosion; d(P->T) are the Euclidean distances in mm (voxel spacing applied per axis) from each surface
  voxel of P to the nearest surface voxel of T, and likewise d(T->P); HD95 = max(q95(d(P->T)), q95(d(T->P))),
  the 95th percentile taken per direction (linear interpolation) and the larger of the two kept. This is not
  medpy's convention (one percentile of both directions pooled), nor SimpleITK's maximum.
* Empty masks never yield NaN and are never dropped: both empty -> dice 1.0, hd95 0.0; exactly one empty ->
  dice 0.0 and hd95 = the diagonal of the volume in mm, sqrt(sum_i (n_i * s_i)^2), an upper bound of any
  distance in the volume; ``empty_pred`` / ``empty_truth`` flag these cases and ``summarize`` counts them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance

METRIC_FIELDS = ("case", "region", "dice", "hd95", "empty_pred", "empty_truth")


def spacing_from_affine(affine: np.ndarray | Sequence[Sequence[float]]) -> tuple[float, float, float]:
    """Voxel spacing (mm) as Python floats: the column norms of the affine's 3x3 part (valid for rotated affines)."""
    a = np.asarray(affine, dtype=np.float64)
    if a.shape not in ((4, 4), (3, 4), (3, 3)):
        raise ValueError(f"affine must be 4x4 (or 3x3/3x4), got shape {a.shape}")
    norms = np.linalg.norm(a[:3, :3], axis=0)
    return (float(norms[0]), float(norms[1]), float(norms[2]))


def volume_diagonal(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Diagonal of the volume in mm, sqrt(sum_i (n_i * s_i)^2): the HD95 penalty when exactly one mask is empty."""
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing, strict=True))))


def dice_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice = 2 |P ∩ T| / (|P| + |T|) of two boolean masks; 1.0 when both are empty."""
    total = int(pred.sum()) + int(truth.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, truth).sum()) / total


def hd95_mm(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> float:
    """MONAI-convention HD95 in mm of two non-empty boolean masks (max of the two directed 95th percentiles)."""
    if not pred.any() or not truth.any():
        raise ValueError("hd95_mm needs two non-empty masks; case_metrics handles empty ones")
    p = torch.from_numpy(np.ascontiguousarray(pred, dtype=np.uint8))[None, None]
    t = torch.from_numpy(np.ascontiguousarray(truth, dtype=np.uint8))[None, None]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        hd = compute_hausdorff_distance(
            p, t, include_background=True, percentile=95, spacing=[float(s) for s in spacing]
        )
    return float(hd.item())


def case_metrics(
    pred: np.ndarray,
    truth: np.ndarray,
    regions: Mapping[str, Sequence[int]],
    spacing: Sequence[float],
) -> dict[str, dict]:
    """Dice and HD95 per region for one case.

    ``pred`` and ``truth`` are 3D label maps in the original label values; each region is the union of its listed
    values. ``spacing`` is the voxel size in mm per array axis. Returns
    ``{region: {"dice", "hd95", "empty_pred", "empty_truth"}}`` following the module's conventions.
    """
    pred = np.asarray(pred)
    truth = np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    if pred.ndim != 3 or len(spacing) != 3:
        raise ValueError(f"case_metrics needs 3D label maps and 3 spacings, got shape {pred.shape}, spacing {spacing}")
    diagonal = volume_diagonal(pred.shape, spacing)
    out: dict[str, dict] = {}
    for name, values in regions.items():
        p = np.isin(pred, list(values))
        t = np.isin(truth, list(values))
        empty_pred, empty_truth = not p.any(), not t.any()
        if empty_pred and empty_truth:
            hd95 = 0.0
        elif empty_pred or empty_truth:
            hd95 = diagonal
        else:
            hd95 = hd95_mm(p, t, spacing)
        out[name] = {"dice": dice_score(p, t), "hd95": hd95, "empty_pred": empty_pred, "empty_truth": empty_truth}
    return out


def metric_rows(case: str, per_region: Mapping[str, Mapping]) -> list[dict]:
    """Flatten ``case_metrics`` output into rows ``{"case", "region", "dice", "hd95", "empty_pred", "empty_truth"}``."""
    return [{"case": case, "region": region, **values} for region, values in per_region.items()]


def summarize(rows: Sequence[Mapping]) -> dict:
    """Per region over cases: mean and std (population, ddof=0) of Dice and HD95, counts of cases, of empty
    predictions and of empty truths. ``rows`` are flat rows as produced by ``metric_rows``.

    Returns ``{region: {"dice_mean", "dice_std", "hd95_mean", "hd95_std", "n_cases", "n_empty_pred",
    "n_empty_truth"}}`` with regions in first-seen order.
    """
    by_region: dict[str, list[Mapping]] = {}
    for row in rows:
        by_region.setdefault(str(row["region"]), []).append(row)
    summary: dict[str, dict] = {}
    for region, items in by_region.items():
        dice = np.array([float(r["dice"]) for r in items])
        hd95 = np.array([float(r["hd95"]) for r in items])
        if not (np.isfinite(dice).all() and np.isfinite(hd95).all()):
            raise ValueError(f"non-finite Dice or HD95 in the rows of region {region!r}")
        summary[region] = {
            "dice_mean": float(dice.mean()),
            "dice_std": float(dice.std()),
            "hd95_mean": float(hd95.mean()),
            "hd95_std": float(hd95.std()),
            "n_cases": len(items),
            "n_empty_pred": sum(bool(r["empty_pred"]) for r in items),
            "n_empty_truth": sum(bool(r["empty_truth"]) for r in items),
        }
    return summary
