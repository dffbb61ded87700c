import errno
import logging
import os

import pytest
import torch

from tcurseg.engine import checkpoint as ckpt
from tcurseg.engine.checkpoint import (
    checkpoint_path,
    latest_checkpoint,
    load_latest_checkpoint,
    prune_checkpoints,
    save_atomic,
)
from tcurseg.engine.errors import CheckpointWriteError


def test_save_atomic_round_trip(tmp_path):
    path = save_atomic({"model": {"w": torch.arange(4.0)}, "epoch": 2}, tmp_path / "run" / "ckpt_epoch0002.pt")
    assert torch.equal(torch.load(path, weights_only=True)["model"]["w"], torch.arange(4.0))
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt_epoch0002.pt"]


def test_save_atomic_failure_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_atomic({"epoch": 1}, path)
    before = path.read_bytes()
    real_save = torch.save

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"partial bytes")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt.torch, "save", broken_save)
    with pytest.raises(CheckpointWriteError) as raised:
        save_atomic({"epoch": 2}, path)
    assert str(raised.value) == (f"could not write {path}: {os.strerror(errno.ENOSPC)}; the files written before it "
                                 "are intact")
    monkeypatch.setattr(ckpt.torch, "save", real_save)
    assert path.read_bytes() == before
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_latest_and_prune(tmp_path):
    assert latest_checkpoint(tmp_path / "absent") is None
    assert latest_checkpoint(tmp_path) is None
    for epoch in (1, 10, 2, 9):
        save_atomic({"epoch": epoch}, checkpoint_path(tmp_path, epoch))
    (tmp_path / "ckpt_epoch12.pt").write_bytes(b"")  # not the naming scheme
    (tmp_path / "notes.txt").write_text("x")
    assert latest_checkpoint(tmp_path) == tmp_path / "ckpt_epoch0010.pt"
    removed = prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in removed) == ["ckpt_epoch0001.pt", "ckpt_epoch0002.pt"]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["ckpt_epoch0009.pt", "ckpt_epoch0010.pt", "ckpt_epoch12.pt", "notes.txt"]
    assert prune_checkpoints(tmp_path, keep=5) == []
    with pytest.raises(ValueError, match="keep=0"):
        prune_checkpoints(tmp_path, keep=0)


def test_a_preemption_checkpoint_sorts_between_the_epochs_around_it(tmp_path):
    for epoch, step in ((1, 0), (1, 7), (2, 0), (1, 12)):
        save_atomic({"epoch": epoch, "step": step}, checkpoint_path(tmp_path, epoch, step))
    assert checkpoint_path(tmp_path, 1, 7).name == "ckpt_epoch0001_step000007.pt"
    assert latest_checkpoint(tmp_path) == tmp_path / "ckpt_epoch0002.pt"
    (tmp_path / "ckpt_epoch0002.pt").unlink()
    assert latest_checkpoint(tmp_path) == tmp_path / "ckpt_epoch0001_step000012.pt"
    assert [p.name for p in prune_checkpoints(tmp_path, keep=1)] == ["ckpt_epoch0001.pt", "ckpt_epoch0001_step000007.pt"]


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_resume_skips_an_unreadable_newest_checkpoint_with_one_warning(tmp_path, caplog, damage):
    for epoch in (1, 2, 3):
        save_atomic({"model": {"w": torch.full((64,), float(epoch))}, "epoch": epoch}, checkpoint_path(tmp_path, epoch))
    newest = checkpoint_path(tmp_path, 3)
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")
    with caplog.at_level(logging.WARNING, logger="tcurseg.engine.checkpoint"):
        path, state = load_latest_checkpoint(tmp_path)
    assert path == checkpoint_path(tmp_path, 2) and state["epoch"] == 2
    assert torch.equal(state["model"]["w"], torch.full((64,), 2.0))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(newest) in warnings[0] and "\n" not in warnings[0]


def test_no_readable_checkpoint_means_a_fresh_start(tmp_path):
    assert load_latest_checkpoint(tmp_path) is None
    checkpoint_path(tmp_path, 1).write_bytes(b"")
    assert load_latest_checkpoint(tmp_path) is None


def test_a_failed_checkpoint_write_ends_the_program_in_one_line(tmp_path, monkeypatch):
    from tcurseg.cli import user_errors

    def full_disk(obj, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt.torch, "save", full_disk)
    monkeypatch.delenv("TCURSEG_DEBUG", raising=False)
    with pytest.raises(SystemExit) as stopped, user_errors():
        save_atomic({"epoch": 3}, checkpoint_path(tmp_path, 3))
    assert str(stopped.value) == (f"tcurseg: error: could not write {checkpoint_path(tmp_path, 3)}: "
                                  f"{os.strerror(errno.ENOSPC)}; the files written before it are intact")
    assert list(tmp_path.iterdir()) == []
