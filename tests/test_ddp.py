"""DDP on 2 CPU processes (gloo) through the real entry point ``python -m tcurseg.train``.

One torchrun run (2 ranks, batch 1 per rank) and one single-process run (batch 2: the same global batch) of a tiny
UNETR with tCURLoRA, 2 epochs, both in float64 (the launcher below casts the network and its input). Checks that
  * both ranks apply bitwise the same gradient at every step and end with identical trainable tensors (the shared
    tCURLoRA cores dU included): DDP all-reduces every gradient, no parameter is left out (no find_unused_parameters
    error, no silent divergence);
  * DDP computes the global-batch gradient: at step 1 (same weights) the averaged gradient equals the single
    process's up to rounding. The DiceCE loss is a mean over the equal-sized crops of a batch, so the mean over
    ranks of the per-rank gradients is the gradient of the global batch, and the DistributedSampler gives rank r the
    samples r, r + 2, ... of the same seeded permutation the single process walks in batches of 2 (the training
    split has an even size, 4, so no sampler padding);
  * after training the weights agree up to that rounding carried through Adam's steps, the epoch losses agree, and
    rank 0 alone wrote the run outputs (model.pt = rank 0's state, summary.json with world_size 2).

Every bound is derived (``rounding.py``): the two runs sum the same terms in other orders (per rank, then across
ranks), so in float64 they differ by at most 2 gamma_n times the size of the terms, n the number of terms behind one
gradient entry (forward and backward chains over the global batch). In float32 that bound would be of the order of
the gradients themselves, and a tolerance tuned below it fails on other CPUs (it did: 1.81e-5 against 1.63e-5 on an
AVX-512 Xeon).

Per-rank state without test-only flags in production code: the processes run a small launcher (written below) that
subclasses ``Trainer`` to record every rank's applied gradients, learning rates and ``peft.adapter_state``, builds
the network in float64, then runs the ``tcurseg.train`` module as ``__main__`` with the Hydra overrides (exactly
what ``python -m tcurseg.train`` does). torchrun runs ``--standalone``: its rendezvous takes a free port itself.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from rounding import counted_forward, sum_bound

from tcurseg.data import synth

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
N_SUBJECTS = 6  # synth splits 0.6/0.2/0.2 -> 4 training (even: no DistributedSampler padding), 1 val, 1 test
EPOCHS = 2
CROPS = 4  # the global batch: 2 subjects x 2 crops (data.num_samples of synth_hippo)
TINY = {"img_size": [32, 32, 32], "hidden_size": 48, "mlp_dim": 96, "num_heads": 4, "feature_size": 8,
        "in_channels": 1, "out_channels": 2}

LAUNCHER = '''
import os, runpy, sys
import torch
import tcurseg.engine.trainer as trainer_module
from tcurseg import peft

dump_dir = sys.argv.pop(1)
build_model = trainer_module.build_model


def build_model_float64(*args, **kwargs):
    """The network in float64, its floating-point inputs cast on the way in."""
    model = build_model(*args, **kwargs).double()
    model.register_forward_pre_hook(lambda module, inputs: tuple(
        x.double() if torch.is_tensor(x) and x.is_floating_point() else x for x in inputs))
    return model


class RankStateTrainer(trainer_module.Trainer):
    """Records the gradients and rates of each optimizer step (after DDP's all-reduce) and the trainable state."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        names = {id(p): n for n, p in self.model.named_parameters()}
        step, self.step_grads, self.step_rates = self.optimizer.step, [], []
        self.initial_state = {k: v.clone() for k, v in peft.adapter_state(self.model)[0].items()}

        def recording_step(*a, **kw):
            groups = self.optimizer.param_groups
            self.step_grads.append({names[id(p)]: p.grad.detach().clone() for group in groups
                                    for p in group["params"] if p.grad is not None})
            self.step_rates.append({names[id(p)]: {k: group[k] for k in ("lr", "betas", "eps", "weight_decay")}
                                    for group in groups for p in group["params"]})
            return step(*a, **kw)

        self.optimizer.step = recording_step

    def fit(self):
        summary = super().fit()
        tensors, _ = peft.adapter_state(self.model)
        torch.save({"initial": self.initial_state, "state": tensors, "grads": self.step_grads,
                    "rates": self.step_rates}, os.path.join(dump_dir, f"rank{self.dist.rank}.pt"))
        return summary


trainer_module.build_model = build_model_float64
trainer_module.Trainer = RankStateTrainer
runpy.run_module("tcurseg.train", run_name="__main__", alter_sys=True)
'''


def _overrides(data_dir: Path, out_dir: Path, batch_size: int) -> list[str]:
    return [
        "model.img_size=[32,32,32]", "model.hidden_size=48", "model.mlp_dim=96", "model.num_heads=4",
        "model.feature_size=8", "data=synth_hippo", f"data.synth.out_dir={data_dir}",
        f"data.data_list={data_dir}/datalist.json", f"data.synth.n_subjects={N_SUBJECTS}", "pretrained=none",
        "pretrain_recipe=null", "method=tcurlora", f"train.epochs={EPOCHS}", f"train.batch_size={batch_size}",
        f"train.val_every={EPOCHS}", f"output_dir={out_dir}", "evaluate_after=false", "device=cpu",
        "train.num_workers=0", "train.cache_rate=1.0",
        # per-crop Dice: the loss is then a mean over crops, so DDP's mean of per-rank gradients is the global batch's
        # (batch Dice is computed over each rank's own crops)
        "train.batch_dice=false", "data.synth.splits=[0.6,0.2,0.2]",
    ]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TCURSEG_DEBUG="1", HYDRA_FULL_ERROR="1")
    return env


def _run(cmd: list[str], tag: str) -> None:
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{tag} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("ddp")
    data_dir = tmp / "hippo"
    # generate once, before any rank starts, so the ranks do not race on the files
    synth.ensure_generated("synth_hippo", data_dir, N_SUBJECTS, 0, *synth.PRESETS["synth_hippo"])
    launcher = tmp / "launch_train.py"
    launcher.write_text(LAUNCHER)
    for name in ("ddp_state", "single_state"):
        (tmp / name).mkdir()

    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
          str(launcher), str(tmp / "ddp_state"), *_overrides(data_dir, tmp / "ddp", batch_size=1)],
         "torchrun (2 ranks, batch 1)")
    _run([sys.executable, str(launcher), str(tmp / "single_state"),
          *_overrides(data_dir, tmp / "single", batch_size=2)], "single process (batch 2)")
    load = torch.load
    return {"tmp": tmp, "data": data_dir, "rank0": load(tmp / "ddp_state" / "rank0.pt"),
            "rank1": load(tmp / "ddp_state" / "rank1.pt"), "single": load(tmp / "single_state" / "rank0.pt")}


@pytest.fixture(scope="module")
def n_terms() -> int:
    """Terms behind one gradient entry: the forward chain of the global batch (``rounding.counted_forward`` of one
    crop, times the crops: at least what a batch of them counts, whose inputs are that many times larger) and the
    backward chain that mirrors it (a weight's gradient sums over the batch and positions of its layer's input)."""
    from tcurseg.models import build_unetr
    from tcurseg.models.unetr import CNN_PRESETS
    from tcurseg.peft import apply

    model = apply(build_unetr(TINY), {"name": "tcurlora", "rank": 8, "trainable_modules": CNN_PRESETS["default"]})
    with torch.no_grad():
        _, forward_terms = counted_forward(model.eval(), torch.zeros(1, 1, 32, 32, 32))
    return 2 * CROPS * forward_terms


def gradient_bound(gradient: torch.Tensor, n: int) -> float:
    """How far two evaluations of ``gradient`` (n terms of its size) may differ by float64 rounding."""
    return sum_bound(n, gradient.abs().max().item(), torch.float64)


def adam_drift_bound(grads: list[dict], rates: list[dict], initial: dict, key: str, n: int) -> torch.Tensor:
    """Per element, how far the weights of two runs whose gradients differ at each step by at most the rounding
    bound B can drift apart after Adam's steps (to first order in B). With bias-corrected moments m and v (weights a_i
    and b_i over the steps, each summing to 1), a gradient change of at most B moves m and sqrt(v) by at most B, so
    the step m / (sqrt(v) + eps) by at most B (1 + K) / (sqrt(v) + eps), K = sqrt(sum a_i^2 / b_i) >= |m| / sqrt(v);
    and sqrt(v_t) >= |g_1| sqrt(beta2^(t-1) (1 - beta2) / (1 - beta2^t)) from the first gradient (weight decay
    included) alone."""
    bound = torch.zeros_like(initial[key])
    first = grads[0][key] + rates[0][key]["weight_decay"] * initial[key]
    worst = 0.0
    for t, (step_grads, step_rates) in enumerate(zip(grads, rates), start=1):
        hyper = step_rates[key]
        beta1, beta2 = hyper["betas"]
        worst = max(worst, gradient_bound(step_grads[key], n))
        a = [(1 - beta1) * beta1 ** (t - i) / (1 - beta1**t) for i in range(1, t + 1)]
        b = [(1 - beta2) * beta2 ** (t - i) / (1 - beta2**t) for i in range(1, t + 1)]
        k = math.sqrt(sum(ai * ai / bi for ai, bi in zip(a, b)))
        floor = first.abs() * math.sqrt(beta2 ** (t - 1) * (1 - beta2) / (1 - beta2**t)) + hyper["eps"]
        bound += hyper["lr"] * worst * (1 + k) / floor
    return bound


def test_ranks_identical(runs):
    rank0, rank1 = runs["rank0"], runs["rank1"]
    cores = [k for k in rank0["state"] if k.endswith(("dU.real", "dU.imag"))]
    assert len(cores) == 6, f"expected the cores of 3 tCURLoRA groups: {sorted(rank0['state'])[:10]}"
    assert all(v.dtype == torch.float64 for v in rank0["state"].values() if v.is_floating_point())
    # the shared cores trained (non-zero after 2 epochs) ...
    assert all(rank0["state"][k].abs().max() > 0 for k in cores), "a tCURLoRA core did not move from zero"
    # ... and every trainable tensor, the shared cores included, is bitwise the same on both ranks,
    assert rank0["state"].keys() == rank1["state"].keys()
    for key in rank0["state"]:
        assert torch.equal(rank0["state"][key], rank1["state"][key]), f"{key} differs between ranks"
    # as is the (all-reduced) gradient of every optimizer step: 2 epochs x 2 steps of 1 subject per rank
    assert len(rank0["grads"]) == len(rank1["grads"]) == 2 * EPOCHS
    for step, (g0, g1) in enumerate(zip(rank0["grads"], rank1["grads"])):
        assert g0.keys() == g1.keys() and any(k.endswith("dU.real") for k in g0), f"step {step}: cores without grad"
        for key in g0:
            assert torch.equal(g0[key], g1[key]), f"step {step}: gradient of {key} differs between ranks"


def test_ddp_gradient_equals_global_batch_gradient(runs, n_terms):
    """First step, same weights: DDP's mean of the per-rank gradients (1 subject = 2 crops each) equals the gradient
    of the single process's batch of 2 subjects (4 crops), up to float64 rounding of sums of ``n_terms`` terms."""
    ddp, single = runs["rank0"]["grads"], runs["single"]["grads"]
    assert len(ddp) == len(single) == 2 * EPOCHS
    assert ddp[0].keys() == single[0].keys()
    assert all(g.dtype == torch.float64 for g in single[0].values())
    for key, ref in single[0].items():
        difference = (ddp[0][key] - ref).abs().max().item()
        assert difference <= gradient_bound(ref, n_terms), f"step 1 gradient of {key} differs by {difference:.3g}"


def test_ddp_equals_single_process_after_training(runs, n_terms):
    """After 2 epochs (4 steps): the same weights up to the gradients' rounding carried through Adam
    (:func:`adam_drift_bound`). A different sample order or a wrong average over ranks moves the weights by the
    order of the training's own steps instead."""
    ddp, single = runs["rank0"], runs["single"]
    assert ddp["initial"].keys() == single["initial"].keys() == single["state"].keys()
    keys = [k for k, v in single["state"].items() if v.is_floating_point()]
    for key in keys:
        assert torch.equal(ddp["initial"][key], single["initial"][key]), f"the runs started differently: {key}"
    moved = max((single["state"][k] - single["initial"][k]).abs().max().item() for k in keys)
    assert moved > 1e-3
    trained = [k for k in keys if k in single["grads"][0]]
    assert any(k.endswith("dU.real") for k in trained)
    for key in trained:
        bound = adam_drift_bound(single["grads"], single["rates"], single["initial"], key, n_terms)
        difference = (ddp["state"][key] - single["state"][key]).abs()
        assert (difference <= bound).all(), f"{key}: differs by {difference.max().item():.3g}"


def test_outputs_written_by_rank0_match(runs, n_terms):
    ddp = runs["tmp"] / "ddp"
    summary = json.loads((ddp / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["method"] == "tcurlora"
    assert (ddp / "adapter.safetensors").is_file()
    state = torch.load(ddp / "model.pt", weights_only=False)["model"]
    for key, value in runs["rank0"]["state"].items():
        assert torch.equal(state[key], value), f"model.pt {key} != rank 0 state"
    single = json.loads((runs["tmp"] / "single" / "summary.json").read_text())
    assert single["world_size"] == 1
    # The epoch loss (the all-reduced mean over ranks and steps) equals the single process's mean over its batches
    # up to rounding (a mean of CROPS crops' losses, each a sum over the forward chain) and, after the first step, to
    # first order the loss change sum |dL/dw| |dw| of the weights' drift (test above) at each step.
    grads, rates, initial = runs["single"]["grads"], runs["single"]["rates"], runs["single"]["initial"]
    steps = len(grads) // EPOCHS
    for epoch, (a, b) in enumerate(zip(summary["history"], single["history"], strict=True)):
        drift = 0.0
        for t in range(epoch * steps, (epoch + 1) * steps):
            if t:
                drift += sum((grads[t][k].abs() * adam_drift_bound(grads[:t], rates[:t], initial, k, n_terms)).sum()
                             .item() for k in grads[t]) / steps
        assert abs(a["loss"] - b["loss"]) <= sum_bound(n_terms, abs(b["loss"]), torch.float64) + drift, epoch
    # Validation after the last epoch: weights equal up to rounding, so the predicted labels are the same but for a
    # voxel whose two logits tie to within that rounding: one voxel moves the Dice by at most 2 / |truth|.
    entry = json.loads((runs["data"] / "datalist.json").read_text())["validation"][0]
    truth = int((np.asarray(nib.load(runs["data"] / entry["label"]).dataobj) > 0).sum())
    validated = [(a["val_dice"], b["val_dice"]) for a, b in zip(summary["history"], single["history"]) if "val_dice" in b]
    assert len(validated) == 1 and 0.0 < validated[0][1] < 1.0
    assert validated[0][0] == pytest.approx(validated[0][1], abs=2.0 / truth)
