"""Convert a Medical Segmentation Decathlon task folder to a tcurseg data list (seeded train/validation/test split).

Usage: python scripts/convert_decathlon.py --root Task01_BrainTumour --out data_lists/msd_brain_tumour.json
       [--val-frac 0.1 --test-frac 0.2 --seed 0]
Reads ``--root/dataset.json`` (its labelled ``training`` cases; the unlabelled ``test`` images are left out). Task01's
images are 4-D (4 modalities in the last axis: in_channels 4); Task04_Hippocampus's are 3-D. The task's channels and
labels are printed and kept in the JSON (keys ``modality``, ``labels``). Paths are relative to --root: pass it as
``data_root`` when loading (conf/data/msd_brain_tumour.yaml, msd_hippocampus.yaml).
``+experiment=msd_brain_tumour`` / ``msd_hippocampus`` make this list themselves when it is missing and
MSD_BRAIN_TUMOUR_ROOT / MSD_HIPPOCAMPUS_ROOT is set, with the same code and defaults (``tcurseg.data.layouts``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tcurseg.data.errors import DataError  # noqa: E402
from tcurseg.data.layouts import convert, write_converted  # noqa: E402
from tcurseg.data.lists import split_summary  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description="MSD TaskXX_Name/dataset.json -> data list JSON")
    parser.add_argument("--root", required=True, help="task folder holding dataset.json, imagesTr/ and labelsTr/")
    parser.add_argument("--out", required=True, help="data list JSON to write")
    parser.add_argument("--val-frac", type=float, default=0.1)
    parser.add_argument("--test-frac", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        converted = convert("decathlon", args.root, args.val_frac, args.test_frac, args.seed)
    except DataError as err:
        sys.exit(f"error: {err}")
    path = write_converted(converted, args.out)
    print(f"{path}: {split_summary(converted.splits)}")
    print("\n".join(converted.notes_for(path)))


if __name__ == "__main__":
    main()
