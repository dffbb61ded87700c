"""Runs ``python -m tcurseg.train`` with the Hydra overrides that follow the epoch number, and kills the process
(SIGKILL: nothing of it runs afterwards) right after the end-of-epoch checkpoint of that epoch is written:

    python tests/kill_after_checkpoint.py EPOCH key=value ...

A resume test needs the kill to land at one known point; a poll from outside lands wherever the machine's load puts
it (one more epoch, or none). The trainer's ``save_atomic`` is wrapped in this process only: no test hook in the
product."""

from __future__ import annotations

import os
import runpy
import signal
import sys
from pathlib import Path

from tcurseg.engine import trainer
from tcurseg.engine.checkpoint import checkpoint_path

epoch = int(sys.argv.pop(1))
target = checkpoint_path(".", epoch).name
save = trainer.save_atomic


def save_then_die(obj: object, path: str | Path) -> Path:
    written = save(obj, path)
    if Path(path).name == target:
        os.kill(os.getpid(), signal.SIGKILL)
    return written


trainer.save_atomic = save_then_die
runpy.run_module("tcurseg.train", run_name="__main__", alter_sys=True)
