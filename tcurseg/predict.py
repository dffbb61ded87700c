"""Segment unlabelled images with a trained model:
``python -m tcurseg.predict run=outputs/<date>/<run> input=<file | folder | data list> out=<folder>``.
Writes ``<out>/<id>.nii.gz`` (original affine and orientation, original label values) and ``<out>/overlays/``.
``input`` is a NIfTI file, a folder (one file per case, or nnU-Net's ``CASE_0000.nii.gz`` naming for several
channels) or a data list (its test split; ``data_root=`` for relative paths)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import hydra
from omegaconf import DictConfig

from tcurseg.cli import user_errors
from tcurseg.data.errors import DataError
from tcurseg.data.lists import load_data_list
from tcurseg.engine.dataload import resolve_sw_batch_size
from tcurseg.engine.evaluator import inference_options, predict_cases
from tcurseg.engine.runtime import amp_dtype, resolve_device
from tcurseg.engine.trainer import load_run_model, run_model_file
from tcurseg.paths import conf_dir

log = logging.getLogger("tcurseg.predict")


NNUNET_NAME = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})\.nii(\.gz)?$")
"""nnU-Net's file naming: one file per channel, ``CASE_0000.nii.gz``, ``CASE_0001.nii.gz``, ..."""


def _folder_entries(folder: Path) -> list[dict]:
    """One case per file, or nnU-Net's naming (every file ``CASE_XXXX.nii.gz``): the channels of a case in order."""
    files = sorted(p for p in folder.iterdir() if p.name.endswith((".nii", ".nii.gz")))
    if not files:
        raise DataError(f"{folder}: no .nii / .nii.gz images to segment")
    matches = [NNUNET_NAME.match(f.name) for f in files]
    if not all(matches):
        return [{"id": f.name.removesuffix(".gz").removesuffix(".nii"), "image": str(f)} for f in files]
    cases: dict[str, dict[int, Path]] = {}
    for f, m in zip(files, matches):
        cases.setdefault(m["case"], {})[int(m["channel"])] = f
    counts = {len(channels) for channels in cases.values()}
    problems = [f"{folder}: case {case} has channels {sorted(channels)}, expected 0..{len(channels) - 1}"
                for case, channels in cases.items() if sorted(channels) != list(range(len(channels)))]
    if len(counts) > 1:
        problems.append(f"{folder}: the cases have different numbers of channels ({sorted(counts)})")
    if problems:
        raise DataError("\n".join(problems))
    return [{"id": case, "image": [str(channels[c]) for c in sorted(channels)] if len(channels) > 1
             else str(channels[0])} for case, channels in sorted(cases.items())]


def input_entries(source: str | Path, data_root: str | Path | None = None) -> list[dict]:
    """Cases to segment: one NIfTI file; a folder of NIfTI files, one per case or in nnU-Net's naming
    (``CASE_0000.nii.gz``, ``CASE_0001.nii.gz``, ... for several channels); or the test split of a data list, its
    paths relative to ``data_root``."""
    path = Path(source)
    if path.suffix == ".json":
        return [{k: v for k, v in e.items() if k != "label"} for e in load_data_list(path, data_root).get("test", [])]
    if path.is_dir():
        return _folder_entries(path)
    if path.is_file():
        return [{"id": path.name.removesuffix(".gz").removesuffix(".nii"), "image": str(path)}]
    raise DataError(f"{path}: input not found")


def check_channels(entries: list[dict], in_channels: int, source: str | Path) -> None:
    """Refuse, one line, cases given as several files whose count differs from the model's input channels."""
    wrong = [e["id"] for e in entries if isinstance(e["image"], list) and len(e["image"]) != in_channels]
    if in_channels > 1 and any(not isinstance(e["image"], list) for e in entries):
        wrong = [e["id"] for e in entries]
    if wrong:
        raise DataError(f"{source}: the model takes {in_channels} channel(s); cases {', '.join(wrong[:5])} do not "
                        "have that many files (nnU-Net naming CASE_0000.nii.gz, CASE_0001.nii.gz, ... or a data list)")


def predict(cfg: DictConfig) -> Path:
    model, run_cfg = load_run_model(run_model_file(cfg.run, cfg.checkpoint))
    entries = input_entries(cfg.input, cfg.get("data_root"))
    check_channels(entries, int(run_cfg.data.in_channels), cfg.input)
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    predict_cases(model, entries, run_cfg.data, out, roi=list(run_cfg.model.img_size),
                  overlap=float(cfg.eval.overlap),
                  sw_batch_size=resolve_sw_batch_size(cfg.eval.sw_batch_size, device),
                  device=device, dtype=amp_dtype(device, run_cfg.amp),
                  overlays=int(cfg.eval.overlays), with_label=False, predictions_dir=out,
                  **inference_options(cfg.eval, run_cfg))
    log.info("%d predictions written to %s", len(entries), out)
    return out


@hydra.main(version_base=None, config_path=str(conf_dir()), config_name="predict")
def main(cfg: DictConfig) -> None:
    with user_errors():
        predict(cfg)


if __name__ == "__main__":
    main()
