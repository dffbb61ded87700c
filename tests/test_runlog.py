"""The run log: rank 0 alone writes ``<run folder>/train.log``; console lines carry the rank under torchrun."""

from __future__ import annotations

import logging

import pytest

from tcurseg.engine.distributed import DistInfo
from tcurseg.engine.runlog import use_run_log


@pytest.fixture()
def root_logger():
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    console = logging.StreamHandler()
    root.handlers = [console]
    root.setLevel(logging.INFO)
    yield root, console
    for handler in root.handlers:
        if handler not in saved:
            handler.close()
    root.handlers, root.level = saved, level


def test_rank0_writes_train_log_in_the_run_folder_and_moves_with_it(root_logger, tmp_path):
    root, console = root_logger
    use_run_log(tmp_path / "first", DistInfo())
    logging.getLogger("tcurseg.x").info("one")
    use_run_log(tmp_path / "second", DistInfo())  # e.g. resume=false moved the run to <folder>-2
    logging.getLogger("tcurseg.x").info("two")
    first, second = (tmp_path / d / "train.log" for d in ("first", "second"))
    assert "one" in first.read_text() and "two" not in first.read_text()
    assert "two" in second.read_text()
    assert sum(isinstance(h, logging.FileHandler) for h in root.handlers) == 1
    assert console.formatter is None  # a single process: console lines untouched


def test_other_ranks_write_no_file_and_tag_the_console(root_logger, tmp_path):
    root, console = root_logger
    use_run_log(tmp_path / "run", DistInfo(rank=1, world_size=2))
    assert not (tmp_path / "run" / "train.log").exists()
    assert not any(isinstance(h, logging.FileHandler) for h in root.handlers)
    record = logging.LogRecord("tcurseg.x", logging.INFO, __file__, 1, "hello", None, None)
    assert console.format(record).startswith("[rank 1][")
    use_run_log(tmp_path / "run0", DistInfo(rank=0, world_size=2))
    assert (tmp_path / "run0" / "train.log").exists()
