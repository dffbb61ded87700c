"""Decathlon-style data lists and converters from the datasets' folder layouts.

A data list is a JSON object ``{"training": [...], "validation": [...], "test": [...]}``; each
entry is ``{"id": str, "image": str | list[str], "label": str}`` (``label`` may be absent in
test/predict lists). Other top-level keys (e.g. ``"synth"`` parameters) are kept but ignored.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tcurseg.data.errors import DataError

SPLITS = ("training", "validation", "test")
HIPPO_SPLIT_FILES = {"training": "train.txt", "validation": "valid.txt", "test": "test.txt"}
BRATS_MODALITIES = ("flair", "t1", "t1ce", "t2")


def _resolve(value: str, root: Path) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else root / path)


def read_json_list(path: str | Path) -> dict:
    """Read a data-list JSON object; raise DataError naming the file if missing or invalid."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: data list not found")
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: data list unreadable ({err})") from err
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: data list is not valid JSON ({err})") from err
    if not isinstance(content, dict):
        raise DataError(f"{path}: data list must be a JSON object with keys {list(SPLITS)}")
    return content


def load_data_list(path: str | Path, data_root: str | Path | None = None) -> dict[str, list[dict]]:
    """Load a data list and resolve relative paths against ``data_root`` (default: the JSON's folder).

    Returns ``{split: [entry, ...]}`` for every split in the file; entries get an ``id`` (the
    image file stem) when the file has none. Raises DataError naming the file when it is missing,
    not JSON, or when an entry has no ``image``.
    """
    path = Path(path)
    content = read_json_list(path)
    root = Path(data_root).expanduser() if data_root is not None else path.parent
    splits: dict[str, list[dict]] = {}
    for split in SPLITS:
        if split not in content:
            continue
        entries = content[split]
        if not isinstance(entries, list):
            raise DataError(f"{path}: split {split!r} must be a list of entries")
        resolved = []
        for n, entry in enumerate(entries):
            if not isinstance(entry, dict) or "image" not in entry:
                raise DataError(f"{path}: {split}[{n}] has no 'image'")
            item = dict(entry)
            image = item["image"]
            if isinstance(image, list):
                item["image"] = [_resolve(str(p), root) for p in image]
            else:
                item["image"] = _resolve(str(image), root)
            if item.get("label") is not None:
                item["label"] = _resolve(str(item["label"]), root)
            if "id" not in item:
                first = item["image"][0] if isinstance(item["image"], list) else item["image"]
                item["id"] = Path(first).name.split(".")[0]
            resolved.append(item)
        splits[split] = resolved
    return splits


def write_data_list(path: str | Path, splits: dict[str, list[dict]], extra: dict | None = None) -> Path:
    """Write ``splits`` (and optional extra top-level keys) as an indented JSON data list."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {split: list(splits.get(split, [])) for split in SPLITS}
    content.update({k: v for k, v in splits.items() if k not in SPLITS})
    if extra:
        content.update(extra)
    path.write_text(json.dumps(content, indent=2) + "\n")
    return path


def hippocampus_layout_to_list(root: str | Path) -> dict[str, list[dict]]:
    """Convert the authors' hippocampus layout (EADC, LPBA40, HFH) to data-list splits.

    ``root/train.txt``, ``valid.txt``, ``test.txt`` list ``sub{i}``; each subject has
    ``sub{i}/sub{i}_img.nii.gz`` and ``sub{i}/sub{i}_mask.nii.gz``. Paths are relative to root.
    """
    root = Path(root)
    splits: dict[str, list[dict]] = {}
    for split, name in HIPPO_SPLIT_FILES.items():
        txt = root / name
        if not txt.is_file():
            raise DataError(f"{txt}: split file not found")
        entries = []
        for sub in (line.strip() for line in txt.read_text().splitlines()):
            if not sub:
                continue
            entry = {"id": sub, "image": f"{sub}/{sub}_img.nii.gz", "label": f"{sub}/{sub}_mask.nii.gz"}
            for key in ("image", "label"):
                if not (root / entry[key]).is_file():
                    raise DataError(f"{root / entry[key]}: file not found (listed in {txt})")
            entries.append(entry)
        splits[split] = entries
    return splits


def brats_layout_to_list(
    root: str | Path, val_frac: float = 0.1, test_frac: float = 0.2, seed: int = 0,
    modalities: Sequence[str] = BRATS_MODALITIES,
) -> dict[str, list[dict]]:
    """Convert a BraTS 2021 training folder to data-list splits with a seeded random split.

    Each case ``BraTS2021_XXXXX/`` holds ``BraTS2021_XXXXX_{flair,t1,t1ce,t2,seg}.nii.gz``; the
    image is the list of ``modalities`` (default all 4, in that order). Paths are relative to root.
    """
    unknown = [m for m in modalities if m not in BRATS_MODALITIES]
    if unknown or not modalities:
        raise DataError(f"unknown BraTS modalities {unknown or list(modalities)}; choose from {list(BRATS_MODALITIES)}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: BraTS folder not found")
    cases = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("BraTS"))
    if not cases:
        raise DataError(f"{root}: no BraTS case folders (BraTS*/) found")
    entries = []
    for case in cases:
        image = [f"{case}/{case}_{m}.nii.gz" for m in modalities]
        label = f"{case}/{case}_seg.nii.gz"
        for rel in [*image, label]:
            if not (root / rel).is_file():
                raise DataError(f"{root / rel}: file not found")
        entries.append({"id": case, "image": image, "label": label})
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise DataError(f"invalid split fractions val={val_frac} test={test_frac}")
    order = np.random.default_rng(seed).permutation(len(entries))
    n_test = int(round(test_frac * len(entries)))
    n_val = int(round(val_frac * len(entries)))
    test = sorted(order[:n_test])
    val = sorted(order[n_test : n_test + n_val])
    train = sorted(order[n_test + n_val :])
    return {
        "training": [entries[i] for i in train],
        "validation": [entries[i] for i in val],
        "test": [entries[i] for i in test],
    }
