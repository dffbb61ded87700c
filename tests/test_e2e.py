"""End to end through the real entry points (``python -m tcurseg.train / evaluate / predict``) in subprocesses.

The run is the session's one tiny trained run (``trained_run`` in ``conftest.py``, made by
``e2e_support.make_trained_run``): a tiny UNETR (hidden 48, roi 32^3) fine-tuned with tCURLoRA from a base file on 5
synthetic hippocampus subjects (3 training, 1 validation, 1 test), 10 epochs; ``test_e2e_flows.py`` runs the other
entry points on it, ``test_e2e_stages.py`` the paper's two stages.

  * train: run files, parameter split (adapter = L r^2 summed over groups = 72 * 64 for any MONAI UNETR),
    metrics.csv, a prediction that finds the hippocampi (twice the Dice of marking foreground everywhere) in the
    original (LAS) orientation and affine, the adapter cores moved from their zero start; predict reproduces the
    prediction (``test_e2e_flows.py``: evaluate reproduces it too);
  * resume after SIGKILL right after a checkpoint, with a data-loading worker process, gives bit-identical final
    weights to the uninterrupted run (which had none);
  * bad configuration ends with a clear error, exit code != 0 and no traceback.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from e2e_support import (
    RANK,
    REPO,
    TIMEOUT,
    TRAINED_EPOCHS,
    assert_clean_error,
    foreground_dice,
    read_metrics,
    read_nifti,
    run_module,
    subprocess_env,
    train_args,
)
from scipy import ndimage

pytestmark = pytest.mark.e2e


def test_train_evaluate_predict(trained_run, tmp_path):
    run_dir, data_dir = trained_run.run_dir, trained_run.data_dir
    for rel in ("model.pt", "adapter.safetensors", f"checkpoints/ckpt_epoch{TRAINED_EPOCHS:04d}.pt", "summary.json",
                "eval/metrics.csv", "eval/summary.json", "eval/predictions/sub4.nii.gz", "eval/overlays/sub4.png"):
        assert (run_dir / rel).is_file(), rel
    assert any((run_dir / "tb").glob("events.out.tfevents.*"))

    summary = json.loads((run_dir / "summary.json").read_text())
    params = summary["params"]
    # tCURLoRA trains one r x r core per stacked weight: attn 12 blocks x (3 qkv + out_proj) + mlp1 12 + mlp2 12.
    assert params["method"] == "tcurlora"
    assert params["adapter"] == (48 + 12 + 12) * RANK**2 == 4608
    from tcurseg.models import build_unetr
    network = build_unetr({"img_size": [32, 32, 32], "hidden_size": 48, "mlp_dim": 96, "num_heads": 4,
                           "feature_size": 8, "in_channels": 1, "out_channels": 2})
    cnn = sum(p.numel() for n, p in network.named_parameters() if not n.startswith("vit."))
    assert params["decoder"] == cnn > 0  # cnn=default: everything outside the ViT trains
    assert params["trainable"] == params["adapter"] + params["decoder"]
    assert params["total"] == sum(p.numel() for p in network.parameters()) + params["adapter"]
    assert summary["epochs"] == TRAINED_EPOCHS
    assert [h["epoch"] for h in summary["history"]] == list(range(1, TRAINED_EPOCHS + 1))
    assert [h["epoch"] for h in summary["history"] if "val_dice" in h] == [5, 10]
    assert all(np.isfinite(h["loss"]) for h in summary["history"])
    assert summary["history"][-1]["loss"] < summary["history"][0]["loss"]

    # The tensors really trained: the tCURLoRA cores start at zero, the CNN path at the base file's weights, the ViT
    # stays the base file's.
    base = torch.load(trained_run.base, weights_only=True)
    model = torch.load(run_dir / "model.pt", weights_only=True)["model"]
    cores = [k for k in model if k.startswith("adapter_groups.") and ".dU." in k]
    assert len(cores) == 6 and all(model[k].abs().max() > 0 for k in cores)
    assert not torch.equal(model["decoder2.conv_block.conv1.conv.weight"],
                           base["decoder2.conv_block.conv1.conv.weight"])
    vit = [k for k in base if k.startswith("vit.")]
    assert vit and all(torch.equal(model[k], base[k]) for k in vit)

    test_cases = [e["id"] for e in json.loads((data_dir / "datalist.json").read_text())["test"]]
    rows = read_metrics(run_dir / "eval" / "metrics.csv")
    assert [(r["case"], r["region"]) for r in rows] == [(c, "hippocampus") for c in test_cases]
    for r in rows:
        assert 0.0 < float(r["dice"]) <= 1.0 and np.isfinite(float(r["hd95"])) and float(r["hd95"]) >= 0.0
    assert summary["test"]["hippocampus"]["n_cases"] == len(test_cases)
    assert summary["test"]["hippocampus"]["n_empty_pred"] == 0

    # The prediction lies on the grid of the input file (synth images are LAS: undoing the RAS reorientation),
    # holds only label values, finds the hippocampi (above twice what foreground everywhere scores), and scores on the
    # original grid exactly the Dice of metrics.csv.
    case = test_cases[0]
    image, image_affine = read_nifti(data_dir / case / f"{case}_img.nii.gz")
    truth, _ = read_nifti(data_dir / case / f"{case}_mask.nii.gz")
    assert nib.aff2axcodes(image_affine) == ("L", "A", "S")
    pred, pred_affine = read_nifti(run_dir / "eval" / "predictions" / f"{case}.nii.gz")
    assert pred.shape == image.shape
    np.testing.assert_array_equal(pred_affine, image_affine)
    assert set(np.unique(pred).tolist()) == {0, 1}
    assert 1 <= ndimage.label(pred == 1, structure=np.ones((3, 3, 3)))[1] <= 2  # the demo's eval.keep_components
    dice, everywhere = foreground_dice(pred, truth)
    assert dice > 2 * everywhere, (dice, everywhere)
    assert dice == pytest.approx(float(rows[0]["dice"]), abs=1e-6)

    # predict on a folder in nnU-Net's naming (CASE_0000.nii.gz) -> the same prediction, <out>/CASE.nii.gz.
    folder, out = tmp_path / "imagesTs", tmp_path / "pred"
    folder.mkdir()
    shutil.copy(data_dir / case / f"{case}_img.nii.gz", folder / f"{case}_0000.nii.gz")
    run_module("predict", f"run={run_dir}", f"input={folder}", f"out={out}", "device=cpu")
    written = sorted(p.name for p in out.iterdir() if p.is_file())
    assert written == [f"{case}.nii.gz"]
    predicted, predicted_affine = read_nifti(out / f"{case}.nii.gz")
    np.testing.assert_array_equal(predicted, pred)
    np.testing.assert_array_equal(predicted_affine, image_affine)


def test_resume_after_kill_is_exact(trained_run, tmp_path):
    """The shared run's training again, killed (SIGKILL) right after its epoch-5 checkpoint, then the same command:
    the final weights and the loss of every epoch equal the uninterrupted run's bit for bit. This run loads its data
    with one worker process, the shared run with none: the crops depend on the seed, the epoch and the sample alone."""
    out = tmp_path / "resumed"
    args = trained_run.args(out, "evaluate_after=false", "train.num_workers=1")
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "kill_after_checkpoint.py"), "5", *args], cwd=REPO,
                          env=subprocess_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert "1 data-loading workers" in proc.stdout + proc.stderr
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["ckpt_epoch0005.pt"]
    assert not (out / "model.pt").exists()

    resumed = run_module("train", *args)
    assert "resumed from" in resumed.stdout and "ckpt_epoch0005.pt (epoch 5 done)" in resumed.stdout

    a = torch.load(trained_run.run_dir / "model.pt", map_location="cpu", weights_only=True)["model"]
    b = torch.load(out / "model.pt", map_location="cpu", weights_only=True)["model"]
    assert a.keys() == b.keys()
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differing, differing[:10]
    hist_a = json.loads((trained_run.run_dir / "summary.json").read_text())["history"]
    hist_b = json.loads((out / "summary.json").read_text())["history"]
    assert [h["loss"] for h in hist_a] == [h["loss"] for h in hist_b] and len(hist_b) == TRAINED_EPOCHS


def test_bad_configuration_errors(trained_run, tmp_path):
    data_dir = trained_run.data_dir
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
    problems = [ln for ln in proc.stderr.splitlines() if ln.endswith(": file not found")]
    assert problems == [f"{missing}: file not found"], proc.stderr
    assert not (tmp_path / "bad" / "model.pt").exists(), first
