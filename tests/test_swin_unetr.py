"""SwinUNETR beside UNETR: the factory and its validation, ``model.name`` dispatch, the per-stage adapter groups of
``conf/model/swin_unetr*.yaml``, parameter counts of the full-size network on the meta device, the self-supervised
``model_swinvit.pt`` layouts, all eight methods on the small preset, and two training steps of tCURLoRA.

Inputs are 32 x 32 x 64 (the model) or 32^3 (the encoder alone): SwinUNETR takes no ``img_size``, and 32 x 32 x 64 is
the smallest input whose bottleneck (input / 32) the instance norm accepts."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch.nn import functional as F

from tcurseg.models import (
    build_network,
    build_unetr,
    cnn_presets,
    encoder_prefix_of,
    load_pretrained,
    require_complete_encoder,
    resolve_cnn_modules,
)
from tcurseg.models.swin_unetr import ADAPTER_GROUPS, build_swin_unetr
from tcurseg.peft import apply, find_groups, trainable_report
from tcurseg.tensor import num_slices

CONF = Path(__file__).resolve().parents[1] / "conf"
SMALL = OmegaConf.to_container(OmegaConf.load(CONF / "model" / "swin_unetr_small.yaml"), resolve=True)
FULL = OmegaConf.to_container(OmegaConf.load(CONF / "model" / "swin_unetr.yaml"), resolve=True)
CHANNELS = {"in_channels": 1, "out_channels": 2}
DEFAULT = cnn_presets("swin_unetr")["default"]
PAPER = cnn_presets("swin_unetr")["paper"]
ALL_METHODS = ["full", "decoder_only", "lora", "dora", "pissa", "curlora", "lorapt", "tcurlora"]
RANK = 4
INPUT = (32, 32, 64)
"""The smallest input of the whole model."""


def small(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network({**SMALL, **CHANNELS})


def randn(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def count(model: torch.nn.Module, prefixes: list[str]) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if any(n.startswith(q + ".") for q in prefixes))


# -------------------------------------------------------------------------------------------------- factory, groups
def test_small_preset_modules_and_stage_groups():
    model = small()
    assert model.swinViT.patch_embed.proj.out_channels == 12
    assert [n for n, _ in model.named_children()] == ["swinViT", *DEFAULT]
    assert SMALL["adapter_groups"] == FULL["adapter_groups"] == ADAPTER_GROUPS
    groups = find_groups(model, SMALL["adapter_groups"])
    expected = []
    for stage, depth in enumerate(SMALL["depths"]):
        c = 12 << stage
        expected += [(f"s{stage + 1}_attn", 4 * depth, (c, c)), (f"s{stage + 1}_mlp1", depth, (4 * c, c)),
                     (f"s{stage + 1}_mlp2", depth, (c, 4 * c))]
    assert [(g.name, g.size, g.shape) for g in groups] == expected
    attn = groups[0].modules  # per block: q, k, v (the qkv rows in 3 blocks), then proj
    assert [(s.name, s.positions) for s in attn] == [
        ("swinViT.layers1.0.blocks.0.attn.qkv", [0, 1, 2]), ("swinViT.layers1.0.blocks.0.attn.proj", [3]),
        ("swinViT.layers1.0.blocks.1.attn.qkv", [4, 5, 6]), ("swinViT.layers1.0.blocks.1.attn.proj", [7])]
    assert torch.equal(groups[0].stacked_weight()[1], model.swinViT.layers1[0].blocks[0].attn.qkv.weight[12:24])


def test_build_validation_and_dispatch():
    for bad, message in [({"img_size": [96, 96, 80]}, r"\[96, 96, 80\] must be divisible by 32"),
                         ({"img_size": [32, 32, 32]}, "bottleneck .* single voxel"),
                         ({"img_size": [64, 64]}, "must have 3 entries"),
                         ({"feature_size": 16}, "feature_size 16 must be a positive multiple of 12"),
                         ({"num_heads": [3, 6, 12, 10]}, r"stage 4 has 96 channels .*num_heads\[3\] = 10"),
                         ({"depths": [2, 2, 2]}, "model.depths .* must have 4 entries")]:
        with pytest.raises(ValueError, match=message):
            build_swin_unetr({**SMALL, **CHANNELS, **bad})
    with pytest.raises(ValueError, match="model.in_channels"):
        build_swin_unetr({**SMALL, "out_channels": 2})
    with pytest.raises(ValueError, match="unknown model.name 'vnet'"):
        build_network({**SMALL, **CHANNELS, "name": "vnet"})

    unetr_cfg = {**CHANNELS, "img_size": [32, 32, 32], "feature_size": 8, "hidden_size": 32, "mlp_dim": 64,
                 "num_heads": 2}
    unetr = build_network(unetr_cfg)  # no name: a UNETR, as before SwinUNETR
    assert type(unetr) is type(build_unetr(unetr_cfg)) and encoder_prefix_of(unetr) == "vit"
    assert encoder_prefix_of(small()) == "swinViT"
    assert resolve_cnn_modules("paper", "swin_unetr") == PAPER == [f"decoder{i}" for i in (5, 4, 3, 2, 1)]
    assert resolve_cnn_modules("paper") == cnn_presets("unetr")["paper"] == resolve_cnn_modules("paper", "unetr")
    assert resolve_cnn_modules(["out"], "swin_unetr") == ["out"]
    with pytest.raises(ValueError, match=r"unknown CNN preset 'nope'; choose one of \['default', 'paper'\]"):
        resolve_cnn_modules("nope", "swin_unetr")


# ------------------------------------------------------------------------------------------- full-size counts
@pytest.fixture(scope="module")
def meta_swin() -> torch.nn.Module:
    """SwinUNETR as in ``conf/model/swin_unetr.yaml`` (feature 48, depths 2/2/2/2) on the meta device (MONAI's
    constructor calls ``.item()``, so it is built on the CPU and moved)."""
    return build_network({**FULL, **CHANNELS}).to("meta")


def test_full_size_counts_on_meta_device(meta_swin):
    r, depth = 8, 2
    channels = [48 << s for s in range(4)]
    total = sum(p.numel() for p in meta_swin.parameters())
    assert total == 62_186_708
    assert count(meta_swin, ["swinViT"]) == 8_062_002
    assert count(meta_swin, DEFAULT) == 54_124_706 == total - 8_062_002
    assert count(meta_swin, PAPER) == 19_597_824
    assert meta_swin.swinViT.layers4[0].blocks[1].mlp.linear2.weight.shape == (384, 1536)

    def report(method: str, preset: list[str]) -> dict:
        return trainable_report(apply(copy.deepcopy(meta_swin), {"name": method, "rank": r, "groups": FULL[
            "adapter_groups"], "trainable_modules": preset}))

    # tCURLoRA: L r^2 per group, L = 4 * depth (attn), depth (mlp1), depth (mlp2) per stage
    tcur = sum(L * r * r for _ in channels for L in (4 * depth, depth, depth))
    for preset in (DEFAULT, PAPER):
        rep = report("tcurlora", preset)
        assert rep["adapter"] == tcur == 3_072
        assert rep["decoder"] == count(meta_swin, preset)
    assert report("tcurlora", PAPER)["trainable"] == 19_600_896

    # LoRA: r (m + n) per adapted matrix, qkv one 3C x C matrix: per block r (4C + 2C + 5C + 5C)
    lora = sum(depth * r * ((c + 3 * c) + (c + c) + (c + 4 * c) + (4 * c + c)) for c in channels)
    rep = report("lora", DEFAULT)
    assert rep["adapter"] == lora == 184_320 and rep["decoder"] == 54_124_706
    assert report("lora", PAPER)["trainable"] == lora + 19_597_824

    # LoRA-PT: per group L r (m + n) + K r (the t-SVD factors and the half-spectrum singular values)
    shapes = [(L, m, n) for c in channels for L, m, n in ((4 * depth, c, c), (depth, 4 * c, c), (depth, c, 4 * c))]
    assert report("lorapt", DEFAULT)["adapter"] == sum(L * r * (m + n) + num_slices(L) * r for L, m, n in shapes)

    for preset in (DEFAULT, PAPER):
        rep = report("full", preset)
        assert rep["trainable"] == rep["total"] == total
        assert report("decoder_only", preset)["trainable"] == count(meta_swin, preset)


# ---------------------------------------------------------------------------------------------- pretrained
def _swinvit_file(source: torch.nn.Module, path: Path, layout: str) -> dict[str, torch.Tensor]:
    """``source.swinViT``'s state dict saved as MONAI research-contributions' ``model_swinvit.pt``: ``{"state_dict"}``
    with ``module.``, the keys bare (``module.layers1...``, MLP ``fc1`` / ``fc2`` as ``SwinUNETR.load_from`` reads
    them), under ``swin_vit.`` or under ``swinViT.``, plus the self-supervised heads (not in a SwinUNETR)."""
    state = source.swinViT.state_dict()
    if layout == "bare_fc":
        state = {k.replace(".mlp.linear1.", ".mlp.fc1.").replace(".mlp.linear2.", ".mlp.fc2."): v
                 for k, v in state.items()}
    prefix = {"bare_fc": "module.", "swin_vit": "module.swin_vit.", "swinViT": "module.swinViT."}[layout]
    saved = {prefix + k: v for k, v in state.items()}
    saved["module.rotation_head.weight"] = torch.zeros(4, 768)
    saved["module.contrastive_head.weight"] = torch.zeros(512, 768)
    torch.save({"state_dict": saved}, path)
    return saved


@pytest.mark.parametrize("layout", ["bare_fc", "swin_vit", "swinViT"])
def test_model_swinvit_layouts_load_the_whole_encoder(tmp_path, layout):
    source = small(seed=0)
    saved = _swinvit_file(source, tmp_path / "model_swinvit.pt", layout)
    assert any(".mlp.fc1." in k for k in saved) == (layout == "bare_fc")
    target = small(seed=1)
    cnn_before = {k: v.clone() for k, v in target.state_dict().items() if not k.startswith("swinViT.")}
    report = load_pretrained(target, tmp_path / "model_swinvit.pt")

    encoder = [k for k in target.state_dict() if k.startswith("swinViT.")]
    required = [k for k in encoder if "relative_position_index" not in k]  # a constant of the window size
    assert report.encoder_prefix == "swinViT."
    assert report.encoder_loaded == report.encoder_total == len(required) == 118
    assert sorted(report.loaded) == sorted(encoder)
    assert report.missing == sorted(cnn_before)
    assert report.unexpected == ["contrastive_head.weight", "rotation_head.weight"]
    assert f"encoder: {len(required)}/{len(required)} tensors" in report.summary()
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in target.state_dict().items() if k in encoder)
    assert all(torch.equal(v, target.state_dict()[k]) for k, v in cnn_before.items())
    require_complete_encoder(report, "tcurlora")


def test_incomplete_swin_encoder_is_refused(tmp_path):
    state = {k: v for k, v in small().state_dict().items() if "layers4.0.blocks.1.mlp" not in k}
    torch.save(state, tmp_path / "partial.pt")
    report = load_pretrained(small(seed=1), tmp_path / "partial.pt")
    assert report.encoder_loaded == report.encoder_total - 4
    with pytest.raises(ValueError, match=r"loaded in part \(114/118 tensors; missing e\.g\. swinViT\.layers4\.0\."
                                         r"blocks\.1\.mlp\.linear1\.bias.*method=lora"):
        require_complete_encoder(report, "lora")
    require_complete_encoder(report, "full")


# ------------------------------------------------------------------------------------------------- methods
@pytest.fixture(scope="module")
def encoder_reference() -> tuple[torch.nn.Module, torch.Tensor, list[torch.Tensor]]:
    """(the small base model, a 32^3 input, the base encoder's five feature maps)."""
    base, x = small(), randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        return base, x, base.swinViT(x)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_every_method_runs_on_the_small_preset(method, encoder_reference):
    """Applied with the yaml groups and the default preset: the encoder's output is unchanged at init, and every
    trainable encoder-side parameter (the adapter; the whole encoder for ``full``) gets a gradient."""
    base, x, reference = encoder_reference
    model = apply(copy.deepcopy(base), {"name": method, "rank": RANK, "groups": SMALL["adapter_groups"],
                                        "trainable_modules": DEFAULT})
    rep = trainable_report(model)
    assert rep["decoder"] == count(base, DEFAULT)
    assert (rep["adapter"] == 0) == (method == "decoder_only")
    assert (rep["adapter"] == count(base, ["swinViT"])) == (method == "full")
    outputs = model.swinViT(x)
    for out, ref in zip(outputs, reference):
        assert (out - ref).abs().max().item() < 1e-4, method
    if method == "decoder_only":  # nothing trains in the encoder
        return
    sum(out.square().mean() for out in outputs).backward()
    encoder_side = {n: p for n, p in model.named_parameters()
                    if p.requires_grad and not any(n.startswith(q + ".") for q in DEFAULT)}
    assert sum(p.numel() for p in encoder_side.values()) == rep["adapter"]
    no_grad = [n for n, p in encoder_side.items() if p.grad is None]
    assert no_grad == [], method


def test_tiny_swin_unetr_trains_end_to_end():
    """tCURLoRA on the small preset: two Adam steps of Dice + CE on random data; every trainable parameter (cores and
    the default CNN path) gets a gradient, every group's cores move, the frozen encoder stays."""
    model = apply(small(), {"name": "tcurlora", "rank": RANK, "groups": SMALL["adapter_groups"],
                            "trainable_modules": DEFAULT})
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    cores = {n: p.detach().clone() for n, p in trainable.items() if n.startswith("adapter_groups.")}
    assert {n.split(".")[1] for n in cores} == {g["name"] for g in ADAPTER_GROUPS}
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if n.startswith("swinViT.")}
    assert not any(model.get_parameter(n).requires_grad for n in frozen)

    x, labels = randn(1, 1, *INPUT), (randn(1, *INPUT, seed=2) > 0.5).long()
    opt = torch.optim.Adam(trainable.values(), lr=1e-2)
    model.train()
    losses = []
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        logits = model(x)
        prob, onehot = logits.softmax(1), F.one_hot(labels, 2).movedim(-1, 1).float()
        dice = 1 - (2 * (prob * onehot).sum((2, 3, 4)) + 1e-5) / (prob.sum((2, 3, 4)) + onehot.sum((2, 3, 4)) + 1e-5)
        loss = dice.mean() + F.cross_entropy(logits, labels)
        loss.backward()
        assert [n for n, p in trainable.items() if p.grad is None] == []
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    moved = {n.split(".")[1] for n, before in cores.items()
             if before.numel() and not torch.equal(model.get_parameter(n).detach(), before)}
    assert moved == {g["name"] for g in ADAPTER_GROUPS}
    assert all(torch.equal(model.get_parameter(n).detach(), v) for n, v in frozen.items())


def test_training_config_builds_swin_unetr_with_model_swinvit_weights(tmp_path):
    """``model=swin_unetr_small`` through the trainer's ``build_model``: the SwinUNETR presets and groups, the
    self-supervised encoder file loaded completely under an encoder adapter, and the CNN modules the file does not hold
    (all of them) trained although the ``paper`` preset lists the decoders only."""
    from hydra import compose, initialize_config_dir

    from tcurseg.engine.trainer import build_model, method_config

    source = small()
    _swinvit_file(source, tmp_path / "model_swinvit.pt", "bare_fc")
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(config_name="config", overrides=["model=swin_unetr_small", "method=tcurlora",
                                                       "method.cnn=paper", f"pretrained={tmp_path}/model_swinvit.pt"])
    assert method_config(cfg)["trainable_modules"] == PAPER
    model = build_model(cfg)
    assert set(model.adapter_groups) == {g["name"] for g in ADAPTER_GROUPS}
    rep = trainable_report(model)
    assert rep["adapter"] == sum(L * 8 * 8 for _ in range(4) for L in (8, 2, 2))  # method.rank 8
    assert model.tcurseg_adapter.config["trainable_modules"] == PAPER + ["encoder1", "encoder10", "encoder2",
                                                                         "encoder3", "encoder4", "out"]
    assert rep["decoder"] == count(source, DEFAULT)
    weight = model.swinViT.layers2[0].blocks[1].mlp.linear1.weight
    assert torch.equal(weight, source.swinViT.layers2[0].blocks[1].mlp.linear1.weight)


def test_demo_swin_experiment_trains_and_evaluates_through_the_entry_point(tmp_path):
    """``+experiment=demo_swin`` (what ``scripts/compare.py --model swin_unetr`` runs) through ``tcurseg.train.run``
    on 5 tiny synthetic subjects, roi 64 x 32 x 32, 1 epoch: tCURLoRA on the 12 Swin groups, best checkpoint and test
    metrics."""
    import json

    from e2e_support import data_args, make_data
    from hydra import compose, initialize_config_dir

    from tcurseg.train import run

    data_dir = make_data(tmp_path)
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(config_name="config", overrides=[
            "+experiment=demo_swin", *data_args(data_dir), "model.img_size=[64,32,32]", "method.rank=4",
            "pretrained=none", "pretrain_recipe=null", "train.epochs=1", "train.val_every=1", "train.ckpt_every=1",
            "train.batch_size=1", "train.num_workers=0", "data.num_samples=1", "device=cpu", "eval.overlays=0",
            f"output_dir={tmp_path / 'run'}"])
    summary = run(cfg, tmp_path / "run")
    assert summary["params"]["method"] == "tcurlora"
    assert summary["params"]["adapter"] == sum(L * 4 * 4 for _ in range(4) for L in (8, 2, 2)) == 768
    assert (tmp_path / "run" / "model_best.pt").is_file()
    test = json.loads((data_dir / "datalist.json").read_text())["test"]
    assert summary["test"]["hippocampus"]["n_cases"] == len(test) == 1
    assert 0.0 <= summary["test"]["hippocampus"]["dice_mean"] <= 1.0
