"""Adapter files: save -> fresh base -> load reproduces outputs; size; base-hash and missing-file errors."""

from __future__ import annotations

import re

import pytest
import torch
from test_peft import (
    DEFAULT,
    RANK,
    adapted,
    assert_within_rounding,
    counted,
    forward,
    is_decoder,
    perturb_adapter,
    tiny,
    x_input,
)

from tcurseg.peft import load_adapter, read_adapter, save_adapter, trainable_report


@torch.no_grad()
def _perturb_decoder(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(9)
    for n, p in model.named_parameters():
        if p.requires_grad and is_decoder(n):
            p.add_(0.01 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("method", ["tcurlora", "lorapt", "curlora", "lora", "pissa", "dora"])
def test_save_load_reproduces_outputs(method, tmp_path):
    model = adapted(method)
    perturb_adapter(model)
    _perturb_decoder(model)
    x = x_input()
    y = forward(model, x)
    assert (y - forward(tiny(), x)).abs().max().item() > 1e-3
    path = save_adapter(model, tmp_path / "sub" / f"{method}.safetensors")
    assert path.is_file()

    fresh = load_adapter(tiny(), path)
    assert trainable_report(fresh) == trainable_report(model)
    # the same tensors (compared in float64, where only the order of the sums may differ)
    y64, n_terms = counted(model.double(), x.double())
    assert_within_rounding(forward(fresh.double(), x.double()), y64, n_terms)
    tensors, meta = read_adapter(path)
    assert meta["method"] == method and meta["base_hash"]
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert not set(tensors) & frozen, "frozen base weights must not be in the adapter file"
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable <= set(tensors)

def test_tcurlora_adapter_file_is_small(tmp_path):
    model = adapted("tcurlora")
    rep = trainable_report(model)
    path = save_adapter(model, tmp_path / "t.safetensors")
    size = path.stat().st_size
    tensors, _ = read_adapter(path)
    index_keys = sorted(k for k in tensors if k.endswith(("col_index", "row_index")))
    assert len(index_keys) == 6  # I, J of the three groups are recorded
    adapter_bytes = 4 * rep["adapter"] + 8 * 2 * 3 * RANK
    print(f"tcurlora adapter file: {size} bytes (adapter {rep['adapter']} + decoder {rep['decoder']} params)")
    assert size < 4 * rep["decoder"] + adapter_bytes + 64 * 1024
    base_size = 4 * sum(p.numel() for p in tiny().parameters())
    assert size < 0.7 * base_size
    # without the decoder the file is a few KB
    enc_only = adapted("tcurlora", trainable_modules=[])
    small = save_adapter(enc_only, tmp_path / "enc.safetensors").stat().st_size
    print(f"tcurlora adapter file without decoder: {small} bytes")
    assert small < adapter_bytes + 16 * 1024


def test_load_onto_different_base_raises(tmp_path):
    model = adapted("tcurlora")
    path = save_adapter(model, tmp_path / "a.safetensors")
    with pytest.raises(ValueError, match="different base"):
        load_adapter(tiny(seed=1), path)


def test_missing_adapter_file(tmp_path):
    missing = tmp_path / "nope" / "adapter.safetensors"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_adapter(tiny(), missing)


def test_foreign_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="not a tcurseg adapter"):
        load_adapter(tiny(), path)


def test_decoder_default_preset_in_file(tmp_path):
    model = adapted("tcurlora")
    tensors, _ = read_adapter(save_adapter(model, tmp_path / "d.safetensors"))
    prefixes = {k.split(".")[0] for k in tensors}
    assert prefixes == set(DEFAULT) | {"adapter_groups"}
