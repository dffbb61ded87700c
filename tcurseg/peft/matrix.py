"""LoRA, DoRA and PiSSA through HF peft (the reference implementations), injected in place into any model.

LoRA: W = W0 + (alpha / r) B A, A (r x n) random, B (m x r) zero. DoRA: W = m * (W0 + (alpha/r) B A) / ||W0 + (alpha/r) B A||_c
(column norms, magnitude m trainable). PiSSA: A, B from the top-r SVD of W0 and W0 replaced by the residual.
Trainable parameters per (m x n) matrix: r (m + n), plus m for DoRA's magnitude.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from tcurseg.peft.config import AdapterConfig
from tcurseg.peft.groups import target_module_names

VARIANTS = {"lora": {}, "dora": {"use_dora": True}, "pissa": {"init_lora_weights": "pissa"}}


@dataclass(frozen=True, kw_only=True)
class LoRAConfig(AdapterConfig):
    """The config of ``lora``, ``dora`` and ``pissa``: ``rank`` r, ``alpha`` (the update is scaled by alpha / r;
    None: r)."""

    rank: int
    alpha: float | None = None


def _peft():
    try:
        import peft
    except ImportError as err:
        raise ImportError("methods lora, dora and pissa need HF peft: pip install 'tcurseg[peft]'") from err
    return peft


def inject(model: nn.Module, cfg: LoRAConfig, variant: str) -> None:
    peft = _peft()
    config = peft.LoraConfig(
        r=cfg.rank,
        lora_alpha=float(cfg.alpha or cfg.rank),
        lora_dropout=0.0,
        target_modules=target_module_names(model, cfg.groups),
        **VARIANTS[variant],
    )
    peft.inject_adapter_in_model(config, model)


def _tuner_layers(model: nn.Module) -> list:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


def merge(model: nn.Module) -> None:
    for layer in _tuner_layers(model):
        layer.merge()


def unmerge(model: nn.Module) -> None:
    for layer in _tuner_layers(model):
        layer.unmerge()
