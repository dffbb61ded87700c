"""``nn.Linear`` subclasses that add a trainable update while keeping the base weight (same Parameter, same
state-dict keys), in the style of loralib: y = x W0^T + b + x dW^T, or y = x (W0 + dW)^T + b once merged."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class AdaptedLinear(nn.Linear):
    """Base class: subclasses define :meth:`adapter_output` (x dW^T, computed without forming dW)."""

    def __init__(self, base: nn.Linear) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.merged = False

    def adapter_output(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        if self.merged:
            return y
        return y + self.adapter_output(x).to(y.dtype)

    @torch.no_grad()
    def merge_delta(self, delta: torch.Tensor) -> None:
        """W0 += dW (dW given by the method, m x n); the adapter path is then skipped."""
        if self.merged:
            raise RuntimeError("layer is already merged")
        self.weight += delta.to(self.weight.dtype)
        self.merged = True

    @torch.no_grad()
    def unmerge_delta(self, delta: torch.Tensor) -> None:
        """W0 -= dW, restoring the base weight."""
        if not self.merged:
            raise RuntimeError("layer is not merged")
        self.weight -= delta.to(self.weight.dtype)
        self.merged = False


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` at the qualified ``name`` inside ``model``."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
