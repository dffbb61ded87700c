"""Where the whole-tumour Dice of the synthetic tumour task goes (docs/recipe.md row 32). Prints a table and writes JSON.

1. How far intensity alone separates the lesions from normal tissue: one threshold on the z-scored brain intensity
   (as the training transforms normalise it), chosen on the training split, marks WT on the other splits.
2. For each run folder given, on its saved predictions (``eval/predictions`` for test, ``eval/validation-best/predictions``
   for validation: ``python -m tcurseg.evaluate run=RUN split=validation`` writes them): the Dice of each region as
   evaluated, and after removing every predicted WT component (26-connected) that holds no TC voxel, i.e. oedema
   marked with no tumour core inside it.

    python scripts/tumour_errors.py --runs outputs/demo_pretrain --json docs/tumour_errors.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from tcurseg.data.synth import REGIONS as TASK_REGIONS
from tcurseg.engine.metrics import dice_score as dice

REGIONS = TASK_REGIONS["synth_tumor"]
PREDICTIONS = {"test": "eval", "validation": "eval/validation-best"}


def drop_coreless_wt(pred: np.ndarray) -> np.ndarray:
    """A copy of the BraTS label map ``pred`` without the WT components (26-connectivity) that hold no TC voxel."""
    whole = np.isin(pred, REGIONS["WT"])
    components, _ = ndimage.label(whole, structure=np.ones((3, 3, 3)))
    with_core = np.unique(components[np.isin(pred, REGIONS["TC"]) & (components > 0)])
    out = pred.copy()
    out[whole & ~np.isin(components, with_core)] = 0
    return out


def load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def z_scored(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The image z-scored over its non-zero voxels (``NormalizeIntensityd(nonzero=True)``) and the brain mask."""
    brain = image > 0
    return (image - image[brain].mean()) / image[brain].std(), brain


def threshold_wt(data: Path, entries: dict, thresholds: np.ndarray) -> dict:
    """Mean WT Dice of ``z > t`` per split, for the ``t`` of ``thresholds`` best on the training split."""
    def split_dice(split: str) -> np.ndarray:
        scores = []
        for entry in entries[split]:
            z, brain = z_scored(load(data / entry["image"]))
            truth = np.isin(load(data / entry["label"]), REGIONS["WT"])
            scores.append([dice((z > t) & brain, truth) for t in thresholds])
        return np.mean(scores, axis=0)

    train = split_dice("training")
    best = int(np.argmax(train))
    out = {"threshold_z": float(thresholds[best]), "training": float(train[best])}
    for split in ("validation", "test"):
        out[split] = float(split_dice(split)[best])
    return out


def run_errors(run: Path, data: Path, entries: dict, split: str) -> dict | None:
    """Per-region mean Dice of the run's saved predictions of ``split``, as evaluated and without coreless WT."""
    folder = run / PREDICTIONS[split] / "predictions"
    if not folder.is_dir():
        return None
    scores = {"as evaluated": {r: [] for r in REGIONS}, "coreless WT removed": {r: [] for r in REGIONS}}
    for entry in entries[split]:
        pred = load(folder / f"{entry['id']}.nii.gz").astype(np.int64)
        truth = load(data / entry["label"]).astype(np.int64)
        for name, labels in (("as evaluated", pred), ("coreless WT removed", drop_coreless_wt(pred))):
            for region, values in REGIONS.items():
                scores[name][region].append(dice(np.isin(labels, values), np.isin(truth, values)))
    return {name: {**{r: float(np.mean(v)) for r, v in per.items()},
                   "mean": float(np.mean([np.mean(v) for v in per.values()]))}
            for name, per in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/synth_tumor"))
    parser.add_argument("--runs", type=Path, nargs="*", default=[])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    entries = json.loads((args.data / "datalist.json").read_text())
    threshold = threshold_wt(args.data, entries, np.linspace(0.0, 3.0, 61))
    print(f"WT by one intensity threshold (z > {threshold['threshold_z']:.2f}, chosen on training): "
          f"Dice {threshold['training']:.3f} training, {threshold['validation']:.3f} validation, "
          f"{threshold['test']:.3f} test")
    runs = {}
    print("| run | split | predictions | TC | WT | ET | mean |\n|---|---|---|---|---|---|---|")
    for run in args.runs:
        for split in ("validation", "test"):
            result = run_errors(run, args.data, entries, split)
            if result is None:
                continue
            runs.setdefault(str(run), {})[split] = result
            for name, r in result.items():
                print(f"| {run} | {split} | {name} | {r['TC']:.3f} | {r['WT']:.3f} | {r['ET']:.3f} | {r['mean']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps({"data": str(args.data), "threshold_wt": threshold, "runs": runs},
                                        indent=1) + "\n")


if __name__ == "__main__":
    main()
