"""Data path choices made from the machine: workers, cache size, sliding-window batch; (epoch, index) sampling."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import torch
from torch.utils.data import SequentialSampler

from tcurseg.engine.dataload import (
    EpochIndices,
    case_bytes,
    resolve_cache_rate,
    resolve_sw_batch_size,
    resolve_workers,
)


def test_workers_follow_the_cpus_per_process():
    assert resolve_workers("auto", cpus=2) == 0          # this project's 2-core machine: the main process only
    assert resolve_workers("auto", cpus=16) == 8
    assert resolve_workers("auto", world_size=4, cpus=16) == 3
    assert resolve_workers("auto", world_size=8, cpus=16) == 0
    assert resolve_workers(5, cpus=2) == 5


def _case(tmp_path, name: str, shape: tuple[int, ...], channels: int = 1) -> dict:
    images = []
    for c in range(channels):
        path = tmp_path / f"{name}_{c}.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), path)
        images.append(str(path))
    label = tmp_path / f"{name}_seg.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(shape, np.uint8), np.eye(4)), label)
    return {"image": images if channels > 1 else images[0], "label": str(label)}


def test_cache_rate_caches_what_fits(tmp_path):
    cases = [_case(tmp_path, f"c{i}", (10, 10, 10), channels=4) for i in range(4)]
    assert case_bytes(cases[0]) == 5 * 4 * 1000           # 4 channels + label, float32
    total = 4 * 20_000
    assert resolve_cache_rate("auto", cases, memory=4 * total)[0] == 1.0
    rate, said = resolve_cache_rate("auto", cases, memory=total)   # half of it may be used
    assert rate == 0.5 and "caching 50% of 4 training cases" in said
    assert resolve_cache_rate("auto", cases, world_size=2, memory=total)[0] == 0.25
    assert resolve_cache_rate(0.3, cases)[0] == 0.3


def test_sw_batch_size():
    assert resolve_sw_batch_size("auto", torch.device("cpu")) == 4
    assert resolve_sw_batch_size("auto", torch.device("cuda", 0)) == 8
    assert resolve_sw_batch_size(2, torch.device("cuda", 0)) == 2


def test_epoch_indices_carry_the_epoch():
    sampler = EpochIndices(SequentialSampler(range(3)))
    assert list(sampler) == [(0, 0), (0, 1), (0, 2)]
    sampler.set_epoch(4)
    assert list(sampler) == [(4, 0), (4, 1), (4, 2)] and len(sampler) == 3


def test_persistent_workers_see_each_epoch_as_the_main_process_does():
    """The random transforms of sample i in epoch e depend on (seed, e, i) only: a persistent worker (its own copy
    of the dataset) gives what the main process gives, and epochs differ."""
    from monai.data import CacheDataset, DataLoader
    from monai.transforms import Compose, RandGaussianNoised

    from tcurseg.engine.trainer import EpochSeeded

    data = [{"x": np.zeros((1, 4), np.float32)} for _ in range(3)]

    def epochs(workers: int) -> list[torch.Tensor]:
        cache = CacheDataset(data, Compose([RandGaussianNoised(keys="x", prob=1.0)]), progress=False)
        sampler = EpochIndices(SequentialSampler(range(3)))
        loader = DataLoader(EpochSeeded(cache, seed=7), batch_size=3, sampler=sampler, num_workers=workers,
                            persistent_workers=workers > 0)
        out = []
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            out.append(next(iter(loader))["x"])
        return out

    main, worker = epochs(0), epochs(1)
    assert all(torch.equal(a, b) for a, b in zip(main, worker))
    assert not torch.equal(main[0], main[1])
