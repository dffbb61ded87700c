"""Casting an adapted model: the spectral factors follow the base weights' precision (complex128 for float64,
complex64 for float32 / bfloat16 / float16 bases), a complex tensor stays complex under any ``.to()``, and trainable
spectral parameters never drop below float32 (so a bf16 round trip gives them back bit for bit)."""

from __future__ import annotations

import copy

import pytest
import torch
from monai.networks.nets import ViT
from rounding import counted_forward, output_bound, sum_bound
from test_peft import _reference_delta  # the full complex-FFT reference of the tCURLoRA update

from tcurseg.peft import VIT_GROUPS, adapter_info, apply, find_groups, merge
from tcurseg.peft.spectral import spectral_groups

SPECTRAL = ["tcurlora", "lorapt"]


def _vit(num_layers: int = 4, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return ViT(in_channels=1, img_size=(16, 16, 16), patch_size=(8, 8, 8), hidden_size=32, mlp_dim=64,
               num_layers=num_layers, num_heads=4)


def _x(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0)).to(dtype)


@torch.no_grad()
def _out(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.eval()(x)[0]


@torch.no_grad()
def _counted(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """:func:`_out` and the number of terms its outputs sum (``rounding.counted_forward``)."""
    return counted_forward(model.eval(), x, run=lambda v: model(v)[0])


def _assert_within_rounding(y: torch.Tensor, reference: torch.Tensor, n_terms: int) -> None:
    difference, bound = (y - reference).abs().max().item(), output_bound(n_terms, reference)
    assert difference <= bound, f"{difference:.3g} > rounding bound {bound:.3g}"


@torch.no_grad()
def _perturb(model: torch.nn.Module, scale: float = 0.3) -> None:
    g = torch.Generator().manual_seed(5)
    for p in model.adapter_groups.parameters():
        p.add_(scale * (p.abs().mean().item() or 1.0) * torch.randn(p.shape, generator=g, dtype=p.dtype))


def test_float64_tcurlora_update_equals_the_complex_reference():
    base = _vit().double()
    model = apply(copy.deepcopy(base), {"name": "tcurlora", "rank": 3})
    _perturb(model)
    for g in find_groups(base, VIT_GROUPS):
        group = model.adapter_groups[g.name]
        assert group.C.dtype == group.dU().dtype == torch.complex128
        reference = _reference_delta(g.stacked_weight(), group.col_index, group.row_index, group.dU())
        assert reference.abs().max().item() > 1e-3
        # each entry: an inverse L-point transform (1/L times a sum of L) of r x r products of transformed weights
        # (sums of L, each at most L max|W|) and the core: a chain of 2 L + 2 r terms, (r L max|W|)^2 max|dU| in all
        L, r = group.L, group.col_index.numel()
        scale = (r * L * g.stacked_weight().abs().max().item()) ** 2 * group.dU().abs().max().item()
        assert (group.delta() - reference).abs().max().item() <= sum_bound(2 * L + 2 * r, scale, torch.float64)


@pytest.mark.parametrize("method", SPECTRAL + ["curlora"])
def test_to_float64_after_injection_keeps_the_model_correct(method):
    base = _vit()
    model = apply(copy.deepcopy(base), {"name": method, "rank": 2})
    model.to(torch.float64)
    base.to(torch.float64)
    x = _x(torch.float64)
    y, n_terms = _counted(model, x)
    _assert_within_rounding(y, _out(base, x), n_terms)
    for group in spectral_groups(model):
        complex_tensors = [t for t in (*group.buffers(), *(p() for p in group.children())) if t.is_complex()]
        assert complex_tensors and all(t.dtype == torch.complex128 for t in complex_tensors)
    model.double()
    with torch.no_grad():
        g = torch.Generator().manual_seed(5)
        for name, p in model.named_parameters():
            if name in adapter_info(model).new_parameters:
                p.add_(0.3 * (p.abs().mean().item() or 1.0) * torch.randn(p.shape, generator=g, dtype=p.dtype))
    unmerged = _out(model, x)
    assert (unmerged - y).abs().max().item() > 1e-3
    merge(model)
    _assert_within_rounding(_out(model, x), unmerged, n_terms)


@pytest.mark.parametrize("method", SPECTRAL)
def test_double_then_merge(method):
    model = apply(_vit(), {"name": method, "rank": 2})
    _perturb(model)
    model.double()
    x = _x(torch.float64)
    unmerged, n_terms = _counted(model, x)
    assert (unmerged - _out(_vit().double(), x)).abs().max().item() > 1e-3
    merge(model)
    _assert_within_rounding(_out(model, x), unmerged, n_terms)


@pytest.mark.parametrize("method", SPECTRAL)
def test_bfloat16_cast_and_round_trip_to_float32(method):
    model = apply(_vit(), {"name": method, "rank": 2})
    _perturb(model)
    x = _x()
    y32 = _out(model, x)
    before = {n: p.detach().clone() for n, p in model.adapter_groups.named_parameters()}

    model.to(torch.bfloat16)
    assert all(p.dtype == torch.float32 for p in model.adapter_groups.parameters())
    buffers = [t for g in spectral_groups(model) for t in g.buffers()]
    assert all(t.dtype in (torch.complex64, torch.float32, torch.long) for t in buffers)
    y16 = _out(model, x.bfloat16())
    assert y16.dtype == torch.bfloat16
    assert ((y16.float() - y32).abs().max() / y32.abs().max()).item() < 5e-2

    model.float()
    after = dict(model.adapter_groups.named_parameters())
    assert all(torch.equal(after[n], p) for n, p in before.items())
    assert ((_out(model, x) - y32).abs().max() / y32.abs().max()).item() < 5e-2
