"""Run outputs: predictions as NIfTI, metrics CSV, summary JSON and PNG overlays."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tcurseg.engine.metrics import METRIC_FIELDS

OVERLAY_PANEL_PX = 256
OVERLAY_TITLE_PX = 32
OVERLAY_DPI = 100
REGION_COLOURS = ("#00ff00", "#ff00ff", "#00ffff", "#ffff00", "#ff8000", "#8080ff")
"""One colour per region; truth contours solid, prediction contours dashed."""


def save_prediction(label_map: np.ndarray, affine: np.ndarray, path: str | Path) -> Path:
    """Write a 3D label map as NIfTI with the original ``affine`` (sform and qform, code 1 = scanner).

    Stored as uint8 when all labels are in 0..255, else int16 (labels must fit in int16).
    """
    data = np.asarray(label_map)
    if data.ndim != 3:
        raise ValueError(f"save_prediction expects a 3D label map, got shape {data.shape}")
    if data.size and data.min() >= 0 and data.max() <= np.iinfo(np.uint8).max:
        dtype = np.uint8
    elif data.size == 0 or (data.min() >= np.iinfo(np.int16).min and data.max() <= np.iinfo(np.int16).max):
        dtype = np.int16
    else:
        raise ValueError(f"labels {data.min()}..{data.max()} do not fit in int16 for {path}")
    affine = np.asarray(affine, dtype=np.float64)
    img = nib.Nifti1Image(data.astype(dtype), affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    return path


def write_metrics_csv(rows: Sequence[Mapping], path: str | Path) -> Path:
    """One line per case x region with columns case, region, dice, hd95, empty_pred, empty_truth."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(METRIC_FIELDS), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row[k] for k in METRIC_FIELDS})
    return path


def _jsonable(value: object, where: str) -> object:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(list(value))]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"summary value {where} is {value}; JSON needs finite numbers")
    if isinstance(value, Path):
        return str(value)
    return value


def write_summary_json(summary: Mapping, path: str | Path) -> Path:
    """Write ``summary`` as indented, strict JSON (numpy scalars/arrays converted; NaN/inf rejected by key)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_jsonable(summary, "summary"), indent=2, allow_nan=False)
    path.write_text(text + "\n")
    return path


def _largest_slices(truth: np.ndarray | None, pred: np.ndarray) -> tuple[int, int, int]:
    """Per axis, the slice with the largest foreground area of the truth (else of the prediction, else the middle):
    a centroid can fall between two structures (the two hippocampi) and show nothing."""
    for mask in (truth, pred):
        if mask is not None and (mask > 0).any():
            fg = np.asarray(mask) > 0
            return tuple(int(np.argmax(fg.sum(axis=tuple(a for a in range(3) if a != axis)))) for axis in range(3))
    return tuple(n // 2 for n in pred.shape)


def save_overlay_png(
    image: np.ndarray,
    truth: np.ndarray | None,
    pred: np.ndarray,
    path: str | Path,
    title: str = "",
    regions: Mapping[str, Sequence[int]] | None = None,
) -> Path:
    """Write :func:`overlay_figure` as a PNG at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    overlay_figure(image, truth, pred, title, regions).savefig(path, dpi=OVERLAY_DPI, facecolor="black")
    return path


def overlay_figure(image: np.ndarray, truth: np.ndarray | None, pred: np.ndarray, title: str = "",
                   regions: Mapping[str, Sequence[int]] | None = None) -> Figure:
    """Three orthogonal slices, each where the truth (else the prediction) has its largest area.

    The image is shown in gray (1st-99th percentile window); each region (label values; default: every value > 0)
    has its colour (``REGION_COLOURS`` in order), the truth contour solid and the prediction contour dashed. The PNG
    is ``3 * OVERLAY_PANEL_PX`` wide and ``OVERLAY_PANEL_PX + OVERLAY_TITLE_PX`` high; the title bar names the
    regions in their colours. Each panel shows slice[axis] transposed, origin lower left.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or np.shape(pred) != image.shape or (truth is not None and np.shape(truth) != image.shape):
        raise ValueError(f"overlay needs 3D image, truth and prediction of one shape, got image {image.shape}")
    centre = _largest_slices(truth, pred)
    vmin, vmax = (float(v) for v in np.percentile(image, [1, 99]))
    width, height = 3 * OVERLAY_PANEL_PX, OVERLAY_PANEL_PX + OVERLAY_TITLE_PX
    fig = Figure(figsize=(width / OVERLAY_DPI, height / OVERLAY_DPI), dpi=OVERLAY_DPI, facecolor="black")
    FigureCanvasAgg(fig)
    masks = {name: [int(v) for v in values] for name, values in (regions or {}).items()} or {"foreground": None}
    for axis in range(3):
        ax = fig.add_axes((axis / 3, 0, 1 / 3, OVERLAY_PANEL_PX / height))
        ax.set_axis_off()
        index = [slice(None)] * 3
        index[axis] = centre[axis]
        ax.imshow(image[tuple(index)].T, cmap="gray", vmin=vmin, vmax=max(vmax, vmin + 1e-6), origin="lower")
        for (name, values), colour in zip(masks.items(), REGION_COLOURS):
            for mask, style in ((truth, "solid"), (pred, "dashed")):
                if mask is None:
                    continue
                plane = np.asarray(mask)[tuple(index)]
                plane = (np.isin(plane, values) if values is not None else plane > 0).T.astype(np.float32)
                if 0 < plane.sum() < plane.size:
                    ax.contour(plane, levels=[0.5], colors=colour, linewidths=1.2, linestyles=style)
    text_y = 1 - OVERLAY_TITLE_PX / (2 * height)
    if title:
        fig.text(0.02, text_y, title, color="white", ha="left", va="center")
    for i, (name, colour) in enumerate(zip(reversed(list(masks)), reversed(REGION_COLOURS[: len(masks)]))):
        fig.text(0.98 - 0.09 * i, text_y, name, color=colour, ha="right", va="center")
    return fig
