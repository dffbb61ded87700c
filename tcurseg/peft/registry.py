"""The eight fine-tuning methods by name, and the typed config of a method's plain config dict."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from torch import nn

from tcurseg.peft import curlora, lorapt, matrix, selective, tcurlora
from tcurseg.peft.config import AdapterConfig
from tcurseg.peft.spectral import rebuild_groups

Hook = Callable[[nn.Module], None]


@dataclass(frozen=True)
class Method:
    """``config`` is the method's config class; ``inject`` adds the trainable parts (everything else is frozen before it
    runs); ``merge``/``unmerge`` fold the update into the base weights and back (None: nothing to merge);
    ``after_load`` refreshes frozen factors derived from the base weights after every ``load_state_dict`` of the model
    (a hook added by ``apply``)."""

    config: type[AdapterConfig]
    inject: Callable[[nn.Module, Any], None]
    merge: Hook | None = None
    unmerge: Hook | None = None
    after_load: Hook | None = None


METHODS: dict[str, Method] = {
    "full": Method(AdapterConfig, selective.inject_full),
    "decoder_only": Method(AdapterConfig, selective.inject_decoder_only),
    "lora": Method(matrix.LoRAConfig, partial(matrix.inject, variant="lora"), matrix.merge, matrix.unmerge),
    "dora": Method(matrix.LoRAConfig, partial(matrix.inject, variant="dora"), matrix.merge, matrix.unmerge),
    "pissa": Method(matrix.LoRAConfig, partial(matrix.inject, variant="pissa"), matrix.merge, matrix.unmerge),
    "curlora": Method(curlora.CURLoRAConfig, curlora.inject, curlora.merge, curlora.unmerge, curlora.after_load),
    "lorapt": Method(lorapt.LoRAPTConfig, lorapt.inject, lorapt.merge, lorapt.unmerge, rebuild_groups),
    "tcurlora": Method(tcurlora.TCURLoRAConfig, tcurlora.inject, tcurlora.merge, tcurlora.unmerge, rebuild_groups),
}
OPTIONS = frozenset(option for method in METHODS.values() for option in method.config.options())
"""The options of all methods."""


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def parse_config(cfg: Mapping[str, Any]) -> AdapterConfig:
    """The typed config of the method ``cfg["name"]``, its options checked by type (``ValueError``). Options of other
    methods are ignored, so that one dict can serve every method of a comparison; a key that is no method's option
    raises ``ValueError``."""
    name = cfg["name"]
    config = get_method(name).config
    unknown = sorted(set(cfg) - OPTIONS - {"name"})
    if unknown:
        raise ValueError(f"unknown option {', '.join(map(repr, unknown))} of method {name}; its options: "
                         f"{', '.join(config.options())}")
    return config.from_dict({key: value for key, value in cfg.items() if key in config.options()}, name)
