"""Evaluate a trained model on a split: ``python -m tcurseg.evaluate run=outputs/<date>/<run>``, or a base model plus
an adapter file: ``python -m tcurseg.evaluate +experiment=demo adapter=path/adapter.safetensors``.

Writes ``metrics.csv`` (per case and region: Dice, HD95 in mm), ``summary.json``, NIfTI predictions with the
original affine and PNG overlays into ``<run>/eval_<split>`` (or next to the adapter file)."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from tcurseg import peft
from tcurseg.cli import prepare_data, user_errors
from tcurseg.data.lists import load_data_list
from tcurseg.engine.dataload import resolve_sw_batch_size
from tcurseg.engine.evaluator import format_table, inference_options, predict_cases, write_evaluation
from tcurseg.engine.runconfig import NO_WEIGHTS
from tcurseg.engine.runtime import amp_dtype, resolve_device
from tcurseg.engine.trainer import load_run_model, model_config, run_model_file
from tcurseg.models import build_network, load_pretrained
from tcurseg.paths import conf_dir

log = logging.getLogger("tcurseg.evaluate")


def load_model(cfg: DictConfig) -> tuple[torch.nn.Module, DictConfig, Path]:
    """(model, the config it was trained with, the folder results go to) from ``run`` or ``adapter``."""
    if cfg.run:
        model, run_cfg = load_run_model(run_model_file(cfg.run, cfg.checkpoint))
        return model, run_cfg, Path(cfg.run)
    if cfg.adapter:
        model = build_network(model_config(cfg))
        if cfg.pretrained and str(cfg.pretrained).lower() != NO_WEIGHTS:
            log.info("base weights: %s", load_pretrained(model, cfg.pretrained,
                                                         trusted=bool(cfg.get("pretrained_trusted"))).summary())
        peft.load_adapter(model, cfg.adapter)
        return model, cfg, Path(cfg.adapter).parent
    raise ValueError("say what to evaluate: run=<training output dir> or adapter=<file> (with pretrained=<base>)")


def evaluate(cfg: DictConfig) -> dict:
    model, run_cfg, where = load_model(cfg)
    data_cfg = run_cfg.data
    if cfg.data_list:
        data_cfg = OmegaConf.merge(data_cfg, {"data_list": cfg.data_list, "synth": None})
    prepare_data(data_cfg, splits=(cfg.split,))
    entries = load_data_list(data_cfg.data_list, data_cfg.get("data_root")).get(cfg.split, [])
    if not entries:
        raise ValueError(f"{data_cfg.data_list}: split {cfg.split!r} is empty")
    device = resolve_device(cfg.device)
    out = where / f"eval_{cfg.split}"
    rows = predict_cases(model, entries, data_cfg, out, roi=list(run_cfg.model.img_size),
                         overlap=float(cfg.eval.overlap),
                         sw_batch_size=resolve_sw_batch_size(cfg.eval.sw_batch_size, device),
                         device=device, amp=amp_dtype(device, cfg.amp) is not None,
                         overlays=int(cfg.eval.overlays), with_label=True, **inference_options(cfg.eval, run_cfg))
    evaluated = {"checkpoint": str(cfg.checkpoint), "file": str(run_model_file(cfg.run, cfg.checkpoint).resolve())
                 } if cfg.run else {"adapter": str(Path(cfg.adapter).resolve())}
    summary = write_evaluation(rows, {"params": peft.trainable_report(model), "split": cfg.split,
                                      "data_list": str(data_cfg.data_list), "evaluated": evaluated}, out)
    log.info("%s (%d cases, %s) -> %s\n%s", cfg.split, len(entries), evaluated, out, format_table(summary))
    return summary


@hydra.main(version_base=None, config_path=str(conf_dir()), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    with user_errors():
        evaluate(cfg)


if __name__ == "__main__":
    main()
