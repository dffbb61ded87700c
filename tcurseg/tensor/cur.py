"""Column / row selection for (tensor) CUR decompositions.

For a half spectrum D (K x m x n) of a real L x m x n tensor, the score of column j is its norm summed over all
L slices of the full spectrum, s_j = sum_k mult_k ||D_k[:, j]||_2 (mult_k from ``slice_multiplicity``); a plain
matrix is the case K = L = 1. The same columns I and rows J are used for every slice, so
C_k = D_k[:, I] (m x r), R_k = D_k[J, :] (r x n) and the intersection D_k[J, I] (r x r).
"""

from __future__ import annotations

import torch

from tcurseg.tensor.fourier import slice_multiplicity


def _slice_norms(D: torch.Tensor, dim: int) -> torch.Tensor:
    """||D_k||_2 along ``dim`` (1: columns, 2: rows) of every slice: sqrt of the summed |D|^2, computed on the real
    view (half the time of ``linalg.vector_norm`` on a complex tensor)."""
    squared = torch.view_as_real(D).square().sum(-1) if D.is_complex() else D.square()
    return squared.sum(dim).sqrt()


def _column_scores(D: torch.Tensor, L: int) -> torch.Tensor:
    return slice_multiplicity(L, D.device, D.real.dtype) @ _slice_norms(D, 1)


def _row_scores(D: torch.Tensor, L: int) -> torch.Tensor:
    return slice_multiplicity(L, D.device, D.real.dtype) @ _slice_norms(D, 2)


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


def inverse_probabilities(scores: torch.Tensor) -> torch.Tensor:
    """CURLoRA's sampling distribution (Fawi 2024, official code): p_j = s_j^2 / sum_i s_i^2 (for a matrix,
    ||c_j||^2 / ||W||_F^2), q_j = 1 / (p_j + 0.001), normalised to sum 1 (float64)."""
    energy = scores.detach().double().cpu() ** 2
    q = 1.0 / (energy / energy.sum().clamp_min(torch.finfo(torch.float64).tiny) + 1e-3)
    return q / q.sum()


def select_inverse_probability(
    D: torch.Tensor, r: int, L: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """CURLoRA's rule as published: r columns drawn **with** replacement from :func:`inverse_probabilities` of the
    summed column norms s_j, and r rows from those of the summed row norms t_i, favouring low-energy directions.
    Duplicates are kept, as in the official code (a repeated column lowers the effective rank). Seeded by
    ``generator`` (a CPU generator). Returns sorted int64 index vectors (I, J)."""
    _check_rank(D, r)

    def sample(scores: torch.Tensor) -> torch.Tensor:
        p = inverse_probabilities(scores)
        return torch.multinomial(p, r, replacement=True, generator=generator).sort().values

    I = sample(_column_scores(D, L)).to(D.device)
    J = sample(_row_scores(D, L)).to(D.device)
    return I, J


def cur_factors(D: torch.Tensor, I: torch.Tensor, J: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """C = D[..., :, I] and R = D[..., J, :] for the selected columns I and rows J."""
    return D[..., :, I], D[..., J, :]
