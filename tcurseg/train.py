"""Fine-tune (or pretrain) UNETR: ``python -m tcurseg.train +experiment=demo`` and Hydra overrides.

Generates the embedded data when asked, pretrains first when ``pretrained`` is missing and ``pretrain_recipe`` names
an experiment, trains (resuming from the newest checkpoint in the output dir), then evaluates the test split."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from tcurseg.cli import check_config, prepare_data, user_errors
from tcurseg.engine.runconfig import fresh_dir, pretrained_weights
from tcurseg.paths import conf_dir

if TYPE_CHECKING:
    import torch

    from tcurseg.engine.distributed import DistInfo

log = logging.getLogger("tcurseg.train")

if not OmegaConf.has_resolver("rank_zero_only"):
    OmegaConf.register_new_resolver("rank_zero_only", lambda value: value if os.environ.get("RANK", "0") == "0" else None)


def log_test_to_tensorboard(cfg: DictConfig, summary: dict, tb_dir: Path) -> None:
    """Test metrics per region and the run's hyper-parameters (TensorBoard's HPARAMS tab) next to the training curves."""
    from torch.utils.tensorboard import SummaryWriter

    hparams = {"method": cfg.method.name, "rank": cfg.method.get("rank") or 0, "cnn": str(cfg.method.get("cnn", "-")),
               "lr": float(cfg.optim.lr), "adapter_lr": float(cfg.optim.get("adapter_lr") or cfg.optim.lr),
               "seed": int(cfg.seed), "epochs": int(cfg.train.epochs), "pretrained": str(cfg.pretrained)}
    metrics = {f"test/{region}_{name}": float(values[f"{name}_mean"]) for region, values in summary["test"].items()
               for name in ("dice", "hd95")}
    with SummaryWriter(str(tb_dir)) as writer:
        for key, value in metrics.items():
            writer.add_scalar(key, value, summary["epochs_run"])
        writer.add_hparams(hparams, {**metrics, "best/val_dice": (summary.get("best") or {}).get("val_dice", 0.0)},
                           run_name="hparams")


def pretrain_first(cfg: DictConfig) -> None:
    """Run ``cfg.pretrain_recipe`` when the ``pretrained`` file is missing, or resume it when the file lies in the
    recipe's run folder and that run has not finished (no ``summary.json``): a pretraining killed half-way leaves its
    ``model_best.pt`` behind, and fine-tuning from it would silently start from other weights than the recipe's."""
    weights = pretrained_weights(cfg)
    if not weights or not cfg.get("pretrain_recipe"):
        return
    # the recipe is found where this run's experiments are: the package's conf/ and any hydra.searchpath given
    searchpath = list(HydraConfig.get().searchpath) if HydraConfig.initialized() else []
    recipe = compose(config_name="config", overrides=[f"+experiment={cfg.pretrain_recipe}", f"device={cfg.device}",
                                                      *([f"hydra.searchpath=[{','.join(searchpath)}]"]
                                                        if searchpath else [])])
    folder = Path(recipe.output_dir)
    if Path(weights).is_file():
        if Path(weights).resolve().parent != folder.resolve() or (folder / "summary.json").is_file():
            return
        log.info("%s is from an unfinished run of +experiment=%s: resuming it first", weights, cfg.pretrain_recipe)
    else:
        log.info("no pretrained weights at %s: running +experiment=%s first", weights, cfg.pretrain_recipe)
    run(recipe, folder)


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Train one experiment into ``run_dir``; returns its summary (also written to ``summary.json``)."""
    check_config(cfg)
    weights = pretrained_weights(cfg)
    if weights and not Path(weights).is_file() and not cfg.get("pretrain_recipe"):
        raise FileNotFoundError(f"pretrained checkpoint not found: {weights}")
    # torch, MONAI and peft are imported here, not at the top: `--help` and config errors answer before they load
    import torch

    from tcurseg.engine.distributed import init_distributed, launched_by_torchrun, local_rank, on_main, shutdown
    from tcurseg.engine.runlock import run_lock
    from tcurseg.engine.runtime import resolve_device

    pretrain_first(cfg)
    device = resolve_device(cfg.device, local_rank(), launched_by_torchrun())
    torch.backends.cudnn.benchmark = device.type == "cuda"  # fixed crop and window sizes: autotune once
    dist = init_distributed(device)
    try:
        on_main(lambda: prepare_data(cfg.data, splits=("training", "validation", "test")), dist)
        folder = on_main(lambda: run_folder(cfg, run_dir), dist)
        with contextlib.ExitStack() as held:
            on_main(lambda: held.enter_context(run_lock(folder)), dist)
            return train_and_evaluate(cfg, folder, dist, device)
    finally:
        shutdown(dist)


def run_folder(cfg: DictConfig, run_dir: Path) -> Path:
    """``run_dir``, or with ``resume=false`` a fresh folder beside it when ``run_dir`` holds another run."""
    if not cfg.resume:
        fresh = fresh_dir(run_dir)
        if fresh != run_dir:
            log.info("resume=false: %s holds another run, training into %s", run_dir, fresh)
            run_dir = fresh
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def train_and_evaluate(cfg: DictConfig, run_dir: Path, dist: DistInfo, device: torch.device) -> dict:
    """Train into ``run_dir`` (this process's share under torchrun), then evaluate the test split on rank 0."""
    import torch

    from tcurseg.data.lists import load_data_list
    from tcurseg.engine.dataload import resolve_sw_batch_size
    from tcurseg.engine.evaluator import format_table, inference_options, predict_cases, write_evaluation
    from tcurseg.engine.report import write_summary_json
    from tcurseg.engine.runlog import use_run_log
    from tcurseg.engine.trainer import Trainer, run_model_file

    use_run_log(run_dir, dist)
    log.info("run folder %s", run_dir.resolve())
    trainer = Trainer(cfg, run_dir, dist, device)
    summary = {"run": str(run_dir), "method": cfg.method.name, "device": str(device),
               "world_size": dist.world_size, **trainer.fit()}
    if dist.is_main and cfg.evaluate_after:
        test = load_data_list(cfg.data.data_list, cfg.data.get("data_root")).get("test", [])
        chosen = run_model_file(run_dir, cfg.evaluate_checkpoint)
        state = torch.load(chosen, map_location=device, weights_only=True)
        trainer.model.load_state_dict(state["model"])
        summary["evaluated"] = {"checkpoint": str(cfg.evaluate_checkpoint), "file": str(chosen.resolve()),
                                "epoch": state.get("epoch")}
        log.info("evaluating %s (epoch %s) on the test split", chosen, state.get("epoch"))
        rows = predict_cases(trainer.model, test, cfg.data, run_dir / "eval", roi=list(cfg.model.img_size),
                             overlap=float(cfg.eval.overlap),
                             sw_batch_size=resolve_sw_batch_size(cfg.eval.sw_batch_size, device),
                             device=device, dtype=trainer.amp,
                             overlays=int(cfg.eval.overlays), with_label=True, **inference_options(cfg.eval, cfg))
        evaluation = write_evaluation(rows, {"params": summary["params"], "split": "test",
                                             "evaluated": summary["evaluated"]}, run_dir / "eval")
        summary["test"] = evaluation["regions"]
        log_test_to_tensorboard(cfg, summary, run_dir / "tb")
        log.info("test split (%d cases), %s:\n%s", len(test), cfg.method.name, format_table(evaluation))
    if dist.is_main:
        write_summary_json(summary, run_dir / "summary.json")
    return summary


@hydra.main(version_base=None, config_path=str(conf_dir()), config_name="config")
def main(cfg: DictConfig) -> None:
    with user_errors():
        run(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
