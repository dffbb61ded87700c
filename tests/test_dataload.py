"""Data path choices made from the machine: workers, cache size, sliding-window batch; (epoch, index) sampling."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import torch
from torch.utils.data import SequentialSampler

from tcurseg.engine.dataload import (
    EpochIndices,
    ShardSampler,
    case_bytes,
    rank_shard,
    resolve_cache_rate,
    resolve_sw_batch_size,
    resolve_workers,
    training_cases,
    validation_loader,
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
    assert case_bytes(cases[0]) == 5 * 4 * 1000 + 4 * 1000  # 4 channels + label (float32), crop-centre indices (int32)
    total = 4 * 24_000
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


def test_rank_shards_cover_the_list_with_equal_lengths():
    assert rank_shard(10, 1, 0) == list(range(10))
    shards = [rank_shard(10, 4, r) for r in range(4)]
    assert shards == [[0, 4, 8], [1, 5, 9], [2, 6, 0], [3, 7, 1]]  # padded by wrapping round, as DistributedSampler
    assert sorted(set().union(*shards)) == list(range(10))
    assert rank_shard(2, 3, 2) == [0]


def test_shard_sampler_draws_from_its_own_shard_in_a_fresh_order_each_epoch():
    from torch.utils.data import DistributedSampler

    single, reference = ShardSampler(9, seed=3), DistributedSampler(range(9), num_replicas=1, rank=0, seed=3)
    for epoch in range(3):
        single.set_epoch(epoch)
        reference.set_epoch(epoch)
        assert list(single) == list(reference)  # one process: DistributedSampler's order
    ranks = [ShardSampler(30, world_size=3, rank=r, seed=3) for r in range(3)]
    orders = {}
    for epoch in range(4):
        for sampler in ranks:
            sampler.set_epoch(epoch)
            order = list(sampler)
            assert sorted(order) == sorted(sampler.shard) and len(order) == len(sampler) == 10
            orders[sampler.rank, epoch] = order
    assert orders[0, 0] != orders[0, 1]
    # the ranks do not walk their shards in lockstep (same positions would batch the same cases together each epoch)
    positions = {r: [ranks[r].shard.index(i) for i in orders[r, 0]] for r in range(3)}
    assert len({tuple(p) for p in positions.values()}) > 1
    resumed = ShardSampler(30, world_size=3, rank=1, seed=3)
    resumed.set_epoch(2)
    assert list(resumed) == orders[1, 2]  # a resumed run walks what the uninterrupted one walked


def _identity_crops():
    from monai.transforms import Compose, RandGaussianNoised

    return Compose([RandGaussianNoised(keys="x", prob=1.0)])


def test_training_cases_cache_this_ranks_shard_and_seed_by_case():
    """With rank shards each rank's cache holds its own cases; a sample's crops depend on (seed, epoch, case) alone,
    whichever rank draws it; without them every rank caches the same first cases and walks the whole list."""
    from tcurseg.engine.trainer import EpochSeeded

    entries = [{"x": np.full((1, 4), float(i), np.float32), "id": f"c{i}"} for i in range(7)]
    shards = []
    for rank in range(2):
        cases, sampler, said = training_cases(entries, _identity_crops(), 1.0, seed=5, world_size=2, rank=rank,
                                              rank_shards=True)
        assert isinstance(sampler, ShardSampler) and cases.positions == sorted(set(sampler.shard))
        assert [c["id"] for c in cases.cache.data] == [f"c{i}" for i in cases.positions]
        assert cases.cache.cache_num == len(sampler.shard) and f"rank {rank} draws from its own 4 of 7" in said
        shards.append(cases)
    whole, sampler, _ = training_cases(entries, _identity_crops(), 0.5, seed=5, world_size=2, rank=1)
    assert whole.positions == list(range(7)) and whole.cache.cache_num == 3 and len(sampler) == 4
    for position in (0, 3, 5):
        shard = shards[position % 2]
        a = EpochSeeded(shard, seed=5)[(2, position)]["x"]
        b = EpochSeeded(whole, seed=5)[(2, position)]["x"]
        assert torch.equal(torch.as_tensor(a), torch.as_tensor(b)) and float(torch.as_tensor(a).mean()) != position


def test_validation_loader_gives_this_ranks_cases_from_workers(tmp_path):
    from monai.data import MetaTensor
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    entries = [dict(_case(tmp_path, f"v{i}", (6, 5, 4)), id=f"v{i}") for i in range(5)]
    transform = Compose([LoadImaged(keys="image", image_only=True), EnsureChannelFirstd(keys="image")])
    for workers in (0, 2):
        got = list(validation_loader(entries, transform, world_size=2, rank=1, workers=workers))
        assert [entry["id"] for entry, _ in got] == ["v1", "v3"]
        for entry, data in got:
            assert isinstance(data["image"], MetaTensor) and tuple(data["image"].shape) == (1, 6, 5, 4)
            assert data["image"].meta["filename_or_obj"] == entry["image"]
