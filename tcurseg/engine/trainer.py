"""The training loop: Dice+CE loss, AMP on CUDA, sliding-window validation, TensorBoard, atomic checkpoints every N
epochs and resume from the newest one, optional DDP (one process per device, started by torchrun).

Determinism: the random transforms of sample i in epoch e are seeded with (seed, e, i) and the sample order comes
from a DistributedSampler seeded with (seed, e), so a resumed run, and a DDP run over the same global batch, see the
same crops as an uninterrupted single-process run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from monai.data import DataLoader
from monai.losses import DiceCELoss
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from tcurseg import peft
from tcurseg.data.lists import load_data_list
from tcurseg.data.transforms import class_values, eval_transforms, num_classes, train_transforms
from tcurseg.engine.checkpoint import checkpoint_path, load_latest_checkpoint, prune_checkpoints, save_atomic
from tcurseg.engine.dataload import (
    CachedCases,
    EpochIndices,
    resolve_sw_batch_size,
    resolve_workers,
    training_cases,
    validation_loader,
)
from tcurseg.engine.distributed import DistInfo, all_ranks_ok, all_reduce_sum, any_rank, on_main
from tcurseg.engine.errors import RunError
from tcurseg.engine.inference import sliding_window_predict
from tcurseg.engine.metrics import dice_score
from tcurseg.engine.optim import build_optimizer, build_scheduler
from tcurseg.engine.preemption import Preempted, PreemptionFlag, ignore_in_worker
from tcurseg.engine.report import overlay_figure
from tcurseg.engine.runconfig import check_same_run, pretrained_weights, stored_config, training_config
from tcurseg.engine.runtime import amp_dtype, peak_memory_mb
from tcurseg.models import build_network, load_pretrained, network, require_complete_encoder, resolve_cnn_modules
from tcurseg.peft.spectral import GROUPS_ATTR

log = logging.getLogger(__name__)

LOSS_DISPLAY_EVERY = 20
"""Steps between two updates of the progress bar's loss (each reads the loss back from the device)."""
LAST_MODEL = "model.pt"
BEST_MODEL = "model_best.pt"


def model_config(cfg: DictConfig) -> dict:
    """The network config (``model.name``: unetr | swin_unetr, checked) with the channels of the data set."""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    network(model.get("name"))
    return {**model, "in_channels": int(cfg.data.in_channels), "out_channels": num_classes(cfg.data)}


def method_config(cfg: DictConfig) -> dict:
    """The method config with the model's adapter groups and the trainable CNN modules resolved."""
    method = OmegaConf.to_container(cfg.method, resolve=True)
    method["groups"] = OmegaConf.to_container(cfg.model.adapter_groups, resolve=True)
    method["trainable_modules"] = resolve_cnn_modules(method.pop("cnn"), cfg.model.get("name"))
    return method


def build_model(cfg: DictConfig, load_base: bool = True) -> torch.nn.Module:
    """The network (``model.name``), its pretrained weights (``cfg.pretrained``, with a key report) and the
    fine-tuning method."""
    model = build_network(model_config(cfg))
    method = method_config(cfg)
    weights = pretrained_weights(cfg) if load_base else None
    if weights:
        report = load_pretrained(model, weights, trusted=bool(cfg.get("pretrained_trusted", False)))
        log.info("pretrained weights: %s", report.summary())
        require_complete_encoder(report, cfg.method.name)
        # a module the checkpoint did not fit (the output head of a task with other classes) or did not hold (the CNN
        # path of an encoder-only file: ViTAutoEnc, model_swinvit.pt) is freshly initialised: it must train, whatever
        # the CNN preset says
        absent = {key.split(".", 1)[0] for key in report.missing if not key.startswith(report.encoder_prefix)}
        start_head(model, report.mismatched, str(cfg.get("head_init", "random")))
        fresh = sorted({key.rsplit(".", 1)[0] for key in report.mismatched} | absent)
        fresh = [m for m in fresh if not any(m == t or m.startswith(t + ".") for t in method["trainable_modules"])]
        if fresh:
            log.info("training the re-initialised modules too: %s", ", ".join(fresh))
            method["trainable_modules"] += fresh
        warn_collapsed_encoder(model, method["groups"], weights)
    peft.apply(model, method)
    return model


def start_head(model: torch.nn.Module, mismatched: list[str], head_init: str) -> None:
    """Start the tensors the pretrained file did not fit (the output head of a task with other classes) as
    ``head_init`` says: ``random`` keeps the network's initialisation, drawn from the seed; ``zero`` sets them to 0, so
    that every seed and method starts from softmax 1/C everywhere (docs/design.md, section 3b). The value is checked
    with the config (:func:`tcurseg.cli.check_config`)."""
    if head_init == "zero":
        params = dict(model.named_parameters())
        with torch.no_grad():
            for key in mismatched:
                if key in params:
                    params[key].zero_()


COLLAPSED_STD = 1e-4
"""Below this standard deviation an encoder matrix counts as collapsed (a healthy init is ~0.02)."""


def warn_collapsed_encoder(model: torch.nn.Module, groups: list, source: str) -> list[str]:
    """Warn (and return the names) when the pretrained encoder matrices the adapter groups target are near zero: an
    adapter built from them (tCURLoRA's C and R, LoRA-PT's and PiSSA's singular vectors) cannot change the model,
    and the encoder carries nothing to adapt."""
    collapsed = [group.name for group in peft.find_groups(model, groups)
                 if float(group.stacked_weight().detach().float().std()) < COLLAPSED_STD]
    if collapsed:
        log.warning("pretrained weights %s: the encoder matrices of group(s) %s are near zero (std < %g): an adapter "
                    "built from them cannot change the model", source, ", ".join(collapsed), COLLAPSED_STD)
    return collapsed


class EpochSeeded(Dataset):
    """The training cases (:class:`tcurseg.engine.dataload.CachedCases`) read by ``(epoch, index)`` (see
    :class:`EpochIndices`), their random transforms reseeded per (seed, epoch, index) on every access."""

    def __init__(self, dataset: CachedCases, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        epoch, index = item
        state = np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0]
        self.dataset.transform.set_random_state(seed=int(state))
        return self.dataset[index]


class Trainer:
    """Trains ``cfg.method`` on ``cfg.data`` into ``run_dir``; ``fit()`` returns the training summary."""

    def __init__(self, cfg: DictConfig, run_dir: Path, dist: DistInfo, device: torch.device) -> None:
        self.cfg, self.run_dir, self.dist, self.device = cfg, run_dir, dist, device
        self.tcfg = cfg.train
        torch.manual_seed(int(cfg.seed))
        splits = load_data_list(cfg.data.data_list, cfg.data.get("data_root"))
        self.train_entries, self.val_entries = splits.get("training", []), splits.get("validation", [])
        if self.tcfg.get("subjects"):
            self.train_entries = self.train_entries[: int(self.tcfg.subjects)]
        if not self.train_entries:
            raise ValueError(f"{cfg.data.data_list}: the training split is empty")
        log.info("data %s (root %s): %d training, %d validation, %d test cases", Path(cfg.data.data_list).resolve(),
                 cfg.data.get("data_root") or Path(cfg.data.data_list).resolve().parent, len(self.train_entries),
                 len(self.val_entries), len(splits.get("test", [])))
        self.model = build_model(cfg).to(device)
        self.report = peft.trainable_report(self.model)
        self.optimizer = build_optimizer(peft.parameter_groups(self.model), cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, int(self.tcfg.epochs))
        self.amp = amp_dtype(device, cfg.amp)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp == torch.float16)
        # Dice over the whole batch per class (nnU-Net's batch Dice): a class absent from one crop does not add a
        # loss of ~1 that only vanishing softmax probabilities could remove.
        self.loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False,
                                  batch=bool(self.tcfg.batch_dice))
        self.net = self._distributed(self.model) if dist.enabled else self.model
        workers = resolve_workers(self.tcfg.num_workers, dist.world_size)
        cache, sampler, decided = training_cases(self.train_entries, train_transforms(cfg.data, cfg.augment),
                                                 self.tcfg.cache_rate, int(cfg.seed), dist.world_size, dist.rank,
                                                 bool(self.tcfg.get("rank_shards", False)), workers,
                                                 progress=dist.is_main and sys.stderr.isatty())
        log.info("%s; %d data-loading workers", decided, workers)
        self.val_loader = validation_loader(self.val_entries, eval_transforms(cfg.data), dist.world_size, dist.rank,
                                            workers, worker_init_fn=ignore_in_worker)
        self.sampler = EpochIndices(sampler)
        self.loader = DataLoader(EpochSeeded(cache, int(cfg.seed)), batch_size=int(self.tcfg.batch_size),
                                 sampler=self.sampler, num_workers=workers, persistent_workers=workers > 0,
                                 pin_memory=device.type == "cuda", worker_init_fn=ignore_in_worker)
        self.start_epoch, self.start_step, self.history = 0, 0, []
        self.partial = {"loss_sum": 0.0, "steps": 0}  # the loss of the epoch's steps done before a preemption
        self.preemption = PreemptionFlag()
        self.val_overlay: tuple | None = None  # (image, truth, prediction, case) of the first validation case
        self.ckpt_dir = run_dir / "checkpoints"

    def _distributed(self, model: torch.nn.Module) -> DistributedDataParallel:
        """DDP over ``model``, without the buffers that every rank derives from its own frozen weights (tCURLoRA's C and
        R, LoRA-PT's U0, S0, V0, index buffers): they need no broadcast, nccl rejects complex ones, and after a
        ``rebuild()`` DDP would broadcast stale copies of them."""
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, derived_buffers(model))
        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def _state(self, epoch: int, step: int = 0) -> dict:
        """Everything a resumed run needs to continue bitwise: after ``epoch`` epochs and ``step`` steps of the next."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "epoch": epoch,
                "step": step, "partial": dict(self.partial), "rng": torch.get_rng_state(),
                "history": self.history, "config": stored_config(self.cfg),
                "training_config": training_config(self.cfg)}

    def resume(self) -> None:
        """Continue from the newest readable checkpoint (an unreadable newer one is skipped with a warning)."""
        found = load_latest_checkpoint(self.ckpt_dir, map_location=self.device) if self.cfg.resume else None
        if found is None:
            return
        ckpt, state = found
        check_same_run(state.get("training_config"), training_config(self.cfg), self.run_dir)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"] and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        elif state["scaler"] or self.scaler.is_enabled():
            log.info("%s was written with%s a GradScaler (fp16): the loss scale starts afresh", ckpt,
                     "" if state["scaler"] else "out")
        if "rng" in state:
            torch.set_rng_state(state["rng"].cpu())
        self.start_epoch, self.history = int(state["epoch"]), list(state["history"])
        self.start_step, self.partial = int(state.get("step", 0)), dict(state.get("partial", self.partial))
        log.info("resumed from %s (epoch %d done%s)", ckpt, self.start_epoch,
                 f", and {self.start_step} steps of epoch {self.start_epoch + 1}" if self.start_step else "")

    def train_epoch(self, epoch: int, first_step: int = 0) -> tuple[float, float]:
        """One pass over the training set from step ``first_step`` (a resumed preemption); returns (mean loss, mean
        seconds per step, data loading excluded). The loss stays on the device: one read-back per epoch (and one per
        :data:`LOSS_DISPLAY_EVERY` steps for the progress bar), no host-device synchronisation per step. A
        non-finite loss on any rank stops every rank at the end of the epoch, before its checkpoint is written.
        On a preemption signal the step in progress completes, its checkpoint is written and :class:`Preempted` is
        raised."""
        self.net.train()
        self.sampler.set_epoch(epoch, skip=first_step * int(self.tcfg.batch_size))
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        nonfinite = torch.zeros((), dtype=torch.int64, device=self.device)
        bar = tqdm(self.loader, desc=f"epoch {epoch + 1}/{self.tcfg.epochs}", initial=first_step,
                   total=first_step + len(self.loader), disable=None if self.dist.is_main else True, leave=False,
                   dynamic_ncols=True)
        steps, waiting, timed_from, first_started = 0, 0.0, None, math.nan
        ready = time.perf_counter()
        for batch in bar:
            if timed_from is not None:
                waiting += time.perf_counter() - ready
            else:
                first_started = time.perf_counter()
            image = batch["image"].to(self.device, non_blocking=True)
            label = batch["label"].to(self.device, non_blocking=True)
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(self.device.type, dtype=self.amp) if self.amp else contextlib.nullcontext():
                loss = self.loss_fn(self.net(image), label)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            loss = loss.detach()
            nonfinite += ~torch.isfinite(loss)
            loss_sum += torch.nan_to_num(loss.double(), nan=0.0, posinf=0.0, neginf=0.0)
            steps += 1
            if steps == 1:  # the first step (allocation, cudnn autotuning) is left out of the timing
                self._synchronize()
                timed_from = time.perf_counter()
            elif not bar.disable and steps % LOSS_DISPLAY_EVERY == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}")
            if any_rank(self.preemption.requested, self.dist):  # a collective per step under DDP only
                self._preempted(epoch, first_step + steps, loss_sum, steps)
            ready = time.perf_counter()
        self._synchronize()
        # seconds per step after the first; an epoch of one step (resumed at its last) times that step
        step_s = ((time.perf_counter() - timed_from - waiting) / (steps - 1) if steps > 1 else
                  (timed_from - first_started) if steps == 1 else math.nan)
        done = self.partial if self.dist.is_main else {"loss_sum": 0.0, "steps": 0}
        count = torch.full((), float(steps + done["steps"]), dtype=torch.float64, device=self.device)
        totals = all_reduce_sum(torch.stack((loss_sum + done["loss_sum"], count, nonfinite.double())), self.dist)
        total_loss, total_steps, total_nonfinite = totals.tolist()
        self.partial = {"loss_sum": 0.0, "steps": 0}
        if total_nonfinite > 0:
            raise RunError(f"the loss became non-finite in {int(total_nonfinite)} step(s) of epoch {epoch + 1}: "
                           "lower optim.lr (the checkpoints before this epoch are intact)")
        return total_loss / max(total_steps, 1.0), step_s

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _preempted(self, epoch: int, step: int, loss_sum: torch.Tensor, steps: int) -> None:
        """Write the checkpoint after ``step`` steps of epoch ``epoch`` (0-based) on rank 0 and raise
        :class:`Preempted` on every rank."""
        count = torch.full((), float(steps), dtype=torch.float64, device=self.device)
        loss_done, steps_done = all_reduce_sum(torch.stack((loss_sum, count)), self.dist).tolist()
        if self.dist.is_main:  # the epoch's loss so far, over all ranks, kept by rank 0 (whose state is saved)
            self.partial = {"loss_sum": self.partial["loss_sum"] + loss_done,
                            "steps": self.partial["steps"] + int(steps_done)}
        path = checkpoint_path(self.ckpt_dir, epoch, step)
        on_main(lambda: save_atomic(self._state(epoch, step), path), self.dist)
        raise Preempted(str(path), self.preemption.signal_name or "a preemption signal")

    @torch.no_grad()
    def validate(self) -> float:
        """Dice averaged over the report's regions (``data.regions``: TC/WT/ET for BraTS) and the validation cases
        (this rank's share, then all ranks). A case that fails on one rank (an unreadable file) fails every rank."""
        total, error = torch.zeros(2, dtype=torch.float64), None
        try:
            total += self._validate_share()
        except Exception as err:  # raised below, on every rank
            error = err
        all_ranks_ok(error, self.dist)
        total = all_reduce_sum(total, self.dist)
        return float(total[0] / total[1]) if total[1] else math.nan

    def _validate_share(self) -> torch.Tensor:
        """(sum of the case Dice, number of cases) over this rank's validation cases."""
        roi = [int(s) for s in self.cfg.model.img_size]
        values = np.asarray(class_values(self.cfg.data))
        regions = [list(v) for v in self.cfg.data.regions.values()]
        total = torch.zeros(2, dtype=torch.float64)
        self.val_overlay = None
        for entry, data in tqdm(self.val_loader, desc="validation", leave=False,
                                disable=None if self.dist.is_main else True, dynamic_ncols=True):
            logits = sliding_window_predict(self.model, data["image"].unsqueeze(0).to(self.device), roi,
                                            overlap=float(self.cfg.eval.overlap), dtype=self.amp,
                                            sw_batch_size=resolve_sw_batch_size(self.cfg.eval.sw_batch_size,
                                                                                self.device))
            pred = values[logits.argmax(1)[0].cpu().numpy()]
            truth = values[data["label"][0].cpu().numpy().astype(np.int64)]
            scores = [dice_score(np.isin(pred, r), np.isin(truth, r)) for r in regions]
            if self.val_overlay is None:
                self.val_overlay = (data["image"][0].cpu().numpy(), truth, pred, str(entry.get("id", "")))
            total += torch.tensor([float(np.mean(scores)), 1.0], dtype=torch.float64)
        return total

    def best_record(self) -> dict | None:
        """The history record with the highest validation Dice (the earliest of equals), or None."""
        validated = [h for h in self.history if "val_dice" in h and not math.isnan(h["val_dice"])]
        return max(validated, key=lambda h: (h["val_dice"], -h["epoch"])) if validated else None

    def _stale_validations(self) -> int:
        """Validations since the best one (early stopping counts these)."""
        best = self.best_record()
        return sum(1 for h in self.history if "val_dice" in h and best is not None and h["epoch"] > best["epoch"])

    def fit(self) -> dict:
        with self.preemption.installed():
            return self._fit()

    def _fit(self) -> dict:
        self.resume()
        epochs, val_every, ckpt_every = int(self.tcfg.epochs), int(self.tcfg.val_every), int(self.tcfg.ckpt_every)
        patience = self.tcfg.get("patience")
        writer = SummaryWriter(str(self.run_dir / "tb")) if self.dist.is_main else None
        log.info("method %s: %s", self.report["method"], self.report)
        started = time.perf_counter()
        step_times = [h["step_s"] for h in self.history if "step_s" in h]
        stopped_early = patience is not None and self.history and self._stale_validations() >= int(patience)
        for epoch in range(self.start_epoch, epochs):
            if stopped_early:
                break
            loss, step_s = self.train_epoch(epoch, self.start_step if epoch == self.start_epoch else 0)
            self.scheduler.step()
            record = {"epoch": epoch + 1, "loss": loss, "lr": self.scheduler.get_last_lr()[-1]}
            if math.isfinite(step_s):  # not for an epoch a preempted run had finished all steps of
                record["step_s"] = step_s
            if self.val_entries and ((epoch + 1) % val_every == 0 or epoch + 1 == epochs):
                best = self.best_record()
                record["val_dice"] = self.validate()
                if best is None or record["val_dice"] > best["val_dice"]:
                    on_main(lambda: self.save_model(self.run_dir / BEST_MODEL, epoch + 1, record["val_dice"]),
                            self.dist)
            self.history.append(record)
            step_times += [record["step_s"]] if "step_s" in record else []
            stopped_early = patience is not None and "val_dice" in record and self._stale_validations() >= int(patience)
            log.info("epoch %d/%d %s", epoch + 1, epochs,
                     " ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "epoch"))
            if writer is not None:
                for key, value in record.items():
                    if key != "epoch":
                        writer.add_scalar(f"{'val' if key == 'val_dice' else 'train'}/{key}", value, epoch + 1)
                if "val_dice" in record and self.val_overlay is not None:
                    image, truth, pred, case = self.val_overlay
                    regions = OmegaConf.to_container(self.cfg.data.regions, resolve=True)
                    writer.add_figure("val/overlay", overlay_figure(image, truth, pred, f"{case} epoch {epoch + 1}",
                                                                    regions), epoch + 1)
            last = epoch + 1 == epochs or stopped_early
            preempted = any_rank(self.preemption.requested, self.dist)
            if (epoch + 1) % ckpt_every == 0 or last or preempted:
                path = checkpoint_path(self.ckpt_dir, epoch + 1)
                on_main(lambda: (save_atomic(self._state(epoch + 1), path),
                                 prune_checkpoints(self.ckpt_dir, keep=int(self.tcfg.keep_checkpoints))), self.dist)
                if preempted and not last:
                    raise Preempted(str(path), self.preemption.signal_name or "a preemption signal")
        if writer is not None:
            writer.close()
        if stopped_early:
            log.info("early stop after epoch %d: %d validations without a better Dice", self.history[-1]["epoch"],
                     int(patience))
        best = self.best_record()
        summary = {"params": self.report, "epochs": epochs, "epochs_run": self.history[-1]["epoch"] if self.history else 0,
                   "stopped_early": bool(stopped_early), "train_wall_s": time.perf_counter() - started,
                   "step_s": float(np.median(step_times)) if step_times else math.nan,
                   "best": {"epoch": best["epoch"], "val_dice": best["val_dice"]} if best else None,
                   "peak_memory_mb": peak_memory_mb(self.device), "history": self.history}
        on_main(self.save_final, self.dist)
        return summary

    def save_model(self, path: Path, epoch: int, val_dice: float | None = None) -> None:
        """A model file (state dict after apply + the resolved config, enough to rebuild) with its epoch."""
        save_atomic({"model": self.model.state_dict(), "config": stored_config(self.cfg),
                     "training_config": training_config(self.cfg), "epoch": epoch, "val_dice": val_dice}, path)

    def save_final(self) -> None:
        """``model.pt`` (the last weights) and ``adapter.safetensors`` of the best-validation weights (without
        validation ``model_best.pt`` is the last). The model keeps the last weights."""
        epoch = self.history[-1]["epoch"] if self.history else 0
        self.save_model(self.run_dir / LAST_MODEL, epoch)
        if self.best_record() is None:
            self.save_model(self.run_dir / BEST_MODEL, epoch)
            peft.save_adapter(self.model, self.run_dir / "adapter.safetensors")
            return
        last = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(torch.load(self.run_dir / BEST_MODEL, map_location=self.device,
                                              weights_only=True)["model"])
        peft.save_adapter(self.model, self.run_dir / "adapter.safetensors")
        self.model.load_state_dict(last)


def derived_buffers(model: torch.nn.Module) -> list[str]:
    """Names of the buffers each process derives from its frozen weights and configuration: the adapters' buffers
    and every non-persistent buffer (index and position tables)."""
    names = []
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        for name, _ in module.named_buffers(recurse=False):
            full = prefix + name
            if name in module._non_persistent_buffers_set or full.startswith(GROUPS_ATTR + "."):
                names.append(full)
    return names


def run_model_file(run_dir: str | Path, checkpoint: str | int = "best") -> Path:
    """The weights of a run to use: ``best`` (``model_best.pt``, highest validation Dice), ``last`` (``model.pt``)
    or an epoch number (``checkpoints/ckpt_epochNNNN.pt``, if it was kept)."""
    run_dir = Path(run_dir)
    if str(checkpoint) == "best":
        return run_dir / BEST_MODEL
    if str(checkpoint) == "last":
        return run_dir / LAST_MODEL
    if str(checkpoint).isdigit():
        return checkpoint_path(run_dir / "checkpoints", int(checkpoint))
    raise ValueError(f"checkpoint={checkpoint!r}: use best, last or an epoch number")


def load_run_model(model_file: str | Path, cfg: Mapping | None = None) -> tuple[torch.nn.Module, DictConfig]:
    """Rebuild a trained model from a run's ``model.pt`` (its own config unless ``cfg`` is given)."""
    path = Path(model_file)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise ValueError(f"{path}: not a tcurseg model file (expected keys 'model' and 'config')")
    run_cfg = OmegaConf.create(state["config"] if cfg is None else cfg)
    model = build_model(run_cfg, load_base=False)
    model.load_state_dict(state["model"])
    return model, run_cfg
