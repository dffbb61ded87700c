"""Convert the authors' hippocampus layout (EADC, LPBA40, HFH) to a tcurseg data list.

Usage: python scripts/convert_hippocampus.py --root Datasets/EADC --out data_lists/eadc.json
Paths in the list are relative to --root: pass it as ``data_root`` when loading.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tcurseg.data.errors import DataError  # noqa: E402
from tcurseg.data.lists import hippocampus_layout_to_list, write_data_list  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description="sub{i}/sub{i}_img.nii.gz + train/valid/test.txt -> data list JSON")
    parser.add_argument("--root", required=True, help="dataset folder holding train.txt, valid.txt, test.txt and sub*/")
    parser.add_argument("--out", required=True, help="data list JSON to write")
    args = parser.parse_args()
    try:
        splits = hippocampus_layout_to_list(args.root)
    except DataError as err:
        sys.exit(f"error: {err}")
    path = write_data_list(args.out, splits)
    print(f"{path}: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))


if __name__ == "__main__":
    main()
