"""Pure tensor math for tensor-based adapters: t-product ops along mode 0 (real FFT), t-SVD and tensor CUR."""

from tcurseg.tensor.cur import (
    cur_factors,
    select_inverse_probability,
    select_top_norm,
    spectral_column_norms,
    spectral_cur_factors,
)
from tcurseg.tensor.fourier import (
    apply_lowrank,
    irfft_stack,
    lowrank_operators,
    num_slices,
    real_slice_mask,
    rfft_stack,
    slice_multiplicity,
    spectral_delta,
    spectral_dtype,
    tproduct,
    ttranspose,
)
from tcurseg.tensor.tsvd import spectral_svd, spectral_svd_reconstruct, tsvd

__all__ = [
    "apply_lowrank",
    "cur_factors",
    "irfft_stack",
    "lowrank_operators",
    "num_slices",
    "real_slice_mask",
    "rfft_stack",
    "select_inverse_probability",
    "select_top_norm",
    "slice_multiplicity",
    "spectral_column_norms",
    "spectral_cur_factors",
    "spectral_delta",
    "spectral_dtype",
    "spectral_svd",
    "spectral_svd_reconstruct",
    "tproduct",
    "tsvd",
    "ttranspose",
]
