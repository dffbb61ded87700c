"""Segment unlabelled images with a trained model:
``python -m tcurseg.predict run=outputs/<date>/<run> input=<file | folder | data list> out=<folder>``.
Writes ``<out>/predictions/<id>.nii.gz`` (original affine and orientation, original label values) and overlays."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from tcurseg.cli import user_errors
from tcurseg.data.errors import DataError
from tcurseg.data.lists import load_data_list
from tcurseg.engine.dataload import resolve_sw_batch_size
from tcurseg.engine.evaluator import predict_cases
from tcurseg.engine.runtime import amp_dtype, resolve_device
from tcurseg.engine.trainer import load_run_model, run_model_file
from tcurseg.paths import conf_dir

log = logging.getLogger("tcurseg.predict")


def input_entries(source: str | Path) -> list[dict]:
    """Cases to segment: one NIfTI file, every ``*.nii``/``*.nii.gz`` of a folder, or the test split of a data list."""
    path = Path(source)
    if path.suffix == ".json":
        return [{k: v for k, v in e.items() if k != "label"} for e in load_data_list(path).get("test", [])]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.name.endswith((".nii", ".nii.gz")))
    elif path.is_file():
        files = [path]
    else:
        raise DataError(f"{path}: input not found")
    if not files:
        raise DataError(f"{path}: no .nii / .nii.gz images to segment")
    return [{"id": f.name.removesuffix(".gz").removesuffix(".nii"), "image": str(f)} for f in files]


def predict(cfg: DictConfig) -> Path:
    model, run_cfg = load_run_model(run_model_file(cfg.run, cfg.checkpoint))
    entries = input_entries(cfg.input)
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    predict_cases(model, entries, run_cfg.data, out, roi=list(run_cfg.model.img_size),
                  overlap=float(cfg.eval.overlap),
                  sw_batch_size=resolve_sw_batch_size(cfg.eval.sw_batch_size, device),
                  device=device, amp=amp_dtype(device, cfg.amp) is not None,
                  overlays=int(cfg.eval.overlays), with_label=False)
    log.info("%d predictions written to %s", len(entries), out / "predictions")
    return out


@hydra.main(version_base=None, config_path=str(conf_dir()), config_name="predict")
def main(cfg: DictConfig) -> None:
    with user_errors():
        predict(cfg)


if __name__ == "__main__":
    main()
