"""Optimizers and learning-rate schedules from config (the authors': Adam, amsgrad, lr 1e-3, wd 2e-5, poly 0.9).

The trainable parameters come in two groups (:func:`tcurseg.peft.parameter_groups`): ``adapter`` (what the method
added) at ``adapter_lr`` and ``base`` (trainable weights of the network itself: the CNN path, everything for ``full``)
at ``lr``. PEFT methods are usually trained at a higher rate than the network's own weights."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

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


def lr_factor(epoch: int, epochs: int, schedule: str, power: float = 0.9, warmup: int = 0) -> float:
    """Multiplier of the base rates at ``epoch`` (0-based). Linear warm-up over the first ``warmup`` epochs
    ((e + 1) / (warmup + 1)), then poly: (1 - (e - warmup) / (epochs - warmup))^power, or constant: 1."""
    if epoch < warmup:
        return (epoch + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    if schedule == "poly":
        return max(0.0, 1.0 - (epoch - warmup) / max(1, epochs - warmup)) ** power
    raise ValueError(f"unknown schedule {schedule!r}; choose poly or constant")


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Mapping, epochs: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch schedule of :func:`lr_factor` (``cfg``: schedule, power, warmup_epochs), stepped once per epoch."""
    schedule, power, warmup = cfg.get("schedule", "poly"), float(cfg.get("power", 0.9)), int(cfg.get("warmup_epochs", 0))
    lr_factor(0, epochs, schedule, power, warmup)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(e, epochs, schedule, power, warmup))
