"""Pure tensor math: t-product, t-SVD, the rFFT tCURLoRA update against a full complex-FFT reference, CUR selection."""

import pytest
import torch

from tcurseg.tensor import (
    apply_lowrank,
    irfft_stack,
    lowrank_operators,
    num_slices,
    real_slice_mask,
    rfft_stack,
    select_inverse_probability,
    select_top_norm,
    slice_multiplicity,
    spectral_column_norms,
    spectral_cur_factors,
    spectral_delta,
    spectral_svd,
    spectral_svd_reconstruct,
    tproduct,
    tsvd,
    ttranspose,
)

DT = torch.float64


def _bcirc(A: torch.Tensor) -> torch.Tensor:
    """Block-circulant matrix of A (L x m x p): block (i, j) = A_{(i - j) mod L}."""
    L, m, p = A.shape
    out = torch.zeros(L * m, L * p, dtype=A.dtype)
    for i in range(L):
        for j in range(L):
            out[i * m:(i + 1) * m, j * p:(j + 1) * p] = A[(i - j) % L]
    return out


@pytest.mark.parametrize("L", [1, 2, 5, 6])
def test_tproduct_equals_block_circulant_product(L):
    g = torch.Generator().manual_seed(L)
    A = torch.randn(L, 4, 3, generator=g, dtype=DT)
    B = torch.randn(L, 3, 5, generator=g, dtype=DT)
    expected = (_bcirc(A) @ B.reshape(L * 3, 5)).reshape(L, 4, 5)  # bcirc(A) @ unfold(B), folded back
    got = tproduct(A, B)
    assert got.shape == (L, 4, 5)
    assert torch.allclose(got, expected, atol=1e-12, rtol=0)
    # ttranspose: bcirc(A^T) = bcirc(A)^T
    assert torch.allclose(_bcirc(ttranspose(A)), _bcirc(A).T, atol=0, rtol=0)


def test_tproduct_rejects_mismatched_slices():
    with pytest.raises(ValueError, match="frontal slices"):
        tproduct(torch.zeros(3, 2, 2), torch.zeros(4, 2, 2))


@pytest.mark.parametrize("L", [1, 4, 7])
def test_tsvd_reconstructs(L):
    W = torch.randn(L, 6, 4, generator=torch.Generator().manual_seed(10 + L), dtype=DT)
    U, S, V = tsvd(W)
    assert U.shape == (L, 6, 4) and S.shape == (L, 4, 4) and V.shape == (L, 4, 4)
    rec = tproduct(tproduct(U, S), ttranspose(V))
    assert (rec - W).abs().max().item() < 1e-10
    # U is t-orthogonal: U^T * U = identity tensor (I in slice 0, zeros elsewhere)
    eye = torch.zeros(L, 4, 4, dtype=DT)
    eye[0] = torch.eye(4, dtype=DT)
    assert (tproduct(ttranspose(U), U) - eye).abs().max().item() < 1e-10
    # the half-spectrum form: full rank reconstructs, and the real slices come out real
    Uh, Sh, Vh = spectral_svd(W)
    assert (spectral_svd_reconstruct(Uh, Sh, Vh, L) - W).abs().max().item() < 1e-10
    real = real_slice_mask(L)
    assert Uh[real].imag.abs().max().item() == 0.0
    assert torch.all(Sh[:, :-1] >= Sh[:, 1:])


def test_slice_bookkeeping():
    assert [num_slices(L) for L in (1, 2, 3, 4, 12, 48)] == [1, 2, 2, 3, 7, 25]
    assert real_slice_mask(4).tolist() == [True, False, True]
    assert real_slice_mask(5).tolist() == [True, False, False]
    for L in (1, 2, 3, 4, 12, 13, 48):
        assert slice_multiplicity(L).sum().item() == L


def _random_half_spectrum_core(K: int, L: int, r: int, g: torch.Generator) -> torch.Tensor:
    dU = torch.complex(torch.randn(K, r, r, generator=g, dtype=DT), torch.randn(K, r, r, generator=g, dtype=DT))
    real = real_slice_mask(L)
    dU[real] = dU[real].real.to(dU.dtype)  # k = 0 (and L/2) are real
    return dU


@pytest.mark.parametrize("L", [5, 6, 12])
def test_rfft_update_equals_complex_fft_reference(L):
    m, n, r = 9, 7, 3
    g = torch.Generator().manual_seed(100 + L)
    W = torch.randn(L, m, n, generator=g, dtype=DT)
    # column/row scales so that the selection is well separated
    W = W * torch.linspace(0.5, 3.0, n, dtype=DT)[torch.randperm(n, generator=g)]
    W = W * torch.linspace(0.5, 3.0, m, dtype=DT)[torch.randperm(m, generator=g)].unsqueeze(-1)
    K = num_slices(L)

    Dh = rfft_stack(W)
    assert Dh.shape == (K, m, n)
    I, J = select_top_norm(W, r)

    # reference: full complex FFT (all L slices)
    D = torch.fft.fft(W, dim=0)
    assert torch.allclose(D[:K], Dh, atol=1e-12)
    col_scores = torch.linalg.vector_norm(D, dim=1).sum(0)  # sum over all L slices
    I_ref = torch.topk(col_scores, r).indices.sort().values
    row_scores = torch.linalg.vector_norm(D[:, :, I_ref], dim=2).sum(0)
    J_ref = torch.topk(row_scores, r).indices.sort().values
    assert I.tolist() == I_ref.tolist()
    assert J.tolist() == J_ref.tolist()

    C, R = D[:, :, I], D[:, J, :]
    dU_half = _random_half_spectrum_core(K, L, r, g)
    dU = torch.zeros(L, r, r, dtype=dU_half.dtype)
    dU[:K] = dU_half
    for k in range(1, K):
        dU[L - k] = dU_half[k].conj()  # conjugate symmetry; for even L, k = L/2 maps onto itself (and is real)
    dW_c = torch.fft.ifft(C @ dU @ R, dim=0)
    assert dW_c.imag.abs().max().item() < 1e-10 * max(1.0, dW_c.real.abs().max().item())
    dW_ref = dW_c.real
    assert dW_ref.abs().max().item() > 1e-2  # non-trivial update

    Ch, Rh = spectral_cur_factors(W, I, J)
    assert torch.allclose(Ch, Dh[:, :, I], rtol=0, atol=1e-12) and torch.allclose(Rh, Dh[:, J, :], rtol=0, atol=1e-12)
    dW = spectral_delta(Ch, dU_half, Rh, L)
    assert dW.shape == (L, m, n) and dW.dtype == DT
    assert (dW - dW_ref).abs().max().item() < 1e-10

    down, mix, up = lowrank_operators(Ch, dU_half, Rh, L)
    assert down.shape == (2 * K * r, n) and mix.shape == (L, K, 2 * r, 2 * r) and up.shape == (m, 2 * K * r)
    assert not down.is_complex() and not mix.is_complex() and not up.is_complex()
    x = torch.randn(2, 4, n, generator=g, dtype=DT)
    for l in range(L):
        y = apply_lowrank(x, down, mix[l:l + 1], up)
        assert y.shape == (2, 4, m)
        assert (y - x @ dW_ref[l].T).abs().max().item() < 1e-10, f"layer {l}"
    # several layers at once (e.g. q, k, v of one qkv), concatenated along the output
    sel = [0, L - 1, L // 2]
    y = apply_lowrank(x, down, mix[sel], up)
    assert (y - torch.cat([x @ dW_ref[l].T for l in sel], dim=-1)).abs().max().item() < 1e-10


@pytest.mark.parametrize("L", [3, 4])
def test_irfft_ignores_nothing_of_the_trained_half_spectrum(L):
    """rfft(irfft(D)) == D for a valid half spectrum: no part of a trained update is discarded."""
    g = torch.Generator().manual_seed(L)
    D = _random_half_spectrum_core(num_slices(L), L, 3, g)
    assert (rfft_stack(irfft_stack(D, L)) - D).abs().max().item() < 1e-12


@pytest.mark.parametrize("L, m, block_rows", [(1, 7, 3), (5, 9, 4), (6, 10, 32), (12, 33, 8)])
def test_spectral_column_norms_equal_the_norms_of_the_whole_spectrum(L, m, block_rows):
    """Block by block of rows (block sizes that do and do not divide m, and one larger than m) = one transform."""
    W = torch.randn(L, m, 5, generator=torch.Generator().manual_seed(L), dtype=DT)
    expected = torch.linalg.vector_norm(rfft_stack(W), dim=1)
    norms = spectral_column_norms(W, block_rows)
    assert norms.shape == (num_slices(L), 5)
    torch.testing.assert_close(norms, expected, rtol=1e-13, atol=0)


def test_a_stack_given_as_its_parts_selects_and_factors_as_the_whole_stack():
    """W as the matrices of its member modules (1, 3, 1, 3, ... along mode 0, as out_proj and qkv) = W as one tensor."""
    g = torch.Generator().manual_seed(3)
    W = torch.randn(8, 10, 6, generator=g, dtype=DT) * torch.linspace(0.5, 3.0, 6, dtype=DT)
    parts = list(W.split([1, 3, 1, 3]))
    I, J = select_top_norm(W, 3)
    assert [t.tolist() for t in select_top_norm(parts, 3)] == [I.tolist(), J.tolist()]
    for whole, split in zip(spectral_cur_factors(W, I, J), spectral_cur_factors(parts, I, J)):
        assert torch.equal(whole, split)
    torch.testing.assert_close(spectral_column_norms(parts, 4), spectral_column_norms(W, 4), rtol=1e-14, atol=0)
    a = select_inverse_probability(W, 3, torch.Generator().manual_seed(1))
    b = select_inverse_probability(parts, 3, torch.Generator().manual_seed(1))
    assert [t.tolist() for t in a] == [t.tolist() for t in b]


def test_select_top_norm_known_indices_plain_matrix():
    col = torch.tensor([1.0, 9.0, 2.0, 7.0, 3.0, 8.0, 0.5, 4.0], dtype=DT)
    row = torch.tensor([2.0, 6.0, 1.0, 5.0, 9.0, 3.0], dtype=DT)
    W = row[:, None] * col[None, :]
    I, J = select_top_norm(W.unsqueeze(0), 3)
    assert I.tolist() == [1, 3, 5]
    assert J.tolist() == [1, 3, 4]
    assert I.dtype == torch.int64
    with pytest.raises(ValueError, match="rank"):
        select_top_norm(W.unsqueeze(0), 7)


def test_select_top_norm_weights_complex_slices_twice():
    """L = 4: slice 1 is complex and counts twice (D_1 and D_3 = conj(D_1)); slices 0, 2 are real and count once."""
    L, m, n = 4, 5, 4
    Dh = torch.zeros(3, m, n, dtype=torch.complex128)
    Dh[0, :, 0] = 1.5 / m ** 0.5  # column 0: norm 1.5 in a real slice     -> score 1.5
    Dh[1, :, 1] = 1.0j / m ** 0.5  # column 1: norm 1.0 in a complex slice -> score 2.0
    Dh[2, :, 2] = 1.8 / m ** 0.5  # column 2: norm 1.8 in a real slice     -> score 1.8
    Dh[0, :, 3] = 0.1
    W = irfft_stack(Dh, L)  # the real tensor whose half spectrum is Dh
    I, _ = select_top_norm(W, 1)
    assert I.tolist() == [1]
    I, _ = select_top_norm(W, 2)
    assert I.tolist() == [1, 2]


def test_select_inverse_probability_seeded_and_prefers_low_norm():
    n_low, n_high, m = 8, 8, 12
    col = torch.cat((torch.full((n_low,), 0.1), torch.full((n_high,), 10.0))).to(DT)
    perm = torch.randperm(n_low + n_high, generator=torch.Generator().manual_seed(0))
    col = col[perm]
    row = torch.cat((torch.full((m // 2,), 0.1), torch.full((m // 2,), 10.0))).to(DT)
    D = (row[:, None] * col[None, :]).unsqueeze(0)
    r = 4

    a = select_inverse_probability(D, r, torch.Generator().manual_seed(7))
    b = select_inverse_probability(D, r, torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].tolist() == sorted(a[0].tolist()) and len(a[0]) == r  # sorted; repeats allowed (with replacement)

    # different seeds give different selections (on a flat score, where nothing is forced)
    flat = torch.ones(1, 20, 40, dtype=DT)
    draws = {tuple(select_inverse_probability(flat, 5, torch.Generator().manual_seed(s))[0].tolist())
             for s in range(10)}
    assert len(draws) >= 5

    low_cols = set(torch.nonzero(col < 1).flatten().tolist())
    low_rows = set(range(m // 2))
    g = torch.Generator().manual_seed(123)
    hits_c = hits_r = total = 0
    for _ in range(200):
        I, J = select_inverse_probability(D, r, g)
        hits_c += sum(i in low_cols for i in I.tolist())
        hits_r += sum(j in low_rows for j in J.tolist())
        total += r
    # p(low) / p(high) = 100 per item: expected share of low picks is ~0.97; top-norm would give 0
    assert hits_c / total > 0.85
    assert hits_r / total > 0.85


def test_inverse_probabilities_follow_the_published_rule():
    """Fawi's curlora.py: p_j = ||c_j||^2 / ||W||_F^2, q_j = 1 / (p_j + 0.001), normalised; drawn with replacement."""
    from tcurseg.tensor.cur import inverse_probabilities

    norms = torch.tensor([1.0, 2.0, 3.0], dtype=DT)
    p = torch.tensor([1.0, 4.0, 9.0], dtype=torch.float64) / 14.0
    q = 1.0 / (p + 0.001)
    torch.testing.assert_close(inverse_probabilities(norms), q / q.sum(), rtol=1e-12, atol=0)
    W = torch.randn(30, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    W[:, :5] *= 20.0  # a few high-energy columns
    probs = inverse_probabilities(torch.linalg.vector_norm(W, dim=0))
    energy = torch.linalg.vector_norm(W, dim=0) ** 2 / (W**2).sum()
    expected = 1.0 / (energy + 0.001)
    torch.testing.assert_close(probs, expected / expected.sum(), rtol=1e-12, atol=0)
    # with replacement: 30 draws out of 40 columns repeat some of them
    I, _ = select_inverse_probability(W.unsqueeze(0), 30, torch.Generator().manual_seed(1))
    assert len(set(I.tolist())) < 30
