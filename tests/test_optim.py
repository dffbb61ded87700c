"""The learning-rate schedule of :func:`tcurseg.engine.optim.build_scheduler` against its closed form, for the settings
of conf/, and across a checkpoint: its own state, and the state of a ``LambdaLR`` that ran the same closed form."""

from __future__ import annotations

import io

import pytest
import torch

from tcurseg.engine.optim import build_scheduler

# (schedule, power, warm-up epochs, epochs): conf/optim (100 epochs), the 1000-epoch experiments, the demos and the
# comparison (warm-up 1 or 2; 24 to 384 epochs), and runs no longer than their warm-up
SETTINGS = [("poly", 0.9, 0, 100), ("poly", 0.9, 0, 1000), ("poly", 0.9, 1, 45), ("poly", 0.9, 2, 30),
            ("poly", 0.9, 1, 384), ("poly", 1.0, 2, 2), ("poly", 0.9, 3, 2), ("constant", 0.9, 2, 6),
            ("constant", 0.9, 0, 3)]


def closed_form(epoch: int, epochs: int, schedule: str, power: float, warmup: int) -> float:
    """The factor of the base rates at ``epoch`` (0-based): linear warm-up, then poly or constant."""
    if epoch < warmup:
        return (epoch + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    return max(0.0, 1.0 - (epoch - warmup) / max(1, epochs - warmup)) ** power


def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.Adam([{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 1e-2, "name": "adapter"},
                             {"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 1e-3, "name": "base"}])


def _build(setting: tuple, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    schedule, power, warmup, epochs = setting
    return build_scheduler(optimizer, {"schedule": schedule, "power": power, "warmup_epochs": warmup}, epochs)


def _legacy(setting: tuple, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    schedule, power, warmup, epochs = setting
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: closed_form(e, epochs, schedule, power, warmup))


def _rates(optimizer: torch.optim.Optimizer, scheduler, epochs: int) -> list[list[float]]:
    """The rates of each epoch to come, as the trainer steps the scheduler after each."""
    rates = [[g["lr"] for g in optimizer.param_groups]]
    for _ in range(epochs):
        optimizer.step()
        scheduler.step()
        rates.append([g["lr"] for g in optimizer.param_groups])
    return rates


def _checkpoint(optimizer: torch.optim.Optimizer, scheduler) -> dict:
    """Through a file as the trainer saves and loads it (``weights_only=True``)."""
    buffer = io.BytesIO()
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("setting", SETTINGS)
def test_rates_follow_the_closed_form(setting):
    schedule, power, warmup, epochs = setting
    optimizer = _optimizer()
    expected = [[lr * closed_form(e, epochs, schedule, power, warmup) for lr in (1e-2, 1e-3)]
                for e in range(epochs + 1)]
    assert _rates(optimizer, _build(setting, optimizer), epochs) == [pytest.approx(r, rel=1e-13) for r in expected]


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("legacy", [False, True], ids=["own_state", "lambdalr_state"])
def test_resume_continues_the_schedule(setting, legacy):
    """Resumed after k epochs, the rates are those of the run that never stopped: bitwise from the scheduler's own
    state, to rounding from a LambdaLR's."""
    epochs, warmup = setting[3], setting[2]
    optimizer = _optimizer()
    reference = _rates(optimizer, (_legacy if legacy else _build)(setting, optimizer), epochs)
    for k in sorted({0, max(warmup - 1, 0), warmup, warmup + 1, epochs // 2, epochs} & set(range(epochs + 1))):
        optimizer = _optimizer()
        scheduler = (_legacy if legacy else _build)(setting, optimizer)
        _rates(optimizer, scheduler, k)
        state = _checkpoint(optimizer, scheduler)
        optimizer = _optimizer()
        scheduler = _build(setting, optimizer)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        resumed = _rates(optimizer, scheduler, epochs - k)
        if legacy:
            assert resumed == [pytest.approx(r, rel=1e-13) for r in reference[k:]], k
        else:
            assert resumed == reference[k:], k
