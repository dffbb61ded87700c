"""Whole-volume inference on a list of cases: sliding-window prediction, per-case per-region Dice / HD95, NIfTI
predictions in the original orientation and affine, PNG overlays, ``metrics.csv`` and ``summary.json``."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.transforms import Compose, Invertd
from tqdm import tqdm

from tcurseg.data.transforms import class_values, eval_transforms
from tcurseg.engine.inference import merged_for_inference, sliding_window_predict
from tcurseg.engine.metrics import case_metrics, metric_rows, spacing_from_affine, summarize
from tcurseg.engine.postprocess import keep_largest_components
from tcurseg.engine.report import save_overlay_png, save_prediction, write_metrics_csv, write_summary_json

log = logging.getLogger(__name__)


def on_original_grid(probabilities: torch.Tensor, data: Mapping, transform: Compose) -> torch.Tensor:
    """Class probabilities (C, ...) predicted on the transformed image ``data["image"]`` resampled onto the grid of
    the image file: MONAI's ``Invertd`` undoes the cropping, the resampling to ``data.spacing`` (linear) and the
    reorientation recorded on the image."""
    inverted = Invertd(keys="pred", transform=transform, orig_keys="image", nearest_interp=False)
    return inverted({"image": data["image"], "pred": probabilities})["pred"]


def original_label(entry: Mapping) -> np.ndarray:
    """The label file's voxels, as stored (values and grid)."""
    return np.asarray(nib.load(str(entry["label"])).dataobj).astype(np.int64)


def inference_options(eval_cfg: Mapping, run_cfg: Mapping) -> dict:
    """``mirror_axes`` and ``keep_components`` for :func:`predict_cases`: the command's ``eval`` value where it is set
    (not null), else the one the run was configured with (nnU-Net, too, keeps the post-processing with the trained
    model); a run made before these keys existed has neither."""
    run_eval = run_cfg.get("eval") or {}
    chosen = {key: eval_cfg.get(key) if eval_cfg.get(key) is not None else run_eval.get(key)
              for key in ("mirror_axes", "keep_components")}
    return {"mirror_axes": [int(a) for a in chosen["mirror_axes"] or []],
            "keep_components": {str(k): int(v) for k, v in (chosen["keep_components"] or {}).items()}}


def predict_cases(model: torch.nn.Module, entries: Sequence[Mapping], data_cfg: Mapping, out_dir: Path, *,
                  roi: Sequence[int], overlap: float, device: torch.device, dtype: torch.dtype | None, overlays: int,
                  with_label: bool, sw_batch_size: int = 4, predictions_dir: Path | None = None,
                  mirror_axes: Sequence[int] = (), keep_components: Mapping[str, int] | None = None) -> list[dict]:
    """Predict every case; writes ``<id>.nii.gz`` into ``predictions_dir`` (default ``out_dir/predictions``) and
    ``overlays/<id>.png`` (first ``overlays`` cases) under ``out_dir``; returns metric rows (empty without labels).
    ``mirror_axes``: test-time mirroring (:func:`sliding_window_predict`); ``keep_components``: per region, the number
    of largest connected components kept (:func:`keep_largest_components`), the rest set to background."""
    predictions_dir = out_dir / "predictions" if predictions_dir is None else predictions_dir
    values = np.asarray(class_values(data_cfg))
    regions = {k: list(v) for k, v in data_cfg["regions"].items()}
    keep = dict(keep_components or {})
    transform = eval_transforms(data_cfg, with_label=with_label)
    model = merged_for_inference(model).to(device)
    rows: list[dict] = []
    for i, entry in enumerate(tqdm(entries, desc="predicting", leave=False, disable=None, dynamic_ncols=True)):
        case = str(entry.get("id", i))
        data = transform(dict(entry))
        image = data["image"]
        logits = sliding_window_predict(model, image.unsqueeze(0).to(device), roi, overlap=overlap, dtype=dtype,
                                        sw_batch_size=sw_batch_size, mirror_axes=mirror_axes)
        pred = keep_largest_components(values[logits.argmax(1)[0].cpu().numpy()], regions, keep, values[0])
        original = np.asarray(image.meta["original_affine"], dtype=np.float64)
        probabilities = on_original_grid(torch.softmax(logits[0].float(), 0).cpu(), data, transform)
        pred_original = keep_largest_components(values[probabilities.argmax(0).numpy()], regions, keep, values[0])
        save_prediction(pred_original, original, predictions_dir / f"{case}.nii.gz")
        truth = values[data["label"][0].cpu().numpy().astype(np.int64)] if with_label else None
        if with_label:  # on the label file's own grid, in its millimetres
            per_region = case_metrics(pred_original, original_label(entry), regions, spacing_from_affine(original))
            rows += metric_rows(case, per_region)
            log.info("%s: %s", case, " ".join(f"{r}: dice {m['dice']:.3f} hd95 {m['hd95']:.2f}"
                                            for r, m in per_region.items()))
        if i < overlays:
            save_overlay_png(image[0].cpu().numpy(), truth, pred, out_dir / "overlays" / f"{case}.png", title=case,
                             regions=regions)
    return rows


def write_evaluation(rows: list[dict], extra: Mapping, out_dir: Path) -> dict:
    """``metrics.csv`` (per case and region) and ``summary.json`` (mean +- std per region, empty counts, ``extra``)."""
    write_metrics_csv(rows, out_dir / "metrics.csv")
    summary = {"regions": summarize(rows), **extra}
    write_summary_json(summary, out_dir / "summary.json")
    return summary


def format_table(summary: Mapping) -> str:
    """A small markdown table of the per-region results."""
    lines = ["| region | Dice | HD95 (mm) | cases | empty pred |", "|---|---|---|---|---|"]
    for region, s in summary["regions"].items():
        lines.append(f"| {region} | {s['dice_mean']:.3f} ± {s['dice_std']:.3f} | {s['hd95_mean']:.2f} ± "
                     f"{s['hd95_std']:.2f} | {s['n_cases']} | {s['n_empty_pred']} |")
    return "\n".join(lines)
