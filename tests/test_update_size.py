"""scripts/update_size.py: the relative encoder update of a merged model against its pretrained weights."""

from __future__ import annotations

import pytest
import torch
from scripts_support import load_script
from test_peft import adapted, perturb_adapter, tiny

from tcurseg import peft


@pytest.fixture(scope="module")
def update_size():
    return load_script("update_size")


@pytest.mark.parametrize("method", ["lora", "tcurlora"])
def test_relative_update_is_zero_at_init_and_exact_after_a_change(update_size, method):
    base = tiny().state_dict()
    model = adapted(method)
    peft.merge(model)
    rel = update_size.relative_update(model, base)
    assert len(rel) == 4 * 12 and not any(".base_layer" in name for name in rel)  # qkv, out_proj, linear1/2 x 12
    assert max(rel.values()) < 1e-6
    peft.unmerge(model)
    perturb_adapter(model)
    peft.merge(model)
    rel = update_size.relative_update(model, base)
    assert min(rel.values()) > 1e-4
    qkv = "vit.blocks.0.attn.qkv"
    w = dict(model.named_modules())[qkv if method == "tcurlora" else qkv + ".base_layer"].weight
    w0 = base[qkv + ".weight"]
    assert rel[qkv] == pytest.approx(((w - w0).norm() / w0.norm()).item(), rel=1e-6)


def test_relative_update_of_a_scaled_copy(update_size):
    model, base = tiny(), tiny().state_dict()
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and name.startswith("vit.blocks."):
                module.weight.mul_(3.0)
    assert all(v == pytest.approx(2.0, rel=1e-6) for v in update_size.relative_update(model, base).values())
