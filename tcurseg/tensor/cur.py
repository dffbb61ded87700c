"""Column / row selection for (tensor) CUR decompositions.

For a real L x m x n tensor W with half spectrum D = rfft(W, dim=0) (K x m x n), the score of column j is its norm
summed over all L slices of the full spectrum, s_j = sum_k mult_k ||D_k[:, j]||_2 (mult_k from
``slice_multiplicity``); a plain matrix is the case L = 1. The same columns I and rows J are used for every slice, so
C_k = D_k[:, I] (m x r), R_k = D_k[J, :] (r x n) and the intersection D_k[J, I] (r x r). Because the FFT acts along
mode 0 only, C = rfft(W[:, :, I]) and R = rfft(W[:, J, :]): the whole spectrum is never needed at once.

The functions below take W as one tensor or as its parts along mode 0 (e.g. the matrices of each member module):
W = cat(parts), of which only a block of rows, the selected columns or the selected rows are ever concatenated.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tcurseg.tensor.fourier import rfft_stack, slice_multiplicity

Stack = torch.Tensor | Sequence[torch.Tensor]
"""A real L x m x n tensor, or its parts (L_i x m x n, sum L_i = L) along mode 0."""


def _parts(W: Stack) -> list[torch.Tensor]:
    return [W] if isinstance(W, torch.Tensor) else list(W)


def _rows(W: Stack, rows: slice | torch.Tensor) -> torch.Tensor:
    """W[:, rows, :] as one tensor."""
    return torch.cat([part[:, rows] for part in _parts(W)])


def _columns(W: Stack, columns: torch.Tensor) -> torch.Tensor:
    """W[:, :, columns] as one tensor."""
    return torch.cat([part[:, :, columns] for part in _parts(W)])


def _slice_norms(D: torch.Tensor, dim: int) -> torch.Tensor:
    """||D_k||_2 along ``dim`` (1: columns, 2: rows) of every slice of a (complex) K x m x n tensor."""
    squared = torch.view_as_real(D).square().sum(-1) if D.is_complex() else D.square()
    return squared.sum(dim).sqrt()


def spectral_column_norms(W: Stack, block_rows: int = 32) -> torch.Tensor:
    """||D_k[:, j]||_2 for D = rfft(W, dim=0) of a real L x m x n stack W: a K x n tensor.

    Computed block by block of ``block_rows`` rows, ||D_k[:, j]||^2 = sum_blocks ||rfft(W[:, rows, j])_k||^2, so the
    spectrum of one block (cache-sized) is all that exists at a time: about 3x faster than transforming the whole
    stack and reducing its K x m x n spectrum, and without its memory. For L = 1, D = W."""
    parts = _parts(W)
    L, (m, n) = sum(part.shape[0] for part in parts), parts[0].shape[1:]
    if L == 1:
        return parts[0].square().sum(1).sqrt()
    energy = parts[0].new_zeros(L // 2 + 1, n, 2)
    for start in range(0, m, block_rows):
        energy += torch.view_as_real(rfft_stack(_rows(parts, slice(start, start + block_rows)))).square().sum(1)
    return energy.sum(-1).sqrt()


def _scores(norms: torch.Tensor, L: int) -> torch.Tensor:
    """s_j = sum_k mult_k norms[k, j]."""
    return slice_multiplicity(L, norms.device, norms.dtype) @ norms


def _check_rank(W: Stack, r: int) -> None:
    shape = tuple(_parts(W)[0].shape[-2:])
    if not 0 < r <= min(shape):
        raise ValueError(f"CUR rank r={r} must be in [1, {min(shape)}] for slices of shape {shape}")


def spectral_cur_factors(W: Stack, I: torch.Tensor, J: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """C = rfft(W[:, :, I]) = D[:, :, I] and R = rfft(W[:, J, :]) = D[:, J, :] (K x m x r, K x r x n, complex) of a real
    L x m x n stack W with half spectrum D."""
    return rfft_stack(_columns(W, I)), rfft_stack(_rows(W, J))


def select_top_norm(W: Stack, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's rule on a real L x m x n stack W: I = the r columns of largest summed norm s_j; then J = the r rows
    of largest summed norm of the selected columns, t_i = sum_k mult_k ||D_k[i, I]||_2. Returns sorted int64 index
    vectors (I, J)."""
    _check_rank(W, r)
    L = sum(part.shape[0] for part in _parts(W))
    I = torch.topk(_scores(spectral_column_norms(W), L), r).indices.sort().values
    J = torch.topk(_scores(_slice_norms(rfft_stack(_columns(W, I)), 2), L), r).indices.sort().values
    return I, J


def inverse_probabilities(scores: torch.Tensor) -> torch.Tensor:
    """CURLoRA's sampling distribution (Fawi 2024, official code): p_j = s_j^2 / sum_i s_i^2 (for a matrix,
    ||c_j||^2 / ||W||_F^2), q_j = 1 / (p_j + 0.001), normalised to sum 1 (float64)."""
    energy = scores.detach().double().cpu() ** 2
    q = 1.0 / (energy / energy.sum().clamp_min(torch.finfo(torch.float64).tiny) + 1e-3)
    return q / q.sum()


def select_inverse_probability(W: Stack, r: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """CURLoRA's rule as published, on a real L x m x n stack W: r columns drawn **with** replacement from
    :func:`inverse_probabilities` of the summed column norms s_j, and r rows from those of the summed row norms t_i,
    favouring low-energy directions. Duplicates are kept, as in the official code (a repeated column lowers the
    effective rank). Seeded by ``generator`` (a CPU generator). Returns sorted int64 index vectors (I, J)."""
    _check_rank(W, r)
    parts = _parts(W)
    L = sum(part.shape[0] for part in parts)

    def sample(norms: torch.Tensor) -> torch.Tensor:
        p = inverse_probabilities(_scores(norms, L))
        return torch.multinomial(p, r, replacement=True, generator=generator).sort().values.to(parts[0].device)

    I = sample(spectral_column_norms(parts))
    J = sample(spectral_column_norms([part.transpose(1, 2) for part in parts]))
    return I, J


def cur_factors(W: torch.Tensor, I: torch.Tensor, J: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """C = W[..., :, I] and R = W[..., J, :] for the selected columns I and rows J."""
    return W[..., :, I], W[..., J, :]
