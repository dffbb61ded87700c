"""Device, AMP and memory helpers."""

from __future__ import annotations

import resource
import sys

import torch


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: CUDA (this process's local rank) when available, else the CPU; or an explicit torch device."""
    if name == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name} asked for, but CUDA is not available on this machine")
    return device


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """Autocast dtype: bf16 where the GPU supports it, else fp16 (with a GradScaler); None on the CPU or if off."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory: CUDA max allocated on a GPU, else the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10
