"""MONAI dictionary transforms (keys ``image``, ``label``) for training and evaluation.

Label files hold the dataset's original values (``cfg["label_values"]``, e.g. BraTS 0,1,2,4);
they are mapped to 0..C-1 in that order. Images are z-scored on non-zero voxels per channel,
as the authors do. Evaluation keeps the whole volume and its MetaTensor metadata, so the
original affine is available to save predictions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapLabelValued,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    RandAffined,
    RandCropByPosNegLabeld,
    RandFlipd,
    Randomizable,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Spacingd,
    SpatialPadd,
)
from monai.transforms.utils import generate_pos_neg_label_crop_centers

AXCODES = "RAS"


def _groups(cfg: Any) -> list[list[int]]:
    return [[int(v)] if isinstance(v, (int, str)) else [int(x) for x in v] for v in cfg["label_values"]]


def num_classes(cfg: Any) -> int:
    """Number of output classes = len(cfg["label_values"])."""
    return len(cfg["label_values"])


def class_values(cfg: Any) -> list[int]:
    """The label-file value written for each class: the value itself, or the first of a merged group."""
    return [group[0] for group in _groups(cfg)]


def allowed_label_values(cfg: Any) -> list[int]:
    """Every value a label file may hold (merged groups flattened)."""
    return [v for group in _groups(cfg) for v in group]


def _label_map(cfg: Any) -> MapLabelValued:
    """Class c holds the values of ``label_values[c]``: a value, or a list of values merged into one class
    (``[0, [1, 2, 4]]``: BraTS labels as a binary whole-tumour label, as the authors pretrain)."""
    groups = _groups(cfg)
    orig = [v for group in groups for v in group]
    target = [c for c, group in enumerate(groups) for _ in group]
    return MapLabelValued(keys="label", orig_labels=orig, target_labels=target)


def _load(cfg: Any, keys: list[str]) -> list:
    """Load, RAS; with ``cfg["spacing"]`` (mm) resample to it (image linear, label nearest) and crop to the brain
    (the box of voxels > 0 in any channel), else keep the native grid; map labels, z-score."""
    steps = [
        LoadImaged(keys=keys, image_only=True),
        EnsureChannelFirstd(keys=keys),
        Orientationd(keys=keys, axcodes=AXCODES, labels=(("L", "R"), ("P", "A"), ("I", "S"))),
    ]
    if cfg.get("spacing"):
        steps += [Spacingd(keys=keys, pixdim=[float(v) for v in cfg["spacing"]],
                           mode=["bilinear", "nearest"][: len(keys)]),
                  CropForegroundd(keys=keys, source_key="image", allow_smaller=True)]
    if "label" in keys:
        steps.append(_label_map(cfg))
    steps.append(NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True))
    return steps


FG_KEY = "fg_indices"
BG_KEY = "bg_indices"


def _plain(value: Any) -> torch.Tensor:
    """The tensor without MONAI's metadata tracking (crops need none)."""
    return value.as_tensor() if isinstance(value, MetaTensor) else torch.as_tensor(value)


class CropCentresd(MapTransform):
    """Where foreground-weighted crops may be centred, computed once per case (so the cache holds it): the flat
    indices (int32) of the foreground voxels (label > 0) and of the background voxels inside the brain (label 0 and
    some image channel > 0), under ``FG_KEY`` and ``BG_KEY``; MONAI's ``FgBgToIndicesd`` with threshold 0."""

    def __init__(self, image_key: str = "image", label_key: str = "label") -> None:
        super().__init__(keys=[label_key])
        self.image_key, self.label_key = image_key, label_key

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        foreground = _plain(d[self.label_key])[0].reshape(-1) > 0
        inside = (_plain(d[self.image_key]) > 0).any(0).reshape(-1)
        d[FG_KEY] = torch.nonzero(foreground).squeeze(1).to(torch.int32).numpy()
        d[BG_KEY] = torch.nonzero(inside & ~foreground).squeeze(1).to(torch.int32).numpy()
        return d


def crop_box(start: Sequence[int], roi: Sequence[int], matrix: np.ndarray,
             shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The part of a volume of ``shape`` that an affine crop reads: output voxel ``o`` (offset from the centre of
    the plain crop at ``start``) samples the input at ``centre + matrix @ o``; returns (lo, hi), the box of every
    voxel a linear interpolation of those points touches, cut to the volume (hi exclusive)."""
    roi_half = (np.asarray(roi, float) - 1) / 2
    centre = np.asarray(start, float) + roi_half
    reach = np.abs(matrix) @ roi_half
    lo = np.maximum(np.floor(centre - reach).astype(int), 0)
    hi = np.minimum(np.ceil(centre + reach).astype(int) + 1, np.asarray(shape))
    return lo, hi


def affine_crop(image: torch.Tensor, label: torch.Tensor, start: Sequence[int], roi: Sequence[int],
                matrix: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``roi``-sized crop of ``image`` (C x spatial, float) and ``label`` (1 x spatial, float) under ``matrix``
    (3 x 3 rotation and scaling) about the centre of the plain crop at ``start``: output voxel ``o`` (offset from
    that centre) is the input at ``centre + matrix @ o``, linear for the image, nearest for the label, 0 outside the
    volume. Only the box of :func:`crop_box` is handed to the resampling; the identity matrix gives the plain crop."""
    roi_arr = np.asarray(roi, float)
    lo, hi = crop_box(start, roi, matrix, image.shape[1:])
    span = np.maximum(hi - lo - 1, 1)
    centre = np.asarray(start, float) + (roi_arr - 1) / 2
    # grid_sample with align_corners: -1 and 1 are the first and last voxel, of the output and of the box
    linear = matrix * ((roi_arr - 1) / 2)[None, :] * (2 / span)[:, None]
    shift = 2 * (centre - lo) / span - 1
    # grid_sample's coordinates are (x, y, z) = the last spatial axis first
    theta = np.concatenate([linear[::-1, ::-1], shift[::-1, None]], axis=1)
    grid = F.affine_grid(torch.as_tensor(theta[None], dtype=torch.float32), [1, 1, *[int(r) for r in roi]],
                         align_corners=True)
    box = (slice(None), *(slice(int(a), int(b)) for a, b in zip(lo, hi)))
    out_image = F.grid_sample(image[box][None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    out_label = F.grid_sample(label[box][None], grid, mode="nearest", padding_mode="zeros", align_corners=True)
    return out_image[0], out_label[0]


def _rotation(angles: np.ndarray) -> np.ndarray:
    """Rotation by ``angles`` (radians) about the first, second and third axis, in that order."""
    matrix = np.eye(3)
    for axis, angle in enumerate(angles):
        i, j = [k for k in range(3) if k != axis]
        turn = np.eye(3)
        turn[i, i] = turn[j, j] = np.cos(angle)
        turn[i, j], turn[j, i] = -np.sin(angle), np.sin(angle)
        matrix = turn @ matrix
    return matrix


class RandCropAffined(Randomizable, MapTransform):
    """``num_samples`` foreground-weighted crops of ``roi`` per case, each rotated and scaled with probability
    ``prob``. Centres are drawn as MONAI's ``RandCropByPosNegLabeld`` draws them (pos = neg = 1: half on a foreground
    voxel, half on a background voxel inside the brain, moved so that the crop lies in the volume), from the indices
    :class:`CropCentresd` stored; a rotated crop samples the volume about the crop's centre (:func:`affine_crop`),
    so the resampling covers the crop plus the margin the rotation and scaling reach, never the whole volume.
    Rotation +-``rotate`` radians about each axis, scale 1 +- ``scale`` per axis (above 1 zooms out), image linear,
    label nearest, zeros beyond the volume. Returns a list of dicts (image, label and the case's other keys)."""

    def __init__(self, roi: Sequence[int], num_samples: int, prob: float, rotate: float, scale: float,
                 image_key: str = "image", label_key: str = "label") -> None:
        MapTransform.__init__(self, keys=[image_key, label_key])
        self.roi, self.num_samples = [int(r) for r in roi], int(num_samples)
        self.prob, self.rotate, self.scale = float(prob), float(rotate), float(scale)
        self.image_key, self.label_key = image_key, label_key

    def randomize(self, data: Mapping) -> list[tuple[tuple[int, ...], np.ndarray | None]]:
        """Draw each crop's centre and matrix (None: not rotated or scaled)."""
        shape = tuple(data[self.label_key].shape[1:])
        centres = generate_pos_neg_label_crop_centers(self.roi, self.num_samples, 0.5, shape, data[FG_KEY],
                                                      data[BG_KEY], self.R)
        draws = []
        for centre in centres:
            matrix = None
            if self.R.rand() < self.prob:
                angles = self.R.uniform(-self.rotate, self.rotate, 3)
                matrix = _rotation(angles) @ np.diag(1 + self.R.uniform(-self.scale, self.scale, 3))
            draws.append((tuple(int(c) for c in centre), matrix))
        return draws

    def __call__(self, data: Mapping) -> list[dict]:
        image = _plain(data[self.image_key]).float()
        label = _plain(data[self.label_key]).float()
        rest = {k: v for k, v in data.items() if k not in (self.image_key, self.label_key, FG_KEY, BG_KEY)}
        crops = []
        for centre, matrix in self.randomize(data):
            start = [c - r // 2 for c, r in zip(centre, self.roi)]
            if matrix is None:
                box = (slice(None), *(slice(s, s + r) for s, r in zip(start, self.roi)))
                out_image, out_label = image[box].clone(), label[box].clone()
            else:
                out_image, out_label = affine_crop(image, label, start, self.roi, matrix)
            crops.append({**rest, self.image_key: out_image, self.label_key: out_label})
        return crops


SPATIAL_AUGMENTATIONS = ("crop", "volume")
"""``data.spatial_augmentation``: ``crop`` rotates and scales each crop about its centre, resampling the crop and its
margin only (:class:`RandCropAffined`; the real-data configs); ``volume`` (the default, which the embedded synthetic
tasks and their recorded comparison use) rotates and scales the whole volume, then crops it."""


def train_transforms(cfg: Any, augment: Any) -> Compose:
    """Training pipeline. Cached part (deterministic): load, RAS, spacing and brain crop, label mapping, z-score,
    pad to ``roi_size`` (``crop``: and the crop-centre indices, :class:`CropCentresd`). Random part: ``num_samples``
    foreground-weighted crops of ``roi_size``, rotated (+-``augment.rotate_deg`` per axis) and scaled
    (+-``augment.scale``) with probability ``augment.affine_prob``: each crop about its centre
    (``data.spatial_augmentation=crop``) or the whole volume before cropping (``volume``); then flips along
    ``augment.flip_axes`` (0 = left-right in RAS), intensity scale/shift (+-``augment.intensity``). Returns a list of
    crops per case."""
    keys = ["image", "label"]
    roi = [int(s) for s in cfg["roi_size"]]
    samples, prob = int(cfg.get("num_samples", 1)), float(augment["affine_prob"])
    angle, scale = math.radians(float(augment["rotate_deg"])), float(augment["scale"])
    where = str(cfg.get("spatial_augmentation", "volume"))
    if where == "crop":
        spatial = [SpatialPadd(keys=keys, spatial_size=roi), CropCentresd(),
                   RandCropAffined(roi, samples, prob, angle, scale)]
    elif where == "volume":
        spatial = [*([RandAffined(keys=keys, prob=prob, rotate_range=(angle,) * 3, scale_range=(scale,) * 3,
                                  mode=("bilinear", "nearest"), padding_mode="zeros")] if prob > 0 else []),
                   SpatialPadd(keys=keys, spatial_size=roi),
                   RandCropByPosNegLabeld(keys=keys, label_key="label", spatial_size=roi, pos=1.0, neg=1.0,
                                          num_samples=samples, image_key="image", image_threshold=0.0)]
    else:
        raise ValueError(f"data.spatial_augmentation={where}: expected one of {', '.join(SPATIAL_AUGMENTATIONS)}")
    return Compose(
        [
            *_load(cfg, keys),
            *spatial,
            *[RandFlipd(keys=keys, prob=0.5, spatial_axis=int(axis)) for axis in augment["flip_axes"]],
            RandScaleIntensityd(keys="image", factors=float(augment["intensity"]), prob=1.0),
            RandShiftIntensityd(keys="image", offsets=float(augment["intensity"]), prob=1.0),
            EnsureTyped(keys=keys, track_meta=False),
        ]
    )


def eval_transforms(cfg: Any, with_label: bool = True) -> Compose:
    """Evaluation/prediction pipeline: whole volume, the same load / RAS / spacing / crop / normalisation, metadata
    and the applied operations kept (``.meta["original_affine"]`` is the file's; ``Invertd`` maps a prediction back
    onto the file's grid)."""
    keys = ["image", "label"] if with_label else ["image"]
    return Compose([*_load(cfg, keys), EnsureTyped(keys=keys, track_meta=True)])
