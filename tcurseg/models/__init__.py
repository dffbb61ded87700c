"""UNETR factory and pretrained-checkpoint loading."""

from tcurseg.models.checkpoint import KeyReport, load_pretrained, require_complete_encoder
from tcurseg.models.unetr import CNN_PRESETS, PATCH_SIZE, build_unetr, encoder_prefix, resolve_cnn_modules

__all__ = [
    "CNN_PRESETS",
    "KeyReport",
    "PATCH_SIZE",
    "build_unetr",
    "encoder_prefix",
    "load_pretrained",
    "require_complete_encoder",
    "resolve_cnn_modules",
]
