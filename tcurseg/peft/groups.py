"""Find groups of same-shaped weight matrices in any model by module-name patterns.

A group spec is ``{"name": str, "targets": [regex, ...], "split": {regex: n}}``: every ``nn.Linear`` whose qualified
name matches one of ``targets`` (``re.search``) joins the group, in ``named_modules`` order; a module whose name
matches a ``split`` pattern contributes its weight cut into n equal row blocks (qkv -> q, k, v). All members of a
group must have the same shape; they are stacked along mode 0 in that order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

VIT_GROUPS: list[dict] = [
    {
        "name": "attn",
        "targets": [r"blocks\.\d+\.attn\.qkv$", r"blocks\.\d+\.attn\.out_proj$"],
        "split": {r"attn\.qkv$": 3},
    },
    {"name": "mlp1", "targets": [r"blocks\.\d+\.mlp\.linear1$"]},
    {"name": "mlp2", "targets": [r"blocks\.\d+\.mlp\.linear2$"]},
]
"""The paper's groups for MONAI ViT / UNETR: attention (4L x h x h; per block in module order out_proj, q, k, v, as
MONAI's SABlock registers ``out_proj`` before ``qkv``), mlp.linear1 (L x mlp x h), mlp.linear2 (L x h x mlp)."""


@dataclass
class ModuleSlots:
    """One adapted module and the rows it contributes: ``num_chunks`` equal row blocks, stacked at ``positions``."""

    name: str
    module: nn.Linear
    num_chunks: int
    positions: list[int] = field(default_factory=list)


@dataclass
class WeightGroup:
    """L same-shaped (m x n) matrices taken from one or more ``nn.Linear`` modules."""

    name: str
    modules: list[ModuleSlots]

    @property
    def size(self) -> int:
        return sum(slots.num_chunks for slots in self.modules)

    @property
    def shape(self) -> tuple[int, int]:
        first = self.modules[0]
        return first.module.out_features // first.num_chunks, first.module.in_features

    def parts(self) -> list[torch.Tensor]:
        """Each member's matrices as a num_chunks x m x n view of its weight, in member order: the stack's parts along
        mode 0, without the copy that :meth:`stacked_weight` makes."""
        return [s.module.weight.reshape(s.num_chunks, *self.shape) for s in self.modules]

    def stacked_weight(self) -> torch.Tensor:
        """The group as an L x m x n tensor, in member order."""
        return torch.cat(self.parts(), dim=0)


def _split_count(name: str, split: Mapping[str, int]) -> int:
    counts = [int(n) for pattern, n in split.items() if re.search(pattern, name)]
    return counts[0] if counts else 1


def find_groups(model: nn.Module, specs: Sequence[Mapping]) -> list[WeightGroup]:
    """Resolve group specs on ``model``; raises ValueError naming the group when a spec matches nothing, when
    members differ in shape, when a split does not divide the rows, or when a module would join two groups."""
    owner: dict[str, str] = {}
    weights: dict[int, str] = {}
    groups = []
    for spec in specs:
        gname, targets, split = spec["name"], list(spec["targets"]), dict(spec.get("split") or {})
        slots: list[ModuleSlots] = []
        for name, module in model.named_modules(remove_duplicate=False):
            if not isinstance(module, nn.Linear) or not any(re.search(t, name) for t in targets):
                continue
            if id(module.weight) in weights:
                raise ValueError(f"group {gname!r}: {name} shares its weight with {weights[id(module.weight)]} (tied "
                                 "weights): a tensor adapter would stack and update the same matrix twice")
            weights[id(module.weight)] = name
            if name in owner:
                raise ValueError(f"module {name!r} matches both group {owner[name]!r} and group {gname!r}")
            owner[name] = gname
            n = _split_count(name, split)
            if module.out_features % n:
                raise ValueError(f"group {gname!r}: {name} has {module.out_features} rows, not divisible into {n} blocks")
            slots.append(ModuleSlots(name, module, n))
        if not slots:
            raise ValueError(f"group {gname!r} matched no nn.Linear module of the model (targets {targets})")
        group = WeightGroup(gname, slots)
        shapes = {(s.name, (s.module.out_features // s.num_chunks, s.module.in_features)) for s in slots}
        if len({shape for _, shape in shapes}) > 1:
            listing = ", ".join(f"{n}: {shape}" for n, shape in sorted(shapes))
            raise ValueError(f"group {gname!r} mixes weight shapes ({listing}); give each shape its own group")
        position = 0
        for s in slots:
            s.positions = list(range(position, position + s.num_chunks))
            position += s.num_chunks
        groups.append(group)
    return groups


def target_module_names(model: nn.Module, specs: Sequence[Mapping]) -> list[str]:
    """Qualified names of every module adapted by ``specs`` (for per-matrix methods, which ignore splits)."""
    return [s.name for group in find_groups(model, specs) for s in group.modules]
