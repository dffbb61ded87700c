"""Optimizers and learning-rate schedules from config (the authors': Adam, amsgrad, lr 1e-3, wd 2e-5, poly 0.9)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: Mapping) -> torch.optim.Optimizer:
    """``cfg``: name (adam | adamw), lr, weight_decay, amsgrad."""
    name = cfg["name"]
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    params = list(params)
    if not params:
        raise ValueError("nothing to train: the method left no parameter with requires_grad")
    return OPTIMIZERS[name](params, lr=float(cfg["lr"]), weight_decay=float(cfg.get("weight_decay", 0.0)),
                            amsgrad=bool(cfg.get("amsgrad", False)))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Mapping, epochs: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch schedule. poly: lr_e = lr (1 - e / epochs)^power; constant: lr_e = lr."""
    schedule = cfg.get("schedule", "poly")
    if schedule == "poly":
        power = float(cfg.get("power", 0.9))
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: max(0.0, 1.0 - e / epochs) ** power)
    if schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0)
    raise ValueError(f"unknown schedule {schedule!r}; choose poly or constant")
