"""scripts/update_size.py: the relative update of the ViT's weight matrices against the pretrained ones."""

from __future__ import annotations

import pytest
from scripts_support import load_script
from test_peft import adapted, perturb_adapter, tiny

from tcurseg import peft


@pytest.fixture(scope="module")
def update_size():
    return load_script("update_size")


def test_relative_update_is_zero_at_init_and_exact_after_a_change(update_size):
    base = tiny().state_dict()
    model = adapted("tcurlora")
    peft.merge(model)
    merged = {name: p.detach() for name, p in model.named_parameters()}  # a merged model refuses state_dict()
    rel = update_size.relative_update(merged, base)
    assert len(rel) == 4 * 12  # qkv, out_proj, linear1, linear2 of 12 blocks; no norms, no embeddings
    assert max(rel.values()) < 1e-6
    peft.unmerge(model)
    perturb_adapter(model)
    peft.merge(model)
    merged = {name: p.detach() for name, p in model.named_parameters()}
    rel = update_size.relative_update(merged, base)
    assert min(rel.values()) > 1e-4
    key = "vit.blocks.0.attn.qkv.weight"
    w, w0 = merged[key], base[key]
    assert rel["vit.blocks.0.attn.qkv"] == pytest.approx(((w - w0).norm() / w0.norm()).item(), rel=1e-6)


def test_relative_update_of_a_scaled_copy(update_size):
    base = tiny().state_dict()
    tuned = {k: 3.0 * v if k.startswith("vit.blocks.") and v.dim() == 2 else v for k, v in base.items()}
    assert all(v == pytest.approx(2.0, rel=1e-6) for v in update_size.relative_update(tuned, base).values())
    assert update_size.relative_update(base, base, prefix="decoder") == {}  # the CNN path holds no weight matrix
