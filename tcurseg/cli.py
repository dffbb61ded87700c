"""Shared plumbing of the Hydra entry points: one-line errors for bad input, data preparation, device set-up."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

from omegaconf import DictConfig

from tcurseg.data import synth
from tcurseg.data.check import assert_dataset_ok
from tcurseg.data.errors import DataError

log = logging.getLogger("tcurseg")


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Bad configuration or input ends the program with one clear line (TCURSEG_DEBUG=1 shows the traceback)."""
    try:
        yield
    except (ValueError, FileNotFoundError, DataError) as err:
        if os.environ.get("TCURSEG_DEBUG"):
            raise
        log.error("%s", err)
        sys.exit(f"tcurseg: error: {err}")


def prepare_data(data_cfg: DictConfig, splits: tuple[str, ...]) -> None:
    """Generate the embedded synthetic data set when the config asks for it, then check every file of ``splits``."""
    spec = data_cfg.get("synth")
    if spec:
        spacing, box = synth.PRESETS[spec.task]
        synth.ensure_generated(spec.task, spec.out_dir, int(spec.n_subjects), int(spec.seed), spacing, box,
                               splits=tuple(float(f) for f in spec.get("splits", (0.6, 0.2, 0.2))))
    if data_cfg.get("check", True):
        assert_dataset_ok(data_cfg, splits=splits)
