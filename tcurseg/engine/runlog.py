"""Where a run's log goes: ``<run folder>/train.log`` written by rank 0 only, console lines tagged with the rank
under torchrun. Hydra opens its job log in its own run directory; a run that moves (``resume=false`` gives
``<folder>-2``) or a stage run inside another (the demo's pretraining) must log into its own folder."""

from __future__ import annotations

import logging
from pathlib import Path

from tcurseg.engine.distributed import DistInfo

LOG_NAME = "train.log"
FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


def use_run_log(run_dir: Path, dist: DistInfo) -> None:
    """Point the root logger's ``train.log`` at ``run_dir`` (rank 0 only; other ranks get no file) and prefix the
    console lines with ``[rank N]`` when there are several processes."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).name == LOG_NAME:
            root.removeHandler(handler)
            handler.close()
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(run_dir / LOG_NAME, mode="a")
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
    if dist.world_size > 1:
        tagged = logging.Formatter(f"[rank {dist.rank}]{FORMAT}")
        for handler in root.handlers:
            if type(handler) is logging.StreamHandler:
                handler.setFormatter(tagged)
