"""Evaluation and prediction run a merged copy of the model (base speed): the same output as the unmerged model up
to rounding (compared in float64, ``rounding.py``), and the model that was passed in stays unmerged."""

from __future__ import annotations

import pytest
import torch
from rounding import counted_forward, output_bound

from tcurseg.engine.inference import merged_for_inference
from tcurseg.models.unetr import CNN_PRESETS, build_unetr
from tcurseg.peft import adapter_info, apply

TINY = {"in_channels": 1, "out_channels": 2, "img_size": [16, 16, 16], "feature_size": 8, "hidden_size": 48,
        "mlp_dim": 96, "num_heads": 4}


@pytest.mark.parametrize("method", ["tcurlora", "lorapt", "curlora", "lora", "dora", "pissa", "full"])
def test_merged_copy_gives_the_same_output(method):
    torch.manual_seed(0)
    model = build_unetr(TINY)
    model = apply(model, {"name": method, "rank": 2, "trainable_modules": CNN_PRESETS["default"]})
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.2 * (p.abs().mean().item() or 1.0) * torch.randn(p.shape, generator=g))
    model.double()
    x = torch.randn(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    model.eval()
    with torch.no_grad():
        before, n_terms = counted_forward(model, x)
        merged = merged_for_inference(model)
        after = merged(x)
        assert (after - before).abs().max().item() <= output_bound(n_terms, before)
        torch.manual_seed(0)
        base = build_unetr(TINY).double().eval()
        assert (after - base(x)).abs().max().item() > 1e-3  # the update is in there: the bound can tell it apart
        assert torch.equal(model(x), before)
    assert adapter_info(merged).merged and not adapter_info(model).merged
    assert all(p.requires_grad for n, p in model.named_parameters() if n in adapter_info(model).new_parameters)
