"""Write a fabricated BraTS tree at the real geometry (240 x 240 x 155, 1 mm, 4 contrasts) from the embedded anatomy.

Usage: python scripts/make_brats_tree.py --out /tmp/BraTS2021 --n 8 [--release 2021|gli] [--seed 0] [--spacing 1]
2021: ``BraTS2021_XXXXX/BraTS2021_XXXXX_{flair,t1,t1ce,t2,seg}.nii.gz``, labels 0, 1, 2, 4;
gli (BraTS 2023 adult glioma): ``BraTS-GLI-XXXXX-000/BraTS-GLI-XXXXX-000-{t1n,t1c,t2w,t2f,seg}.nii.gz``, labels 0-3.
Then, e.g.: BRATS_ROOT=/tmp/BraTS2021 python -m tcurseg.train +experiment=brats pretrained=...
(``tcurseg.data.brats_tree``; about 20 s per case on one core; ``--spacing 3`` keeps the field of view, coarser.)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tcurseg.data.brats_tree import RELEASES, brats_grid, write_brats_tree  # noqa: E402
from tcurseg.data.errors import DataError  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description="fabricated BraTS 2021 / 2023 glioma tree at the real geometry")
    parser.add_argument("--out", required=True, help="folder to write the case folders into")
    parser.add_argument("--n", type=int, default=8, help="number of cases")
    parser.add_argument("--release", choices=RELEASES, default="2021")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spacing", type=float, default=1.0, help="mm (1: the real grid)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: one per CPU)")
    args = parser.parse_args()
    start = time.perf_counter()
    try:
        cases = write_brats_tree(args.out, args.n, args.release, args.seed, args.spacing, args.workers)
    except DataError as err:
        sys.exit(f"error: {err}")
    shape, _ = brats_grid(args.spacing)
    print(f"{args.out}: {len(cases)} BraTS {args.release} cases of {' x '.join(map(str, shape))} voxels at "
          f"{args.spacing:g} mm, {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
