"""Slice views (axial, coronal, sagittal; each the slice with the most label voxels) of image with label contours.

Usage: python scripts/show_synth.py --data-list data/synth_hippo/datalist.json --out docs/synth_hippo.png --n 3
Volumes are reoriented to RAS and shown in neurological convention (subject's right on the right,
anterior up in axial views, superior up in coronal and sagittal views).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tcurseg.data.lists import load_data_list  # noqa: E402

COLOURS = {1: "red", 2: "lime", 3: "blue", 4: "yellow"}
"""Contour colour per label value; value 1 (hippocampus, necrotic core) is drawn last, on top."""


def _ras(path: str) -> tuple[np.ndarray, np.ndarray]:
    img = nib.as_closest_canonical(nib.load(path))
    return np.asarray(img.dataobj), np.sqrt((img.affine[:3, :3] ** 2).sum(0))


def _views(image: np.ndarray, label: np.ndarray, spacing: np.ndarray):
    fg = label > 0
    if fg.any():
        c = [int(np.argmax(fg.sum(axis=tuple(k for k in range(3) if k != axis)))) for axis in range(3)]
    else:
        c = [n // 2 for n in image.shape]
    yield "axial", image[:, :, c[2]].T, label[:, :, c[2]].T, spacing[1] / spacing[0]
    yield "coronal", image[:, c[1], :].T, label[:, c[1], :].T, spacing[2] / spacing[0]
    yield "sagittal", image[c[0], :, :].T, label[c[0], :, :].T, spacing[2] / spacing[1]


def show(data_list: str | Path, out: str | Path, n: int = 3) -> Path:
    """Render ``n`` subjects (training split first) of a data list into one PNG."""
    splits = load_data_list(data_list)
    entries = [e for split in ("training", "validation", "test") for e in splits.get(split, [])][:n]
    values = sorted({int(v) for e in entries for v in np.unique(_ras(e["label"])[0])} - {0})
    fig, axes = plt.subplots(len(entries), 3, figsize=(9, 3 * len(entries)), squeeze=False)
    for row, entry in zip(axes, entries):
        image_path = entry["image"][0] if isinstance(entry["image"], list) else entry["image"]
        image, spacing = _ras(image_path)
        label, _ = _ras(entry["label"])
        for ax, (name, img, lab, aspect) in zip(row, _views(image, label, spacing)):
            ax.imshow(img, cmap="gray", origin="lower", aspect=aspect)
            for value in sorted(values, key=lambda v: v == 1):
                if (lab == value).any():
                    ax.contour(lab == value, levels=[0.5], colors=COLOURS.get(value, "magenta"), linewidths=0.8)
            ax.set_title(f"{entry['id']} {name}", fontsize=9)
            ax.axis("off")
    legend = ", ".join(f"{v}={COLOURS.get(v, 'magenta')}" for v in values)
    fig.suptitle(f"{Path(data_list).parent.name}: labels {legend}", fontsize=10)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="Mid-slice overlays of a data list's subjects.")
    parser.add_argument("--data-list", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--n", type=int, default=3)
    args = parser.parse_args()
    print(show(args.data_list, args.out, args.n))


if __name__ == "__main__":
    main()
