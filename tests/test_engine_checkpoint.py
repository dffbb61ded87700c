import pytest
import torch

from tcurseg.engine import checkpoint as ckpt
from tcurseg.engine.checkpoint import (
    checkpoint_path,
    latest_checkpoint,
    prune_checkpoints,
    save_atomic,
)


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
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_atomic({"epoch": 2}, path)
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
