"""Convert UPENN-GBM (TCIA NIfTI release) to a tcurseg data list (seeded train/validation/test split).

Usage: python scripts/convert_upenn_gbm.py --root UPENN-GBM/NIfTI-files --out data_lists/upenn_gbm.json
       [--skip-unlabelled] [--val-frac 0.1 --test-frac 0.2 --seed 0] [--modalities T1 T1GD T2 FLAIR]
--root holds ``images_structural/<case>/<case>_{T1,T1GD,T2,FLAIR}.nii.gz`` and the manual segmentations
``images_segm/<case>_segm.nii.gz`` (or is a folder of ``<case>/`` folders holding both). Image = [T1, T1GD, T2, FLAIR]
(in_channels 4), label values 0, 1, 2, 4. The release has manual segmentations for part of its scans only: a case
without one is an error, or with --skip-unlabelled is left out (kept under ``unlabelled`` in the JSON). Paths are
relative to --root: pass it as ``data_root`` when loading (conf/data/upenn_gbm.yaml).
``+experiment=upenn_gbm`` makes this list itself (with --skip-unlabelled) when it is missing and UPENN_GBM_ROOT
is set, with the same code and defaults (``tcurseg.data.layouts``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tcurseg.data.errors import DataError  # noqa: E402
from tcurseg.data.layouts import convert, write_converted  # noqa: E402
from tcurseg.data.lists import UPENN_GBM_MODALITIES, split_summary  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description="UPENN-GBM NIfTI-files/ -> data list JSON")
    parser.add_argument("--root", required=True, help="the release's NIfTI-files folder (holding images_structural/)")
    parser.add_argument("--out", required=True, help="data list JSON to write")
    parser.add_argument("--val-frac", type=float, default=0.1)
    parser.add_argument("--test-frac", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modalities", nargs="+", default=list(UPENN_GBM_MODALITIES))
    parser.add_argument("--skip-unlabelled", action="store_true",
                        help="leave out the cases without a manual segmentation instead of failing")
    args = parser.parse_args()
    try:
        converted = convert("upenn_gbm", args.root, args.val_frac, args.test_frac, args.seed,
                            skip_unlabelled=args.skip_unlabelled, modalities=args.modalities)
    except DataError as err:
        sys.exit(f"error: {err}")
    path = write_converted(converted, args.out)
    print(f"{path}: {split_summary(converted.splits)}")
    for note in converted.notes_for(path):
        print(f"note: {note}")


if __name__ == "__main__":
    main()
