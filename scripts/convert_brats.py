"""Convert a BraTS training folder to a tcurseg data list (seeded train/validation/test split).

Usage: python scripts/convert_brats.py --root BraTS2021_Training_Data --out data_lists/brats.json
       [--val-frac 0.1 --test-frac 0.2 --seed 0] [--modalities t1]
The layout is detected from the case folders:
- BraTS 2021 (``BraTS2021_XXXXX/*_{flair,t1,t1ce,t2,seg}.nii.gz``): image = [flair, t1, t1ce, t2] (in_channels 4),
  label = seg (values 0, 1, 2, 4); conf/data/brats.yaml.
- BraTS 2023/2024 glioma (``BraTS-GLI-XXXXX-XXX/*-{t1n,t1c,t2w,t2f,seg}.nii.gz``): image = [t2f, t1n, t1c, t2w],
  label = seg (values 0, 1, 2, 3; 2024 adds 4); conf/data/brats_gli.yaml.
``--modalities`` picks channels (the authors pretrain on one: ``--modalities t1 --out data_lists/brats_t1.json`` for
``+experiment=brats_pretrain``). Paths are relative to --root: pass it as ``data_root`` when loading.
``python -m tcurseg.train +experiment=brats`` (brats_gli, brats_pretrain) makes this list itself when it is missing
and BRATS_ROOT (BRATS_GLI_ROOT) is set, with the same code and defaults (``tcurseg.data.layouts``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tcurseg.data.errors import DataError  # noqa: E402
from tcurseg.data.layouts import convert, write_converted  # noqa: E402
from tcurseg.data.lists import BRATS_GLI_MODALITIES, BRATS_MODALITIES, split_summary  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description="BraTS 2021 or 2023/2024 glioma training folder -> data list JSON")
    parser.add_argument("--root", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--val-frac", type=float, default=0.1)
    parser.add_argument("--test-frac", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modalities", nargs="+", default=None,
                        help=f"channels in order (default 2021: {' '.join(BRATS_MODALITIES)}; "
                             f"2023/2024: {' '.join(BRATS_GLI_MODALITIES)})")
    args = parser.parse_args()
    try:
        converted = convert("brats", args.root, args.val_frac, args.test_frac, args.seed, modalities=args.modalities)
    except DataError as err:
        sys.exit(f"error: {err}")
    path = write_converted(converted, args.out)
    print(f"{path}: {split_summary(converted.splits)} ({converted.described})")


if __name__ == "__main__":
    main()
