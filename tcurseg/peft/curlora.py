"""CURLoRA (Fawi 2024): per weight matrix W (m x n), r columns I and r rows J sampled with probabilities
proportional to the inverse of their norms; C = W[:, I], R = W[J, :] frozen, U (r x r) trainable and zero at init:
    dW = C U R.
Real trainable parameters: r^2 per adapted matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from tcurseg.peft.config import AdapterConfig
from tcurseg.peft.groups import target_module_names
from tcurseg.peft.layers import AdaptedLinear, replace_module
from tcurseg.tensor import cur_factors, select_inverse_probability, spectral_dtype


@dataclass(frozen=True, kw_only=True)
class CURLoRAConfig(AdapterConfig):
    """``rank`` r columns and rows per matrix, drawn with ``seed``."""

    rank: int
    seed: int = 0


class CURLinear(AdaptedLinear):
    """y = x W0^T + b + ((x R^T) U^T) C^T."""

    def __init__(self, base: nn.Linear, rank: int, generator: torch.Generator) -> None:
        super().__init__(base)
        with torch.no_grad():
            I, J = select_inverse_probability(self._spectral_weight().unsqueeze(0), rank, generator)
        self.register_buffer("col_index", I)
        self.register_buffer("row_index", J)
        self.register_buffer("C", torch.empty(0), persistent=False)
        self.register_buffer("R", torch.empty(0), persistent=False)
        self.rebuild()
        self.U = nn.Parameter(torch.zeros(rank, rank, dtype=self.C.dtype, device=base.weight.device))

    def _spectral_weight(self) -> torch.Tensor:
        """The base weight at the factors' precision (float64 for a float64 base, else float32)."""
        return self.weight.detach().to(spectral_dtype(self.weight.dtype))

    @torch.no_grad()
    def rebuild(self) -> None:
        """C, R from the current (unmerged) base weight and the recorded indices."""
        self.C, self.R = cur_factors(self._spectral_weight(), self.col_index, self.row_index)

    def adapter_output(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(F.linear(x, self.R.to(x.dtype)), self.U.to(x.dtype)), self.C.to(x.dtype))

    def delta_weight(self) -> torch.Tensor:
        return self.C @ self.U @ self.R


def _layers(model: nn.Module) -> list[CURLinear]:
    return [m for m in model.modules() if isinstance(m, CURLinear)]


def inject(model: nn.Module, cfg: CURLoRAConfig) -> None:
    generator = torch.Generator().manual_seed(cfg.seed)
    for name in target_module_names(model, cfg.groups):
        replace_module(model, name, CURLinear(model.get_submodule(name), cfg.rank, generator))


def merge(model: nn.Module) -> None:
    for layer in _layers(model):
        layer.merge_delta(layer.delta_weight())


def unmerge(model: nn.Module) -> None:
    for layer in _layers(model):
        layer.unmerge_delta(layer.delta_weight())


def after_load(model: nn.Module) -> None:
    for layer in _layers(model):
        layer.rebuild()
