"""Network factories by ``model.name`` (MONAI UNETR, SwinUNETR) and pretrained-checkpoint loading."""

from tcurseg.models.checkpoint import KeyReport, load_pretrained, require_complete_encoder
from tcurseg.models.networks import (
    NETWORKS,
    build_network,
    cnn_presets,
    encoder_prefix_of,
    network,
    resolve_cnn_modules,
)
from tcurseg.models.unetr import CNN_PRESETS, PATCH_SIZE, build_unetr, encoder_prefix, unetr_kwargs

__all__ = [
    "CNN_PRESETS",
    "KeyReport",
    "NETWORKS",
    "PATCH_SIZE",
    "build_network",
    "build_unetr",
    "cnn_presets",
    "encoder_prefix",
    "encoder_prefix_of",
    "load_pretrained",
    "network",
    "require_complete_encoder",
    "resolve_cnn_modules",
    "unetr_kwargs",
]
