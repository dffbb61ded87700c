"""Convert the authors' hippocampus layout (EADC, LPBA40, HFH) to a tcurseg data list.

Usage: python scripts/convert_hippocampus.py --root Datasets/EADC --out data_lists/eadc.json [--keep-flagged]
The authors flag five EADC subjects whose label does not match the image (sub8, sub35, sub65, sub85, sub134): they
are left out when the --root folder's name contains "EADC" (any case) or with --exclude-flagged; --keep-flagged keeps
them. Paths in the list are relative to --root: pass it as ``data_root`` when loading.
``+experiment=eadc`` (hfh, lpba40) makes this list itself when it is missing and EADC_ROOT (HFH_ROOT,
LPBA40_ROOT) is set, with the same code (``tcurseg.data.layouts``; eadc leaves the flagged subjects out).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tcurseg.data.errors import DataError  # noqa: E402
from tcurseg.data.layouts import convert, write_converted  # noqa: E402
from tcurseg.data.lists import EADC_FLAGGED, split_summary  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description="sub{i}/sub{i}_img.nii.gz + train/valid/test.txt -> data list JSON")
    parser.add_argument("--root", required=True, help="dataset folder holding train.txt, valid.txt, test.txt and sub*/")
    parser.add_argument("--out", required=True, help="data list JSON to write")
    flagged = parser.add_mutually_exclusive_group()
    flagged.add_argument("--exclude-flagged", dest="exclude_flagged", action="store_const", const=True,
                         help=f"leave out the flagged EADC subjects {' '.join(EADC_FLAGGED)} (default: EADC roots)")
    flagged.add_argument("--keep-flagged", dest="exclude_flagged", action="store_const", const=False,
                         help="keep them")
    args = parser.parse_args()
    try:
        converted = convert("hippocampus", args.root, exclude_flagged=args.exclude_flagged)
    except DataError as err:
        sys.exit(f"error: {err}")
    path = write_converted(converted, args.out)
    print(f"{path}: {split_summary(converted.splits)}")
    for note in converted.notes_for(path):
        print(f"note: {note}")


if __name__ == "__main__":
    main()
