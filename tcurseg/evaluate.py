"""Evaluate a trained model on a split: ``python -m tcurseg.evaluate run=outputs/<date>/<run>``, or a base model plus
an adapter file: ``python -m tcurseg.evaluate +experiment=demo adapter=path/adapter.safetensors``.

Writes ``metrics.csv`` (per case and region: Dice, HD95 in mm), ``summary.json``, NIfTI predictions with the
original affine and PNG overlays into a folder of its own per (split, data list, weights), named after them:
``<run>/eval/<split>-<checkpoint>`` for the run's own data list, ``<run>/eval/<list>-<split>-<checkpoint>`` for
another one (``data_list=``: ``<list>`` is its file name without ``.json``), ``<folder of the adapter>/eval/<list>-
<split>-<adapter file name>`` for an adapter file; ``out=`` names the folder instead. The folder's
``evaluated.json``, written before the first prediction, records what it holds; an evaluation never writes into a
folder that holds another one: a name taken by another data list gets a number (``<list>-<split>-<checkpoint>-2``),
and ``out=`` naming such a folder is refused. ``<run>/eval`` itself holds the test evaluation made by training."""

from __future__ import annotations

import json
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
from tcurseg.engine.report import write_summary_json
from tcurseg.engine.runconfig import NO_WEIGHTS
from tcurseg.engine.runtime import amp_dtype, resolve_device
from tcurseg.engine.trainer import load_run_model, model_config, run_model_file
from tcurseg.models import build_network, load_pretrained
from tcurseg.paths import conf_dir

log = logging.getLogger("tcurseg.evaluate")

EVALUATED = "evaluated.json"
"""The record of what an evaluation folder holds: split, data list (and root), weights."""


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


def _resolved(path: object) -> str | None:
    return None if path is None else str(Path(str(path)).expanduser().resolve())


def evaluation_record(cfg: DictConfig, data_cfg: DictConfig) -> dict:
    """What an evaluation evaluates: the split, the data list and the root of its relative paths (resolved), and the
    weights (a run's checkpoint and its file, or an adapter file)."""
    weights = ({"checkpoint": str(cfg.checkpoint), "file": _resolved(run_model_file(cfg.run, cfg.checkpoint))}
               if cfg.run else {"adapter": _resolved(cfg.adapter)})
    return {"split": str(cfg.split), "data_list": _resolved(data_cfg.data_list),
            "data_root": _resolved(data_cfg.get("data_root")), "weights": weights}


def _recorded(folder: Path) -> dict | None:
    try:
        return json.loads((folder / EVALUATED).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _holds_files(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def evaluation_dir(cfg: DictConfig, run_cfg: DictConfig, where: Path, record: dict) -> Path:
    """The folder of this evaluation (module docstring): ``out`` when given, unless it holds another evaluation;
    else ``<where>/eval/[<list>-]<split>-<weights>``, numbered when another evaluation holds that name."""
    if cfg.get("out"):
        out = Path(cfg.out)
        other = _recorded(out)
        if other is not None and other != record:
            raise ValueError(f"out={out} holds the evaluation of {_describe(other)}: choose another out= (this is "
                             f"{_describe(record)})")
        return out
    if cfg.run:
        weights = f"epoch{cfg.checkpoint}" if str(cfg.checkpoint).isdigit() else str(cfg.checkpoint)
    else:
        weights = Path(cfg.adapter).name.split(".")[0]
    name = f"{cfg.split}-{weights}"
    if not cfg.run or record["data_list"] != _resolved(run_cfg.data.data_list):
        name = f"{Path(record['data_list']).name.removesuffix('.json')}-{name}"
    folder, number = where / "eval" / name, 1
    while _recorded(folder) != record and _holds_files(folder):
        number += 1
        folder = where / "eval" / f"{name}-{number}"
    return folder


def _describe(record: dict) -> str:
    weights = record.get("weights") or {}
    return (f"split {record.get('split')} of {record.get('data_list')} with "
            f"{weights.get('file') or weights.get('adapter')}")


def evaluate(cfg: DictConfig) -> dict:
    model, run_cfg, where = load_model(cfg)
    data_cfg = run_cfg.data
    if cfg.data_list:
        data_cfg = OmegaConf.merge(data_cfg, {"data_list": cfg.data_list, "synth": None,
                                              **({"data_root": cfg.data_root} if cfg.get("data_root") else {})})
    prepare_data(data_cfg, splits=(cfg.split,))
    entries = load_data_list(data_cfg.data_list, data_cfg.get("data_root")).get(cfg.split, [])
    if not entries:
        raise ValueError(f"{data_cfg.data_list}: split {cfg.split!r} is empty")
    device = resolve_device(cfg.device)
    record = evaluation_record(cfg, data_cfg)
    out = evaluation_dir(cfg, run_cfg, where, record)
    log.info("evaluating %s -> %s", _describe(record), out)
    write_summary_json(record, out / EVALUATED)
    rows = predict_cases(model, entries, data_cfg, out, roi=list(run_cfg.model.img_size),
                         overlap=float(cfg.eval.overlap),
                         sw_batch_size=resolve_sw_batch_size(cfg.eval.sw_batch_size, device),
                         device=device, dtype=amp_dtype(device, run_cfg.amp),
                         overlays=int(cfg.eval.overlays), with_label=True, **inference_options(cfg.eval, run_cfg))
    summary = write_evaluation(rows, {"params": peft.trainable_report(model), "split": record["split"],
                                      "data_list": record["data_list"], "data_root": record["data_root"],
                                      "evaluated": record["weights"], "folder": str(out)}, out)
    log.info("%s (%d cases, %s) -> %s\n%s", cfg.split, len(entries), record["weights"], out, format_table(summary))
    return summary


@hydra.main(version_base=None, config_path=str(conf_dir()), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    with user_errors():
        evaluate(cfg)


if __name__ == "__main__":
    main()
