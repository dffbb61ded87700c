"""Preemption (SIGTERM / SIGUSR1 from a scheduler) and a second launch on a busy run folder.

* SIGTERM mid-epoch: the step in progress completes, ``ckpt_epochE_stepS.pt`` is written, and resuming from it ends
  bitwise where an uninterrupted run ends (weights and optimizer state), with the same epoch losses;
* through the real entry point: the preempted process exits with status 75 and one line, the same command resumes
  from the step checkpoint, and a second ``tcurseg.train`` on a folder another process trains in stops in one line.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from e2e_support import REPO, TIMEOUT, module_cmd, subprocess_env, train_args
from tcurseg.data import synth
from tcurseg.engine.distributed import DistInfo
from tcurseg.engine.preemption import PREEMPTED_EXIT, Preempted
from tcurseg.engine.trainer import Trainer

CONF = str(REPO / "conf")
TINY = ["model.img_size=[32,32,32]", "model.hidden_size=48", "model.mlp_dim=96", "model.num_heads=4",
        "model.feature_size=8", "pretrained=none", "pretrain_recipe=null", "device=cpu", "train.num_workers=0",
        "train.batch_size=1", "method=tcurlora", "train.epochs=2", "train.val_every=1", "train.ckpt_every=1"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hippo")
    synth.ensure_generated("synth_hippo", out, 5, 0, *synth.PRESETS["synth_hippo"])
    return out


def _trainer(data_dir: Path, out: Path) -> Trainer:
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose(config_name="config", overrides=[*TINY, f"data.data_list={data_dir}/datalist.json",
                                                       f"output_dir={out}"])
    return Trainer(cfg, out, DistInfo(), torch.device("cpu"))


def _signal_at_step(trainer: Trainer, step: int, signum: int) -> None:
    """Send ``signum`` to this process while optimizer step ``step`` (1-based, over the run) is in progress."""
    real, done = trainer.optimizer.step, [0]

    def stepping(*args, **kwargs):
        done[0] += 1
        if done[0] == step:
            os.kill(os.getpid(), signum)
        return real(*args, **kwargs)

    trainer.optimizer.step = stepping


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_a_preempted_run_resumes_bitwise_at_the_step_it_stopped(data_dir, tmp_path, signum):
    reference = _trainer(data_dir, tmp_path / "reference")
    uninterrupted = reference.fit()

    handler = signal.getsignal(signum)
    preempted = _trainer(data_dir, tmp_path / "run")
    _signal_at_step(preempted, 4, signum)  # epoch 2 (3 steps per epoch), its first step
    with pytest.raises(Preempted) as stop:
        preempted.fit()
    checkpoint = tmp_path / "run" / "checkpoints" / "ckpt_epoch0001_step000001.pt"
    assert stop.value.checkpoint == str(checkpoint) and checkpoint.is_file()
    assert signal.getsignal(signum) == handler  # restored after the run

    resumed = _trainer(data_dir, tmp_path / "run")
    summary = resumed.fit()
    assert resumed.start_epoch == 1 and resumed.start_step == 1
    model, ref_model = resumed.model.state_dict(), reference.model.state_dict()
    assert model.keys() == ref_model.keys()
    assert all(torch.equal(model[k], ref_model[k]) for k in model)
    optim, ref_optim = resumed.optimizer.state_dict()["state"], reference.optimizer.state_dict()["state"]
    assert optim.keys() == ref_optim.keys()
    assert all(torch.equal(optim[i][k], ref_optim[i][k]) for i in optim for k in optim[i])
    losses = [h["loss"] for h in summary["history"]]
    ref_losses = [h["loss"] for h in uninterrupted["history"]]
    # the epoch-2 mean adds its first step's loss in another order: float64 rounding of a sum of 3 terms
    assert all(math.isclose(a, b, rel_tol=4 * torch.finfo(torch.float64).eps) for a, b in zip(losses, ref_losses))
    assert [h["val_dice"] for h in summary["history"]] == [h["val_dice"] for h in uninterrupted["history"]]


LAUNCHER = textwrap.dedent("""
    import os, runpy, signal, sys
    import tcurseg.engine.trainer as trainer_module

    class SignalledTrainer(trainer_module.Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            real, done = self.optimizer.step, [0]

            def stepping(*a, **k):
                done[0] += 1
                if done[0] == int(os.environ["SIGTERM_AT_STEP"]):
                    os.kill(os.getpid(), signal.SIGTERM)
                return real(*a, **k)

            self.optimizer.step = stepping

    trainer_module.Trainer = SignalledTrainer
    runpy.run_module("tcurseg.train", run_name="__main__", alter_sys=True)
""")


def _train(out: Path, data_dir: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", LAUNCHER, *train_args(data_dir, out, "train.num_workers=0")]
    return subprocess.run(command, cwd=REPO, env={**subprocess_env(), **(env or {})}, capture_output=True, text=True,
                          timeout=TIMEOUT)


def test_the_entry_point_exits_75_on_sigterm_and_the_same_command_resumes(data_dir, tmp_path):
    out = tmp_path / "run"
    stopped = _train(out, data_dir, {"SIGTERM_AT_STEP": "1"})
    assert stopped.returncode == PREEMPTED_EXIT, stopped.stderr[-3000:]
    checkpoint = out / "checkpoints" / "ckpt_epoch0000_step000001.pt"
    assert checkpoint.is_file()
    assert (f"tcurseg: preempted: SIGTERM received: checkpoint {checkpoint} written; run the same command to "
            "resume") in stopped.stderr.splitlines()
    resumed = _train(out, data_dir, {"SIGTERM_AT_STEP": "0"})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = (out / "train.log").read_text()
    assert f"resumed from {checkpoint} (epoch 0 done, and 1 steps of epoch 1)" in log
    assert (out / "summary.json").is_file() and (out / "run.lock").read_text() == ""


HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from tcurseg.engine.runlock import run_lock
    with run_lock(Path(sys.argv[1])):
        print("held", flush=True)
        time.sleep(120)
""")


def test_a_second_training_on_a_busy_run_folder_stops_in_one_line(data_dir, tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True,
                              env=subprocess_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        second = subprocess.run(module_cmd("train", *train_args(data_dir, out)), cwd=REPO, env=subprocess_env(),
                                capture_output=True, text=True, timeout=TIMEOUT)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert second.returncode == 1
    errors = [line for line in second.stderr.splitlines() if line.startswith("tcurseg: error:")]
    assert len(errors) == 1 and errors[0].startswith(f"tcurseg: error: {out} is in use by process {holder.pid} on ")
    assert "Traceback" not in second.stderr
    assert not (out / "checkpoints").exists()


RANK_DIES = textwrap.dedent("""
    import os, runpy
    import tcurseg.engine.trainer as trainer_module

    class DyingTrainer(trainer_module.Trainer):
        def train_epoch(self, epoch, first_step=0):
            first_attempt = os.environ["TORCHELASTIC_RESTART_COUNT"] == "0"
            if epoch == 1 and self.dist.rank == 1 and first_attempt:
                os._exit(3)  # rank 1 dies in epoch 2, while rank 0 goes on into its collectives
            return super().train_epoch(epoch, first_step)

    trainer_module.Trainer = DyingTrainer
    runpy.run_module("tcurseg.train", run_name="__main__", alter_sys=True)
""")


def test_a_rank_that_dies_under_torchrun_stops_the_others_and_the_restart_resumes(data_dir, tmp_path):
    """torchrun --max-restarts=1 (gloo on 2 CPU processes): rank 1 dies in epoch 2 of the first attempt; rank 0 does
    not wait in its collective (the attempt ends well within the collective timeout), torchrun starts both again, and
    the restarted workers join a new process group (not the dead ones' addresses left in torchrun's store) and resume
    from the epoch-1 checkpoint."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--max-restarts=1",
               "-m", "tcurseg_rank_dies", *train_args(data_dir, out, "train.num_workers=0", "train.batch_size=1",
                                                      "evaluate_after=false")]
    (tmp_path / "tcurseg_rank_dies.py").write_text(RANK_DIES)
    env = {**subprocess_env(), "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    env.pop("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", None)
    started = time.monotonic()
    run = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert run.returncode == 0, run.stderr[-4000:]
    assert time.monotonic() - started < TIMEOUT / 2
    assert "failed (exitcode: 3) local_rank: 1" in run.stderr
    log = (out / "train.log").read_text()
    assert f"resumed from {out / 'checkpoints' / 'ckpt_epoch0001.pt'} (epoch 1 done)" in log
    assert (out / "checkpoints" / "ckpt_epoch0002.pt").is_file() and (out / "model.pt").is_file()
