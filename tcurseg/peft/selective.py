"""Selective fine-tuning: ``full`` trains every parameter; ``decoder_only`` freezes the encoder and trains only the
configured CNN modules (the same ``trainable_modules`` list every encoder-adapter method uses)."""

from __future__ import annotations

from torch import nn

from tcurseg.peft.config import AdapterConfig


def inject_full(model: nn.Module, cfg: AdapterConfig) -> None:
    """Every parameter that takes part in the forward pass trains. MONAI's transformer blocks build a cross-attention
    LayerNorm (``norm_cross_attn``) even without cross-attention: it never receives a gradient, so it stays frozen
    (a trainable parameter without gradient makes DDP fail with "Expected to have finished reduction")."""
    model.requires_grad_(True)
    for module in model.modules():
        if hasattr(module, "norm_cross_attn") and not getattr(module, "with_cross_attention", True):
            module.norm_cross_attn.requires_grad_(False)


def inject_decoder_only(model: nn.Module, cfg: AdapterConfig) -> None:
    """Nothing to add: the trainable CNN modules are switched on by :func:`tcurseg.peft.apply`."""
