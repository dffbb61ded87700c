"""Every method under DDP (2 CPU processes, gloo, ``find_unused_parameters=False``): a trainable parameter that takes
no part in the forward pass fails the second backward ("Expected to have finished reduction in the prior
iteration"), so each method trains 2 steps on different inputs per rank and must end with bitwise identical
trainable tensors on both ranks, all of them moved. The entry point under torchrun is covered by ``test_ddp.py``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tcurseg.peft import METHODS

pytestmark = pytest.mark.e2e

WORKER = '''
import sys
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from tcurseg.models.unetr import CNN_PRESETS, build_unetr
from tcurseg.peft import apply

dump_dir, methods = sys.argv[1], sys.argv[2:]
dist.init_process_group("gloo")
rank = dist.get_rank()
out = {}
for method in methods:
    torch.manual_seed(0)
    model = build_unetr({"in_channels": 1, "out_channels": 2, "img_size": [16, 16, 16], "feature_size": 8,
                         "hidden_size": 48, "mlp_dim": 96, "num_heads": 4})
    model = apply(model, {"name": method, "rank": 2, "trainable_modules": CNN_PRESETS["default"]})
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    initial = {n: p.detach().clone() for n, p in trainable.items()}
    ddp = DistributedDataParallel(model)
    optimizer = torch.optim.Adam(trainable.values(), lr=1e-3)
    for step in range(2):
        x = torch.randn(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(10 * step + rank))
        optimizer.zero_grad()
        ddp(x).square().mean().backward()
        optimizer.step()
    out[method] = {"initial": initial, "final": {n: p.detach().clone() for n, p in trainable.items()}}
torch.save(out, f"{dump_dir}/rank{rank}.pt")
dist.destroy_process_group()
'''


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> tuple[dict, dict]:
    tmp = tmp_path_factory.mktemp("ddp_methods")
    worker = tmp / "worker.py"
    worker.write_text(WORKER)
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    # --standalone: torchrun's rendezvous takes a free port itself (a port found free here could be taken by another
    # process, another pytest worker's torchrun say, before torchrun binds it)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
                           "--nproc_per_node=2", str(worker), str(tmp), *METHODS], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stderr[-6000:]}"
    return torch.load(tmp / "rank0.pt"), torch.load(tmp / "rank1.pt")


@pytest.mark.parametrize("method", METHODS)
def test_method_trains_identically_on_both_ranks(ranks, method):
    rank0, rank1 = ranks[0][method], ranks[1][method]
    assert rank0["final"].keys() == rank1["final"].keys() and rank0["final"]
    for name, value in rank0["final"].items():
        assert torch.equal(value, rank1["final"][name]), f"{method}: {name} differs between the ranks"
        assert not torch.equal(value, rank0["initial"][name]), f"{method}: {name} did not train"
