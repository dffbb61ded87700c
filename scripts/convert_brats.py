"""Convert a BraTS 2021 training folder to a tcurseg data list (seeded train/validation/test split).

Usage: python scripts/convert_brats.py --root BraTS2021_Training_Data --out data_lists/brats.json
       [--val-frac 0.1 --test-frac 0.2 --seed 0] [--modalities t1]
Image = [flair, t1, t1ce, t2] (in_channels 4), or the ``--modalities`` given (the authors pretrain on one: use
``--modalities t1 --out data_lists/brats_t1.json`` for ``+experiment=brats_pretrain``), label = seg (values 0, 1, 2,
4). Paths are relative to --root: pass it as ``data_root`` when loading.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tcurseg.data.errors import DataError  # noqa: E402
from tcurseg.data.lists import brats_layout_to_list, write_data_list  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description="BraTS2021_XXXXX/*_{flair,t1,t1ce,t2,seg}.nii.gz -> data list JSON")
    parser.add_argument("--root", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--val-frac", type=float, default=0.1)
    parser.add_argument("--test-frac", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modalities", nargs="+", default=["flair", "t1", "t1ce", "t2"])
    args = parser.parse_args()
    try:
        splits = brats_layout_to_list(args.root, args.val_frac, args.test_frac, args.seed, args.modalities)
    except DataError as err:
        sys.exit(f"error: {err}")
    path = write_data_list(args.out, splits)
    print(f"{path}: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))


if __name__ == "__main__":
    main()
