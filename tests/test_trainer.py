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
        "model.feature_size=8", "pretrained=null", "pretrain_recipe=null", "device=cpu"]


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
