"""How training data reaches the model (docs/design.md section 3d): worker processes, how much of the training set
is cached in memory, and the sliding-window batch, each ``auto`` by default and chosen from the machine; the training
cases each rank draws from and caches (its own shard under ``train.rank_shards``), and the validation loader."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence

import nibabel as nib
import psutil
import torch
from monai.data import CacheDataset
from monai.transforms import Compose
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

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


def case_bytes(entry: Mapping) -> int:
    """Memory of one case as the cache holds it, at most: every image channel and the label as float32 voxels, and
    an int32 crop-centre index per voxel (``tcurseg.data.transforms.CropCentresd``; read from the NIfTI headers
    only)."""
    images = entry["image"] if isinstance(entry["image"], (list, tuple)) else [entry["image"]]
    files = [*images, *([entry["label"]] if entry.get("label") else [])]
    shapes = [nib.load(str(f)).shape for f in files]
    return sum(4 * math.prod(shape) for shape in shapes) + 4 * math.prod(shapes[0][:3])


def resolve_cache_rate(value: float | str, entries: Sequence[Mapping], world_size: int = 1,
                       memory: int | None = None) -> tuple[float, str]:
    """``auto``: the fraction of the training cases whose volumes fit in half the available memory, shared by the
    processes of this machine (each caches its own copy). A number is kept. Returns (rate, what was decided)."""
    if str(value) != "auto":
        return float(value), f"train.cache_rate={float(value):g}"
    total = sum(case_bytes(e) for e in entries)
    budget = CACHE_MEMORY_FRACTION * (memory if memory is not None else psutil.virtual_memory().available) / max(1, world_size)
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
        self.sampler, self.epoch, self.skip = sampler, 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Yield the samples of ``epoch``, leaving out its first ``skip`` (those a preempted run had trained on)."""
        self.epoch, self.skip = epoch, skip
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, int(i)) for i in itertools.islice(self.sampler, self.skip, None))

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


def rank_shard(n: int, world_size: int = 1, rank: int = 0) -> list[int]:
    """The training cases (positions in the training list) rank ``rank`` of ``world_size`` draws from under
    ``train.rank_shards``: ``rank``, ``rank + world_size``, ..., ``ceil(n / world_size)`` of them on every rank (the
    last ones wrap round to the start of the list, as DistributedSampler pads), so that all ranks take as many
    steps."""
    if n < 1:
        raise ValueError("rank_shard: the training list is empty")
    return [(rank + k * world_size) % n for k in range(math.ceil(n / world_size))]


class ShardSampler(Sampler):
    """Yields this rank's shard (:func:`rank_shard`) in a new order every epoch: the generator seeded with
    ``seed + epoch`` draws one permutation per rank and rank r takes the r-th. The order depends on (seed, epoch,
    rank, world size) only, so a resumed run walks what an uninterrupted one walks; with one process it is
    DistributedSampler's order (same seed)."""

    def __init__(self, n: int, world_size: int = 1, rank: int = 0, seed: int = 0) -> None:
        self.shard = rank_shard(n, world_size, rank)
        self.world_size, self.rank, self.seed, self.epoch = world_size, rank, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Walk the shard in ``epoch``'s order."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        orders = [torch.randperm(len(self.shard), generator=generator) for _ in range(self.world_size)]
        return iter([self.shard[i] for i in orders[self.rank].tolist()])

    def __len__(self) -> int:
        return len(self.shard)


def cache_options(transform: Compose) -> dict:
    """How a training cache gives its cases to ``transform``'s random part: without a copy where that part starts with
    :class:`tcurseg.data.transforms.RandCropAffined` (it copies what it crops, and nothing after it writes into its
    input), else copied (MONAI's default: a plain crop is a view of the cached case)."""
    from tcurseg.data.transforms import RandCropAffined

    return {"copy_cache": not any(isinstance(t, RandCropAffined) for t in transform.transforms)}


class CachedCases(Dataset):
    """The training cases at ``positions`` of ``entries``, behind a CacheDataset of those cases alone
    (:func:`cache_options`), read by their position in the whole training list (so a sample's random transforms stay
    seeded by its own case, whichever shard holds it)."""

    def __init__(self, entries: Sequence[Mapping], positions: Sequence[int], transform: Compose, cache_rate: float,
                 workers: int = 0, progress: bool = False) -> None:
        self.positions = sorted(set(positions))
        self.local = {position: k for k, position in enumerate(self.positions)}
        self.cache = CacheDataset([entries[p] for p in self.positions], transform, cache_rate=cache_rate,
                                  num_workers=workers, progress=progress, **cache_options(transform))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, position: int) -> dict | list[dict]:
        return self.cache[self.local[position]]


def training_cases(entries: Sequence[Mapping], transform: Compose, cache_rate: float | str, seed: int,
                   world_size: int = 1, rank: int = 0, rank_shards: bool = False, workers: int = 0,
                   progress: bool = False) -> tuple[CachedCases, Sampler, str]:
    """The training dataset, its sampler and what was decided (for the log). ``rank_shards``: this rank draws from
    its own shard (:class:`ShardSampler`) and caches only that, so the processes of a machine hold disjoint parts of
    the data set and together cache ``world_size`` times more. Otherwise every rank draws from the whole list
    (DistributedSampler: a DDP run's global batch is the single-process batch of the same size) and caches the
    first cases of it, the same on every rank."""
    if rank_shards:
        sampler = ShardSampler(len(entries), world_size, rank, seed)
        positions = sampler.shard
    else:
        sampler = DistributedSampler(range(len(entries)), num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        positions = list(range(len(entries)))
    held = sorted(set(positions))
    rate, decided = resolve_cache_rate(cache_rate, [entries[p] for p in held], world_size)
    if rank_shards and world_size > 1:
        decided = f"rank {rank} draws from its own {len(held)} of {len(entries)} training cases; {decided}"
    return CachedCases(entries, held, transform, rate, workers, progress), sampler, decided


class _ValidationCases(Dataset):
    """(entry, transformed entry) for each entry."""

    def __init__(self, entries: Sequence[Mapping], transform: Compose) -> None:
        self.entries, self.transform = list(entries), transform

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> tuple[Mapping, dict]:
        entry = self.entries[index]
        return entry, self.transform(dict(entry))


def _single(batch: list[tuple[Mapping, dict]]) -> tuple[Mapping, dict]:
    return batch[0]


def validation_loader(entries: Sequence[Mapping], transform: Compose, world_size: int = 1, rank: int = 0,
                      workers: int = 0, worker_init_fn: Callable[[int], None] | None = None) -> DataLoader:
    """This rank's validation cases (``entries[rank::world_size]``), loaded, resampled and normalised by
    ``workers`` processes while the main process runs the sliding window; yields ``(entry, data)`` one case at a
    time, ``data`` as ``transform`` returns it (MetaTensors with their metadata)."""
    return DataLoader(_ValidationCases(list(entries)[rank::world_size], transform), batch_size=1, shuffle=False,
                      num_workers=workers, collate_fn=_single, worker_init_fn=worker_init_fn)
