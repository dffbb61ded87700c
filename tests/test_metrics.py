import math

import numpy as np
import pytest
from scipy.ndimage import binary_erosion
from scipy.spatial.distance import cdist

from tcurseg.engine.metrics import (
    case_metrics,
    dice_score,
    hd95_mm,
    metric_rows,
    spacing_from_affine,
    summarize,
    volume_diagonal,
)

BRATS = {"TC": [1, 4], "WT": [1, 2, 4], "ET": [4]}
SHAPE = (24, 24, 24)


def _sheet(axis: int, at: int, lo: int = 4, hi: int = 20) -> np.ndarray:
    """A one-voxel-thick square sheet normal to ``axis``: erosion removes it all, so every voxel is surface."""
    m = np.zeros(SHAPE, dtype=bool)
    index = [slice(lo, hi)] * 3
    index[axis] = at
    m[tuple(index)] = True
    return m


def _brute_hd95(a: np.ndarray, b: np.ndarray, spacing) -> float:
    """Reference: surface = mask minus erosion, distances in mm, q95 per direction, max of the two."""
    sa = np.argwhere(a & ~binary_erosion(a)) * np.asarray(spacing)
    sb = np.argwhere(b & ~binary_erosion(b)) * np.asarray(spacing)
    d = cdist(sa, sb)
    return max(float(np.percentile(d.min(axis=1), 95)), float(np.percentile(d.min(axis=0), 95)))


def test_dice_known_overlap():
    a = np.zeros(SHAPE, dtype=bool)
    b = np.zeros(SHAPE, dtype=bool)
    a[2:12, 2:12, 2:12] = True  # 1000 voxels
    b[7:17, 2:12, 2:12] = True  # 1000 voxels, overlap 5 x 10 x 10 = 500
    assert dice_score(a, b) == pytest.approx(2 * 500 / 2000)
    assert dice_score(a, a) == 1.0


@pytest.mark.parametrize("axis, expected", [(0, 3 * 2.0), (1, 3 * 0.5), (2, 3 * 1.25)])
def test_hd95_parallel_sheets_anisotropic(axis, expected):
    """Two parallel sheets k = 3 voxels apart: every surface distance is exactly k * spacing[axis]."""
    spacing = (2.0, 0.5, 1.25)
    assert hd95_mm(_sheet(axis, 8), _sheet(axis, 11), spacing) == pytest.approx(expected)


def test_hd95_is_a_percentile_not_the_maximum():
    """A single far outlier voxel moves the maximum (SimpleITK's HD) but not the 95th percentile."""
    truth = _sheet(0, 8)
    pred = truth.copy()
    pred[20, 12, 12] = True
    assert hd95_mm(pred, truth, (1.0, 1.0, 1.0)) == pytest.approx(0.0)


def test_hd95_directed_percentiles_then_max():
    """Pred = a 100-voxel sheet equal to the truth plus 8 voxels 3 voxels (6 mm) away. pred->truth: 8/108 = 7.4%
    of the distances are 6 mm, so its q95 is 6 mm (MONAI, ours); pooled with truth->pred (all 0): 8/208 = 3.8%,
    so medpy's pooled q95 would be 0."""
    truth = _sheet(0, 8, 8, 18)  # 100 voxels
    pred = truth.copy()
    pred[11, 8:12, 8:10] = True  # 8 voxels, 3 voxels away along axis 0
    spacing = (2.0, 1.0, 1.0)
    hd = hd95_mm(pred, truth, spacing)
    assert hd == pytest.approx(6.0)
    pooled = np.concatenate([np.zeros(100), np.zeros(100), np.full(8, 6.0)])
    assert np.percentile(pooled, 95) == 0.0
    assert hd == pytest.approx(_brute_hd95(pred, truth, spacing))


def test_hd95_matches_brute_force_on_blobs():
    rng = np.random.default_rng(0)
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    spacing = (1.5, 1.0, 0.75)
    for _ in range(2):
        c1, c2 = rng.uniform(9, 15, 3), rng.uniform(9, 15, 3)
        a = ((zz - c1[0]) / 6) ** 2 + ((yy - c1[1]) / 5) ** 2 + ((xx - c1[2]) / 4) ** 2 <= 1
        b = ((zz - c2[0]) / 4) ** 2 + ((yy - c2[1]) / 6) ** 2 + ((xx - c2[2]) / 5) ** 2 <= 1
        assert hd95_mm(a, b, spacing) == pytest.approx(_brute_hd95(a, b, spacing), rel=1e-5)


def test_case_metrics_brats_regions_and_empties():
    truth = np.zeros(SHAPE, dtype=np.int16)
    truth[4:16, 4:16, 4:16] = 2  # oedema
    truth[6:14, 6:14, 6:14] = 1  # necrosis
    truth[8:12, 8:12, 8:12] = 4  # enhancing
    pred = truth.copy()
    pred[pred == 4] = 1  # predicts no ET; TC and WT unchanged
    spacing = (1.0, 2.0, 3.0)
    m = case_metrics(pred, truth, BRATS, spacing)
    assert list(m) == ["TC", "WT", "ET"]
    assert m["TC"] == {"dice": 1.0, "hd95": 0.0, "empty_pred": False, "empty_truth": False}
    assert m["WT"]["dice"] == 1.0
    diagonal = math.sqrt(24**2 + 48**2 + 72**2)
    assert m["ET"] == {"dice": 0.0, "hd95": pytest.approx(diagonal), "empty_pred": True, "empty_truth": False}
    assert volume_diagonal(SHAPE, spacing) == pytest.approx(diagonal)

    no_et = np.where(truth == 4, 1, truth)
    m = case_metrics(no_et, no_et, BRATS, spacing)
    assert m["ET"] == {"dice": 1.0, "hd95": 0.0, "empty_pred": True, "empty_truth": True}
    m = case_metrics(truth, no_et, BRATS, spacing)
    assert m["ET"]["empty_truth"] and not m["ET"]["empty_pred"] and m["ET"]["hd95"] == pytest.approx(diagonal)

    with pytest.raises(ValueError, match="differs from truth shape"):
        case_metrics(pred[:-1], truth, BRATS, spacing)


def test_summarize_counts_empties_and_never_drops_them():
    rows = metric_rows("a", {"ET": {"dice": 0.8, "hd95": 2.0, "empty_pred": False, "empty_truth": False}})
    rows += metric_rows("b", {"ET": {"dice": 0.0, "hd95": 100.0, "empty_pred": True, "empty_truth": False}})
    rows += metric_rows("c", {"ET": {"dice": 1.0, "hd95": 0.0, "empty_pred": True, "empty_truth": True}})
    expected = {"case": "b", "region": "ET", "dice": 0.0, "hd95": 100.0, "empty_pred": True, "empty_truth": False}
    assert rows[1] == expected
    s = summarize(rows)["ET"]
    assert s["n_cases"] == 3 and s["n_empty_pred"] == 2 and s["n_empty_truth"] == 1
    assert s["dice_mean"] == pytest.approx(0.6)
    assert s["dice_std"] == pytest.approx(np.std([0.8, 0.0, 1.0]))
    assert s["hd95_mean"] == pytest.approx(34.0)
    bad = rows + metric_rows("d", {"ET": {"dice": float("nan"), "hd95": 0.0, "empty_pred": 0, "empty_truth": 0}})
    with pytest.raises(ValueError, match="non-finite"):
        summarize(bad)


def test_spacing_from_affine_rotated():
    theta = np.deg2rad(30)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([1.5, 0.8, 3.0])
    affine[:3, 3] = [10, -20, 5]
    spacing = spacing_from_affine(affine)
    assert spacing == pytest.approx((1.5, 0.8, 3.0))
    assert all(type(s) is float for s in spacing)
    assert spacing_from_affine(np.diag([-1.0, 1.0, 1.0, 1.0]).astype(np.float32)) == (1.0, 1.0, 1.0)
