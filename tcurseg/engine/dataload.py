"""How training data reaches the model (docs/design.md section 3d): worker processes, how much of the training set
is cached in memory, and the sliding-window batch. Each is ``auto`` by default and chosen from the machine."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence

import nibabel as nib
import torch
from torch.utils.data import Sampler

from tcurseg.machine import available_cpus

MIN_CPUS_FOR_WORKERS = 4
MAX_WORKERS = 8
CACHE_MEMORY_FRACTION = 0.5


def resolve_workers(value: int | str, world_size: int = 1, cpus: int | None = None) -> int:
    """``auto``: the CPUs per process (CPUs / processes on this machine) minus one for the main process, at most 8;
    0 below 4 CPUs per process, where workers would take the cores the model computes on. A number is kept."""
    if str(value) != "auto":
        return int(value)
    per_process = (cpus or available_cpus()) // max(1, world_size)
    return 0 if per_process < MIN_CPUS_FOR_WORKERS else min(MAX_WORKERS, per_process - 1)


def available_memory_bytes() -> int:
    """MemAvailable of /proc/meminfo (Linux), else the free physical pages."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def case_bytes(entry: Mapping) -> int:
    """Memory of one case as the cache holds it: every image channel and the label as float32 voxels (read from
    the NIfTI headers only)."""
    images = entry["image"] if isinstance(entry["image"], (list, tuple)) else [entry["image"]]
    files = [*images, *([entry["label"]] if entry.get("label") else [])]
    return sum(4 * math.prod(nib.load(str(f)).shape) for f in files)


def resolve_cache_rate(value: float | str, entries: Sequence[Mapping], world_size: int = 1,
                       memory: int | None = None) -> tuple[float, str]:
    """``auto``: the fraction of the training cases whose volumes fit in half the available memory, shared by the
    processes of this machine (each caches its own copy). A number is kept. Returns (rate, what was decided)."""
    if str(value) != "auto":
        return float(value), f"train.cache_rate={float(value):g}"
    total = sum(case_bytes(e) for e in entries)
    budget = CACHE_MEMORY_FRACTION * (memory if memory is not None else available_memory_bytes()) / max(1, world_size)
    rate = 1.0 if total <= budget else budget / total
    return rate, (f"caching {rate:.0%} of {len(entries)} training cases in memory ({total / 2**30:.2f} GiB in all, "
                  f"{budget / 2**30:.2f} GiB allowed: half the available memory per process)")


def resolve_sw_batch_size(value: int | str, device: torch.device) -> int:
    """``auto``: 4 sliding-window tiles per forward pass on the CPU (on 2 cores, 4 tiles take the time of 1), 8 on
    a GPU. A number is kept."""
    if str(value) != "auto":
        return int(value)
    return 8 if device.type == "cuda" else 4


class EpochIndices(Sampler):
    """Yields ``(epoch, index)`` from a sampler of indices, so that a worker seeds each sample from the epoch it
    belongs to: persistent workers keep their own copy of the dataset and would not see an epoch set on it."""

    def __init__(self, sampler: Sampler) -> None:
        self.sampler, self.epoch = sampler, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, int(i)) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)
