"""SwinUNETR factory (MONAI) and the module groups that stay trainable beside an encoder adapter.

Layout (MONAI 1.6 ``SwinUNETR``, patch 2, window 7): ``swinViT`` (the Swin transformer: ``patch_embed``, then stages
``layers{1,2,3,4}.0`` of ``depths[i]`` blocks at C_i = feature_size * 2^i channels, each block with ``attn.qkv``
(3 C_i x C_i), ``attn.proj`` (C_i x C_i), ``mlp.linear1`` (4 C_i x C_i), ``mlp.linear2`` (C_i x 4 C_i), and a
``downsample`` patch merging after every stage) and the CNN path ``encoder1-4``, ``encoder10``, ``decoder1-5``, ``out``.
The input's spatial sides must be multiples of patch^5 = 32 (the embedding plus 4 patch mergings halve them 5 times),
and the bottleneck (input / 32) needs more than one voxel (its instance norm), so 32 x 32 x 64 is the smallest input.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from monai.networks.nets import SwinUNETR

SIDE_DIVISOR = 32
"""Every side of ``img_size`` is a multiple of this (patch_size 2, five halvings)."""
encoder_prefix = "swinViT"

CNN_PRESETS: dict[str, list[str]] = {
    "default": ["encoder1", "encoder2", "encoder3", "encoder4", "encoder10", "decoder5", "decoder4", "decoder3",
                "decoder2", "decoder1", "out"],
    "paper": ["decoder5", "decoder4", "decoder3", "decoder2", "decoder1"],
}
"""``default``: every module outside ``swinViT``; ``paper``: the decoders only (the analogue of UNETR's preset)."""

_DEFAULTS: dict[str, Any] = {
    "feature_size": 48,
    "depths": (2, 2, 2, 2),
    "num_heads": (3, 6, 12, 24),
    "window_size": 7,
    "qkv_bias": True,
    "norm_name": "instance",
    "drop_rate": 0.0,
    "attn_drop_rate": 0.0,
    "dropout_path_rate": 0.0,
    "use_checkpoint": False,
}


def _get(cfg: Mapping[str, Any], key: str) -> Any:
    if key in cfg:
        return cfg[key]
    if key in _DEFAULTS:
        return _DEFAULTS[key]
    raise ValueError(f"model config is missing the required key model.{key}")


def _ints(cfg: Mapping[str, Any], key: str, count: int) -> list[int]:
    values = [int(v) for v in _get(cfg, key)]
    if len(values) != count:
        raise ValueError(f"model.{key} {values} must have {count} entries")
    return values


def swin_unetr_kwargs(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of MONAI's ``SwinUNETR`` (3D) for a dict-like model config.

    Required keys: ``in_channels``, ``out_channels``, ``img_size`` (the roi, 3 ints, each divisible by 32, not all
    32; MONAI 1.6 takes no ``img_size``, it is checked here because the roi is the network's input). Optional keys
    (MONAI's BTCV recipe): ``feature_size`` 48 (divisible by 12), ``depths`` (2, 2, 2, 2), ``num_heads`` (3, 6, 12,
    24) (stage i has feature_size * 2^i channels, divisible by num_heads[i]), ``window_size`` 7, ``qkv_bias`` True,
    ``norm_name`` "instance", ``drop_rate`` / ``attn_drop_rate`` / ``dropout_path_rate`` 0.0, ``use_checkpoint`` False
    (gradient checkpointing of the Swin blocks). Other keys are ignored. Invalid sizes raise ``ValueError``.
    """
    img_size = _ints(cfg, "img_size", 3)
    if any(s <= 0 or s % SIDE_DIVISOR for s in img_size):
        raise ValueError(f"model.img_size {img_size} must be divisible by {SIDE_DIVISOR} in every dimension "
                         "(SwinUNETR: patch 2, then 4 patch mergings)")
    if math.prod(s // SIDE_DIVISOR for s in img_size) < 2:
        raise ValueError(f"model.img_size {img_size}: the bottleneck (img_size / {SIDE_DIVISOR}) is a single voxel, "
                         "which the instance norm of encoder10 cannot normalise: make a side at least 64")
    feature_size = int(_get(cfg, "feature_size"))
    if feature_size <= 0 or feature_size % 12:
        raise ValueError(f"model.feature_size {feature_size} must be a positive multiple of 12 (SwinUNETR)")
    depths, num_heads = _ints(cfg, "depths", 4), _ints(cfg, "num_heads", 4)
    for stage, heads in enumerate(num_heads):
        if heads <= 0 or (feature_size << stage) % heads:
            raise ValueError(f"stage {stage + 1} has {feature_size << stage} channels (feature_size * 2^{stage}), "
                             f"not divisible by model.num_heads[{stage}] = {heads}")
    norm_name = _get(cfg, "norm_name")
    return {
        "in_channels": int(_get(cfg, "in_channels")),
        "out_channels": int(_get(cfg, "out_channels")),
        "depths": depths,
        "num_heads": num_heads,
        "window_size": int(_get(cfg, "window_size")),
        "qkv_bias": bool(_get(cfg, "qkv_bias")),
        "feature_size": feature_size,
        "norm_name": norm_name if isinstance(norm_name, str) else tuple(norm_name),
        "drop_rate": float(_get(cfg, "drop_rate")),
        "attn_drop_rate": float(_get(cfg, "attn_drop_rate")),
        "dropout_path_rate": float(_get(cfg, "dropout_path_rate")),
        "use_checkpoint": bool(_get(cfg, "use_checkpoint")),
        "spatial_dims": 3,
    }


def build_swin_unetr(cfg: Mapping[str, Any]) -> SwinUNETR:
    """MONAI's SwinUNETR with :func:`swin_unetr_kwargs` of ``cfg``."""
    return SwinUNETR(**swin_unetr_kwargs(cfg))


def _stage_groups(stage: int) -> list[dict]:
    block = rf"swinViT\.layers{stage}\.0\.blocks\.\d+\."
    return [
        {"name": f"s{stage}_attn", "targets": [block + r"attn\.qkv$", block + r"attn\.proj$"],
         "split": {r"attn\.qkv$": 3}},
        {"name": f"s{stage}_mlp1", "targets": [block + r"mlp\.linear1$"]},
        {"name": f"s{stage}_mlp2", "targets": [block + r"mlp\.linear2$"]},
    ]


ADAPTER_GROUPS: list[dict] = [spec for stage in (1, 2, 3, 4) for spec in _stage_groups(stage)]
"""The adapter groups of SwinUNETR (``adapter_groups`` of ``conf/model/swin_unetr*.yaml``): per stage s (C = C_s,
d = depths[s-1]) ``s{s}_attn`` = q, k, v (``attn.qkv`` split in 3) and ``attn.proj`` of each block, in that order
(4d x C x C), ``s{s}_mlp1`` (d x 4C x C) and ``s{s}_mlp2`` (d x C x 4C): 12 groups, sum of L = 6 * sum(depths)."""
