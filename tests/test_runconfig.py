"""A run folder is resumed only by the same training configuration; stored paths are absolute; files are 0644;
the help names every experiment."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from tcurseg.engine.checkpoint import save_atomic
from tcurseg.engine.runconfig import check_same_run, differences, fresh_dir, stored_config, training_config

CONF = str(Path(__file__).resolve().parents[1] / "conf")


def _cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        return compose(config_name="config", overrides=["+experiment=demo", *overrides])


def test_training_config_ignores_what_does_not_change_the_weights():
    base = training_config(_cfg())
    same = training_config(_cfg("device=cpu", "train.num_workers=4", "eval.overlap=0.25", "resume=false",
                                "output_dir=/elsewhere", "train.ckpt_every=3", "evaluate_checkpoint=last"))
    assert base == same
    other = training_config(_cfg("seed=1", "optim.lr=0.02", "method.rank=4"))
    assert differences(base, other) == ["method.rank: 8 -> 4", "method.seed: 0 -> 1", "optim.lr: 0.01 -> 0.02",
                                        "seed: 0 -> 1"]
    assert base["pretrained"] == str(Path("outputs/demo_pretrain/model_best.pt").resolve())
    assert "method.name: tcurlora -> lora" in differences(base, training_config(_cfg("method=lora")))


def test_another_configuration_is_refused_in_one_line(tmp_path):
    base = training_config(_cfg())
    check_same_run(base, dict(base), tmp_path)
    with pytest.raises(ValueError) as err:
        check_same_run(base, training_config(_cfg("seed=1", "optim.lr=0.02")), tmp_path)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path) in message
    assert "optim.lr: 0.01 -> 0.02" in message and "seed: 0 -> 1" in message
    assert "resume=false starts a fresh folder, or choose another run_name" in message
    with pytest.raises(ValueError, match="without a recorded configuration"):
        check_same_run(None, base, tmp_path)


def test_fresh_dir_never_reuses_a_run(tmp_path):
    run = tmp_path / "demo"
    assert fresh_dir(run) == run
    (run / "checkpoints").mkdir(parents=True)
    assert fresh_dir(run) == tmp_path / "demo-2"
    (tmp_path / "demo-2").mkdir()
    (tmp_path / "demo-2" / "model.pt").write_bytes(b"x")
    assert fresh_dir(run) == tmp_path / "demo-3"


def test_stored_paths_are_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stored = stored_config(_cfg("output_dir=runs/a"))
    assert stored["output_dir"] == str(tmp_path / "runs" / "a")
    assert stored["data"]["data_list"] == str(tmp_path / "data" / "synth_hippo" / "datalist.json")
    assert stored["pretrained"] == str(tmp_path / "outputs" / "demo_pretrain" / "model_best.pt")
    assert stored["data"]["data_root"] is None


def test_saved_files_are_group_readable(tmp_path):
    old = os.umask(0o022)
    try:
        path = save_atomic({"a": 1}, tmp_path / "model.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_frozen_random_encoder_is_refused_unless_asked_for():
    from tcurseg.engine.runconfig import pretrained_weights

    with pytest.raises(ValueError, match=r"method=lora adapts a frozen encoder .* pretrained=none"):
        pretrained_weights(_cfg("method=lora", "pretrained=null"))
    with pytest.raises(ValueError, match="method=decoder_only"):
        pretrained_weights(_cfg("method=decoder_only", "pretrained=null"))
    assert pretrained_weights(_cfg("method=full", "pretrained=null")) is None
    assert pretrained_weights(_cfg("method=lora", "pretrained=none")) is None
    assert pretrained_weights(_cfg("method=lora", "pretrained=/w/model.pt")) == "/w/model.pt"
    assert training_config(_cfg("pretrained=none"))["pretrained"] == "none"


def test_config_mistakes_are_refused_in_one_line():
    from tcurseg.cli import check_config

    check_config(_cfg())
    for overrides, words in ((["train.epochs=0"], "train.epochs=0: train for at least 1 epoch"),
                             (["data.roi_size=[40,40,40]"], "data.roi_size [40, 40, 40] differs from model.img_size"),
                             (["+method.rnk=4"], "method tcurlora has no option rnk"),
                             (["head_init=zeros"], "head_init=zeros: expected one of random, zero"),
                             (["+eval.keep_components.WT=1"],
                              "eval.keep_components names ['WT'], not regions of the data"),
                             (["eval.keep_components.hippocampus=0"], "eval.keep_components.hippocampus must be >= 1"),
                             (["eval.mirror_axes=[3]"], "eval.mirror_axes=[3]: mirror along spatial axes 0, 1, 2"),
                             (["method.name=foo"], "unknown method 'foo'; choose one of ['curlora', 'decoder_only'")):
        with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")) as err:
            check_config(_cfg(*overrides))
        assert "\n" not in str(err.value)


def test_missing_value_and_ctrl_c_end_in_one_line(capsys, monkeypatch):
    from omegaconf import OmegaConf

    from tcurseg.cli import user_errors

    monkeypatch.delenv("TCURSEG_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info, user_errors():
        OmegaConf.create({"run": "???"}).run
    assert str(exit_info.value) == "tcurseg: error: missing value for run: give it on the command line (run=...)"
    with pytest.raises(SystemExit) as exit_info, user_errors():
        raise KeyboardInterrupt
    assert exit_info.value.code == 130
    assert capsys.readouterr().err.strip() == ("tcurseg: interrupted: run the same command again to resume from the "
                                               "newest checkpoint")


def test_a_caught_error_is_printed_once(tmp_path):
    """Through the real entry point: the console gets the error line once (not a log line and then the exit line)."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TCURSEG_DEBUG"}
    proc = subprocess.run([sys.executable, "-m", "tcurseg.train", "+experiment=demo", "train.epochs=0",
                           f"hydra.run.dir={tmp_path}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    console = proc.stdout + proc.stderr
    assert proc.returncode == 1
    assert console.count("train for at least 1 epoch") == 1, console
    assert console.strip() == "tcurseg: error: train.epochs=0: train for at least 1 epoch"


def test_help_lists_every_experiment():
    """`python -m tcurseg.train --help` names each `+experiment=` file, so a new experiment cannot go unlisted."""
    from omegaconf import OmegaConf

    template = OmegaConf.load(Path(CONF) / "config.yaml").hydra.help.template
    listed = {line.split()[0] for line in template.splitlines() if line.startswith("  ") and line.strip()}
    files = {p.stem for p in (Path(CONF) / "experiment").glob("*.yaml")}
    assert files and files <= listed, sorted(files - listed)


def test_an_unfinished_pretraining_is_resumed_not_fine_tuned_from(tmp_path, monkeypatch):
    """The demo's pretraining killed half-way leaves ``model_best.pt`` without ``summary.json``: the next
    ``+experiment=demo`` resumes the recipe first instead of fine-tuning from the half-trained weights; a finished
    one (or weights outside the recipe's folder) is used as it is."""
    from tcurseg import train

    monkeypatch.chdir(tmp_path)
    ran = []
    monkeypatch.setattr(train, "run", lambda cfg, run_dir: ran.append((cfg.run_name, run_dir)))
    folder = tmp_path / "outputs" / "demo_pretrain"
    folder.mkdir(parents=True)
    (folder / "model_best.pt").write_bytes(b"half-trained")
    with initialize_config_dir(config_dir=CONF, version_base=None):
        demo = compose(config_name="config", overrides=["+experiment=demo", "device=cpu"])
        train.pretrain_first(demo)
        assert ran == [("demo_pretrain", Path("outputs/demo_pretrain"))]
        (folder / "summary.json").write_text("{}")
        train.pretrain_first(demo)
        (folder / "summary.json").unlink()
        elsewhere = tmp_path / "mine.pt"
        elsewhere.write_bytes(b"weights")
        train.pretrain_first(compose(config_name="config", overrides=["+experiment=demo", f"pretrained={elsewhere}"]))
    assert len(ran) == 1
