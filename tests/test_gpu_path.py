"""What CUDA, nccl and several GPUs enforce, emulated on the CPU (docs/design.md section 3):

* nccl takes CUDA tensors only: every collective runs on the device the backend serves (a fake nccl refuses others);
* one GPU per process under torchrun, made current before the process group starts, and bound to it (device_id);
* no broadcast of the buffers each rank derives from its frozen weights (complex C, R of tCURLoRA; LoRA-PT's);
* an error on one rank is raised on all ranks (no rank left waiting in a collective);
* AMP: bf16 only where the GPU computes it natively, fp16 with a GradScaler elsewhere; evaluation in the training
  dtype; resuming across AMP modes;
* no host tensor, copy or read-back inside the adapters' forward and backward (run on the meta device, where any
  host tensor shows and any read-back fails), and none per training step in the trainer.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import tempfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from hydra import compose, initialize_config_dir
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from tcurseg.data import synth
from tcurseg.engine import distributed, runtime
from tcurseg.engine.distributed import DistInfo, all_ranks_ok, all_reduce_sum, init_distributed, on_main
from tcurseg.engine.errors import RunError
from tcurseg.engine.runtime import amp_dtype, resolve_device
from tcurseg.engine.trainer import Trainer, build_model, derived_buffers
from tcurseg.peft.spectral import SpectralGroup

CONF = str(Path(__file__).resolve().parents[1] / "conf")
TINY = ["model.img_size=[32,32,32]", "model.hidden_size=48", "model.mlp_dim=96", "model.num_heads=4",
        "model.feature_size=8", "pretrained=none", "pretrain_recipe=null", "device=cpu", "train.num_workers=0",
        "train.batch_size=1", "data.num_samples=1"]
METHODS = ["tcurlora", "lorapt", "curlora", "lora", "dora", "pissa", "full", "decoder_only"]


def _cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        return compose(config_name="config", overrides=[*TINY, *overrides])


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hippo")
    synth.ensure_generated("synth_hippo", out, 5, 0, *synth.PRESETS["synth_hippo"])
    return out


def _trainer(data_dir: Path, out: Path, *overrides: str, dist_info: DistInfo | None = None) -> Trainer:
    cfg = _cfg(f"data.data_list={data_dir}/datalist.json", f"output_dir={out}", *overrides)
    return Trainer(cfg, out, dist_info or DistInfo(), torch.device("cpu"))


class FakeNccl:
    """``dist.all_reduce`` as nccl enforces it: tensors on ``served`` only ("No backend type associated with device
    type cpu" otherwise); the sum over one rank is the tensor itself."""

    def __init__(self, served: torch.device) -> None:
        self.served, self.devices = served, []

    def __call__(self, tensor: torch.Tensor, op=None, group=None, async_op=False):
        self.devices.append(tensor.device)
        if tensor.device != self.served:
            raise RuntimeError(f"No backend type associated with device type {tensor.device.type}")


def test_collectives_take_tensors_on_the_device_the_backend_serves(monkeypatch):
    fake = FakeNccl(torch.device("meta"))
    monkeypatch.setattr(distributed.dist, "all_reduce", fake)
    info = DistInfo(rank=0, world_size=2, device=torch.device("meta"), enabled=True)
    reduced = all_reduce_sum(torch.tensor([1.0, 2.0], dtype=torch.float64), info)
    assert fake.devices == [torch.device("meta")]
    assert reduced.device == torch.device("meta") and reduced.dtype == torch.float64 and reduced.shape == (2,)


def test_no_collective_bypasses_the_distributed_module():
    """Every collective of the package goes through tcurseg/engine/distributed.py, which places its tensors."""
    package = Path(__file__).resolve().parents[1] / "tcurseg"
    calls = ("dist.all_reduce(", "dist.broadcast(", "dist.all_gather(", "dist.reduce(", "dist.barrier(")
    offenders = [str(p) for p in package.rglob("*.py") if p.name != "distributed.py"
                 and any(c in p.read_text() for c in calls)]
    assert offenders == []


@pytest.fixture
def fake_gpus(monkeypatch):
    """A machine with 4 GPUs of compute capability ``capability[0]``."""
    capability = [(8, 0)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability[0])
    return capability


@pytest.mark.parametrize("name", ["auto", "cuda"])
def test_every_torchrun_process_takes_the_gpu_of_its_local_rank(fake_gpus, name):
    assert [resolve_device(name, rank, launched=True) for rank in range(4)] == [
        torch.device("cuda", rank) for rank in range(4)]


def test_an_explicit_gpu_under_torchrun_is_refused_and_a_single_process_keeps_it(fake_gpus):
    with pytest.raises(ValueError, match="would put every process on one GPU"):
        resolve_device("cuda:1", 0, launched=True)
    assert resolve_device("cuda:1", 0, launched=False) == torch.device("cuda", 1)
    assert resolve_device("cuda", 0, launched=False) == torch.device("cuda", 0)
    with pytest.raises(ValueError, match="only 4 GPU"):
        resolve_device("cuda", 5, launched=True)


def test_the_process_group_starts_on_this_process_gpu(monkeypatch):
    calls = []
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group",
                        lambda backend, **kw: calls.append(("init", backend, kw.get("device_id"))))
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 3)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 4)
    info = init_distributed(torch.device("cuda", 1))
    assert calls == [("set_device", torch.device("cuda", 1)), ("init", "nccl", torch.device("cuda", 1))]
    assert info == DistInfo(3, 4, 1, torch.device("cuda", 1), True)


def test_amp_uses_bf16_only_where_the_gpu_computes_it(fake_gpus):
    gpu = torch.device("cuda", 0)
    assert amp_dtype(gpu, True) == amp_dtype(gpu, "auto") == torch.bfloat16
    fake_gpus[0] = (7, 0)  # V100: bf16 only emulated
    assert amp_dtype(gpu, "auto") == torch.float16
    assert amp_dtype(gpu, "bf16") == torch.bfloat16 and amp_dtype(gpu, "off") is amp_dtype(gpu, False) is None
    cpu = torch.device("cpu")
    assert amp_dtype(cpu, "auto") is None and amp_dtype(cpu, "bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="amp=fp16 needs a CUDA device"):
        amp_dtype(cpu, "fp16")
    with pytest.raises(ValueError, match="amp=half"):
        runtime.amp_mode("half")


@contextlib.contextmanager
def _process_group():
    """A real gloo process group of world size 1 in this process."""
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=0, world_size=1)
        try:
            yield DistInfo(0, 1, 0, torch.device("cpu"), True)
        finally:
            dist.destroy_process_group()


@pytest.mark.parametrize("method", ["tcurlora", "lorapt"])
def test_ddp_broadcasts_no_derived_buffer(method, monkeypatch):
    model = build_model(_cfg(f"method={method}"), load_base=False)
    assert any(b.is_complex() for b in model.buffers())  # the buffers nccl in torch 2.2-2.3 rejects
    broadcast = []
    real = dist._broadcast_coalesced
    monkeypatch.setattr(dist, "_broadcast_coalesced",
                        lambda group, tensors, *a, **k: (broadcast.extend(tensors), real(group, tensors, *a, **k))[1])
    with _process_group() as info:
        trainer = Trainer.__new__(Trainer)
        trainer.device = info.device
        net = trainer._distributed(model)
        for group in model.adapter_groups.values():
            group.rebuild()  # new C, R (or U0, S0, V0) tensors: DDP must not hold stale copies to broadcast
        net(torch.randn(1, 1, 32, 32, 32)).float().mean().backward()
    assert broadcast, "DDP broadcast nothing: the spy is not in DDP's path"
    derived = {id(b) for name, b in model.named_buffers() if name in set(derived_buffers(model))}
    assert not any(t.is_complex() for t in broadcast)
    assert not any(id(t) in derived for t in broadcast)


def _raise_on_rank1(rank: int, store: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    info = DistInfo(rank, 2, rank, torch.device("cpu"), True)
    outcome = []
    def divide() -> None:  # rank 1 divides by zero, as a case that fails on one rank only
        error = None
        try:
            1 / (1 - rank)
        except ZeroDivisionError as err:
            error = err
        all_ranks_ok(error, info)

    for step in (divide,
                 lambda: on_main(lambda: (_ for _ in ()).throw(ValueError("bad case sub3.nii.gz")), info),
                 lambda: on_main(lambda: "chosen by rank 0", info)):
        try:
            outcome.append(step())
        except Exception as err:
            outcome.append(f"{type(err).__name__}: {err}")
    results[rank] = outcome
    dist.destroy_process_group()


def test_an_error_on_one_rank_is_raised_on_every_rank(tmp_path):
    context = mp.get_context("spawn")
    with context.Manager() as manager:
        results = manager.dict()
        procs = [context.Process(target=_raise_on_rank1, args=(rank, str(tmp_path / "store"), results))
                 for rank in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=120)
        assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
        results = dict(results)
    assert results[0] == ["ZeroDivisionError: division by zero", "ValueError: bad case sub3.nii.gz",
                          "chosen by rank 0"]
    assert results[1] == results[0]


def test_a_non_finite_loss_stops_the_epoch_on_every_rank_before_its_checkpoint(data_dir, tmp_path, monkeypatch):
    trainer = _trainer(data_dir, tmp_path, "method=tcurlora", "train.epochs=1")
    real_loss, calls = trainer.loss_fn, []

    def loss_fn(logits, label):
        calls.append(1)
        loss = real_loss(logits, label)
        return loss * float("nan") if len(calls) == 2 else loss

    trainer.loss_fn = loss_fn
    reductions = []
    real_reduce = all_reduce_sum
    monkeypatch.setattr("tcurseg.engine.trainer.all_reduce_sum",
                        lambda values, info: (reductions.append(values.clone()), real_reduce(values, info))[1])
    with pytest.raises(RunError, match=r"non-finite in 2 step\(s\) of epoch 1"):  # step 2, and 3 from NaN weights
        trainer.fit()
    assert len(calls) == 3  # the epoch ran to its end: every rank reaches the same collective
    assert reductions[-1][2] == 2  # the count of non-finite steps went through the reduction every rank joins
    assert not list((tmp_path / "checkpoints").glob("*.pt"))


class HostOps(TorchDispatchMode):
    """Records every op that touches a host tensor while the model runs on the meta device."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if any(isinstance(t, torch.Tensor) and t.device.type == "cpu" for t in tree_leaves((args, kwargs, out))):
            self.ops.append(str(func))
        return out


@pytest.mark.parametrize("method", METHODS)
def test_no_host_tensor_or_read_back_in_a_training_step_of_the_adapters(method, monkeypatch):
    """On the meta device a read-back (``.item()``, ``.tolist()``, a bool of a tensor) raises, and a host tensor
    copied in (what becomes a host-to-device copy on a GPU) shows in the dispatched ops."""
    monkeypatch.setattr(SpectralGroup, "_device_type", lambda self: "cpu")  # autocast has no meta device type
    model = build_model(_cfg(f"method={method}"), load_base=False).to("meta")
    image = torch.empty(2, 1, 32, 32, 32, device="meta")
    recorder = HostOps()
    with recorder:
        model(image).float().mean().backward()
    assert recorder.ops == []
    assert any(p.grad is not None and p.grad.device.type == "meta" for p in model.parameters())


def test_the_trainer_reads_back_from_the_device_per_epoch_not_per_step(data_dir, tmp_path, monkeypatch):
    """The trainer on the meta device: every read-back of a device tensor (``item``, ``tolist``, ``bool`` /
    ``float``; on a GPU each is a host-device synchronisation) is counted and answered with zeros. An epoch of 3 steps
    (batch 1) makes as many as an epoch of 1 step (batch 3)."""
    monkeypatch.setattr(SpectralGroup, "_device_type", lambda self: "cpu")  # autocast has no meta device type
    meta = torch.device("meta")
    counts = {}
    for batch in (1, 3):
        cfg = _cfg(f"data.data_list={data_dir}/datalist.json", f"output_dir={tmp_path}", "method=tcurlora",
                   f"train.batch_size={batch}")
        trainer = Trainer(cfg, tmp_path / str(batch), DistInfo(device=meta), meta)
        count = [0]
        with monkeypatch.context() as patched:
            for name, dummy in (("item", 0.0), ("tolist", None), ("__bool__", False), ("__float__", 0.0)):
                real = getattr(torch.Tensor, name)

                def read_back(self, *a, _real=real, _dummy=dummy, **k):
                    if self.device.type != "meta":
                        return _real(self, *a, **k)
                    count[0] += 1
                    return [0.0] * self.numel() if _dummy is None else _dummy

                patched.setattr(torch.Tensor, name, read_back)
            trainer.train_epoch(0)
        counts[batch] = count[0]
    assert counts[1] == counts[3] == 1


@pytest.mark.parametrize("method", METHODS)
def test_bf16_autocast_through_the_real_trainer(method, data_dir, tmp_path):
    """bf16 autocast on the CPU: forward, backward, optimiser step, validation and evaluation, for every method."""
    from tcurseg.engine.evaluator import predict_cases
    from tcurseg.data.lists import load_data_list

    trainer = _trainer(data_dir, tmp_path, f"method={method}", "amp=bf16", "train.epochs=1", "train.val_every=1")
    assert trainer.amp == torch.bfloat16 and not trainer.scaler.is_enabled()
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    summary = trainer.fit()
    record = summary["history"][0]
    assert torch.isfinite(torch.tensor(record["loss"])) and 0.0 <= record["val_dice"] <= 1.0
    moved = [n for n, p in trainer.model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert len(moved) == len(before)
    test = load_data_list(f"{data_dir}/datalist.json").get("test", [])
    rows = predict_cases(trainer.model, test, trainer.cfg.data, tmp_path / "eval", roi=[32, 32, 32], overlap=0.25,
                         device=torch.device("cpu"), dtype=trainer.amp, overlays=0, with_label=True)
    assert rows and all(0.0 <= row["dice"] <= 1.0 for row in rows)


def test_evaluation_autocasts_to_the_training_dtype(monkeypatch):
    from tcurseg.engine.inference import sliding_window_predict

    seen = []
    model = torch.nn.Conv3d(1, 2, 1)
    model.register_forward_hook(lambda m, args, out: seen.append(out.dtype))
    logits = sliding_window_predict(model, torch.randn(1, 1, 8, 8, 8), [8, 8, 8], dtype=torch.bfloat16)
    assert seen == [torch.bfloat16] and logits.dtype == torch.float32
    seen.clear()
    sliding_window_predict(model, torch.randn(1, 1, 8, 8, 8), [8, 8, 8], dtype=None)
    assert seen == [torch.float32]


def test_resume_across_amp_modes_starts_a_fresh_loss_scale(data_dir, tmp_path, caplog):
    first = _trainer(data_dir, tmp_path, "method=tcurlora", "train.epochs=1")
    first.fit()  # a disabled GradScaler (fp32 / bf16): its state is empty
    second = _trainer(data_dir, tmp_path, "method=tcurlora", "train.epochs=1")
    second.scaler = torch.amp.GradScaler("cpu", enabled=True)  # as an fp16 run on a GPU
    with caplog.at_level(logging.INFO, logger="tcurseg.engine.trainer"):
        second.resume()
    assert second.start_epoch == 1 and second.scaler.is_enabled()
    assert "loss scale starts afresh" in caplog.text
