"""The entry points around a trained run, each through ``python -m tcurseg.<module>`` in a subprocess, on the
session's one tiny trained run (``trained_run`` in ``conftest.py``; ``test_e2e.py`` checks the run itself):

  * ``evaluate`` of the run's test split reproduces the training's test evaluation; ``evaluate checkpoint=last
    split=validation``; ``evaluate data_list=OTHER.json``: each evaluation in a folder of its own that says what it
    evaluated, two data lists (sharing a case id) kept apart, a second list of the same file name numbered, ``out=``
    naming another evaluation's folder refused in one line;
  * ``evaluate adapter=... pretrained=<base>`` (the adapter route) reproduces the run's test Dice; on another base
    the adapter file is refused in one line;
  * ``predict`` from a data list and from a single file: the evaluation's prediction;
  * ``export`` (its config composed by the entry point): a MONAI bundle and a plain state dict that hold the merged
    weights.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from e2e_support import (
    MODEL,
    assert_clean_error,
    data_args,
    dice_by_case,
    foreground_dice,
    read_metrics,
    read_nifti,
    run_module,
)
from omegaconf import OmegaConf
from test_export import assert_exported_merge

pytestmark = pytest.mark.e2e


def _entries(data_dir: Path) -> dict:
    return json.loads((data_dir / "datalist.json").read_text())


def _other_list(path: Path, data_dir: Path, cases: dict[str, str]) -> Path:
    """A data list whose test split holds ``cases`` (id -> the subject whose files it names), absolute paths."""
    entries = [{"id": case, "image": str(data_dir / subject / f"{subject}_img.nii.gz"),
                "label": str(data_dir / subject / f"{subject}_mask.nii.gz")} for case, subject in cases.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"training": [], "validation": [], "test": entries}))
    return path


def test_checkpoint_last_on_the_validation_split(trained_run):
    run_dir, data_dir = trained_run.run_dir, trained_run.data_dir
    run_module("evaluate", f"run={run_dir}", "checkpoint=last", "split=validation", "device=cpu")
    folder = run_dir / "eval" / "validation-last"
    record = json.loads((folder / "evaluated.json").read_text())
    assert record == {"split": "validation", "data_list": str((data_dir / "datalist.json").resolve()),
                      "data_root": None, "weights": {"checkpoint": "last",
                                                     "file": str((run_dir / "model.pt").resolve())}}
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["split"] == "validation" and summary["evaluated"] == record["weights"]
    case = _entries(data_dir)["validation"][0]["id"]
    assert [r["case"] for r in read_metrics(folder / "metrics.csv")] == [case]
    pred, _ = read_nifti(folder / "predictions" / f"{case}.nii.gz")
    truth, _ = read_nifti(data_dir / case / f"{case}_mask.nii.gz")
    dice, everywhere = foreground_dice(pred, truth)
    assert dice > 2 * everywhere and dice == pytest.approx(dice_by_case(folder / "metrics.csv")[(case, "hippocampus")],
                                                            abs=1e-6)


def test_evaluations_of_other_data_lists_keep_apart(trained_run, tmp_path):
    """The run's own test split holds sub4. Another list names a case sub4 too, but with sub0's files, and sub1: its
    evaluation goes to a folder of its own, and the run's own evaluation, before and after it, keeps its files. A
    third list with the same file name gets a numbered folder; ``out=`` naming a folder that holds another
    evaluation is refused."""
    run_dir, data_dir = trained_run.run_dir, trained_run.data_dir
    own = run_dir / "eval" / "test-best"
    other_list = _other_list(tmp_path / "lists" / "other.json", data_dir, {"sub4": "sub0", "sub1": "sub1"})
    run_module("evaluate", f"run={run_dir}", "device=cpu")
    record = json.loads((own / "evaluated.json").read_text())
    assert record["weights"] == {"checkpoint": "best", "file": str((run_dir / "model_best.pt").resolve())}
    own_pred = read_nifti(own / "predictions" / "sub4.nii.gz")[0]
    own_dice = dice_by_case(own / "metrics.csv")
    assert own_dice.keys() == {("sub4", "hippocampus")}
    # the run's own test split again: what the training's test evaluation (run/eval) found
    np.testing.assert_array_equal(own_pred, read_nifti(run_dir / "eval" / "predictions" / "sub4.nii.gz")[0])
    trained = dice_by_case(run_dir / "eval" / "metrics.csv")
    assert own_dice[("sub4", "hippocampus")] == pytest.approx(trained[("sub4", "hippocampus")], abs=1e-6)

    run_module("evaluate", f"run={run_dir}", f"data_list={other_list}", "device=cpu")
    other = run_dir / "eval" / "other-test-best"
    assert sorted(p.name for p in (run_dir / "eval").glob("*test-best*")) == ["other-test-best", "test-best"]
    assert json.loads((other / "summary.json").read_text())["data_list"] == str(other_list.resolve())
    assert json.loads((own / "summary.json").read_text())["data_list"] == str((data_dir / "datalist.json").resolve())
    other_dice = dice_by_case(other / "metrics.csv")
    assert other_dice.keys() == {("sub4", "hippocampus"), ("sub1", "hippocampus")}
    assert sorted(p.name for p in (other / "predictions").iterdir()) == ["sub1.nii.gz", "sub4.nii.gz"]
    assert sorted(p.name for p in (own / "predictions").iterdir()) == ["sub4.nii.gz"]
    # the two sub4 are different subjects: each folder holds its own
    assert not np.array_equal(read_nifti(other / "predictions" / "sub4.nii.gz")[0], own_pred)
    np.testing.assert_array_equal(read_nifti(own / "predictions" / "sub4.nii.gz")[0], own_pred)
    truth0 = read_nifti(data_dir / "sub0" / "sub0_mask.nii.gz")[0]
    assert other_dice[("sub4", "hippocampus")] == pytest.approx(
        foreground_dice(read_nifti(other / "predictions" / "sub4.nii.gz")[0], truth0)[0], abs=1e-6)

    run_module("evaluate", f"run={run_dir}", "device=cpu")  # the run's own again: its folder, its files
    assert dice_by_case(own / "metrics.csv") == own_dice
    assert dice_by_case(other / "metrics.csv") == other_dice

    same_name = _other_list(tmp_path / "elsewhere" / "other.json", data_dir, {"sub2": "sub2"})
    run_module("evaluate", f"run={run_dir}", f"data_list={same_name}", "device=cpu")
    assert dice_by_case(run_dir / "eval" / "other-test-best-2" / "metrics.csv").keys() == {("sub2", "hippocampus")}
    assert dice_by_case(other / "metrics.csv") == other_dice

    proc = run_module("evaluate", f"run={run_dir}", f"data_list={same_name}", f"out={other}", "device=cpu", ok=False)
    assert_clean_error(proc, f"out={other} holds the evaluation of split test of {other_list.resolve()}")
    assert dice_by_case(other / "metrics.csv") == other_dice


def test_adapter_route_reproduces_the_run(trained_run):
    """Base file + adapter file -> the run's test Dice (a prediction that finds the hippocampi); on a random base the
    adapter is refused by its base hash, in one line."""
    run_dir, data_dir = trained_run.run_dir, trained_run.data_dir
    adapter = run_dir / "adapter.safetensors"
    run_module("evaluate", *trained_run.overrides, f"adapter={adapter}")
    folder = run_dir / "eval" / "datalist-test-adapter"
    assert json.loads((folder / "evaluated.json").read_text())["weights"] == {"adapter": str(adapter.resolve())}
    trained, evaluated = dice_by_case(run_dir / "eval" / "metrics.csv"), dice_by_case(folder / "metrics.csv")
    assert evaluated.keys() == trained.keys() == {("sub4", "hippocampus")}
    for key, value in trained.items():
        assert evaluated[key] == pytest.approx(value, abs=1e-6)
    truth = read_nifti(data_dir / "sub4" / "sub4_mask.nii.gz")[0]
    dice, everywhere = foreground_dice(read_nifti(folder / "predictions" / "sub4.nii.gz")[0], truth)
    assert dice > 2 * everywhere

    proc = run_module("evaluate", "+experiment=demo", *MODEL, *data_args(data_dir), "pretrained=none",
                      f"adapter={adapter}", "device=cpu", ok=False)
    assert_clean_error(proc, "different base", "adapter.safetensors")


def test_predict_from_a_data_list_and_from_one_file(trained_run, tmp_path):
    run_dir, data_dir = trained_run.run_dir, trained_run.data_dir
    expected = read_nifti(run_dir / "eval" / "predictions" / "sub4.nii.gz")
    assert (expected[0] > 0).sum() > 0

    run_module("predict", f"run={run_dir}", f"input={data_dir / 'datalist.json'}", f"out={tmp_path / 'list'}",
               "device=cpu", "eval.overlays=0")
    assert sorted(p.name for p in (tmp_path / "list").iterdir()) == ["sub4.nii.gz"]  # the list's test split

    single = tmp_path / "scan.nii.gz"
    shutil.copy(data_dir / "sub4" / "sub4_img.nii.gz", single)
    run_module("predict", f"run={run_dir}", f"input={single}", f"out={tmp_path / 'file'}", "device=cpu",
               "eval.overlays=0")
    assert sorted(p.name for p in (tmp_path / "file").iterdir()) == ["scan.nii.gz"]

    for written in (tmp_path / "list" / "sub4.nii.gz", tmp_path / "file" / "scan.nii.gz"):
        prediction, affine = read_nifti(written)
        np.testing.assert_array_equal(prediction, expected[0])
        np.testing.assert_array_equal(affine, expected[1])


def test_export_entry_point(trained_run, tmp_path):
    """``python -m tcurseg.export``: a bundle (MONAI's network definition in its inference config, the merged weights)
    and a plain state dict of the last weights; both hold the run's weights with the adapter merged."""
    from tcurseg.engine.trainer import load_run_model

    run_dir = trained_run.run_dir
    run_module("export", f"run={run_dir}", f"out={tmp_path / 'bundle'}")
    run_module("export", f"run={run_dir}", f"out={tmp_path / 'weights.pt'}", "format=state_dict", "checkpoint=last")
    bundle = tmp_path / "bundle"
    assert {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} == {
        "configs/inference.json", "configs/metadata.json", "models/model.pt"}
    definition = json.loads((bundle / "configs" / "inference.json").read_text())["network_def"]
    assert definition["_target_"] == "monai.networks.nets.UNETR"
    from monai.networks.nets import UNETR

    network = UNETR(**{k: v for k, v in definition.items() if k != "_target_"})
    base = torch.load(trained_run.base, weights_only=True)
    for state_file, model_file in ((bundle / "models" / "model.pt", "model_best.pt"),
                                   (tmp_path / "weights.pt", "model.pt")):
        state = torch.load(state_file, weights_only=True)
        network.load_state_dict(state)  # strict: MONAI's own keys, nothing else
        model, run_cfg = load_run_model(run_dir / model_file)
        assert OmegaConf.select(run_cfg, "method.name") == "tcurlora"
        changed = assert_exported_merge(state, model, run_cfg, base)
        assert changed > 48  # the ViT's 48 adapted weights and the trained CNN path
