"""Device, AMP and memory helpers."""

from __future__ import annotations

import resource
import sys

import torch

AMP_MODES = ("auto", "bf16", "fp16", "off")
"""``amp``: ``auto`` is bf16 on a GPU that computes it natively (compute capability 8.0 and newer), fp16 with a
GradScaler on an older GPU, off on the CPU; ``bf16`` / ``fp16`` force that dtype (``bf16`` also on the CPU);
``off`` trains in float32. YAML booleans read as ``auto`` (true) and ``off`` (false)."""


def resolve_device(name: str, local_rank: int = 0, launched: bool = False) -> torch.device:
    """The device of this process. ``auto``: CUDA when available, else the CPU. Under torchrun (``launched``) every
    process takes the GPU of its LOCAL_RANK, for ``auto`` and ``cuda`` alike (choose the GPUs with
    CUDA_VISIBLE_DEVICES); ``cuda:N`` is then refused, as it would put every rank on one GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise ValueError(f"device={name} asked for, but CUDA is not available on this machine")
    if launched:
        if device.index is not None:
            raise ValueError(f"device={name} under torchrun would put every process on one GPU: use device=cuda "
                             "(each process takes the GPU of its LOCAL_RANK; choose GPUs with CUDA_VISIBLE_DEVICES)")
        device = torch.device("cuda", local_rank)
    index = 0 if device.index is None else device.index
    if index >= torch.cuda.device_count():
        raise ValueError(f"device {device} asked for (LOCAL_RANK={local_rank}), but only {torch.cuda.device_count()} "
                         "GPU(s) are visible: start at most that many processes per node")
    return torch.device("cuda", index)


def amp_mode(value: object) -> str:
    """The ``amp`` setting as one of :data:`AMP_MODES` (booleans read as ``auto`` / ``off``)."""
    mode = ("auto" if value else "off") if isinstance(value, bool) else str(value)
    if mode not in AMP_MODES:
        raise ValueError(f"amp={value}: expected one of {', '.join(AMP_MODES)}")
    return mode


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware: the CPU (autocast kernels), CUDA compute capability >= 8.0
    (``torch.cuda.is_bf16_supported`` also counts emulated bf16, slow on V100 and T4)."""
    if device.type != "cuda":
        return True
    return torch.cuda.get_device_capability(device)[0] >= 8


def amp_dtype(device: torch.device, amp: object) -> torch.dtype | None:
    """Autocast dtype for ``amp`` (:data:`AMP_MODES`) on ``device``, or None for float32."""
    mode = amp_mode(amp)
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float16
    if mode == "fp16" and device.type != "cuda":
        raise ValueError("amp=fp16 needs a CUDA device (fp16 autocast with a GradScaler); use amp=bf16 on the CPU")
    return torch.bfloat16 if mode == "bf16" else torch.float16


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory: CUDA max allocated on a GPU, else the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10
