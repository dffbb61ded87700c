"""The networks by ``model.name``: their factory, CNN presets and encoder prefix.

``unetr``: MONAI UNETR (encoder ``vit``, see :mod:`tcurseg.models.unetr`); ``swin_unetr``: MONAI SwinUNETR (encoder
``swinViT``, see :mod:`tcurseg.models.swin_unetr`). A model config without ``name`` is a UNETR (configs written
before SwinUNETR existed)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from tcurseg.models import swin_unetr, unetr

DEFAULT_NAME = "unetr"


@dataclass(frozen=True)
class Network:
    """``build`` makes the network from a model config; ``encoder_prefix`` names the child holding the transformer
    encoder (what the adapters target and a pretrained checkpoint must provide); ``cnn_presets`` name the module lists
    that stay trainable beside an encoder adapter."""

    build: Callable[[Mapping[str, Any]], nn.Module]
    encoder_prefix: str
    cnn_presets: dict[str, list[str]]


NETWORKS: dict[str, Network] = {
    "unetr": Network(unetr.build_unetr, unetr.encoder_prefix, unetr.CNN_PRESETS),
    "swin_unetr": Network(swin_unetr.build_swin_unetr, swin_unetr.encoder_prefix, swin_unetr.CNN_PRESETS),
}


def network(name: str | None) -> Network:
    """The :class:`Network` called ``name`` (None: ``unetr``); ``ValueError`` for an unknown name."""
    name = DEFAULT_NAME if name is None else str(name)
    if name not in NETWORKS:
        raise ValueError(f"unknown model.name {name!r}; choose one of {sorted(NETWORKS)}")
    return NETWORKS[name]


def build_network(cfg: Mapping[str, Any]) -> nn.Module:
    """The network ``cfg["name"]`` names (``unetr`` | ``swin_unetr``; absent: ``unetr``), built from ``cfg``."""
    return network(cfg.get("name")).build(cfg)


def cnn_presets(name: str | None) -> dict[str, list[str]]:
    """The CNN presets of the network ``name`` (preset -> module-name prefixes)."""
    return network(name).cnn_presets


def encoder_prefix_of(model: nn.Module) -> str:
    """The encoder child of a built network (``vit`` or ``swinViT``): the first child whose name is the encoder prefix
    of a network in :data:`NETWORKS`; ``ValueError`` when it has none."""
    prefixes = {net.encoder_prefix for net in NETWORKS.values()}
    for name, _ in model.named_children():
        if name in prefixes:
            return name
    raise ValueError(f"{type(model).__name__} has no encoder child ({' or '.join(sorted(prefixes))})")


def resolve_cnn_modules(spec: str | Sequence[str], model: str | None = None) -> list[str]:
    """Module-name prefixes that stay trainable: a preset name of the network ``model`` (None: ``unetr``) or an
    explicit list."""
    if isinstance(spec, str):
        presets = cnn_presets(model)
        if spec not in presets:
            raise ValueError(f"unknown CNN preset {spec!r}; choose one of {sorted(presets)} or give a list")
        return list(presets[spec])
    return [str(s) for s in spec]
