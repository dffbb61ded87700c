"""Selective fine-tuning: ``full`` trains every parameter; ``decoder_only`` freezes the encoder and trains only the
configured CNN modules (the same ``trainable_modules`` list every encoder-adapter method uses)."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn


def inject_full(model: nn.Module, cfg: Mapping) -> None:
    model.requires_grad_(True)


def inject_decoder_only(model: nn.Module, cfg: Mapping) -> None:
    """Nothing to add: the trainable CNN modules are switched on by :func:`tcurseg.peft.apply`."""
