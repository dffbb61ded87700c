"""End to end through the real entry points (``python -m tcurseg.train / evaluate / predict``) in subprocesses.

A tiny UNETR (hidden 48, roi 32^3) on 5 synthetic hippocampus subjects (splits 0.6/0.2/0.2 -> 3 training,
1 validation, 1 test), 2 epochs. One trained run is shared by the module. The paper's two stages are in
``test_e2e_stages.py`` (a file of its own, so that a second pytest worker runs them alongside).

  * train (tCURLoRA): run files, parameter split (adapter = L r^2 summed over groups = 72 * 64 for any MONAI UNETR),
    metrics.csv, predictions in the original (LAS) orientation and affine; evaluate reproduces the Dice; predict
    reproduces the prediction;
  * resume after SIGKILL gives bit-identical final weights to an uninterrupted run;
  * bad configuration ends with a clear error, exit code != 0 and no traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from e2e_support import (
    RANK,
    REPO,
    TIMEOUT,
    assert_clean_error,
    dice_by_case,
    make_data,
    module_cmd,
    read_metrics,
    read_nifti,
    run_module,
    subprocess_env,
    train_args,
)
from scipy import ndimage

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("e2e"))


@pytest.fixture(scope="module")
def run_dir(data_dir) -> Path:
    """One tCURLoRA run (2 epochs, test-time mirroring), shared by the tests."""
    out = data_dir.parent / "run"
    run_module("train", *train_args(data_dir, out, "eval.mirror_axes=[0]"))
    return out


def test_train_evaluate_predict(run_dir, data_dir, tmp_path):
    for rel in ("model.pt", "adapter.safetensors", "checkpoints/ckpt_epoch0002.pt", "summary.json",
                "eval/metrics.csv", "eval/summary.json", "eval/predictions/sub4.nii.gz", "eval/overlays/sub4.png"):
        assert (run_dir / rel).is_file(), rel
    assert any((run_dir / "tb").glob("events.out.tfevents.*"))

    summary = json.loads((run_dir / "summary.json").read_text())
    params = summary["params"]
    # tCURLoRA trains one r x r core per stacked weight: attn 12 blocks x (3 qkv + out_proj) + mlp1 12 + mlp2 12.
    assert params["method"] == "tcurlora"
    assert params["adapter"] == (48 + 12 + 12) * RANK**2 == 4608
    from tcurseg.models import build_unetr
    base = build_unetr({"img_size": [32, 32, 32], "hidden_size": 48, "mlp_dim": 96, "num_heads": 4,
                        "feature_size": 8, "in_channels": 1, "out_channels": 2})
    cnn = sum(p.numel() for n, p in base.named_parameters() if not n.startswith("vit."))
    assert params["decoder"] == cnn > 0  # cnn=default: everything outside the ViT trains
    assert params["trainable"] == params["adapter"] + params["decoder"]
    assert params["total"] == sum(p.numel() for p in base.parameters()) + params["adapter"]
    assert summary["epochs"] == 2 and [h["epoch"] for h in summary["history"]] == [1, 2]
    assert all(np.isfinite(h["loss"]) and 0.0 <= h["val_dice"] <= 1.0 for h in summary["history"])

    test_cases = [e["id"] for e in json.loads((data_dir / "datalist.json").read_text())["test"]]
    rows = read_metrics(run_dir / "eval" / "metrics.csv")
    assert [(r["case"], r["region"]) for r in rows] == [(c, "hippocampus") for c in test_cases]
    for r in rows:
        assert 0.0 <= float(r["dice"]) <= 1.0 and np.isfinite(float(r["dice"]))
        assert float(r["hd95"]) >= 0.0  # finite or inf (empty prediction); never negative / nan
    assert summary["test"]["hippocampus"]["n_cases"] == len(test_cases)

    # The prediction lies on the grid of the input file (synth images are LAS: undoing the RAS reorientation),
    # holds only label values, and scores on the original grid exactly the Dice of metrics.csv.
    case = test_cases[0]
    image, image_affine = read_nifti(data_dir / case / f"{case}_img.nii.gz")
    truth, _ = read_nifti(data_dir / case / f"{case}_mask.nii.gz")
    assert nib.aff2axcodes(image_affine) == ("L", "A", "S")
    pred, pred_affine = read_nifti(run_dir / "eval" / "predictions" / f"{case}.nii.gz")
    assert pred.shape == image.shape
    np.testing.assert_array_equal(pred_affine, image_affine)
    assert set(np.unique(pred).tolist()) <= {0, 1}
    assert ndimage.label(pred == 1, structure=np.ones((3, 3, 3)))[1] <= 2  # the demo's eval.keep_components
    p, t = pred == 1, truth == 1
    dice = 2.0 * (p & t).sum() / (p.sum() + t.sum()) if p.sum() + t.sum() else 1.0
    assert dice == pytest.approx(float(rows[0]["dice"]), abs=1e-6)

    # evaluate run=<run>: same model, same data -> same Dice and same prediction.
    run_module("evaluate", f"run={run_dir}", "device=cpu")
    evaluated = dice_by_case(run_dir / "eval_test" / "metrics.csv")
    trained = dice_by_case(run_dir / "eval" / "metrics.csv")
    assert evaluated.keys() == trained.keys()
    for key, value in trained.items():
        assert evaluated[key] == pytest.approx(value, abs=1e-6)
    eval_pred, eval_affine = read_nifti(run_dir / "eval_test" / "predictions" / f"{case}.nii.gz")
    np.testing.assert_array_equal(eval_pred, pred)
    np.testing.assert_array_equal(eval_affine, image_affine)

    # predict on a folder in nnU-Net's naming (CASE_0000.nii.gz) -> the same prediction, <out>/CASE.nii.gz.
    folder, out = tmp_path / "imagesTs", tmp_path / "pred"
    folder.mkdir()
    shutil.copy(data_dir / case / f"{case}_img.nii.gz", folder / f"{case}_0000.nii.gz")
    run_module("predict", f"run={run_dir}", f"input={folder}", f"out={out}", "device=cpu")
    written = sorted(p.name for p in out.iterdir() if p.is_file())
    assert written == [f"{case}.nii.gz"]
    predicted, predicted_affine = read_nifti(out / f"{case}.nii.gz")
    np.testing.assert_array_equal(predicted, eval_pred)
    np.testing.assert_array_equal(predicted_affine, image_affine)


def test_resume_after_kill_is_exact(data_dir):
    root = data_dir.parent
    args = lambda out: train_args(data_dir, out, "train.epochs=3", "evaluate_after=false")  # noqa: E731
    run_module("train", *args(root / "resume_a"))

    out_b = root / "resume_b"
    proc = subprocess.Popen(module_cmd("train", *args(out_b)), cwd=REPO, env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = out_b / "checkpoints" / "ckpt_epoch0002.pt"
    deadline = time.monotonic() + TIMEOUT
    try:
        while not target.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "run B ended before it could be killed after epoch 2"
        assert target.exists(), "no epoch-2 checkpoint in time"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out_b / "model.pt").exists()

    resumed = run_module("train", *args(out_b))
    assert "resumed from" in resumed.stdout

    a = torch.load(root / "resume_a" / "model.pt", map_location="cpu", weights_only=False)["model"]
    b = torch.load(out_b / "model.pt", map_location="cpu", weights_only=False)["model"]
    assert a.keys() == b.keys()
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differing, differing[:10]
    hist_a = json.loads((root / "resume_a" / "summary.json").read_text())["history"]
    hist_b = json.loads((out_b / "summary.json").read_text())["history"]
    assert [h["loss"] for h in hist_a] == [h["loss"] for h in hist_b]


def test_bad_configuration_errors(data_dir, tmp_path):
    base = train_args(data_dir, tmp_path / "bad", "evaluate_after=false")

    # A config group option that does not exist: Hydra's own error, naming it.
    proc = run_module("train", *base, "method=foo", ok=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "method/foo" in proc.stderr

    # A method name that no registry knows.
    assert_clean_error(run_module("train", *base, "method.name=foo", ok=False), "unknown method 'foo'")

    # roi not divisible by the ViT patch size.
    assert_clean_error(run_module("train", *base, "model.img_size=[40,32,32]", ok=False), "divisible", "[40, 32, 32]")

    # Missing pretrained file (and no recipe to make it).
    proc = run_module("train", *base, "pretrained=/nonexistent.pt", ok=False)
    assert_clean_error(proc, "not found", "/nonexistent.pt")

    # A data list naming an image file that does not exist: the check names the file (one problem per line).
    listed = json.loads((data_dir / "datalist.json").read_text())
    missing = tmp_path / "sub_missing_img.nii.gz"
    listed["training"][0]["image"] = str(missing)
    for split in ("training", "validation", "test"):
        for entry in listed[split]:
            for key in ("image", "label"):
                entry[key] = str((data_dir / entry[key]).resolve())
    bad_list = tmp_path / "bad_list.json"
    bad_list.write_text(json.dumps({k: listed[k] for k in ("training", "validation", "test")}))
    proc = run_module("train", *base, "data.synth=null", f"data.data_list={bad_list}", ok=False)
    first = assert_clean_error(proc, "dataset check failed (1 problems)")
    problems = [ln for ln in proc.stderr.splitlines()[1:] if ln.strip()]
    assert problems == [f"{missing}: file not found"], proc.stderr
    assert not (tmp_path / "bad" / "model.pt").exists(), first
