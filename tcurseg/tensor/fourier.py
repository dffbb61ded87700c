"""t-product algebra along the stacking mode (mode 0), with the real FFT.

A third-order tensor W in R^{L x m x n} stacks L matrices W_0..W_{L-1}. Its transform along mode 0 is
D_k = sum_l W_l exp(-2 pi i l k / L). Because W is real, D_{L-k} = conj(D_k), so only the K = floor(L/2) + 1
slices D_0..D_{K-1} returned by the real FFT are independent; D_0 (and D_{L/2} for even L) are real.
"""

from __future__ import annotations

import math

import torch


def num_slices(L: int) -> int:
    """Number of independent frequency slices of a real tensor with L frontal slices: K = floor(L/2) + 1."""
    return L // 2 + 1


def real_slice_mask(L: int) -> torch.Tensor:
    """Boolean mask over the K slices: True where D_k is real for every real W (k = 0 and, for even L, k = L/2)."""
    K = num_slices(L)
    return torch.tensor([k == 0 or 2 * k == L for k in range(K)], dtype=torch.bool, device="cpu")


def slice_multiplicity(L: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """How often each independent slice occurs in the full spectrum: 1 for real slices, 2 for the others
    (D_k and its mirror D_{L-k} = conj(D_k)). Sums to L. Made on ``device`` (no host tensor is copied)."""
    k = torch.arange(num_slices(L), device=device)
    return 2.0 - ((k == 0) | (2 * k == L)).to(dtype)


def spectral_dtype(dtype: torch.dtype) -> torch.dtype:
    """The real dtype in which the spectrum of a real stack of ``dtype`` is computed and kept: float64 for float64,
    float32 for every other floating type (the FFT is never run below fp32; bf16 / fp16 have no complex type).
    Its complex counterpart is complex128 / complex64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def rfft_stack(W: torch.Tensor) -> torch.Tensor:
    """D = rfft(W, dim=0): the K independent frequency slices of a real L x m x n tensor (complex, K x m x n)."""
    return torch.fft.rfft(W, dim=0)


def irfft_stack(D: torch.Tensor, L: int) -> torch.Tensor:
    """W = irfft(D, n=L, dim=0): the real L x m x n tensor whose half spectrum is D (imaginary parts of the
    real slices are ignored, as the inverse real FFT defines)."""
    return torch.fft.irfft(D, n=L, dim=0)


def tproduct(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """t-product A * B of real tensors A (L x m x p) and B (L x p x n): irfft_k(rfft(A)_k @ rfft(B)_k), i.e. the
    block-circulant product along mode 0."""
    if A.shape[0] != B.shape[0]:
        raise ValueError(f"t-product needs the same number of frontal slices, got {A.shape[0]} and {B.shape[0]}")
    return irfft_stack(rfft_stack(A) @ rfft_stack(B), A.shape[0])


def ttranspose(A: torch.Tensor) -> torch.Tensor:
    """t-transpose of A (L x m x n): transpose every frontal slice and reverse the order of slices 1..L-1, so that
    rfft(A^T)_k = rfft(A)_k^H."""
    return torch.cat((A[:1], A[1:].flip(0)), dim=0).transpose(-1, -2)


def spectral_delta(C: torch.Tensor, M: torch.Tensor, R: torch.Tensor, L: int) -> torch.Tensor:
    """Materialised update dW = irfft_k(C_k M_k R_k, n=L) for half-spectrum factors C (K x m x s), M (K x s x s),
    R (K x s x n). Returns the real L x m x n tensor; slice l is the update of the l-th stacked matrix."""
    return irfft_stack(C @ M @ R, L)


def lowrank_operators(
    C: torch.Tensor, M: torch.Tensor, R: torch.Tensor, L: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Real operators that apply the update of every stacked matrix without materialising it.

    With theta_lk = 2 pi l k / L and w_k = mult_k / L (mult_k from :func:`slice_multiplicity`), the inverse real FFT gives
        dW_l = sum_k w_k Re(exp(i theta_lk) C_k M_k R_k),
    so for a real row vector x:  x dW_l^T = sum_k Re(P_k G_lk^T C_k^T) with P_k = x R_k^T and
    G_lk = w_k exp(i theta_lk) M_k. Writing complex products as real 2 x 2 blocks, this is a real product of rank 2Ks:
        x dW_l^T = blockdiag_k(mix[l, k]) applied to (x down^T), then times up^T,
    with down = [Re R_k; Im R_k]_k (2Ks x n), up = [Re C_k, -Im C_k]_k (m x 2Ks) and
    mix[l, k] = [[Re G^T, Im G^T], [-Im G^T, Re G^T]] (2s x 2s).

    Returns (down: 2Ks x n, mix: L x K x 2s x 2s, up: m x 2Ks), all real, in the real dtype of C.
    """
    K, m, s = C.shape
    down = torch.stack((R.real, R.imag), dim=1).reshape(K * 2 * s, -1)
    up = torch.stack((C.real, -C.imag), dim=1).permute(2, 0, 1, 3).reshape(m, K * 2 * s)
    k = torch.arange(K, dtype=torch.float64, device=C.device)
    l = torch.arange(L, dtype=torch.float64, device=C.device)
    theta = (2 * math.pi / L) * torch.outer(l, k)
    weight = slice_multiplicity(L, C.device, torch.float64) / L
    phase = (weight * torch.polar(torch.ones_like(theta), theta)).to(M.dtype)
    G = phase[:, :, None, None] * M.unsqueeze(0)
    Gt = G.transpose(-1, -2)
    top = torch.cat((Gt.real, Gt.imag), dim=-1)
    bottom = torch.cat((-Gt.imag, Gt.real), dim=-1)
    mix = torch.cat((top, bottom), dim=-2)
    return down, mix, up


def apply_lowrank(
    x: torch.Tensor, down: torch.Tensor, mix: torch.Tensor, up: torch.Tensor
) -> torch.Tensor:
    """x dW_l^T for the layers selected in ``mix`` (shape N x K x 2s x 2s, N layers sharing the input x).

    x: (..., n) -> (..., N * m): the N updates, concatenated along the last dimension (e.g. q, k, v of one qkv)."""
    N, K, two_s, _ = mix.shape
    h = torch.nn.functional.linear(x, down).unflatten(-1, (1, K, two_s))
    q = torch.einsum("...nki,nkij->...nkj", h.expand(*h.shape[:-3], N, K, two_s), mix)
    return torch.nn.functional.linear(q.flatten(-2), up).flatten(-2)
