"""The eight fine-tuning methods by name."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial

from torch import nn

from tcurseg.peft import curlora, lorapt, matrix, selective, tcurlora
from tcurseg.peft.spectral import rebuild_groups

Hook = Callable[[nn.Module], None]


@dataclass(frozen=True)
class Method:
    """``inject`` adds the trainable parts (everything else is frozen before it runs); ``merge``/``unmerge`` fold the
    update into the base weights and back (None: nothing to merge); ``after_load`` refreshes frozen factors derived
    from the base weights after every ``load_state_dict`` of the model (a hook added by ``apply``)."""

    inject: Callable[[nn.Module, Mapping], None]
    merge: Hook | None = None
    unmerge: Hook | None = None
    after_load: Hook | None = None


METHODS: dict[str, Method] = {
    "full": Method(selective.inject_full),
    "decoder_only": Method(selective.inject_decoder_only),
    "lora": Method(partial(matrix.inject, variant="lora"), matrix.merge, matrix.unmerge),
    "dora": Method(partial(matrix.inject, variant="dora"), matrix.merge, matrix.unmerge),
    "pissa": Method(partial(matrix.inject, variant="pissa"), matrix.merge, matrix.unmerge),
    "curlora": Method(curlora.inject, curlora.merge, curlora.unmerge, curlora.after_load),
    "lorapt": Method(lorapt.inject, lorapt.merge, lorapt.unmerge, rebuild_groups),
    "tcurlora": Method(tcurlora.inject, tcurlora.merge, tcurlora.unmerge, rebuild_groups),
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]
