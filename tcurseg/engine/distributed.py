"""torch.distributed for runs started by torchrun (RANK / WORLD_SIZE / LOCAL_RANK in the environment): gloo on the
CPU, nccl on CUDA, one GPU per process; only rank 0 writes files.

Every collective of the project goes through this module, which hands the backend tensors on the device it serves
(nccl takes CUDA tensors only), and every failure that one rank meets is raised on all ranks together, so that no
rank waits in a collective for one that has stopped (docs/design.md section 3).
"""

from __future__ import annotations

import datetime
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")
TIMEOUT = datetime.timedelta(minutes=30)
"""How long a collective waits for the other ranks before it fails (a rank that died: torchrun then restarts or
ends the job)."""


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job; ``device`` is where collectives take their tensors."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    enabled: bool = False
    """A process group is up (started by torchrun, whatever the world size)."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun (nccl bound to ``device`` for CUDA, gloo otherwise); a single
    process without a group otherwise. ``device`` is this process's device (:func:`tcurseg.engine.runtime.resolve_device`),
    made the current CUDA device before the group starts, so that no rank creates a context on GPU 0."""
    if not launched_by_torchrun():
        return DistInfo(device=device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        store = _store_of_this_attempt()
        group = {} if store is None else {"store": store, "rank": int(os.environ["RANK"]),
                                          "world_size": int(os.environ["WORLD_SIZE"])}
        if device.type == "cuda":
            dist.init_process_group("nccl", timeout=TIMEOUT, device_id=device, **group)
        else:
            dist.init_process_group("gloo", timeout=TIMEOUT, **group)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank(), device, True)


def _store_of_this_attempt() -> dist.Store | None:
    """torchrun's own TCPStore under a prefix of this restart attempt, when torchrun shares it with its workers (the
    default since torch 2.4); None otherwise (the ``env://`` rendezvous then makes its own store).

    The shared store outlives a restart (``--max-restarts``), and torch adds no per-attempt prefix to it, so the
    restarted workers would read the process-group addresses of the attempt that failed ("Gloo connectFullMesh failed
    ... Connection refused", pytorch/pytorch#135712). The prefix is the one torch < 2.4 used."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), int(os.environ["WORLD_SIZE"]),
                          is_master=False, timeout=TIMEOUT)
    return dist.PrefixStore(f"/worker/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over ranks (identity in a single process). The collective runs on a copy on ``info.device`` (nccl
    takes CUDA tensors only), where the sum is returned."""
    if not info.enabled:
        return values
    reduced = values.to(info.device, copy=True)
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank when ``flag`` is true on at least one (one collective under torchrun, none otherwise)."""
    if not info.enabled:
        return flag
    return bool(all_reduce_sum(torch.tensor([float(flag)]), info)[0] > 0)


def _gather_errors(error: BaseException | None, result: object, info: DistInfo) -> list[tuple]:
    """Every rank's (error, result), in rank order (one collective)."""
    gathered: list[tuple] = [(None, None)] * info.world_size
    dist.all_gather_object(gathered, (_picklable(error), result))
    return gathered


def _picklable(error: BaseException | None) -> BaseException | None:
    """The error itself where it pickles with its type and message, else a RuntimeError with its text."""
    if error is None:
        return None
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


def on_main(fn: Callable[[], T], info: DistInfo) -> T:
    """Run ``fn`` on rank 0 (writing files, generating data, choosing a folder) while the others wait; an error on
    rank 0 is raised on every rank, and every rank gets rank 0's result (it must pickle)."""
    if not info.enabled:
        return fn()
    result, error = None, None
    if info.is_main:
        try:
            result = fn()
        except Exception as err:  # raised below, on every rank
            error = err
    error, result = _gather_errors(error, result, info)[0]
    if error is not None:
        raise error
    return result  # type: ignore[return-value]


def all_ranks_ok(error: BaseException | None, info: DistInfo) -> None:
    """Raise on every rank when any rank met an error: each rank passes the error it caught (or None); a rank raises
    its own error, the others the first one by rank."""
    if not info.enabled:
        if error is not None:
            raise error
        return
    first = next((e for e, _ in _gather_errors(error, None, info) if e is not None), None)
    if first is not None:
        raise error if error is not None else first


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
