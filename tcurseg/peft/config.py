"""Typed method configs, one dataclass per method (as HF peft's ``LoraConfig``), built from the plain dict that
:func:`tcurseg.peft.apply` receives: Hydra's method config, or the one an adapter file stores."""

from __future__ import annotations

import copy
import types
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from tcurseg.peft.groups import VIT_GROUPS


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value has the type ``hint`` (an int is also a float; a bool is neither)."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return value in args
    if origin in (Union, types.UnionType):
        return any(_fits(value, arg) for arg in args)
    if origin is list:
        return isinstance(value, list) and all(_fits(item, args[0]) for item in value)
    if hint is type(None):
        return value is None
    if isinstance(value, bool):
        return hint is bool
    return isinstance(value, (int, float) if hint is float else hint)


def _describe(hint: Any) -> str:
    if get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(arg) for arg in get_args(hint))
    return str(hint) if get_origin(hint) else hint.__name__


@dataclass(frozen=True, kw_only=True)
class AdapterConfig:
    """The options of every method, and all those of ``full`` and ``decoder_only``: ``groups`` (weight-group specs,
    :func:`tcurseg.peft.find_groups`; default the ViT ones) and ``trainable_modules`` (module-name prefixes that train
    beside the adapter, e.g. the UNETR CNN path)."""

    groups: list[dict] = field(default_factory=lambda: copy.deepcopy(VIT_GROUPS))
    trainable_modules: list[str] = field(default_factory=list)

    @classmethod
    def options(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, options: Mapping[str, Any], method: str) -> AdapterConfig:
        """The config of ``options`` (a subset of :meth:`options`); ``ValueError`` naming the option of ``method``
        whose value has another type, or the required options that are missing."""
        hints = get_type_hints(cls)
        for key, value in options.items():
            if not _fits(value, hints[key]):
                raise ValueError(f"method {method}: option {key}={value!r} must be {_describe(hints[key])}")
        missing = [f.name for f in fields(cls)
                   if f.name not in options and f.default is MISSING and f.default_factory is MISSING]
        if missing:
            raise ValueError(f"method {method} needs the option {', '.join(missing)}")
        return cls(**options)
