"""UNETR factory (MONAI) and the module groups that stay trainable beside an encoder adapter."""

from __future__ import annotations

from collections.abc import Mapping
from inspect import signature
from typing import Any

from monai.networks.nets import UNETR

PATCH_SIZE = 16
encoder_prefix = "vit"

CNN_PRESETS: dict[str, list[str]] = {
    "default": ["encoder1", "encoder2", "encoder3", "encoder4", "decoder5", "decoder4", "decoder3", "decoder2", "out"],
    "paper": ["decoder2", "decoder3", "decoder4", "decoder5"],
}

_DEFAULTS: dict[str, Any] = {
    name: p.default for name, p in signature(UNETR).parameters.items() if p.default is not p.empty
}
"""MONAI's own defaults of ``UNETR`` (UNETR-B)."""


def _get(cfg: Mapping[str, Any], key: str) -> Any:
    if key in cfg:
        return cfg[key]
    if key in _DEFAULTS:
        return _DEFAULTS[key]
    raise ValueError(f"model config is missing the required key model.{key}")


def unetr_kwargs(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of MONAI's ``UNETR`` for a dict-like model config (12 transformer blocks, patch 16).

    Required keys: ``in_channels``, ``out_channels``, ``img_size`` (the roi, 3 ints, each divisible by 16).
    Optional keys, with MONAI's ``UNETR`` defaults (UNETR-B): ``feature_size``, ``hidden_size``, ``mlp_dim``,
    ``num_heads``, ``dropout_rate``, ``norm_name``, ``res_block``, ``qkv_bias``, ``proj_type`` (the patch embedding:
    "conv", or "perceptron" for MONAI research-contributions UNETR checkpoints).
    Other keys are ignored. Invalid sizes raise ``ValueError``.
    """
    img_size = [int(s) for s in _get(cfg, "img_size")]
    if len(img_size) != 3:
        raise ValueError(f"model.img_size {img_size} must have 3 entries (D, H, W)")
    if any(s <= 0 or s % PATCH_SIZE for s in img_size):
        raise ValueError(
            f"model.img_size {img_size} must be divisible by the patch size {PATCH_SIZE} in every dimension"
        )
    hidden_size = int(_get(cfg, "hidden_size"))
    num_heads = int(_get(cfg, "num_heads"))
    if num_heads <= 0 or hidden_size % num_heads:
        raise ValueError(f"model.hidden_size {hidden_size} must be divisible by model.num_heads {num_heads}")
    norm_name = _get(cfg, "norm_name")
    return {
        "in_channels": int(_get(cfg, "in_channels")),
        "out_channels": int(_get(cfg, "out_channels")),
        "img_size": img_size,
        "feature_size": int(_get(cfg, "feature_size")),
        "hidden_size": hidden_size,
        "mlp_dim": int(_get(cfg, "mlp_dim")),
        "num_heads": num_heads,
        "norm_name": norm_name if isinstance(norm_name, str) else tuple(norm_name),
        "res_block": bool(_get(cfg, "res_block")),
        "dropout_rate": float(_get(cfg, "dropout_rate")),
        "qkv_bias": bool(_get(cfg, "qkv_bias")),
        "proj_type": str(_get(cfg, "proj_type")),
    }


def build_unetr(cfg: Mapping[str, Any]) -> UNETR:
    """MONAI's UNETR with :func:`unetr_kwargs` of ``cfg``."""
    return UNETR(**unetr_kwargs(cfg))

