"""Training checkpoints: atomic writes, finding the latest, pruning old ones."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import torch

_PATTERN = re.compile(r"^ckpt_epoch(\d{4,})\.pt$")
FILE_MODE = 0o644
"""Checkpoints and model files are readable by the group and others (mkstemp alone would leave 0600)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def checkpoint_path(run_dir: str | Path, epoch: int) -> Path:
    """Path of the checkpoint for ``epoch``: ``run_dir/ckpt_epoch{epoch:04d}.pt``."""
    return Path(run_dir) / f"ckpt_epoch{epoch:04d}.pt"


def save_atomic(obj: object, path: str | Path) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically: a temp file in the same folder, flushed and fsynced, then
    ``os.replace``. On any failure the temp file is removed and a previous file at ``path`` stays intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        os.chmod(fd, FILE_MODE & ~_umask())
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def _epoch_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    folder = Path(run_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_file() and (m := _PATTERN.match(p.name))]
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The ``ckpt_epoch{N:04d}.pt`` file with the highest N in ``run_dir``, or None when there is none."""
    found = _epoch_checkpoints(run_dir)
    return found[-1][1] if found else None


def prune_checkpoints(run_dir: str | Path, keep: int = 2) -> list[Path]:
    """Delete all but the ``keep`` highest-epoch checkpoints in ``run_dir``; returns the deleted paths."""
    if keep < 1:
        raise ValueError(f"prune_checkpoints keep={keep} must be at least 1")
    old = [p for _, p in _epoch_checkpoints(run_dir)[:-keep]]
    for p in old:
        p.unlink()
    return old
