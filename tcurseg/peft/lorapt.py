"""LoRA-PT (He et al., t-SVD based adaptation): per frequency slice of D = rfft(W, dim=0), D_k = U_k S_k V_k^H; the
top-r triplets (U_k[:, :r], S_k[:r], V_k[:, :r]) become trainable (U, V complex except on the real slices; S real),
the rest is a frozen residual. The frozen top-r part U0 S0 V0^H is
recomputed from the base (it does not depend on the SVD's phase choice), so the adapter file holds only U, S, V. Written as an update so the model is exactly unchanged at init:
    dW = irfft_k(U_k diag(S_k) V_k^H - U0_k diag(S0_k) V0_k^H, n=L),
i.e. half-spectrum factors C = [U, U0], M = diag(S, -S0), R = [V^H; V0^H] of rank 2r.
Real trainable parameters: L r (m + n) + K r per group.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tcurseg.peft.config import AdapterConfig
from tcurseg.peft.groups import WeightGroup, find_groups
from tcurseg.peft.spectral import HalfSpectrumParameter, SpectralGroup, install, merge_groups, stacked_spectral_weight
from tcurseg.tensor import spectral_svd


@dataclass(frozen=True, kw_only=True)
class LoRAPTConfig(AdapterConfig):
    """``rank`` r: the top-r triplets of every frequency slice train."""

    rank: int


class TSVDGroup(SpectralGroup):
    """The LoRA-PT adapter of one weight group."""

    def __init__(self, group: WeightGroup, rank: int) -> None:
        super().__init__(group)
        self.rank = rank
        for name in ("U0", "S0", "V0"):
            self.register_buffer(name, torch.empty(0), persistent=False)
        self.rebuild()
        self.U = HalfSpectrumParameter(self.U0, self.L)
        self.S = nn.Parameter(self.S0.clone())
        self.V = HalfSpectrumParameter(self.V0, self.L)

    @torch.no_grad()
    def rebuild(self) -> None:
        """The frozen top-r triplets from the current (unmerged) base weights."""
        self.U0, self.S0, self.V0 = spectral_svd(stacked_spectral_weight(self.weight_group), self.rank)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        C = torch.cat((self.U(), self.U0), dim=-1)
        M = torch.diag_embed(torch.cat((self.S, -self.S0), dim=-1).to(C.dtype))
        R = torch.cat((self.V(), self.V0), dim=-1).mH
        return C, M, R


def inject(model: nn.Module, cfg: LoRAPTConfig) -> None:
    install(model, {g.name: TSVDGroup(g, cfg.rank) for g in find_groups(model, cfg.groups)})


def merge(model: nn.Module) -> None:
    merge_groups(model, 1.0)


def unmerge(model: nn.Module) -> None:
    merge_groups(model, -1.0)
