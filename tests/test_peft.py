"""PEFT core on tiny models: unchanged at init, gradients reach the tCURLoRA cores, merge/unmerge, parameter counts
(tiny model and UNETR-B on the meta device), operators once per forward, groups, AMP, seeded selection, and a
check of the adapted ViT against an independent full complex-FFT reference (odd and even L).

Outputs that must agree up to rounding are compared in float64 against the bound of ``rounding.py`` (float32's own
rounding over these sums is of the order of the outputs' differences it would have to tell apart). PiSSA initialises
only in float32 (HF peft): its split of the weights is checked at the weights, its merge in float64 after the cast."""

from __future__ import annotations

import copy

import pytest
import torch
from rounding import counted_forward, output_bound, sum_bound
from torch.nn import functional as F

import tcurseg.peft
import tcurseg.peft.spectral as spectral_mod
from tcurseg.models.unetr import CNN_PRESETS, build_unetr
from tcurseg.peft import (
    METHODS,
    VIT_GROUPS,
    adapter_state,
    apply,
    find_groups,
    merge,
    trainable_parameters,
    trainable_report,
    unmerge,
)
from tcurseg.tensor import num_slices

TINY = {"in_channels": 1, "out_channels": 2, "img_size": [32, 32, 32], "feature_size": 8, "hidden_size": 48,
        "mlp_dim": 96, "num_heads": 4}
UNETR_B = {"in_channels": 1, "out_channels": 2, "img_size": [128, 128, 128], "feature_size": 16}
DEFAULT = CNN_PRESETS["default"]
RANK = 4
ALL_METHODS = ["full", "decoder_only", "lora", "dora", "pissa", "curlora", "lorapt", "tcurlora"]
MERGING = ["lora", "dora", "pissa", "curlora", "lorapt", "tcurlora"]


def tiny(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_unetr(TINY)


def adapted(method: str, model_seed: int = 0, **cfg) -> torch.nn.Module:
    model = tiny(model_seed)
    return apply(model, {"name": method, "rank": RANK, "trainable_modules": DEFAULT, **cfg})


def x_input(seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(seed))


def forward(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


def counted(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """:func:`forward` and the number of terms its outputs sum (:func:`rounding.counted_forward`)."""
    model.eval()
    with torch.no_grad():
        return counted_forward(model, x)


def adapted64(method: str, **cfg) -> torch.nn.Module:
    """:func:`adapted` in float64: applied to the float64 base, or for PiSSA (float32 only) cast after applying."""
    if method == "pissa":
        return adapted(method, **cfg).double()
    return apply(tiny().double(), {"name": method, "rank": RANK, "trainable_modules": DEFAULT, **cfg})


def assert_within_rounding(y: torch.Tensor, reference: torch.Tensor, n_terms: int) -> None:
    """``y`` and ``reference`` are two evaluations of the same function (float64), ``n_terms`` long."""
    assert y.dtype == reference.dtype == torch.float64
    difference, bound = (y - reference).abs().max().item(), output_bound(n_terms, reference)
    assert difference <= bound, f"{difference:.3g} > rounding bound {bound:.3g}"


def pissa_split_within_rounding(model: torch.nn.Module, base: torch.nn.Module) -> int:
    """PiSSA's residual W_res = W - s B A is computed in float32: W_res + s B A (in float64) stays within that
    subtraction's rounding of W, element by element (r + 1 terms of sizes |W| and s |B| |A|). Returns the number
    of layers checked."""
    checked = 0
    weights = dict(base.named_parameters())
    for name, module in model.named_modules():
        if not hasattr(module, "lora_A") or "default" not in module.lora_A:
            continue
        a, b = module.lora_A["default"].weight.double(), module.lora_B["default"].weight.double()
        scaling = float(module.scaling["default"])
        residual = module.base_layer.weight.double()
        original = weights[f"{name}.weight"].double()
        assert (residual - original).abs().max().item() > 0  # the principal part was taken out
        terms = original.abs() + scaling * (b.abs() @ a.abs())
        bound = sum_bound(a.shape[0] + 1, 1.0, torch.float32) * terms
        assert ((residual + scaling * (b @ a) - original).abs() <= bound).all(), name
        checked += 1
    return checked


def is_decoder(name: str, prefixes=DEFAULT) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def adapter_params(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Trainable parameters outside the CNN path (the encoder adapter)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad and not is_decoder(n)}


@torch.no_grad()
def perturb_adapter(model: torch.nn.Module, seed: int = 5, scale: float = 0.05) -> None:
    """Random change of every adapter parameter, relative to its size (dW != 0 afterwards)."""
    g = torch.Generator().manual_seed(seed)
    for _, p in sorted(adapter_params(model).items()):
        ref = p.abs().mean().item() or 1.0
        p.add_(scale * ref * torch.randn(p.shape, generator=g, dtype=p.dtype))


def dice_ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    prob = logits.softmax(1)
    onehot = F.one_hot(labels, logits.shape[1]).movedim(-1, 1).float()
    inter = (prob * onehot).sum((2, 3, 4))
    dice = 1 - (2 * inter + 1e-5) / (prob.sum((2, 3, 4)) + onehot.sum((2, 3, 4)) + 1e-5)
    return dice.mean() + F.cross_entropy(logits, labels)


# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ALL_METHODS)
def test_unchanged_at_init(method):
    base = tiny() if method == "pissa" else tiny().double()
    x = x_input().to(next(base.parameters()).dtype)
    y0 = forward(base, x)
    model = apply(copy.deepcopy(base), {"name": method, "rank": RANK, "trainable_modules": DEFAULT})
    if method == "pissa":
        assert pissa_split_within_rounding(model, base) == 48  # qkv, out_proj, linear1, linear2 of 12 blocks
    else:
        y, n_terms = counted(model, x)
        assert y.shape == y0.shape == (1, 2, 32, 32, 32)
        assert_within_rounding(y, y0, n_terms)
    # apply must not change the weights of the base model it was copied from
    assert torch.equal(forward(base, x), y0)


def test_gradients_reach_tcurlora_cores_and_optimizer_updates_them():
    model = adapted("tcurlora")
    groups = model.adapter_groups
    assert set(groups.keys()) == {"attn", "mlp1", "mlp2"}

    params = trainable_parameters(model)
    named = dict(model.named_parameters())
    with_grad = {n for n, p in named.items() if p.requires_grad}
    assert {id(p) for p in params} == {id(named[n]) for n in with_grad}
    assert len(params) == len(with_grad)
    assert sum(p.numel() for p in params) == trainable_report(model)["trainable"]
    adapter_names = {n for n in with_grad if not is_decoder(n)}
    assert adapter_names == {f"adapter_groups.{g}.dU.{part}" for g in ("attn", "mlp1", "mlp2") for part in ("real", "imag")}
    vit = {n: p.detach().clone() for n, p in named.items() if n.startswith("vit.")}
    assert vit and not any(named[n].requires_grad for n in vit)
    dU_before = {g: (groups[g].dU.real.detach().clone(), groups[g].dU.imag.detach().clone()) for g in groups}

    model.train()
    labels = (x_input(2)[:, 0] > 0.5).long()
    opt = torch.optim.Adam(params, lr=1e-3)
    loss = dice_ce_loss(model(x_input()), labels)
    loss.backward()
    for g in ("attn", "mlp1", "mlp2"):
        dU = groups[g].dU
        assert dU.real.grad is not None and dU.real.grad.norm().item() > 0, g
        assert dU.imag.numel() > 0  # L = 48 and 12: there are complex slices
        assert dU.imag.grad is not None and dU.imag.grad.norm().item() > 0, g
    opt.step()
    for g in ("attn", "mlp1", "mlp2"):
        assert (groups[g].dU.real - dU_before[g][0]).abs().max().item() > 0, g
        assert (groups[g].dU.imag - dU_before[g][1]).abs().max().item() > 0, g
    after = dict(model.named_parameters())
    for n, w in vit.items():
        assert torch.equal(after[n], w), n


@pytest.mark.parametrize("method", MERGING)
def test_merge_and_unmerge(method):
    x = x_input().double()
    y_base = forward(tiny().double(), x)
    model = adapted64(method)
    perturb_adapter(model)
    y_adapted, n_terms = counted(model, x)
    assert (y_adapted - y_base).abs().max().item() > 1e-3  # dW != 0, so the checks below can fail
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}

    merge(model)
    y_merged = forward(model, x)
    assert_within_rounding(y_merged, y_adapted, n_terms)
    merged = {n: p.detach().clone() for n, p in model.named_parameters()}
    changed = [n for n, p in merged.items() if not torch.equal(p, weights[n])]
    assert changed and all(n.startswith("vit.") for n in changed)  # the update went into the base weights

    unmerge(model)
    for n, p in model.named_parameters():  # (W + dW) - dW: two roundings of terms of sizes |W| and |dW|
        delta = (merged[n] - weights[n]).abs()
        bound = sum_bound(2, 1.0, torch.float64) * (weights[n].abs() + 2 * delta)
        assert ((p - weights[n]).abs() <= bound).all(), n
    assert_within_rounding(forward(model, x), y_adapted, n_terms)


def test_merge_is_idempotent_flag():
    model = adapted64("tcurlora")
    perturb_adapter(model)
    x = x_input().double()
    y, n_terms = counted(model, x)
    merge(model)
    merge(model)  # second merge is a no-op (a second one would add dW twice: far outside the bound)
    assert_within_rounding(forward(model, x), y, n_terms)
    with pytest.raises(ValueError, match="unmerge"):
        adapter_state(model)
    unmerge(model)
    unmerge(model)
    assert_within_rounding(forward(model, x), y, n_terms)


# ---------------------------------------------------------------------------------------------------------------
def _decoder_params(model, prefixes) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if is_decoder(n, prefixes))


def test_parameter_counts_tiny_model():
    base = tiny()
    h, mlp, blocks, r = 48, 96, 12, RANK
    decoder = _decoder_params(base, DEFAULT)
    assert decoder == 637_810
    total_base = sum(p.numel() for p in base.parameters())

    shapes = {"attn": (4 * blocks, h, h), "mlp1": (blocks, mlp, h), "mlp2": (blocks, h, mlp)}
    lora_mods = [(h, 3 * h), (h, h), (h, mlp), (mlp, h)] * blocks  # (in, out) of qkv, out_proj, linear1, linear2
    expected = {
        "tcurlora": sum(L * r * r for L, _, _ in shapes.values()),
        "lorapt": sum(L * r * (m + n) + num_slices(L) * r for L, m, n in shapes.values()),
        "lora": sum(r * (i + o) for i, o in lora_mods),
        "pissa": sum(r * (i + o) for i, o in lora_mods),
        "dora": sum(r * (i + o) + o for i, o in lora_mods),
        "curlora": r * r * len(lora_mods),
        "decoder_only": 0,
        "full": total_base - decoder - blocks * 2 * h,  # MONAI's unused norm_cross_attn LayerNorms stay frozen
    }
    assert expected["tcurlora"] == (48 + 12 + 12) * 16
    for method, n_adapter in expected.items():
        rep = trainable_report(adapted(method))
        assert rep["adapter"] == n_adapter, method
        assert rep["decoder"] == decoder, method
        assert rep["trainable"] == n_adapter + decoder, method

    paper = CNN_PRESETS["paper"]
    rep = trainable_report(adapted("tcurlora", trainable_modules=paper))
    assert rep["decoder"] == _decoder_params(base, paper) < decoder


def _meta_unetr_b():
    with torch.device("meta"):
        model = build_unetr(UNETR_B)
    return model


def test_unetr_b_counts_on_meta_device():
    rep = trainable_report(apply(_meta_unetr_b(), {"name": "tcurlora", "rank": 8,
                                                   "trainable_modules": CNN_PRESETS["paper"]}))
    assert rep["adapter"] == 4_608 == (12 + 12 + 48) * 64
    assert rep["decoder"] == 2_678_528
    assert rep["trainable"] == 2_683_136  # the paper's 2.683M

    rep = trainable_report(apply(_meta_unetr_b(), {"name": "lora", "rank": 8, "trainable_modules": DEFAULT}))
    textbook = 12 * (8 * (768 + 2304) + 8 * (768 + 768) + 2 * 8 * (768 + 3072))
    assert rep["adapter"] == textbook == 1_179_648
    assert rep["decoder"] == 4_443_106

    rep = trainable_report(apply(_meta_unetr_b(), {"name": "decoder_only", "rank": 8, "trainable_modules": DEFAULT}))
    assert (rep["adapter"], rep["decoder"]) == (0, 4_443_106)

    rep = trainable_report(apply(_meta_unetr_b(), {"name": "lorapt", "rank": 8, "trainable_modules": DEFAULT}))
    assert rep["adapter"] == (48 * 8 * 1536 + 25 * 8) + 2 * (12 * 8 * 3840 + 7 * 8)


# ---------------------------------------------------------------------------------------------------------------
def test_operators_computed_once_per_group_per_forward(monkeypatch):
    calls = []
    original = spectral_mod.lowrank_operators

    def counting(C, M, R, L):
        calls.append(L)
        return original(C, M, R, L)

    monkeypatch.setattr(spectral_mod, "lowrank_operators", counting)
    model = adapted64("tcurlora")
    perturb_adapter(model)
    x = x_input().double()
    forward(model, x)
    assert sorted(calls) == [12, 12, 48]  # once per group, not once per member layer (72 layers)
    calls.clear()
    model.train()
    model(x).sum().backward()
    assert sorted(calls) == [12, 12, 48]
    calls.clear()
    merge(model)
    forward(model, x)
    assert calls == []  # merged: no adapter path
    unmerge(model)
    twin = copy.deepcopy(model)  # a copy's hooks open passes on its own groups, not on the original's
    y_twin = forward(twin, x)
    assert sorted(calls) == [12, 12, 48]
    y, n_terms = counted(model, x)
    assert_within_rounding(y_twin, y, n_terms)
    perturb_adapter(twin, seed=6)  # the twin's own update moves the twin's output, not the original's
    assert (forward(twin, x) - y).abs().max().item() > 1e-3
    assert_within_rounding(forward(model, x), y, n_terms)


# ---------------------------------------------------------------------------------------------------------------
def test_find_groups_on_unetr():
    model = tiny()
    groups = {g.name: g for g in find_groups(model, VIT_GROUPS)}
    assert list(groups) == ["attn", "mlp1", "mlp2"]
    assert (groups["attn"].size, groups["attn"].shape) == (48, (48, 48))
    assert (groups["mlp1"].size, groups["mlp1"].shape) == (12, (96, 48))
    assert (groups["mlp2"].size, groups["mlp2"].shape) == (12, (48, 96))
    assert tuple(groups["attn"].stacked_weight().shape) == (48, 48, 48)
    # members in named_modules order (MONAI registers out_proj before qkv); qkv contributes 3 row blocks q, k, v
    attn = groups["attn"]
    slots = {s.name: s for s in attn.modules}
    assert len(slots) == 24 and sum(s.num_chunks for s in attn.modules) == 48
    assert sorted(p for s in attn.modules for p in s.positions) == list(range(48))
    W = attn.stacked_weight()
    qkv, out = slots["vit.blocks.1.attn.qkv"], slots["vit.blocks.1.attn.out_proj"]
    assert qkv.num_chunks == 3 and out.num_chunks == 1 and len(qkv.positions) == 3
    weight = model.vit.blocks[1].attn.qkv.weight
    for i, pos in enumerate(qkv.positions):
        assert torch.equal(W[pos], weight[48 * i:48 * (i + 1)])
    assert torch.equal(W[out.positions[0]], model.vit.blocks[1].attn.out_proj.weight)


def test_group_and_method_errors():
    model = tiny()
    with pytest.raises(ValueError, match="nothing_here"):
        find_groups(model, [{"name": "nothing_here", "targets": [r"no\.such\.module$"]}])
    with pytest.raises(ValueError, match="mixed"):
        find_groups(model, [{"name": "mixed", "targets": [r"mlp\.linear1$", r"mlp\.linear2$"]}])
    with pytest.raises(ValueError) as err:
        apply(tiny(), {"name": "qlora", "rank": 4})
    assert "qlora" in str(err.value)
    for name in METHODS:
        assert name in str(err.value)
    assert set(METHODS) == set(ALL_METHODS)
    with pytest.raises(ValueError, match="already"):
        apply(adapted("lora"), {"name": "tcurlora", "rank": 4})


# ---------------------------------------------------------------------------------------------------------------
def test_autocast_bf16_forward_close_to_fp32(monkeypatch):
    dtypes = []
    original = spectral_mod.lowrank_operators

    def recording(C, M, R, L):
        out = original(C, M, R, L)
        dtypes.append((C.dtype, M.dtype, R.dtype, *(t.dtype for t in out)))
        return out

    monkeypatch.setattr(spectral_mod, "lowrank_operators", recording)
    model = adapted("tcurlora")
    perturb_adapter(model)
    x = x_input()
    y32 = forward(model, x)
    dtypes.clear()
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y16 = model(x)
    assert torch.isfinite(y16).all()
    assert len(dtypes) == 3
    for d in dtypes:
        assert d == (torch.complex64, torch.complex64, torch.complex64, torch.float32, torch.float32, torch.float32)
    err = (y16.float() - y32).abs().max().item()
    assert err < 0.1 * y32.abs().max().item() + 0.05, err


def test_inverse_probability_selection_through_apply():
    cfg = {"selection": "inverse_probability", "seed": 3}
    a, b, c = adapted("tcurlora", **cfg), adapted("tcurlora", **cfg), adapted("tcurlora", selection="inverse_probability", seed=4)
    top = adapted("tcurlora")
    tensors, meta = adapter_state(a)
    assert meta["config"]["selection"] == "inverse_probability" and meta["config"]["seed"] == 3
    for g in ("attn", "mlp1", "mlp2"):
        for which in ("col_index", "row_index"):
            key = f"adapter_groups.{g}.{which}"
            assert torch.equal(tensors[key], getattr(a.adapter_groups[g], which))
            assert torch.equal(tensors[key], getattr(b.adapter_groups[g], which))
            assert len(tensors[key]) == RANK
    differs = [not torch.equal(getattr(a.adapter_groups[g], w), getattr(c.adapter_groups[g], w))
               for g in ("attn", "mlp1", "mlp2") for w in ("col_index", "row_index")]
    assert any(differs)
    differs = [not torch.equal(a.adapter_groups[g].col_index, top.adapter_groups[g].col_index)
               for g in ("attn", "mlp1", "mlp2")]
    assert any(differs)
    y, n_terms = counted(a.double(), x_input().double())
    assert_within_rounding(y, forward(tiny().double(), x_input().double()), n_terms)  # dU = 0 at init
    with pytest.raises(ValueError, match="selection"):
        adapted("tcurlora", selection="random")


# ---------------------------------------------------------------------------------------------------------------
# Odd and even L on a monai ViT (num_layers 3 and 4): the adapted model equals the base model with W0 + dW, where dW
# comes from an independent full complex-FFT implementation of the tCURLoRA update.
def _vit(num_layers: int, seed: int = 0):
    from monai.networks.nets import ViT

    torch.manual_seed(seed)
    return ViT(in_channels=1, img_size=(16, 16, 16), patch_size=(8, 8, 8), hidden_size=32, mlp_dim=64,
               num_layers=num_layers, num_heads=4)


def _reference_delta(W: torch.Tensor, I: torch.Tensor, J: torch.Tensor, dU_half: torch.Tensor) -> torch.Tensor:
    L, K = W.shape[0], dU_half.shape[0]
    D = torch.fft.fft(W.double(), dim=0)
    dU = torch.zeros(L, *dU_half.shape[1:], dtype=torch.complex128)
    dU[:K] = dU_half.to(torch.complex128)
    for k in range(1, K):
        dU[L - k] = dU_half[k].conj()
    dW = torch.fft.ifft(D[:, :, I] @ dU @ D[:, J, :], dim=0)
    assert dW.imag.abs().max().item() < 1e-8
    return dW.real


@pytest.mark.parametrize("num_layers", [3, 4])
def test_tcurlora_vit_odd_even_L_against_complex_reference(num_layers):
    base = _vit(num_layers).double()
    x = torch.randn(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    model = apply(copy.deepcopy(base), {"name": "tcurlora", "rank": 3})
    sizes = {g: model.adapter_groups[g].L for g in ("attn", "mlp1", "mlp2")}
    assert sizes == {"attn": 4 * num_layers, "mlp1": num_layers, "mlp2": num_layers}
    rep = trainable_report(model)
    assert rep["adapter"] == 9 * 6 * num_layers and rep["decoder"] == 0
    for g in ("attn", "mlp1", "mlp2"):
        L = sizes[g]
        assert model.adapter_groups[g].dU.imag.shape[0] == num_slices(L) - (2 if L % 2 == 0 else 1)
    perturb_adapter(model, scale=0.5)

    expected = copy.deepcopy(base)
    with torch.no_grad():
        for g in find_groups(base, VIT_GROUPS):
            grp = model.adapter_groups[g.name]
            dW = _reference_delta(g.stacked_weight(), grp.col_index, grp.row_index, grp.dU())
            assert dW.abs().max().item() > 1e-3
            for slots in g.modules:
                expected.get_submodule(slots.name).weight += dW[slots.positions].reshape(-1, dW.shape[-1])
    expected.eval()
    model.eval()
    with torch.no_grad():
        y_ref, y_base = expected(x)[0], base(x)[0]
        y, n_terms = counted_forward(model, x, run=lambda v: model(v)[0])
    assert (y_ref - y_base).abs().max().item() > 1e-3
    assert_within_rounding(y, y_ref, n_terms)


@pytest.mark.parametrize("num_layers", [3, 4])
def test_lorapt_vit_odd_even_L(num_layers):
    base = _vit(num_layers).double()
    x = torch.randn(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    model = apply(copy.deepcopy(base), {"name": "lorapt", "rank": 2})
    base.eval()
    model.eval()
    with torch.no_grad():
        y0, n_terms = counted_forward(model, x, run=lambda v: model(v)[0])
        assert_within_rounding(y0, base(x)[0], n_terms)  # W_res + the top-r triplets = W
    shapes = [(4 * num_layers, 32, 32), (num_layers, 64, 32), (num_layers, 32, 64)]
    assert trainable_report(model)["adapter"] == sum(L * 2 * (m + n) + num_slices(L) * 2 for L, m, n in shapes)
    perturb_adapter(model, scale=0.2)
    with torch.no_grad():
        y = model(x)[0]
        assert (y - base(x)[0]).abs().max().item() > 1e-3
        merge(model)
        assert_within_rounding(model(x)[0], y, n_terms)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_every_trainable_parameter_gets_a_gradient(method):
    """A trainable parameter outside the forward graph breaks DDP (``full`` used to train MONAI's unused
    ``norm_cross_attn`` LayerNorms)."""
    model = adapted(method)
    model.train()
    for p in model.parameters():
        p.grad = None
    model(x_input()).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    if method == "full":
        assert not any(p.requires_grad for n, p in model.named_parameters() if "norm_cross_attn" in n)


@pytest.mark.parametrize("method", ["tcurlora", "lora", "lorapt"])
def test_a_merged_model_cannot_be_trained_or_saved_by_mistake(method):
    model = adapted64(method)
    perturb_adapter(model)
    x = x_input().double()
    y, n_terms = counted(model, x)
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    merge(model)
    model.train()
    with pytest.raises(ValueError, match="merged into the weights: unmerge"):
        model(x)
    with pytest.raises(ValueError, match="unmerge"):
        model.state_dict()
    with pytest.raises(ValueError, match="unmerge"):
        model.load_state_dict({}, strict=False)
    # an optimizer built before the merge (zero-filled gradients: Adam would still move its moments) leaves the
    # adapter untouched, so unmerge restores the adapted weights
    added_names = set(tcurseg.peft.adapter_info(model).new_parameters)
    added = [p for n, p in model.named_parameters() if n in added_names]
    assert added and not any(p.requires_grad for p in added)
    optimizer = torch.optim.Adam(added, lr=0.1)
    for p in added:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    unmerge(model)
    assert all(p.requires_grad for p in added)
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters() if n in added_names)
    assert_within_rounding(forward(model, x), y, n_terms)
    model.state_dict()  # unmerged again: allowed


def test_tied_weights_are_refused():
    model = tiny()
    blocks = model.vit.blocks
    blocks[1].mlp.linear1 = blocks[0].mlp.linear1  # the same nn.Linear reached twice
    with pytest.raises(ValueError, match=r"group 'mlp1': vit.blocks.1.mlp.linear1 shares its weight with "
                                         r"vit.blocks.0.mlp.linear1 \(tied weights\)"):
        find_groups(model, VIT_GROUPS)
    model = tiny()
    model.vit.blocks[2].mlp.linear2.weight = model.vit.blocks[3].mlp.linear2.weight  # a shared parameter
    with pytest.raises(ValueError, match="vit.blocks.3.mlp.linear2 shares its weight with vit.blocks.2.mlp.linear2"):
        find_groups(model, VIT_GROUPS)


def test_the_materialised_update_gives_the_low_rank_one():
    """``spectral.materialised`` (W0 + dW per pass, the benchmarks' other path) computes the same outputs and
    gradients as the low-rank operators, in float64, and leaves the layers as they were."""
    from tcurseg.peft.spectral import SpectralLinear, materialised

    class Blocks(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = torch.nn.ModuleList(torch.nn.Linear(12, 12) for _ in range(4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return sum(block(x) for block in self.blocks)

    torch.manual_seed(0)
    model = Blocks()
    tcurseg.peft.apply(model, {"name": "tcurlora", "rank": 3, "groups": [{"name": "g", "targets": [r"^blocks\.\d+$"]}]})
    model.double()
    with torch.no_grad():
        model.adapter_groups["g"].dU.real.normal_()
    x = torch.randn(5, 12, dtype=torch.float64)
    low = model(x)
    low.sum().backward()
    grad = model.adapter_groups["g"].dU.real.grad.clone()
    model.zero_grad()
    with materialised(model):
        full = model(x)
        full.sum().backward()
    torch.testing.assert_close(full, low, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model.adapter_groups["g"].dU.real.grad, grad, rtol=1e-10, atol=1e-12)
    assert all("forward" not in vars(m) for m in model.modules() if isinstance(m, SpectralLinear))


def test_a_training_pass_makes_the_mixing_gradient_once_per_group_not_once_per_layer():
    """Each member layer takes its own slice of the group's mixing tensor (L x K x 2s x 2s) through one split per pass:
    the backward then joins the slices' gradients once. Indexing it per layer made a full-size zero gradient for each
    of the 24 attention layers (and 12 of each MLP group) and summed them."""
    from torch.utils._python_dispatch import TorchDispatchMode

    model = adapted("tcurlora")
    L, K, two_s = 48, num_slices(48), 2 * RANK
    full_size: list[str] = []

    class FullSizeOutputs(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor) and tuple(out.shape) == (L, K, two_s, two_s) and not out._is_view():
                full_size.append(str(func))
            return out

    model.train()
    loss = model(x_input()).square().mean()
    with FullSizeOutputs():
        loss.backward()
    assert 1 <= len(full_size) <= 6, full_size
