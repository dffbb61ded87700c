"""Shared plumbing of the Hydra entry points: one-line errors for bad input, data preparation, device set-up."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from tcurseg.data.errors import DataError
from tcurseg.engine.errors import RunError
from tcurseg.engine.preemption import PREEMPTED_EXIT, Preempted
from tcurseg.paths import conf_dir

log = logging.getLogger("tcurseg")
METHOD_CONF = conf_dir() / "method"
HEAD_INITS = ("random", "zero")
"""How a head the pretrained file does not fit starts (``head_init``; :func:`tcurseg.engine.trainer.start_head`)."""


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Bad configuration or input ends the program with one clear line (TCURSEG_DEBUG=1 shows the traceback)."""
    try:
        yield
    except (ValueError, FileNotFoundError, DataError, RunError, MissingMandatoryValue) as err:
        if os.environ.get("TCURSEG_DEBUG"):
            raise
        if isinstance(err, MissingMandatoryValue):
            err = ValueError(f"missing value for {err.full_key}: give it on the command line ({err.full_key}=...)")
        _log_to_files(str(err))
        sys.exit(f"tcurseg: error: {err}")
    except Preempted as preempted:
        _log_to_files(str(preempted))
        print(f"tcurseg: preempted: {preempted}", file=sys.stderr)
        sys.exit(PREEMPTED_EXIT)
    except KeyboardInterrupt:
        print("tcurseg: interrupted: run the same command again to resume from the newest checkpoint", file=sys.stderr)
        sys.exit(130)


def _log_to_files(message: str) -> None:
    """Record an error in the run's log file (train.log) only: the console gets it once, from ``sys.exit``."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def check_config(cfg: DictConfig) -> None:
    """Mistakes a composed training config can hold, each refused in one line before torch loads: no epochs, a crop
    other than the network's input size, a method without a ``conf/method`` file, a method option the method does
    not have (``+method.rnk=4``), an unknown ``head_init``, evaluation settings the data or a volume cannot have."""
    from tcurseg.engine.postprocess import check_keep_components

    if int(cfg.train.epochs) < 1:
        raise ValueError(f"train.epochs={cfg.train.epochs}: train for at least 1 epoch")
    if cfg.get("head_init", "random") not in HEAD_INITS:
        raise ValueError(f"head_init={cfg.head_init}: expected one of {', '.join(HEAD_INITS)}")
    roi, img = [int(v) for v in cfg.data.roi_size], [int(v) for v in cfg.model.img_size]
    if roi != img:
        raise ValueError(f"data.roi_size {roi} differs from model.img_size {img}: the network takes crops of its input "
                         "size (leave data.roi_size at ${model.img_size})")
    check_keep_components(dict(cfg.eval.get("keep_components") or {}), list(cfg.data.regions))
    axes = [int(a) for a in cfg.eval.get("mirror_axes") or []]
    if any(a not in (0, 1, 2) for a in axes):
        raise ValueError(f"eval.mirror_axes={axes}: mirror along spatial axes 0, 1, 2 (0 = left-right)")
    schema = METHOD_CONF / f"{cfg.method.name}.yaml"
    if not schema.is_file():
        known = sorted(p.stem for p in METHOD_CONF.glob("*.yaml"))
        raise ValueError(f"unknown method {cfg.method.name!r}; choose one of {known}")
    known = set(OmegaConf.load(schema))
    unknown = sorted(set(cfg.method) - known)
    if unknown:
        raise ValueError(f"method {cfg.method.name} has no option {', '.join(unknown)}; its options: "
                         f"{', '.join(sorted(known))}")


def prepare_data(data_cfg: DictConfig, splits: tuple[str, ...]) -> None:
    """Generate the embedded synthetic data set when the config asks for it, make a real data set's missing list from
    its tree (``data.layout``: :func:`tcurseg.data.layouts.ensure_data_list`), then check every file of ``splits``."""
    from tcurseg.data import synth
    from tcurseg.data.check import assert_dataset_ok
    from tcurseg.data.layouts import ensure_data_list

    spec = data_cfg.get("synth")
    if spec:
        spacing, box = synth.PRESETS[spec.task]
        synth.ensure_generated(spec.task, spec.out_dir, int(spec.n_subjects), int(spec.seed), spacing, box,
                               splits=tuple(float(f) for f in spec.get("splits", (0.6, 0.2, 0.2))))
    ensure_data_list(data_cfg)
    if data_cfg.get("check", True):
        assert_dataset_ok(data_cfg, splits=splits)
