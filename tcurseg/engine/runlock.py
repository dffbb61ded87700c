"""One process per run folder: ``<run folder>/run.lock`` holds an exclusive ``flock`` for the life of the training
process and names its holder (pid, host), so that a second launch of the same command (a second terminal, a job
requeued while the first still runs) stops at once instead of writing the same checkpoints. The kernel drops the
lock when its process dies, so a lock left by a killed run is taken over, with a note naming the old holder."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from tcurseg.engine.errors import RunFolderBusy

log = logging.getLogger(__name__)

LOCK_NAME = "run.lock"


def _holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"process {info['pid']} on {info['host']} (since {info['since']})"
    except (ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[Path]:
    """Hold ``run_dir/run.lock`` while the block runs; raise :class:`RunFolderBusy` (one line naming the folder and
    its holder) when another live process holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(os.pread(fd, 4096, 0).decode(errors="replace"))
        os.close(fd)
        raise RunFolderBusy(f"{run_dir} is in use by {holder}: wait for it to finish, stop it, or train into another "
                            "folder (run_name=...)") from None
    try:
        previous = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        if previous:
            log.warning("%s: taking over the lock left by %s, which is no longer running", run_dir, _holder(previous))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
        yield path
    finally:
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
