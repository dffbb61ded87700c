"""UNETR factory and pretrained-checkpoint loading."""

from tcurseg.models.checkpoint import KeyReport, load_pretrained
from tcurseg.models.unetr import CNN_PRESETS, PATCH_SIZE, build_unetr, encoder_prefix, resolve_cnn_modules

__all__ = [
    "CNN_PRESETS",
    "KeyReport",
    "PATCH_SIZE",
    "build_unetr",
    "encoder_prefix",
    "load_pretrained",
    "resolve_cnn_modules",
]
