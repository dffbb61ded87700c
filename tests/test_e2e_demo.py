"""``+experiment=demo`` through the real entry point, with its automatic pretraining: the ``pretrained`` file is
missing, so ``pretrain_recipe`` trains first (a tiny copy of ``demo_pretrain``, found through ``hydra.searchpath``
as a user's own experiments are), then the fine-tuning loads that run's best weights, trains and evaluates; a second
launch finds the finished pretraining and does not repeat it."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from e2e_support import MODEL, REPO, TIMEOUT, data_args, module_cmd, subprocess_env

pytestmark = pytest.mark.e2e


def _tiny_pretrain(conf: Path, out: Path, data: Path) -> None:
    (conf / "experiment").mkdir(parents=True)
    (conf / "experiment" / "tiny_pretrain.yaml").write_text(textwrap.dedent(f"""\
        # @package _global_
        defaults:
          - override /model: unetr_small
          - override /data: synth_tumor
          - override /method: full
        run_name: tiny_pretrain
        output_dir: {out}
        model: {{img_size: [32, 32, 32], hidden_size: 48, mlp_dim: 96, num_heads: 4, feature_size: 8}}
        data:
          num_samples: 1
          data_list: {data}/datalist.json
          synth: {{out_dir: {data}, n_subjects: 5, splits: [0.6, 0.2, 0.2]}}
        optim: {{lr: 1.0e-2, warmup_epochs: 0}}
        train: {{epochs: 2, batch_size: 2, val_every: 1, ckpt_every: 1, num_workers: 0, cache_rate: 1.0}}
        eval: {{overlays: 0}}
        """))


def test_the_demo_pretrains_first_then_fine_tunes_from_that_run(tmp_path):
    conf, pretrain = tmp_path / "conf", tmp_path / "pretrain"
    _tiny_pretrain(conf, pretrain, tmp_path / "tumor")
    command = module_cmd("train", "+experiment=demo", f"hydra.searchpath=[file://{conf}]",
                         "pretrain_recipe=tiny_pretrain", f"pretrained={pretrain}/model_best.pt", *MODEL,
                         *data_args(tmp_path / "hippo"), "train.epochs=2", "train.val_every=1", "train.num_workers=0",
                         "train.cache_rate=1.0", "eval.overlays=0", "device=cpu", f"output_dir={tmp_path / 'demo'}")
    first = subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert first.returncode == 0, first.stderr[-4000:]
    assert (f"no pretrained weights at {pretrain}/model_best.pt: running +experiment=tiny_pretrain first"
            in first.stdout + first.stderr)
    pretrained = json.loads((pretrain / "summary.json").read_text())
    assert pretrained["method"] == "full" and pretrained["epochs_run"] == 2 and "TC" in pretrained["test"]
    demo = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert demo["method"] == "tcurlora" and demo["epochs_run"] == 2
    assert 0.0 <= demo["test"]["hippocampus"]["dice_mean"] <= 1.0
    log = (tmp_path / "demo" / "train.log").read_text()
    loaded = f"pretrained weights: pretrained {pretrain}/model_best.pt: loaded "
    assert loaded in log and "encoder: 137/137 tensors" in log.split(loaded, 1)[1].split("\n", 1)[0]
    again = subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "running +experiment=tiny_pretrain first" not in again.stdout + again.stderr
    assert json.loads((pretrain / "summary.json").read_text()) == pretrained
