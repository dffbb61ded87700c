"""``python -m tcurseg.export``: the fine-tuned network with its adapter merged as plain MONAI weights, and as a MONAI
bundle whose inference, run by MONAI's own bundle runner, predicts what ``tcurseg.predict`` predicts."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from rounding import counted_forward, output_bound, sum_bound

from tcurseg import peft
from tcurseg.engine.runconfig import stored_config
from tcurseg.engine.trainer import build_model
from tcurseg.export import export, plain_network
from tcurseg.paths import conf_dir

pytestmark = pytest.mark.e2e

TINY = ["model.img_size=[32,32,32]", "model.hidden_size=48", "model.mlp_dim=96", "model.num_heads=4",
        "model.feature_size=8", "pretrained=none", "device=cpu", "eval.overlays=0"]


def _compose(name: str, *overrides: str):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        return compose(config_name=name, overrides=list(overrides))


def _fake_run(tmp_path: Path, method: str) -> tuple[Path, torch.nn.Module]:
    """A run folder whose model_best.pt holds a tiny adapted UNETR with a non-zero adapter update."""
    cfg = _compose("config", "+experiment=demo", f"method={method}", *TINY)
    torch.manual_seed(0)
    model = build_model(cfg, load_base=False)
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for name, p in model.named_parameters():
            if p.requires_grad and not name.startswith(("encoder", "decoder", "out")):
                p.add_(0.3 * (p.abs().mean().item() or 1.0) * torch.randn(p.shape, generator=g))
    run = tmp_path / f"run_{method}"
    run.mkdir()
    torch.save({"model": model.state_dict(), "config": stored_config(cfg)}, run / "model_best.pt")
    return run, model


def assert_exported_merge(state: dict, model: torch.nn.Module, run_cfg: DictConfig, base: dict) -> int:
    """``state`` (an exported plain MONAI state dict) holds ``model``'s weights with its adapter merged, W0 + dW: each
    tensor within float32's rounding of the merge (a sum over at most the adapter's tensors, of the size of W0 and dW)
    of the merge computed in float64; and MONAI's network with the float64 weights computes what the adapted model
    computes, up to float64 rounding (``rounding.py``). ``base`` holds the tensors before training, under plain or
    wrapped (``base_layer``) keys; returns how many exported tensors differ from them."""
    model64 = copy.deepcopy(model).double()
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        exact = plain_network(model64, run_cfg)
    finally:
        torch.set_default_dtype(default)
    assert state.keys() == exact.state_dict().keys()
    n_adapter = sum(t.numel() for t in peft.adapter_state(model64)[0].values())
    changed = 0
    for key, value in exact.state_dict().items():
        assert value.dtype == torch.float64 and state[key].dtype == torch.float32
        before = _base_tensor(base, key).double()
        scale = value.abs().max().item() + (value - before).abs().max().item()
        bound = torch.finfo(torch.float32).eps * value.abs() + sum_bound(n_adapter, scale, torch.float32)
        assert ((state[key].double() - value).abs() <= bound).all(), key
        changed += not torch.equal(state[key].double(), before)

    x = torch.randn(1, 1, *run_cfg.model.img_size, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        y, n_terms = counted_forward(model64.eval(), x)
        assert (y - base_output(base, run_cfg, x)).abs().max().item() > 1e-3  # the update changes the output
        assert (exact.eval()(x) - y).abs().max().item() <= output_bound(n_terms, y)
    return changed


def base_output(base: dict, run_cfg: DictConfig, x: torch.Tensor) -> torch.Tensor:
    """The output of the network with the tensors of ``base`` (float64)."""
    from tcurseg.engine.trainer import model_config
    from tcurseg.models import build_network

    network = build_network(model_config(run_cfg))
    network.load_state_dict({k: _base_tensor(base, k) for k in network.state_dict()})
    with torch.no_grad():
        return network.double().eval()(x)


def _base_tensor(base: dict, key: str) -> torch.Tensor:
    """The tensor of ``base`` under a plain MONAI key (HF peft wraps a layer's own weight as ``base_layer``)."""
    parent, _, leaf = key.rpartition(".")
    return base[key] if key in base else base[f"{parent}.base_layer.{leaf}"]


@pytest.mark.parametrize("method", ["tcurlora", "lora"])
def test_state_dict_is_plain_monai_and_merged(tmp_path, method):
    run, model = _fake_run(tmp_path, method)
    out = export(OmegaConf.create({"run": str(run), "checkpoint": "best", "out": str(tmp_path / "w.pt"),
                                   "format": "state_dict"}))
    from monai.networks.nets import UNETR

    plain = UNETR(in_channels=1, out_channels=2, img_size=(32, 32, 32), feature_size=8, hidden_size=48, mlp_dim=96,
                  num_heads=4, qkv_bias=False)
    state = torch.load(out, weights_only=True)
    assert state.keys() == plain.state_dict().keys()          # nothing of tcurseg or peft inside
    plain.load_state_dict(state)

    run_cfg = OmegaConf.create(torch.load(run / "model_best.pt", weights_only=True)["config"])
    torch.manual_seed(0)
    base = build_model(run_cfg, load_base=False).state_dict()  # the fake run's model before its update
    # qkv, out_proj, linear1, linear2 of 12 blocks hold their update, the rest is as it was
    assert assert_exported_merge(state, model, run_cfg, base) == 48


def test_bundle_runs_in_monai_and_predicts_what_tcurseg_predicts(tmp_path):
    run, _ = _fake_run(tmp_path, "tcurlora")
    bundle = export(OmegaConf.create({"run": str(run), "checkpoint": "best", "out": str(tmp_path / "bundle"),
                                      "format": "bundle"}))
    assert {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} == {
        "configs/inference.json", "configs/metadata.json", "models/model.pt"}

    images = tmp_path / "images"
    images.mkdir()
    affine = np.diag([-1.5, 1.5, 1.5, 1.0])                    # LAS, as the demo's scans
    volume = np.random.default_rng(0).normal(100, 20, (40, 36, 44)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, affine), images / "case1.nii.gz")

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    proc = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file",
                           str(bundle / "configs" / "inference.json"), "--bundle_root", str(bundle),
                           "--dataset_dir", str(images)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    monai_pred = nib.load(bundle / "eval" / "case1_seg.nii.gz")

    from tcurseg.predict import predict

    predict(_compose("predict", f"run={run}", f"input={images}", f"out={tmp_path / 'pred'}", "device=cpu",
                     "eval.overlays=0", "eval.mirror_axes=[]"))  # the bundle does not mirror (the demo's run does)
    ours = nib.load(tmp_path / "pred" / "case1.nii.gz")
    assert monai_pred.shape == ours.shape == (40, 36, 44)
    np.testing.assert_allclose(monai_pred.affine, ours.affine, atol=1e-5)
    a, b = np.asarray(monai_pred.dataobj), np.asarray(ours.dataobj)
    assert 0 < (b == 1).sum() < b.size                          # a non-trivial segmentation
    assert (a == b).mean() > 0.999


@pytest.mark.parametrize("keep", [{"hippocampus": 2}, {"WT": 1, "ET": 1}])
def test_bundle_keeps_the_components_tcurseg_keeps(keep):
    from monai.transforms import KeepLargestConnectedComponentd

    from tcurseg.engine.postprocess import keep_largest_components
    from tcurseg.export import inference_config

    data = "synth_hippo" if "hippocampus" in keep else "synth_tumor"
    cfg = _compose("config", "+experiment=demo", f"data={data}", *TINY)
    cfg.eval.keep_components = keep
    steps = [t for t in inference_config(cfg)["postprocessing"]["transforms"]
             if t["_target_"] == "KeepLargestConnectedComponentd"]
    assert len(steps) == len(keep)
    values = [0, 1] if data == "synth_hippo" else [0, 1, 2, 4]
    rng = np.random.default_rng(0)
    classes = (rng.random((24, 24, 24)) < 0.02) * rng.integers(1, len(values), (24, 24, 24))  # many islands
    classes[2:9, 2:9, 2:9] = len(values) - 1
    classes[14:20, 14:20, 14:20] = 1
    pred = {"pred": torch.tensor(classes[None])}  # a copy: MONAI edits in place
    for step in steps:
        pred = KeepLargestConnectedComponentd(**{k: v for k, v in step.items() if k != "_target_"})(pred)
    ours = keep_largest_components(np.asarray(values)[classes], dict(cfg.data.regions), keep)
    np.testing.assert_array_equal(np.asarray(values)[np.asarray(pred["pred"][0])], ours)
    assert (ours != np.asarray(values)[classes]).sum() > 100  # the islands were removed
