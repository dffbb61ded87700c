"""Column / row selection for (tensor) CUR decompositions.

For a half spectrum D (K x m x n) of a real L x m x n tensor, the score of column j is its norm summed over all
L slices of the full spectrum, s_j = sum_k mult_k ||D_k[:, j]||_2 (mult_k from ``slice_multiplicity``); a plain
matrix is the case K = L = 1. The same columns I and rows J are used for every slice, so
C_k = D_k[:, I] (m x r), R_k = D_k[J, :] (r x n) and the intersection D_k[J, I] (r x r).
"""

from __future__ import annotations

import torch

from tcurseg.tensor.fourier import slice_multiplicity


def _column_scores(D: torch.Tensor, L: int) -> torch.Tensor:
    mult = slice_multiplicity(L).to(device=D.device, dtype=D.real.dtype)
    return torch.einsum("k,kn->n", mult, torch.linalg.vector_norm(D, dim=1))


def _row_scores(D: torch.Tensor, L: int) -> torch.Tensor:
    mult = slice_multiplicity(L).to(device=D.device, dtype=D.real.dtype)
    return torch.einsum("k,km->m", mult, torch.linalg.vector_norm(D, dim=2))


def _check_rank(D: torch.Tensor, r: int) -> None:
    if not 0 < r <= min(D.shape[-2:]):
        raise ValueError(f"CUR rank r={r} must be in [1, {min(D.shape[-2:])}] for slices of shape {tuple(D.shape[-2:])}")


def select_top_norm(D: torch.Tensor, r: int, L: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's rule: I = the r columns of largest summed norm s_j; then J = the r rows of largest summed norm
    of the selected columns, t_i = sum_k mult_k ||D_k[i, I]||_2. Returns sorted int64 index vectors (I, J)."""
    _check_rank(D, r)
    I = torch.topk(_column_scores(D, L), r).indices.sort().values
    J = torch.topk(_row_scores(D[:, :, I], L), r).indices.sort().values
    return I, J


def select_inverse_probability(
    D: torch.Tensor, r: int, L: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """CURLoRA's rule (Fawi 2024): sample r columns without replacement with p_j proportional to 1 / s_j, and r rows
    with p_i proportional to 1 / t_i (t_i the summed row norms), favouring low-energy directions. Seeded by
    ``generator`` (a CPU generator). Returns sorted int64 index vectors (I, J)."""
    _check_rank(D, r)
    eps = torch.finfo(D.real.dtype).tiny

    def sample(scores: torch.Tensor) -> torch.Tensor:
        p = 1.0 / (scores.detach().double().cpu() + eps)
        return torch.multinomial(p / p.sum(), r, replacement=False, generator=generator).sort().values

    I = sample(_column_scores(D, L)).to(D.device)
    J = sample(_row_scores(D, L)).to(D.device)
    return I, J


def cur_factors(D: torch.Tensor, I: torch.Tensor, J: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """C = D[..., :, I] and R = D[..., J, :] for the selected columns I and rows J."""
    return D[..., :, I], D[..., J, :]
