"""Geometry: an anisotropic (0.5 x 0.5 x 2 mm), oblique scan with a known segmentation. Predictions come back on the
file's own grid (shape, affine) and the metrics are computed there against the label file, with ``data.spacing``
(resampled to 1 mm and cropped to the brain) and without it (native grid)."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import torch

from tcurseg.data.transforms import eval_transforms
from tcurseg.engine.evaluator import predict_cases


class Threshold(torch.nn.Module):
    """Class 1 where the (z-scored) intensity is above ``level``."""

    def __init__(self, level: float) -> None:
        super().__init__()
        self.level = level

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.level - x[:, :1], x[:, :1] - self.level), dim=1)


def _midway_level(entry: dict, data_cfg: dict) -> float:
    """Half-way between the z-scored brain (raw 50) and ball (raw 100) intensities of the transformed image."""
    x = eval_transforms(data_cfg)(dict(entry))["image"][0]
    values, counts = torch.unique(x[x != 0], return_counts=True)
    return float(x.max() + values[counts.argmax()]) / 2


def _oblique_case(tmp_path) -> dict:
    shape, spacing = (48, 48, 14), (0.5, 0.5, 2.0)
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    affine = np.eye(4)
    affine[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag(spacing)
    affine[:3, 3] = [-10, 5, -14]
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    centre = np.array([*shape[:2], shape[2]]) / 2 @ affine[:3, :3].T + affine[:3, 3]
    ball = np.linalg.norm(world - centre, axis=-1) < 6.0        # radius 6 mm
    brain = np.zeros(shape, bool)
    brain[3:-3, 3:-3, 1:-1] = True                               # zero background around the "brain"
    image = np.where(ball, 100.0, 50.0) * brain
    label = (ball & brain).astype(np.uint8)
    nib.save(nib.Nifti1Image(image.astype(np.float32), affine), tmp_path / "img.nii.gz")
    nib.save(nib.Nifti1Image(label, affine), tmp_path / "seg.nii.gz")
    return {"id": "oblique", "image": str(tmp_path / "img.nii.gz"), "label": str(tmp_path / "seg.nii.gz")}


@pytest.mark.parametrize("spacing", [None, [1.0, 1.0, 1.0]])
def test_anisotropic_oblique_case_round_trips(tmp_path, spacing):
    entry = _oblique_case(tmp_path)
    data_cfg = {"label_values": [0, 1], "regions": {"ball": [1]}, "spacing": spacing}
    rows = predict_cases(Threshold(_midway_level(entry, data_cfg)), [entry], data_cfg, tmp_path / "out",
                         roi=[16, 16, 16], overlap=0.25,
                         device=torch.device("cpu"), dtype=None, overlays=0, with_label=True)
    written = nib.load(tmp_path / "out" / "predictions" / "oblique.nii.gz")
    original = nib.load(entry["label"])
    assert written.shape == original.shape == (48, 48, 14)
    np.testing.assert_allclose(written.affine, original.affine, atol=1e-6)

    pred, truth = np.asarray(written.dataobj) == 1, np.asarray(original.dataobj) == 1
    dice = 2 * (pred & truth).sum() / (pred.sum() + truth.sum())
    assert rows[0]["dice"] == pytest.approx(dice, abs=1e-9)        # the metric is the one on the file's grid
    if spacing is None:
        assert rows[0]["dice"] == 1.0 and rows[0]["hd95"] == 0.0    # native grid: the threshold is exact
    else:
        assert 0.85 < rows[0]["dice"] < 1.0 and rows[0]["hd95"] <= 2.0   # 1 mm resampling blurs the boundary
