"""End to end through the real entry points (``python -m tcurseg.train / evaluate / predict``) in subprocesses.

A tiny UNETR (hidden 48, roi 32^3) on 5 synthetic hippocampus subjects (splits 0.6/0.2/0.2 -> 3 training,
1 validation, 1 test), 2 epochs. One trained run is shared by the module; the whole file takes ~2-3 min on 2 cores.

  * train (tCURLoRA): run files, parameter split (adapter = L r^2 summed over groups = 72 * 64 for any MONAI UNETR),
    metrics.csv, predictions in the original (LAS) orientation and affine; evaluate reproduces the Dice; predict
    reproduces the prediction;
  * the paper's two stages on tiny data laid out as users download it: ``python -m tcurseg.pretrain
    +experiment=brats_pretrain`` on a BraTS 2021 tree (``scripts/convert_brats.py --modalities t1``: one channel,
    binary whole tumour), then ``python -m tcurseg.train +experiment=eadc pretrained=<stage 1 model_best.pt>`` on the
    authors' hippocampus layout (``scripts/convert_hippocampus.py``): the whole encoder of stage 1 loaded and frozen;
  * the adapter route of evaluate (base + adapter file): a random base cannot be rebuilt (clear "different base"
    error); with the stage-1 base it gives the stage-2 run's Dice;
  * resume after SIGKILL gives bit-identical final weights to an uninterrupted run;
  * bad configuration ends with a clear error, exit code != 0 and no traceback.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
N_SUBJECTS = 5
RANK = 8
MODEL = ["model.img_size=[32,32,32]", "model.hidden_size=48", "model.mlp_dim=96", "model.num_heads=4",
         "model.feature_size=8"]
TIMEOUT = 300


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("TCURSEG_DEBUG", "HYDRA_FULL_ERROR", "RANK",
                                                             "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def _cmd(module: str, *overrides: str) -> list[str]:
    return [sys.executable, "-m", f"tcurseg.{module}", *overrides]


def _run(module: str, *overrides: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(_cmd(module, *overrides), cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=TIMEOUT)
    if ok:
        assert proc.returncode == 0, f"{module} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _data(data_dir: Path) -> list[str]:
    return ["data=synth_hippo", f"data.synth.out_dir={data_dir}", f"data.data_list={data_dir}/datalist.json",
            f"data.synth.n_subjects={N_SUBJECTS}", "data.synth.splits=[0.6,0.2,0.2]"]


def _train_args(data_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["+experiment=demo", *MODEL, *_data(data_dir), "pretrained=none", "pretrain_recipe=null",
            "train.epochs=2", "train.val_every=1", "train.ckpt_every=1", f"output_dir={out}", "eval.overlays=1",
            "device=cpu", *extra]


def _metrics(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _dice(path: Path) -> dict[tuple[str, str], float]:
    return {(r["case"], r["region"]): float(r["dice"]) for r in _metrics(path)}


def _nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(path))
    return np.asarray(img.dataobj), np.asarray(img.affine, dtype=np.float64)


def _assert_clean_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    """Exit code != 0, no traceback, one ``tcurseg: error:`` line on stderr naming ``words``; returns that line."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("tcurseg: error:")]
    assert len(errors) == 1, proc.stderr
    assert lines[0] == errors[0], proc.stderr  # nothing printed before the error line
    for word in words:
        assert word in errors[0], (word, errors[0])
    return errors[0]


# ----------------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """The tiny synthetic hippocampus set, generated once per module (in-process: same call as the entry points)."""
    from tcurseg.data import synth

    out = tmp_path_factory.mktemp("e2e") / "hippo"
    spacing, box = synth.PRESETS["synth_hippo"]
    synth.ensure_generated("synth_hippo", out, N_SUBJECTS, 0, spacing, box)
    splits = json.loads((out / "datalist.json").read_text())
    assert [len(splits[s]) for s in ("training", "validation", "test")] == [3, 1, 1]
    return out


@pytest.fixture(scope="module")
def run_dir(data_dir) -> Path:
    """One tCURLoRA run (2 epochs), shared by the tests."""
    out = data_dir.parent / "run"
    _run("train", *_train_args(data_dir, out))
    return out


def _script(name: str, *args: str | Path) -> None:
    proc = subprocess.run([sys.executable, f"scripts/{name}", *map(str, args)], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"


STAGE = [*MODEL, "train.epochs=1", "train.val_every=1", "train.ckpt_every=1", "train.batch_size=1",
         "train.num_workers=0", "data.num_samples=1", "device=cpu", "eval.overlays=0"]


@pytest.fixture(scope="module")
def pretrained(data_dir) -> Path:
    """Stage 1: ``tcurseg.pretrain +experiment=brats_pretrain`` (full training, 1 epoch) on a BraTS 2021 tree made
    from synthetic tumour subjects (each modality a copy of the one image; labels 1/2/4), converted with
    ``--modalities t1``. Returns its ``model_best.pt``."""
    from tcurseg.data import synth

    root = data_dir.parent
    spacing, box = synth.PRESETS["synth_tumor"]
    lists = json.loads(synth.ensure_generated("synth_tumor", root / "tumor", N_SUBJECTS, 0, spacing, box).read_text())
    brats = root / "BraTS2021_Training_Data"
    for i, entry in enumerate(e for split in ("training", "validation", "test") for e in lists[split]):
        case = brats / f"BraTS2021_{i:05d}"
        case.mkdir(parents=True)
        for modality in ("flair", "t1", "t1ce", "t2"):
            shutil.copy(root / "tumor" / entry["image"], case / f"{case.name}_{modality}.nii.gz")
        shutil.copy(root / "tumor" / entry["label"], case / f"{case.name}_seg.nii.gz")
    _script("convert_brats.py", "--root", brats, "--out", root / "brats_t1.json", "--modalities", "t1",
            "--val-frac", "0.2", "--test-frac", "0.2")
    out = root / "brats_pretrain"
    _run("pretrain", "+experiment=brats_pretrain", f"data.data_list={root / 'brats_t1.json'}",
         f"data.data_root={brats}", f"output_dir={out}", "evaluate_after=false", *STAGE)
    state = torch.load(out / "model_best.pt", weights_only=True)
    assert state["config"]["method"]["name"] == "full" and state["config"]["data"]["in_channels"] == 1
    return out / "model_best.pt"


# -------------------------------------------------------------------------------------------------------------- tests
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
    rows = _metrics(run_dir / "eval" / "metrics.csv")
    assert [(r["case"], r["region"]) for r in rows] == [(c, "hippocampus") for c in test_cases]
    for r in rows:
        assert 0.0 <= float(r["dice"]) <= 1.0 and np.isfinite(float(r["dice"]))
        assert float(r["hd95"]) >= 0.0  # finite or inf (empty prediction); never negative / nan
    assert summary["test"]["hippocampus"]["n_cases"] == len(test_cases)

    # The prediction lies on the grid of the input file (synth images are LAS: undoing the RAS reorientation),
    # holds only label values, and scores on the original grid exactly the Dice of metrics.csv.
    case = test_cases[0]
    image, image_affine = _nifti(data_dir / case / f"{case}_img.nii.gz")
    truth, _ = _nifti(data_dir / case / f"{case}_mask.nii.gz")
    assert nib.aff2axcodes(image_affine) == ("L", "A", "S")
    pred, pred_affine = _nifti(run_dir / "eval" / "predictions" / f"{case}.nii.gz")
    assert pred.shape == image.shape
    np.testing.assert_array_equal(pred_affine, image_affine)
    assert set(np.unique(pred).tolist()) <= {0, 1}
    p, t = pred == 1, truth == 1
    dice = 2.0 * (p & t).sum() / (p.sum() + t.sum()) if p.sum() + t.sum() else 1.0
    assert dice == pytest.approx(float(rows[0]["dice"]), abs=1e-6)

    # evaluate run=<run>: same model, same data -> same Dice and same prediction.
    _run("evaluate", f"run={run_dir}", "device=cpu")
    evaluated = _dice(run_dir / "eval_test" / "metrics.csv")
    trained = _dice(run_dir / "eval" / "metrics.csv")
    assert evaluated.keys() == trained.keys()
    for key, value in trained.items():
        assert evaluated[key] == pytest.approx(value, abs=1e-6)
    eval_pred, eval_affine = _nifti(run_dir / "eval_test" / "predictions" / f"{case}.nii.gz")
    np.testing.assert_array_equal(eval_pred, pred)
    np.testing.assert_array_equal(eval_affine, image_affine)

    # predict on a folder in nnU-Net's naming (CASE_0000.nii.gz) -> the same prediction, <out>/CASE.nii.gz.
    folder, out = tmp_path / "imagesTs", tmp_path / "pred"
    folder.mkdir()
    shutil.copy(data_dir / case / f"{case}_img.nii.gz", folder / f"{case}_0000.nii.gz")
    _run("predict", f"run={run_dir}", f"input={folder}", f"out={out}", "device=cpu")
    written = sorted(p.name for p in out.iterdir() if p.is_file())
    assert written == [f"{case}.nii.gz"]
    predicted, predicted_affine = _nifti(out / f"{case}.nii.gz")
    np.testing.assert_array_equal(predicted, eval_pred)
    np.testing.assert_array_equal(predicted_affine, image_affine)


def test_two_stages_and_the_adapter_route(run_dir, data_dir, pretrained):
    # The run's base was random (pretrained=null); evaluate does not rebuild that random base, so the adapter file
    # must be refused by its base hash, in one clear line.
    proc = _run("evaluate", *MODEL, *_data(data_dir), "pretrained=none", f"adapter={run_dir / 'adapter.safetensors'}",
                "device=cpu", ok=False)
    _assert_clean_error(proc, "different base", "adapter.safetensors")

    # Stage 2 on the authors' hippocampus layout (sub{i}/sub{i}_img|mask.nii.gz + train/valid/test.txt).
    eadc = data_dir.parent / "eadc"
    shutil.copytree(data_dir, eadc, ignore=shutil.ignore_patterns("datalist.json"))
    lists = json.loads((data_dir / "datalist.json").read_text())
    for split, name in (("training", "train.txt"), ("validation", "valid.txt"), ("test", "test.txt")):
        (eadc / name).write_text("".join(f"{e['id']}\n" for e in lists[split]))
    _script("convert_hippocampus.py", "--root", eadc, "--out", eadc.parent / "eadc.json")
    ft = eadc.parent / "eadc_tcurlora"
    data = [f"data.data_list={eadc.parent / 'eadc.json'}", f"data.data_root={eadc}"]
    _run("train", "+experiment=eadc", f"pretrained={pretrained}", *data, f"output_dir={ft}", *STAGE)
    base = torch.load(pretrained, weights_only=True)["model"]
    encoder = [k for k in base if k.startswith("vit.") and "norm_cross_attn" not in k]
    assert f"encoder: {len(encoder)}/{len(encoder)} tensors" in (ft / "train.log").read_text()
    tuned = torch.load(ft / "model.pt", weights_only=True)["model"]
    assert all(torch.equal(tuned[k], base[k]) for k in encoder)  # loaded from stage 1 and kept frozen
    assert any(k.endswith("dU.real") for k in tuned)

    # Base + adapter file -> the stage-2 run's Dice.
    _run("evaluate", "+experiment=eadc", *MODEL, *data, f"pretrained={pretrained}",
         f"adapter={ft / 'adapter.safetensors'}", "device=cpu")
    trained = _dice(ft / "eval" / "metrics.csv")
    evaluated = _dice(ft / "eval_test" / "metrics.csv")  # results go next to the adapter file
    assert evaluated.keys() == trained.keys() and trained
    for key, value in trained.items():
        assert evaluated[key] == pytest.approx(value, abs=1e-6)


def test_resume_after_kill_is_exact(data_dir):
    root = data_dir.parent
    args = lambda out: _train_args(data_dir, out, "train.epochs=3", "evaluate_after=false")  # noqa: E731
    _run("train", *args(root / "resume_a"))

    out_b = root / "resume_b"
    proc = subprocess.Popen(_cmd("train", *args(out_b)), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
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

    resumed = _run("train", *args(out_b))
    assert "resumed from" in resumed.stdout

    a = torch.load(root / "resume_a" / "model.pt", map_location="cpu", weights_only=False)["model"]
    b = torch.load(out_b / "model.pt", map_location="cpu", weights_only=False)["model"]
    assert a.keys() == b.keys()
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differing, differing[:10]
    hist_a = json.loads((root / "resume_a" / "summary.json").read_text())["history"]
    hist_b = json.loads((out_b / "summary.json").read_text())["history"]
    assert [h["loss"] for h in hist_a] == [h["loss"] for h in hist_b]


def test_bad_configuration_errors(run_dir, data_dir, pretrained, tmp_path):
    base = _train_args(data_dir, tmp_path / "bad", "evaluate_after=false")

    # A config group option that does not exist: Hydra's own error, naming it.
    proc = _run("train", *base, "method=foo", ok=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "method/foo" in proc.stderr

    # A method name that no registry knows.
    _assert_clean_error(_run("train", *base, "method.name=foo", ok=False), "unknown method 'foo'")

    # roi not divisible by the ViT patch size.
    _assert_clean_error(_run("train", *base, "model.img_size=[40,32,32]", ok=False), "divisible", "[40, 32, 32]")

    # Missing pretrained file (and no recipe to make it).
    _assert_clean_error(_run("train", *base, "pretrained=/nonexistent.pt", ok=False), "not found", "/nonexistent.pt")

    # An adapter trained on another base: the random-base run's adapter onto the saved pretrained base.
    proc = _run("evaluate", *MODEL, *_data(data_dir), f"pretrained={pretrained}",
                f"adapter={run_dir / 'adapter.safetensors'}", "device=cpu", ok=False)
    _assert_clean_error(proc, "different base")

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
    proc = _run("train", *base, "data.synth=null", f"data.data_list={bad_list}", ok=False)
    first = _assert_clean_error(proc, "dataset check failed (1 problems)")
    problems = [ln for ln in proc.stderr.splitlines()[1:] if ln.strip()]
    assert problems == [f"{missing}: file not found"], proc.stderr
    assert not (tmp_path / "bad" / "model.pt").exists(), first
