"""t-SVD: the SVD of every frequency slice of a real third-order tensor (Kilmer & Martin).

W = U * S * V^T in the t-product sense is computed slice-wise in the Fourier domain: D_k = U_k diag(S_k) V_k^H for the
K independent slices of D = rfft(W, dim=0); the t-SVD factors are irfft of (U_k), (diag S_k), (V_k).
"""

from __future__ import annotations

import torch

from tcurseg.tensor.fourier import irfft_stack, real_slice_mask, rfft_stack


def spectral_svd(W: torch.Tensor, r: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-slice thin SVD of the half spectrum of W (L x m x n): D_k = U_k diag(S_k) V_k^H.

    Returns U (K x m x q), S (K x q, real, descending), V (K x n x q) with q = r if given (the top-r triplets), else
    min(m, n). The real slices are decomposed in real arithmetic, so their U_k, V_k are real."""
    D = rfft_stack(W)
    U, S, Vh = torch.linalg.svd(D, full_matrices=False)
    real = torch.tensor([k for k, r in enumerate(real_slice_mask(W.shape[0]).tolist()) if r], device=D.device)
    Ur, Sr, Vhr = torch.linalg.svd(D[real].real, full_matrices=False)
    U[real], S[real], Vh[real] = Ur.to(U.dtype), Sr, Vhr.to(Vh.dtype)
    q = S.shape[-1] if r is None else r
    if not 0 < q <= S.shape[-1]:
        raise ValueError(f"t-SVD rank r={r} must be in [1, {S.shape[-1]}]")
    return U[..., :q], S[..., :q], Vh[..., :q, :].mH


def spectral_svd_reconstruct(U: torch.Tensor, S: torch.Tensor, V: torch.Tensor, L: int) -> torch.Tensor:
    """irfft_k(U_k diag(S_k) V_k^H, n=L): the real L x m x n tensor of a (truncated) t-SVD."""
    return irfft_stack((U * S.unsqueeze(-2).to(U.dtype)) @ V.mH, L)


def tsvd(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Real t-SVD factors (L x m x q, L x q x q f-diagonal, L x n x q) with W = U * S * V^T (t-product)."""
    L = W.shape[0]
    U, S, V = spectral_svd(W)
    S_tensor = torch.diag_embed(S.to(U.dtype))
    return irfft_stack(U, L), irfft_stack(S_tensor, L), irfft_stack(V, L)
