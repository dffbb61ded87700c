"""MONAI dictionary transforms (keys ``image``, ``label``) for training and evaluation.

Label files hold the dataset's original values (``cfg["label_values"]``, e.g. BraTS 0,1,2,4);
they are mapped to 0..C-1 in that order. Images are z-scored on non-zero voxels per channel,
as the authors do. Evaluation keeps the whole volume and its MetaTensor metadata, so the
original affine is available to save predictions.
"""

from __future__ import annotations

import math
from typing import Any

from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapLabelValued,
    NormalizeIntensityd,
    Orientationd,
    RandAffined,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Spacingd,
    SpatialPadd,
)

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


def train_transforms(cfg: Any, augment: Any) -> Compose:
    """Training pipeline: load, RAS, label mapping, z-score, a random rotation (+-``augment.rotate_deg`` per axis) and
    scaling (+-``augment.scale``) of the whole volume with probability ``augment.affine_prob`` (image linear, label
    nearest), pad, ``num_samples`` foreground-weighted crops of ``roi_size``, flips along ``augment.flip_axes``
    (0 = left-right in RAS), intensity scale/shift (+-``augment.intensity``). Returns a list of crops per case."""
    keys = ["image", "label"]
    roi = [int(s) for s in cfg["roi_size"]]
    angle = math.radians(float(augment["rotate_deg"]))
    spatial = []
    if float(augment["affine_prob"]) > 0:
        spatial.append(RandAffined(keys=keys, prob=float(augment["affine_prob"]), rotate_range=(angle,) * 3,
                                   scale_range=(float(augment["scale"]),) * 3, mode=("bilinear", "nearest"),
                                   padding_mode="zeros"))
    return Compose(
        [
            *_load(cfg, keys),
            *spatial,
            SpatialPadd(keys=keys, spatial_size=roi),
            RandCropByPosNegLabeld(
                keys=keys,
                label_key="label",
                spatial_size=roi,
                pos=1.0,
                neg=1.0,
                num_samples=int(cfg.get("num_samples", 1)),
                image_key="image",
                image_threshold=0.0,
            ),
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
