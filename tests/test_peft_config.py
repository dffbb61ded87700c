"""The typed method configs: what :func:`tcurseg.peft.parse_config` builds from a plain dict, its errors, the dict an
adapter records, and every method config shipped in conf/method."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from tcurseg.engine.trainer import method_config
from tcurseg.models import build_unetr
from tcurseg.peft import (
    METHODS,
    VIT_GROUPS,
    AdapterConfig,
    CURLoRAConfig,
    LoRAConfig,
    LoRAPTConfig,
    TCURLoRAConfig,
    adapter_state,
    apply,
    parse_config,
)

CONF = Path(__file__).resolve().parents[1] / "conf"
TINY = {"in_channels": 1, "out_channels": 2, "img_size": [32, 32, 32], "feature_size": 8, "hidden_size": 32,
        "mlp_dim": 64, "num_heads": 2}


def test_parse_builds_each_method_config_with_its_defaults():
    assert parse_config({"name": "tcurlora", "rank": 8}) == TCURLoRAConfig(
        rank=8, selection="top_norm", seed=0, groups=VIT_GROUPS, trainable_modules=[])
    assert parse_config({"name": "dora", "rank": 4, "alpha": 8}) == LoRAConfig(rank=4, alpha=8)
    assert parse_config({"name": "lora", "rank": 4}).alpha is None
    assert parse_config({"name": "curlora", "rank": 4, "seed": 3}) == CURLoRAConfig(rank=4, seed=3)
    assert parse_config({"name": "lorapt", "rank": 1, "trainable_modules": ["out"]}) == LoRAPTConfig(
        rank=1, trainable_modules=["out"])
    assert type(parse_config({"name": "full"})) is AdapterConfig
    assert parse_config({"name": "full"}).groups is not VIT_GROUPS  # a copy: nothing shares the module's list


def test_options_of_other_methods_are_ignored():
    """One dict serves every method of a comparison (rank for decoder_only, alpha for tCURLoRA)."""
    assert parse_config({"name": "decoder_only", "rank": 8}) == AdapterConfig()
    assert parse_config({"name": "tcurlora", "rank": 8, "alpha": 8}) == TCURLoRAConfig(rank=8)


@pytest.mark.parametrize(("cfg", "message"), [
    ({"name": "tcurlora", "rank": 8, "rnak": 4}, r"unknown option 'rnak' of method tcurlora; its options: .*selection"),
    ({"name": "tcurlora"}, "method tcurlora needs the option rank"),
    ({"name": "tcurlora", "rank": "8"}, "method tcurlora: option rank='8' must be int"),
    ({"name": "lorapt", "rank": 8.0}, "option rank=8.0 must be int"),
    ({"name": "curlora", "rank": 8, "seed": True}, "option seed=True must be int"),
    ({"name": "tcurlora", "rank": 8, "selection": "random"},
     "option selection='random' must be one of 'top_norm', 'inverse_probability'"),
    ({"name": "lora", "rank": 8, "alpha": "8"}, r"option alpha='8' must be float \| None"),
    ({"name": "full", "groups": {"name": "attn"}}, r"option groups=.* must be list\[dict\]"),
    ({"name": "decoder_only", "trainable_modules": "out"}, r"option trainable_modules='out' must be list\[str\]"),
    ({"name": "qlora", "rank": 8}, "unknown method 'qlora'"),
])
def test_one_clear_error_per_bad_option(cfg, message):
    with pytest.raises(ValueError, match=message):
        parse_config(cfg)


def test_apply_records_the_dict_it_received_with_groups_and_modules_filled_in():
    torch.manual_seed(0)
    model = apply(build_unetr(TINY), {"name": "tcurlora", "rank": 2, "trainable_modules": ["out"]})
    _, meta = adapter_state(model)
    assert meta["config"] == {"name": "tcurlora", "rank": 2, "trainable_modules": ["out"], "groups": VIT_GROUPS}
    assert list(meta["config"]) == ["name", "rank", "trainable_modules", "groups"]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_config_of_conf_parses(method):
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(config_name="config", overrides=[f"method={method}"])
    config = parse_config(method_config(cfg))
    assert type(config) is METHODS[method].config and config.trainable_modules
