import csv
import json

import nibabel as nib
import numpy as np
import pytest
from matplotlib.image import imread

from tcurseg.engine.metrics import case_metrics, metric_rows, summarize
from tcurseg.engine.report import (
    OVERLAY_PANEL_PX,
    OVERLAY_TITLE_PX,
    save_overlay_png,
    save_prediction,
    write_metrics_csv,
    write_summary_json,
)


def _rotated_affine() -> np.ndarray:
    theta = np.deg2rad(17)
    affine = np.eye(4)
    affine[:3, :3] = np.array(
        [[np.cos(theta), 0, np.sin(theta)], [0, 1, 0], [-np.sin(theta), 0, np.cos(theta)]]
    ) @ np.diag([-1.2, 0.9, 2.5])
    affine[:3, 3] = [90.3, -126.7, -72.1]
    return affine.astype(np.float32).astype(np.float64)  # as read from a NIfTI header


@pytest.mark.parametrize("top, dtype", [(4, np.uint8), (300, np.int16)])
def test_save_prediction_keeps_affine(tmp_path, top, dtype):
    labels = np.zeros((6, 7, 8), dtype=np.int64)
    labels[1:3, 2:5, 3:6] = top
    affine = _rotated_affine()
    path = save_prediction(labels, affine, tmp_path / "pred" / "case1.nii.gz")
    img = nib.load(path)
    assert np.array_equal(img.affine, affine)
    assert img.get_data_dtype() == dtype
    assert np.array_equal(np.asarray(img.dataobj), labels)


def test_metrics_csv_and_summary_json(tmp_path):
    truth = np.zeros((16, 16, 16), dtype=np.uint8)
    truth[4:10, 4:10, 4:10] = 1
    rows = metric_rows("sub1", case_metrics(truth, truth, {"hippo": [1]}, (1.0, 1.0, 1.0)))
    rows += metric_rows("sub2", case_metrics(np.zeros_like(truth), truth, {"hippo": [1]}, (1.0, 1.0, 1.0)))
    write_metrics_csv(rows, tmp_path / "metrics.csv")
    with (tmp_path / "metrics.csv").open() as f:
        read = list(csv.DictReader(f))
    assert list(read[0]) == ["case", "region", "dice", "hd95", "empty_pred", "empty_truth"]
    assert [r["case"] for r in read] == ["sub1", "sub2"]
    assert float(read[1]["dice"]) == 0.0 and read[1]["empty_pred"] == "True"

    summary = {"metrics": summarize(rows), "params": {"adapter": np.int64(4608)}, "spacing": np.array([1.0, 2.0])}
    write_summary_json(summary, tmp_path / "summary.json")
    loaded = json.loads((tmp_path / "summary.json").read_text())
    assert loaded["metrics"]["hippo"]["n_empty_pred"] == 1
    assert loaded["params"]["adapter"] == 4608 and loaded["spacing"] == [1.0, 2.0]
    with pytest.raises(ValueError, match=r"summary.peak_mb is nan"):
        write_summary_json({"peak_mb": float("nan")}, tmp_path / "bad.json")


def test_overlay_png(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(30, 34, 28)).astype(np.float32)
    truth = np.zeros(image.shape, dtype=np.uint8)
    truth[10:20, 12:22, 8:18] = 1
    pred = np.zeros_like(truth)
    pred[13:24, 15:25, 10:20] = 2
    path = save_overlay_png(image, truth, pred, tmp_path / "png" / "sub1.png", title="sub1 dice 0.50")
    rgb = imread(path)[..., :3]
    assert rgb.shape == (OVERLAY_PANEL_PX + OVERLAY_TITLE_PX, 3 * OVERLAY_PANEL_PX, 3)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    assert ((g > 0.8) & (r < 0.3) & (b < 0.3)).sum() > 100  # one region (foreground): truth and prediction in green
    save_overlay_png(image, None, np.zeros_like(pred), tmp_path / "empty.png")
    assert imread(tmp_path / "empty.png").shape[:2] == rgb.shape[:2]


def test_overlay_shows_two_separate_structures_one_colour_per_region(tmp_path):
    """Two blobs far apart (like the two hippocampi): the centroid slice would cut neither; the largest-area one does.
    Regions TC (1, 4) and ET (4) get their own colours."""
    from tcurseg.engine.report import _largest_slices

    image = np.random.default_rng(0).normal(size=(40, 20, 20)).astype(np.float32)
    truth = np.zeros(image.shape, dtype=np.uint8)
    truth[2:8, 5:15, 5:15] = 1
    truth[30:39, 4:16, 4:16] = 4
    assert _largest_slices(truth, truth)[0] in range(30, 39)  # not 18, the empty centroid slice
    path = save_overlay_png(image, truth, truth, tmp_path / "regions.png", regions={"TC": [1, 4], "ET": [4]})
    r, g, b = (imread(path)[:OVERLAY_PANEL_PX + OVERLAY_TITLE_PX, :, :3][..., k] for k in range(3))
    assert ((g > 0.8) & (r < 0.3) & (b < 0.3)).sum() > 50   # TC, green
    assert ((r > 0.8) & (b > 0.8) & (g < 0.3)).sum() > 50   # ET, magenta
