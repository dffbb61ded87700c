"""The optimizer the training code builds holds exactly the parameters the report counts as trainable."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from tcurseg import peft
from tcurseg.data import synth
from tcurseg.engine.distributed import DistInfo
from tcurseg.engine.trainer import Trainer

CONF = str(Path(__file__).resolve().parents[1] / "conf")
TINY = ["model.img_size=[32,32,32]", "model.hidden_size=48", "model.mlp_dim=96", "model.num_heads=4",
        "model.feature_size=8", "pretrained=none", "pretrain_recipe=null", "device=cpu"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hippo")
    synth.ensure_generated("synth_hippo", out, 3, 0, *synth.PRESETS["synth_hippo"])
    return out


@pytest.mark.parametrize("method", ["tcurlora", "lora", "decoder_only"])
def test_optimizer_holds_exactly_the_reported_trainable_parameters(method, data_dir, tmp_path):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose(config_name="config", overrides=[
            *TINY, f"method={method}", f"data.data_list={data_dir}/datalist.json", f"output_dir={tmp_path}"])
    trainer = Trainer(cfg, tmp_path, DistInfo(), torch.device("cpu"))
    in_optimizer = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    trainable = [p for p in trainer.model.parameters() if p.requires_grad]
    assert {id(p) for p in in_optimizer} == {id(p) for p in trainable}
    assert len(in_optimizer) == len({id(p) for p in in_optimizer})
    report = peft.trainable_report(trainer.model)
    assert sum(p.numel() for p in in_optimizer) == report["trainable"] == report["adapter"] + report["decoder"]
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    adapter_names = [names[id(p)] for p in in_optimizer if not names[id(p)].startswith(
        tuple(m + "." for m in peft.adapter_info(trainer.model).config["trainable_modules"]))]
    if method == "tcurlora":
        assert sorted(adapter_names) == sorted(f"adapter_groups.{g}.dU.{part}" for g in ("attn", "mlp1", "mlp2")
                                               for part in ("real", "imag"))
        assert report["adapter"] == (48 + 12 + 12) * 8**2
    elif method == "lora":
        assert adapter_names and all(".lora_" in n for n in adapter_names)
    else:
        assert adapter_names == [] and report["adapter"] == 0
    assert not any(n.startswith("vit.") and p.requires_grad and "lora_" not in n
                   for n, p in trainer.model.named_parameters())


def _trainer(data_dir: Path, out: Path, *overrides: str) -> Trainer:
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose(config_name="config", overrides=[
            *TINY, f"data.data_list={data_dir}/datalist.json", f"output_dir={out}", *overrides])
    return Trainer(cfg, out, DistInfo(), torch.device("cpu"))


@pytest.mark.parametrize("method", ["tcurlora", "lora", "full"])
def test_per_group_learning_rates_reach_the_optimizer(method, data_dir, tmp_path):
    trainer = _trainer(data_dir, tmp_path, f"method={method}", "optim.lr=0.001", "optim.adapter_lr=0.02")
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    if method == "full":
        assert list(groups) == ["base"] and groups["base"]["lr"] == pytest.approx(0.001)
        return
    assert groups["adapter"]["lr"] == pytest.approx(0.02) and groups["base"]["lr"] == pytest.approx(0.001)
    adapter = sorted(names[id(p)] for p in groups["adapter"]["params"])
    base = [names[id(p)] for p in groups["base"]["params"]]
    marker = ".dU." if method == "tcurlora" else ".lora_"
    assert adapter and all(marker in n for n in adapter)
    assert base and not any(marker in n for n in base) and not any(n.startswith("vit.") for n in base)
    trainer = _trainer(data_dir, tmp_path / "same", f"method={method}", "optim.lr=0.001")  # adapter_lr null: lr
    assert all(g["lr"] == pytest.approx(0.001) for g in trainer.optimizer.param_groups)


def test_warmup_then_poly():
    from tcurseg.engine.optim import build_scheduler

    def factors(schedule: str, epochs: int = 10) -> list[float]:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
        scheduler = build_scheduler(optimizer, {"schedule": schedule, "power": 1.0, "warmup_epochs": 2}, epochs)
        rates = [optimizer.param_groups[0]["lr"]]
        for _ in range(epochs):
            optimizer.step()
            scheduler.step()
            rates.append(optimizer.param_groups[0]["lr"])
        return [rate / 2.0 for rate in rates]

    poly = factors("poly")
    assert poly[:4] == pytest.approx([1 / 3, 2 / 3, 1.0, 7 / 8]) and poly[9:] == pytest.approx([1 / 8, 0.0])
    constant = factors("constant")
    assert constant[:4] == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0]) and constant[-1] == 1.0
    with pytest.raises(ValueError, match="unknown schedule"):
        factors("cosine")


def test_best_checkpoint_and_early_stop(data_dir, tmp_path, monkeypatch):
    """Validation Dice 0.2, 0.5, 0.3, 0.4: model_best.pt holds epoch 2; patience 2 stops after epoch 4 of 6."""
    trainer = _trainer(data_dir, tmp_path, "method=tcurlora", "train.epochs=6", "train.val_every=1",
                       "train.patience=2", "train.ckpt_every=10", "data.num_samples=1")
    scores = iter([0.2, 0.5, 0.3, 0.4, 0.9, 0.9])
    monkeypatch.setattr(trainer, "validate", lambda: next(scores))
    snapshots = {}
    original = trainer.save_model

    def save_model(path, epoch, val_dice=None):
        snapshots[(path.name, epoch)] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        original(path, epoch, val_dice)

    monkeypatch.setattr(trainer, "save_model", save_model)
    summary = trainer.fit()
    assert summary["epochs_run"] == 4 and summary["stopped_early"] is True
    assert summary["best"] == {"epoch": 2, "val_dice": 0.5}
    best = torch.load(tmp_path / "model_best.pt", weights_only=False)
    last = torch.load(tmp_path / "model.pt", weights_only=False)
    assert (best["epoch"], best["val_dice"], last["epoch"]) == (2, 0.5, 4)
    key = "adapter_groups.attn.dU.real"
    assert torch.equal(best["model"][key], snapshots[("model_best.pt", 2)][key])
    assert not torch.equal(best["model"][key], last["model"][key])
    adapter, _ = peft.read_adapter(tmp_path / "adapter.safetensors")  # the shared adapter is the best epoch's
    assert torch.equal(adapter[key], best["model"][key])
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["ckpt_epoch0004.pt"]
    from tcurseg.engine.trainer import run_model_file

    assert run_model_file(tmp_path, "best").name == "model_best.pt"
    assert run_model_file(tmp_path, "last").name == "model.pt"
    assert run_model_file(tmp_path, 4) == tmp_path / "checkpoints" / "ckpt_epoch0004.pt"
    with pytest.raises(ValueError, match="best, last or an epoch"):
        run_model_file(tmp_path, "newest")


def test_reinitialised_head_trains_under_the_paper_preset(data_dir, tmp_path):
    """Pretrained on 4 classes, fine-tuned on 2: the fresh output head trains although `paper` lists decoder2-5 only."""
    from tcurseg.models import build_unetr

    source = build_unetr({"img_size": [32, 32, 32], "hidden_size": 48, "mlp_dim": 96, "num_heads": 4,
                          "feature_size": 8, "in_channels": 1, "out_channels": 4})
    torch.save(source.state_dict(), tmp_path / "pretrained.pt")
    overrides = ["method=tcurlora", "method.cnn=paper", f"pretrained={tmp_path / 'pretrained.pt'}"]
    trainer = _trainer(data_dir, tmp_path / "run", *overrides)
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert {"out.conv.conv.weight", "out.conv.conv.bias"} <= trainable
    assert not any(n.startswith(("encoder1.", "encoder2.")) for n in trainable)
    assert any(n.startswith("decoder2.") for n in trainable)
    loaded = trainer.model.state_dict()
    assert torch.equal(loaded["decoder2.transp_conv.conv.weight"], source.state_dict()["decoder2.transp_conv.conv.weight"])


def test_a_collapsed_pretrained_encoder_is_warned_about(tmp_path, caplog):
    """Adam's L2 weight decay drove the demo's pretrained ViT blocks to ~1e-12 once: say so when loading such weights."""
    from tcurseg.engine.trainer import warn_collapsed_encoder
    from tcurseg.models import build_unetr
    from tcurseg.peft import VIT_GROUPS

    model = build_unetr({"img_size": [32, 32, 32], "hidden_size": 48, "mlp_dim": 96, "num_heads": 4,
                         "feature_size": 8, "in_channels": 1, "out_channels": 2})
    assert warn_collapsed_encoder(model, VIT_GROUPS, "fresh") == []
    with torch.no_grad():
        for block in model.vit.blocks:
            block.mlp.linear1.weight.mul_(1e-9)
    with caplog.at_level("WARNING", logger="tcurseg.engine.trainer"):
        assert warn_collapsed_encoder(model, VIT_GROUPS, "w.pt") == ["mlp1"]
    assert "pretrained weights w.pt: the encoder matrices of group(s) mlp1 are near zero" in caplog.text
