"""Optimizers and learning-rate schedules from config (the authors': Adam, amsgrad, lr 1e-3, wd 2e-5, poly 0.9).

The trainable parameters come in two groups (:func:`tcurseg.peft.parameter_groups`): ``adapter`` (what the method
added) at ``adapter_lr`` and ``base`` (trainable weights of the network itself: the CNN path, everything for ``full``)
at ``lr``. PEFT methods are usually trained at a higher rate than the network's own weights."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.optim.lr_scheduler import ConstantLR, LinearLR, LRScheduler, PolynomialLR, SequentialLR

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def build_optimizer(groups: Mapping[str, Sequence[torch.nn.Parameter]], cfg: Mapping) -> torch.optim.Optimizer:
    """``groups``: {"adapter": [...], "base": [...]}; ``cfg``: name (adam | adamw), lr, adapter_lr (null: lr),
    weight_decay, amsgrad. Each non-empty group becomes a parameter group named by its key."""
    name = cfg["name"]
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    lr = float(cfg["lr"])
    rates = {"adapter": float(cfg.get("adapter_lr") or lr), "base": lr}
    unknown = set(groups) - set(rates)
    if unknown:
        raise ValueError(f"unknown parameter groups {sorted(unknown)}; expected adapter and base")
    param_groups = [{"params": list(params), "lr": rates[key], "name": key} for key, params in groups.items() if params]
    if not param_groups:
        raise ValueError("nothing to train: the method left no parameter with requires_grad")
    return OPTIMIZERS[name](param_groups, lr=lr, weight_decay=float(cfg.get("weight_decay", 0.0)),
                            amsgrad=bool(cfg.get("amsgrad", False)))


class WarmupThen(SequentialLR):
    """``SequentialLR`` of a linear warm-up and the schedule after it. It also resumes from the state of a ``LambdaLR``
    that ran the same schedule (a state with ``lr_lambdas``, as run folders of earlier versions hold): that state's
    epoch count is split between the two schedulers, and the rates are those the optimizer's state restored."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "lr_lambdas" not in state_dict:
            super().load_state_dict(state_dict)
            return
        warmup, (ramp, after) = self._milestones[0], self._schedulers
        self.last_epoch = int(state_dict["last_epoch"])
        ramp.last_epoch = min(self.last_epoch, warmup - 1)
        after.last_epoch = self.last_epoch - warmup if self.last_epoch >= warmup else -1
        self._last_lr = list(state_dict["_last_lr"])


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Mapping, epochs: int) -> LRScheduler:
    """The per-epoch schedule of ``cfg`` (schedule: poly | constant, power, warmup_epochs), stepped once per epoch.

    Epoch e (0-based) trains at the base rates times (e + 1) / (warmup + 1) during the warm-up (e < warmup), then
    poly: (1 - (e - warmup) / (epochs - warmup))^power, down to 0 at ``epochs``, or constant: 1."""
    schedule, power = cfg.get("schedule", "poly"), float(cfg.get("power", 0.9))
    warmup = int(cfg.get("warmup_epochs", 0))
    if schedule == "poly":
        after: LRScheduler = PolynomialLR(optimizer, total_iters=max(1, epochs - warmup), power=power)
    elif schedule == "constant":
        after = ConstantLR(optimizer, factor=1.0, total_iters=0)
    else:
        raise ValueError(f"unknown schedule {schedule!r}; choose poly or constant")
    if not warmup:
        return after
    ramp = LinearLR(optimizer, start_factor=1 / (warmup + 1), total_iters=warmup)
    return WarmupThen(optimizer, [ramp, after], milestones=[warmup])
