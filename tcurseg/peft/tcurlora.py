"""tCURLoRA (He et al., MICCAI 2025): tensor CUR low-rank adaptation in the Fourier domain of the stacking mode.

Per group W (L x m x n), D = rfft(W, dim=0) (K = floor(L/2)+1 slices). Columns I and rows J (|I| = |J| = r) are shared
by all slices; C_k = D_k[:, I], R_k = D_k[J, :] are frozen, and the trainable core dU_k (r x r, zero at init; real for
the real slices) gives
    dW = irfft_k(C_k dU_k R_k, n=L),    W_l <- W0_l + dW_l,
which equals the paper's W0 - C U0 R + C U R with U = U0 + dU, U0 = pinv(D_k[J, I]); U0 cancels and is not stored.
Real trainable parameters: L * r^2 per group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from tcurseg.peft.config import AdapterConfig
from tcurseg.peft.groups import WeightGroup, find_groups
from tcurseg.peft.spectral import HalfSpectrumParameter, SpectralGroup, install, merge_groups, spectral_parts
from tcurseg.tensor import select_inverse_probability, select_top_norm, spectral_cur_factors

Selection = Literal["top_norm", "inverse_probability"]


@dataclass(frozen=True, kw_only=True)
class TCURLoRAConfig(AdapterConfig):
    """``rank`` r (|I| = |J|); ``selection`` of I and J: ``top_norm`` (the paper) or ``inverse_probability``
    (CURLoRA-style, drawn with ``seed``)."""

    rank: int
    selection: Selection = "top_norm"
    seed: int = 0


class TCURGroup(SpectralGroup):
    """The tCURLoRA adapter of one weight group."""

    def __init__(self, group: WeightGroup, rank: int, selection: Selection, seed: int) -> None:
        super().__init__(group)
        with torch.no_grad():
            W = spectral_parts(group)
            if selection == "top_norm":
                I, J = select_top_norm(W, rank)
            else:
                I, J = select_inverse_probability(W, rank, torch.Generator().manual_seed(seed))
            C, R = spectral_cur_factors(W, I, J)
        self.register_buffer("col_index", I)
        self.register_buffer("row_index", J)
        self.register_buffer("C", C, persistent=False)
        self.register_buffer("R", R, persistent=False)
        self.dU = HalfSpectrumParameter(torch.zeros(self.K, rank, rank, dtype=C.dtype, device=C.device), self.L)

    @torch.no_grad()
    def rebuild(self) -> None:
        """C, R from the current (unmerged) base weights and the recorded indices I, J."""
        self.C, self.R = spectral_cur_factors(spectral_parts(self.weight_group), self.col_index, self.row_index)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.C, self.dU(), self.R


def inject(model: nn.Module, cfg: TCURLoRAConfig) -> None:
    groups = find_groups(model, cfg.groups)
    install(model, {g.name: TCURGroup(g, cfg.rank, cfg.selection, cfg.seed) for g in groups})


def merge(model: nn.Module) -> None:
    merge_groups(model, 1.0)


def unmerge(model: nn.Module) -> None:
    merge_groups(model, -1.0)
