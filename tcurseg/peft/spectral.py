"""Shared machinery of the tensor adapters (tCURLoRA, LoRA-PT): a group of L stacked matrices whose update lives in
the half spectrum, dW = irfft_k(C_k M_k R_k, n=L), applied to each member layer through the real low-rank operators
of :func:`tcurseg.tensor.lowrank_operators`.

Precision: the spectrum, the frozen factors and the trainable spectral parameters follow the base weights' precision
(:func:`tcurseg.tensor.spectral_dtype`: complex128 for a float64 base, complex64 for float32 / bf16 / fp16), under any
``Module.to()`` / ``.double()`` / ``.bfloat16()`` of the model as well (see :meth:`SpectralGroup._apply`).

The operators are computed once per forward pass of the whole model (a forward pre-hook on the root opens a pass,
a forward hook closes it) and shared by all L member layers; outside a model pass (a member called on its own)
they are recomputed per call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.nn import functional as F

from tcurseg.peft.groups import WeightGroup
from tcurseg.peft.layers import AdaptedLinear, replace_module
from tcurseg.tensor import apply_lowrank, lowrank_operators, num_slices, real_slice_mask, spectral_delta, spectral_dtype


GROUPS_ATTR = "adapter_groups"
"""The ``nn.ModuleDict`` of the model that holds its spectral groups."""


class HalfSpectrumParameter(nn.Module):
    """A trainable complex K x ... tensor of the half spectrum of a real L-stack: the slices that are real for every
    real tensor (k = 0, and k = L/2 for even L) have no imaginary parameter, so the real degrees of freedom are
    exactly L * prod(...)."""

    def __init__(self, value: torch.Tensor, L: int) -> None:
        super().__init__()
        if value.shape[0] != num_slices(L):
            raise ValueError(f"expected {num_slices(L)} slices for L={L}, got {value.shape[0]}")
        complex_slices = [k for k, real in enumerate(real_slice_mask(L).tolist()) if not real]
        index = torch.tensor(complex_slices, dtype=torch.long, device=value.device)
        self.real = nn.Parameter(value.real.clone().contiguous())
        self.imag = nn.Parameter(value.imag[index].clone().contiguous())
        self.register_buffer("complex_slices", index, persistent=False)

    def forward(self) -> torch.Tensor:
        imag = torch.zeros_like(self.real).index_copy(0, self.complex_slices, self.imag)
        return torch.complex(self.real, imag)


def spectral_parts(group: WeightGroup) -> list[torch.Tensor]:
    """The group's parts along mode 0 (:meth:`WeightGroup.parts`), detached, at the precision its spectrum is computed
    in (views of the weights, no copy, for float32 and float64 weights)."""
    return [part.detach().to(spectral_dtype(part.dtype)) for part in group.parts()]


def stacked_spectral_weight(group: WeightGroup) -> torch.Tensor:
    """The group's L x m x n stack (:func:`spectral_parts` concatenated)."""
    return torch.cat(spectral_parts(group))


def _spectral_cast(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``fn`` (a ``Module._apply`` conversion) as it must act on spectral tensors: the device is what ``fn`` gives,
    the real precision is :func:`spectral_dtype` of what ``fn`` makes of a real tensor of the same precision, and a
    complex tensor stays complex (``Module.to(torch.float64)`` would silently drop its imaginary part)."""

    def cast(t: torch.Tensor) -> torch.Tensor:
        if not (t.is_floating_point() or t.is_complex()):
            return fn(t)
        real = t.real.dtype if t.is_complex() else t.dtype
        probe = fn(torch.zeros((), dtype=real, device=t.device))
        dtype = spectral_dtype(probe.dtype) if probe.is_floating_point() else real
        if t.is_complex():
            dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        return t.to(device=probe.device, dtype=dtype)

    return cast


class SpectralGroup(nn.Module):
    """Base class of a tensor adapter on one :class:`WeightGroup`; subclasses implement :meth:`factors`."""

    def __init__(self, group: WeightGroup) -> None:
        super().__init__()
        self.L = group.size
        self.K = num_slices(self.L)
        self._group = group
        self._in_pass = False
        self._operators: tuple[torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor] | None = None

    @property
    def weight_group(self) -> WeightGroup:
        return self._group

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> "SpectralGroup":
        """Device moves and casts of the model reach the group's tensors through :func:`_spectral_cast`."""
        self._operators = None
        return super()._apply(_spectral_cast(fn), recurse)

    def rebuild(self) -> None:
        """Recompute the frozen factors derived from the (unmerged) base weights, e.g. after a state dict load."""

    def factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Half-spectrum factors (C: K x m x s, M: K x s x s, R: K x s x n), complex, with dW = irfft(C M R)."""
        raise NotImplementedError

    def operators(self) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor]:
        """(down, mix, up) of :func:`lowrank_operators`, with ``mix`` split into one piece per member module (its
        ``positions``), cached for the current model forward pass. One split per pass, not an index per layer: the
        backward joins the pieces' gradients once instead of making a full-size zero gradient for every layer."""
        if self._operators is not None:
            return self._operators
        with torch.autocast(device_type=self._device_type(), enabled=False):
            down, mix, up = lowrank_operators(*self.factors(), self.L)
        ops = down, mix.split([slots.num_chunks for slots in self._group.modules]), up
        if self._in_pass:
            self._operators = ops
        return ops

    def delta(self) -> torch.Tensor:
        """The materialised update dW (L x m x n, real), for merging."""
        with torch.autocast(device_type=self._device_type(), enabled=False):
            return spectral_delta(*self.factors(), self.L)

    def begin_pass(self) -> None:
        self._in_pass, self._operators = True, None

    def end_pass(self) -> None:
        self._in_pass, self._operators = False, None

    def _device_type(self) -> str:
        return next(self._group.modules[0].module.parameters()).device.type


class SpectralLinear(AdaptedLinear):
    """A member layer of a :class:`SpectralGroup`: its rows are the stacked matrices at the ``positions`` of member
    ``member`` of the group."""

    def __init__(self, base: nn.Linear, group: SpectralGroup, member: int) -> None:
        super().__init__(base)
        self._spectral_group = (group,)
        self.member = member
        """Index of this module among the group's members (``group.weight_group.modules``)."""

    def adapter_output(self, x: torch.Tensor) -> torch.Tensor:
        down, mixes, up = self._spectral_group[0].operators()
        return apply_lowrank(x, down.to(x.dtype), mixes[self.member].to(x.dtype), up.to(x.dtype))


def install(model: nn.Module, groups: dict[str, SpectralGroup]) -> None:
    """Register the groups under ``model.adapter_groups``, swap every member module for a :class:`SpectralLinear`,
    and add the root hooks that open and close a forward pass."""
    model.add_module(GROUPS_ATTR, nn.ModuleDict(groups))
    for group in groups.values():
        for member, slots in enumerate(group.weight_group.modules):
            layer = SpectralLinear(slots.module, group, member)
            replace_module(model, slots.name, layer)
            slots.module = layer

    model.register_forward_pre_hook(_begin_pass)
    model.register_forward_hook(_end_pass, always_call=True)


def _begin_pass(module: nn.Module, args: tuple) -> None:
    """Root pre-hook. It finds the groups on the module it is called with (no closure), so a ``copy.deepcopy`` of an
    adapted model opens passes on its own groups."""
    for group in spectral_groups(module):
        group.begin_pass()


def _end_pass(module: nn.Module, args: tuple, output: object) -> None:
    for group in spectral_groups(module):
        group.end_pass()


def spectral_groups(model: nn.Module) -> list[SpectralGroup]:
    container = getattr(model, GROUPS_ATTR, None)
    return [g for g in container.values() if isinstance(g, SpectralGroup)] if container is not None else []


def rebuild_groups(model: nn.Module) -> None:
    """Refresh every group's frozen factors from the current base weights (after loading a state dict)."""
    for group in spectral_groups(model):
        group.rebuild()


def merge_groups(model: nn.Module, sign: float) -> None:
    """W0 += sign * dW for every member of every spectral group (sign 1: merge, -1: unmerge)."""
    for group in spectral_groups(model):
        delta = group.delta()
        for slots in group.weight_group.modules:
            rows = delta[slots.positions].reshape(-1, delta.shape[-1])
            layer = slots.module
            layer.merge_delta(rows) if sign > 0 else layer.unmerge_delta(rows)


@contextlib.contextmanager
def materialised(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every spectral layer of ``model`` applies ``W0 + dW_l`` with dW materialised once per model
    pass and group (:meth:`SpectralGroup.delta`), instead of the low-rank operators: the other way of applying the
    same update, which ``scripts/bench_tcur_paths.py`` and ``scripts/gpu_check.py`` time against the low-rank one."""
    deltas: dict[int, tuple[torch.Tensor, ...]] = {}

    def forward(layer: SpectralLinear, x: torch.Tensor) -> torch.Tensor:
        group = layer._spectral_group[0]
        if id(group) not in deltas:
            deltas[id(group)] = group.delta().split([slots.num_chunks for slots in group.weight_group.modules])
        dW = deltas[id(group)][layer.member].reshape(layer.out_features, layer.in_features)
        return F.linear(x, layer.weight + dW.to(layer.weight.dtype), layer.bias)

    layers = [m for m in model.modules() if isinstance(m, SpectralLinear)]
    for layer in layers:
        layer.forward = forward.__get__(layer)
    hook = model.register_forward_pre_hook(lambda module, args: deltas.clear())
    try:
        yield model
    finally:
        hook.remove()
        for layer in layers:
            del layer.forward
