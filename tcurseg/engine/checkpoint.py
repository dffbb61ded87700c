"""Training checkpoints: atomic writes, finding and loading the newest readable one, pruning old ones.

A checkpoint is written at the end of an epoch (``ckpt_epoch{E:04d}.pt``: E epochs done) or when a run is preempted
mid-epoch (``ckpt_epoch{E:04d}_step{S:06d}.pt``: E epochs and S steps of the next one done)."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch

from tcurseg.data.lists import replace_atomically
from tcurseg.engine.errors import CheckpointWriteError

log = logging.getLogger(__name__)

_PATTERN = re.compile(r"^ckpt_epoch(\d{4,})(?:_step(\d{6,}))?\.pt$")
def checkpoint_path(run_dir: str | Path, epoch: int, step: int = 0) -> Path:
    """Path of the checkpoint after ``epoch`` epochs and ``step`` steps of the next: ``run_dir/ckpt_epoch{epoch:04d}.pt``
    at an epoch's end, ``run_dir/ckpt_epoch{epoch:04d}_step{step:06d}.pt`` mid-epoch."""
    return Path(run_dir) / (f"ckpt_epoch{epoch:04d}_step{step:06d}.pt" if step else f"ckpt_epoch{epoch:04d}.pt")


def save_atomic(obj: object, path: str | Path) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically (:func:`tcurseg.data.lists.replace_atomically`: a hidden temporary
    file in the same folder, flushed and fsynced, then ``os.replace``; the folder is fsynced too). On any failure the
    temporary file is removed and a previous file at ``path`` stays intact; a failure to write (``OSError``: a full
    disk) is raised as :class:`CheckpointWriteError` with one line naming the file."""
    path = Path(path)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    try:
        replace_atomically(path, write)
    except OSError as err:
        raise CheckpointWriteError(f"could not write {path}: {err.strerror or err}; the files written before it are "
                                   "intact") from err
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def _epoch_checkpoints(run_dir: str | Path) -> list[tuple[tuple[int, int], Path]]:
    """The checkpoints in ``run_dir`` as ((epochs done, steps done), path), oldest first."""
    folder = Path(run_dir)
    if not folder.is_dir():
        return []
    found = [((int(m.group(1)), int(m.group(2) or 0)), p) for p in folder.iterdir()
             if p.is_file() and (m := _PATTERN.match(p.name))]
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint file in ``run_dir`` (most epochs, then most steps), or None when there is none."""
    found = _epoch_checkpoints(run_dir)
    return found[-1][1] if found else None


def load_latest_checkpoint(run_dir: str | Path, map_location: torch.device | str = "cpu") -> tuple[Path, dict] | None:
    """The newest checkpoint of ``run_dir`` that loads, with its state; one warning line for each newer file that
    does not (truncated by a full disk, emptied by a file system that lost it). None when none loads."""
    for _, path in reversed(_epoch_checkpoints(run_dir)):
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as err:  # any unreadable file: a truncated zip, zero bytes, a foreign pickle
            log.warning("checkpoint %s is unreadable (%s: %s): resuming from the one before it", path,
                        type(err).__name__, str(err).splitlines()[0] if str(err) else "")
            continue
        if isinstance(state, dict) and "model" in state:
            return path, state
        log.warning("checkpoint %s holds no training state: resuming from the one before it", path)
    return None


def prune_checkpoints(run_dir: str | Path, keep: int = 2) -> list[Path]:
    """Delete all but the ``keep`` highest-epoch checkpoints in ``run_dir``; returns the deleted paths."""
    if keep < 1:
        raise ValueError(f"prune_checkpoints keep={keep} must be at least 1")
    old = [p for _, p in _epoch_checkpoints(run_dir)[:-keep]]
    for p in old:
        p.unlink()
    return old
