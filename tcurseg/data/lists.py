"""Decathlon-style data lists and converters from the datasets' folder layouts.

Converters: the authors' hippocampus layout (EADC, LPBA40, HFH), BraTS 2021, BraTS 2023/2024 glioma, the Medical
Segmentation Decathlon (``dataset.json``) and UPENN-GBM (TCIA). Each collects every problem of the tree (missing
file, missing label, empty folder, unreadable ``dataset.json``) and raises one DataError listing them, one a line.

A data list is a JSON object ``{"training": [...], "validation": [...], "test": [...]}``; each
entry is ``{"id": str, "image": str | list[str], "label": str}`` (``label`` may be absent in
test/predict lists). Other top-level keys (e.g. ``"synth"`` parameters) are kept but ignored.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tcurseg.data.errors import DataError

SPLITS = ("training", "validation", "test")
HIPPO_SPLIT_FILES = {"training": "train.txt", "validation": "valid.txt", "test": "test.txt"}
BRATS_MODALITIES = ("flair", "t1", "t1ce", "t2")
BRATS_GLI_MODALITIES = ("t2f", "t1n", "t1c", "t2w")
"""BraTS 2023/2024 glioma channels in the order of BraTS 2021's flair, t1, t1ce, t2."""
UPENN_GBM_MODALITIES = ("T1", "T1GD", "T2", "FLAIR")
EADC_FLAGGED = ("sub8", "sub35", "sub65", "sub85", "sub134")
"""EADC subjects whose label does not match the image (flagged in the authors' README)."""


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


def replace_atomically(path: str | Path, write: Callable[[Path], None], suffix: str = ".tmp") -> Path:
    """``write`` a hidden temporary file next to ``path`` (``.<name>.<pid><suffix>``), flush it to disk, then rename
    it to ``path``: a reader (or a later run) finds the old file, no file, or the whole new one, never a part; a
    process killed on the way leaves only the hidden temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{suffix}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def data_list_text(splits: dict[str, list[dict]], extra: dict | None = None) -> str:
    """``splits`` (and optional extra top-level keys) as the indented JSON of a data list."""
    content = {split: list(splits.get(split, [])) for split in SPLITS}
    content.update({k: v for k, v in splits.items() if k not in SPLITS})
    if extra:
        content.update(extra)
    return json.dumps(content, indent=2) + "\n"


def write_data_list(path: str | Path, splits: dict[str, list[dict]], extra: dict | None = None) -> Path:
    """Write the data list of ``splits`` (:func:`data_list_text`) atomically (:func:`replace_atomically`)."""
    text = data_list_text(splits, extra)
    return replace_atomically(path, lambda tmp: tmp.write_text(text))


def _problems_error(layout: str, problems: Sequence[str]) -> DataError:
    return DataError(f"{layout}: {len(problems)} problem(s):\n" + "\n".join(problems))


def _raise_problems(layout: str, problems: Sequence[str]) -> None:
    """Raise one DataError listing every problem (one line each, naming its file), if there is any."""
    if problems:
        raise _problems_error(layout, problems)


def split_summary(splits: dict[str, list[dict]]) -> str:
    """``training N, validation N, test N``: the converter scripts' report."""
    return ", ".join(f"{split} {len(splits.get(split, []))}" for split in SPLITS)


def _check_files(root: Path, rels: Sequence[str], problems: list[str], source: Path | None = None) -> None:
    """Record ``file not found`` (and where the file is listed) for each path of ``rels`` missing under root."""
    where = f" (listed in {source})" if source is not None else ""
    problems.extend(f"{root / rel}: file not found{where}" for rel in rels if not (root / rel).is_file())


def _argument_problems(
    dataset: str, val_frac: float, test_frac: float, modalities: Sequence[str] = (), known: Sequence[str] = (),
) -> list[str]:
    problems = []
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        problems.append(f"invalid split fractions val={val_frac} test={test_frac} (each in [0, 1), sum below 1)")
    unknown = [m for m in modalities if m not in known]
    if known and (unknown or not modalities):
        problems.append(f"unknown {dataset} modalities {unknown or list(modalities)}; choose from {list(known)}")
    return problems


def _seeded_split(entries: list[dict], val_frac: float, test_frac: float, seed: int) -> dict[str, list[dict]]:
    """``round(frac * n)`` random cases each for test and validation, the rest for training; order kept."""
    order = np.random.default_rng(seed).permutation(len(entries))
    n_test = int(round(test_frac * len(entries)))
    n_val = int(round(val_frac * len(entries)))
    parts = {"test": order[:n_test], "validation": order[n_test : n_test + n_val], "training": order[n_test + n_val :]}
    return {split: [entries[i] for i in sorted(parts[split])] for split in SPLITS}


def _case_folders(folder: Path, pattern: str, shown: str, problems: list[str]) -> list[str]:
    """Sorted names of the sub-folders of ``folder`` that fully match ``pattern``; a problem when there is none."""
    if not folder.is_dir():
        problems.append(f"{folder}: folder not found")
        return []
    cases = sorted(p.name for p in folder.iterdir() if p.is_dir() and re.fullmatch(pattern, p.name))
    if not cases:
        problems.append(f"{folder}: no case folders ({shown}) found")
    return cases


def _listed_subjects(txt: Path) -> list[str]:
    return [line.strip() for line in txt.read_text().splitlines() if line.strip()]


def hippocampus_layout_to_list(root: str | Path, exclude: Sequence[str] = ()) -> dict[str, list[dict]]:
    """Convert the authors' hippocampus layout (EADC, LPBA40, HFH) to data-list splits.

    ``root/train.txt``, ``valid.txt``, ``test.txt`` list ``sub{i}``; each subject has
    ``sub{i}/sub{i}_img.nii.gz`` and ``sub{i}/sub{i}_mask.nii.gz``. Paths are relative to root. Subjects in
    ``exclude`` (e.g. ``EADC_FLAGGED``) are left out unchecked and, when any is listed, returned under
    ``"excluded"`` (a top-level key that ``write_data_list`` keeps and ``load_data_list`` ignores).
    """
    root = Path(root)
    layout = "hippocampus layout"
    if not root.is_dir():
        _raise_problems(layout, [f"{root}: folder not found"])
    problems: list[str] = []
    splits: dict[str, list[dict]] = {}
    excluded: list[dict] = []
    for split, name in HIPPO_SPLIT_FILES.items():
        txt = root / name
        if not txt.is_file():
            problems.append(f"{txt}: split file not found")
            continue
        splits[split] = []
        for sub in _listed_subjects(txt):
            entry = {"id": sub, "image": f"{sub}/{sub}_img.nii.gz", "label": f"{sub}/{sub}_mask.nii.gz"}
            if sub in exclude:
                excluded.append(entry)
                continue
            _check_files(root, [entry["image"], entry["label"]], problems, txt)
            splits[split].append(entry)
    _raise_problems(layout, problems)
    return {**splits, "excluded": excluded} if excluded else splits


@dataclass(frozen=True)
class _BratsNaming:
    """How a BraTS release names its case folders and files: ``<case>/<case><sep><modality>.nii.gz``."""

    name: str
    pattern: str
    shown: str
    sep: str
    modalities: tuple[str, ...]


_BRATS_2021 = _BratsNaming("BraTS 2021", r"BraTS(?!-).*", "BraTS2021_XXXXX/", "_", BRATS_MODALITIES)
_BRATS_GLI = _BratsNaming("BraTS 2023/2024 glioma", r"BraTS-GLI-.*", "BraTS-GLI-XXXXX-XXX/", "-", BRATS_GLI_MODALITIES)


def _brats_list(
    naming: _BratsNaming, root: str | Path, val_frac: float, test_frac: float, seed: int, modalities: Sequence[str],
) -> dict[str, list[dict]]:
    _raise_problems(naming.name, _argument_problems(naming.name, val_frac, test_frac, modalities, naming.modalities))
    root = Path(root)
    problems: list[str] = []
    entries = []
    for case in _case_folders(root, naming.pattern, naming.shown, problems):
        image = [f"{case}/{case}{naming.sep}{m}.nii.gz" for m in modalities]
        label = f"{case}/{case}{naming.sep}seg.nii.gz"
        _check_files(root, [*image, label], problems)
        entries.append({"id": case, "image": image, "label": label})
    _raise_problems(f"{naming.name} layout", problems)
    return _seeded_split(entries, val_frac, test_frac, seed)


def brats_layout_to_list(
    root: str | Path, val_frac: float = 0.1, test_frac: float = 0.2, seed: int = 0,
    modalities: Sequence[str] = BRATS_MODALITIES,
) -> dict[str, list[dict]]:
    """Convert a BraTS 2021 training folder to data-list splits with a seeded random split.

    Each case ``BraTS2021_XXXXX/`` holds ``BraTS2021_XXXXX_{flair,t1,t1ce,t2,seg}.nii.gz`` (labels 1, 2, 4); the
    image is the list of ``modalities`` (default all 4, in that order). Paths are relative to root.
    """
    return _brats_list(_BRATS_2021, root, val_frac, test_frac, seed, modalities)


def brats_gli_layout_to_list(
    root: str | Path, val_frac: float = 0.1, test_frac: float = 0.2, seed: int = 0,
    modalities: Sequence[str] = BRATS_GLI_MODALITIES,
) -> dict[str, list[dict]]:
    """Convert a BraTS 2023/2024 adult glioma training folder to data-list splits with a seeded random split.

    Each case ``BraTS-GLI-XXXXX-XXX/`` holds ``BraTS-GLI-XXXXX-XXX-{t1n,t1c,t2w,t2f,seg}.nii.gz`` (labels 1 NETC,
    2 SNFH, 3 ET; 2024 adds 4 RC); the image is the list of ``modalities`` (default t2f, t1n, t1c, t2w: the order
    of BraTS 2021's flair, t1, t1ce, t2). Paths are relative to root.
    """
    return _brats_list(_BRATS_GLI, root, val_frac, test_frac, seed, modalities)


def detect_brats_layout(root: str | Path) -> str:
    """``"gli"`` when ``root`` holds BraTS 2023/2024 glioma case folders (``BraTS-GLI-*/``), else ``"2021"``."""
    root = Path(root)
    if root.is_dir() and any(p.is_dir() and re.fullmatch(_BRATS_GLI.pattern, p.name) for p in root.iterdir()):
        return "gli"
    return "2021"


def _upenn_label(root: Path, structural: str, case: str) -> str | None:
    """The manual segmentation of ``case``, in ``images_segm/`` or in the case folder, if either exists."""
    for rel in (f"images_segm/{case}_segm.nii.gz", f"{structural}{case}/{case}_segm.nii.gz"):
        if (root / rel).is_file():
            return rel
    return None


def upenn_gbm_layout_to_list(
    root: str | Path, val_frac: float = 0.1, test_frac: float = 0.2, seed: int = 0,
    modalities: Sequence[str] = UPENN_GBM_MODALITIES, skip_unlabelled: bool = False,
) -> dict[str, list[dict]]:
    """Convert UPENN-GBM (TCIA NIfTI release) to data-list splits with a seeded random split.

    ``root`` is the release's ``NIfTI-files`` folder: ``images_structural/<case>/<case>_{T1,T1GD,T2,FLAIR}.nii.gz``
    and the manual segmentations ``images_segm/<case>_segm.nii.gz`` (labels 1, 2, 4 as BraTS 2021), or a folder of
    ``<case>/`` folders that also hold ``<case>_segm.nii.gz``; cases are ``UPENN-GBM-XXXXX_11`` (``_21``: follow-up).
    The automated segmentations are not used. A case without a manual segmentation is a problem or, with
    ``skip_unlabelled``, left out and returned (images only) under ``"unlabelled"``. Paths are relative to root.
    """
    dataset = "UPENN-GBM"
    _raise_problems(dataset, _argument_problems(dataset, val_frac, test_frac, modalities, UPENN_GBM_MODALITIES))
    root = Path(root)
    structural = "images_structural/" if (root / "images_structural").is_dir() else ""
    problems: list[str] = []
    entries, unlabelled = [], []
    for case in _case_folders(root / structural, r"UPENN-GBM-\d+_\d+", "UPENN-GBM-XXXXX_11/", problems):
        image = [f"{structural}{case}/{case}_{m}.nii.gz" for m in modalities]
        _check_files(root, image, problems)
        label = _upenn_label(root, structural, case)
        if label is not None:
            entries.append({"id": case, "image": image, "label": label})
        else:
            unlabelled.append({"id": case, "image": image})
            if not skip_unlabelled:
                problems.append(f"{root / 'images_segm' / f'{case}_segm.nii.gz'}: manual segmentation not found "
                                f"(nor {root / structural / case / f'{case}_segm.nii.gz'})")
    if unlabelled and not skip_unlabelled:
        problems.append(f"{root}: {len(unlabelled)} case(s) without a manual segmentation "
                        "(skip_unlabelled, or --skip-unlabelled, leaves them out)")
    elif unlabelled and not entries:
        problems.append(f"{root}: no case has a manual segmentation")
    _raise_problems(f"{dataset} layout", problems)
    splits = _seeded_split(entries, val_frac, test_frac, seed)
    return {**splits, "unlabelled": unlabelled} if unlabelled else splits


def _decathlon_entry(root: Path, source: Path, n: int, item: dict, problems: list[str]) -> dict:
    image, label = item.get("image"), item.get("label")
    if not isinstance(image, str) or not isinstance(label, str):
        problems.append(f"{source}: training[{n}] needs one 'image' and one 'label' path")
        return {}
    rels = [Path(os.path.relpath(p, root)).as_posix() for p in (image, label)]
    _check_files(root, rels, problems, source)
    return {"id": Path(rels[0]).name.split(".")[0], "image": rels[0], "label": rels[1]}


def decathlon_layout_to_list(
    root: str | Path, val_frac: float = 0.1, test_frac: float = 0.2, seed: int = 0,
) -> dict[str, list[dict]]:
    """Convert a Medical Segmentation Decathlon task folder (e.g. ``Task01_BrainTumour``) to data-list splits.

    ``root/dataset.json`` lists ``training`` entries ``{"image": "./imagesTr/X.nii.gz", "label":
    "./labelsTr/X.nii.gz"}`` (read with MONAI's ``load_decathlon_datalist``), split seeded into training/validation/
    test; its own ``test`` images have no labels and are left out. A 4-D image (Task01: 4 modalities in the last axis)
    stays one file: the transforms put its channels first. Ids are file names without extension; paths are relative
    to root.
    """
    from monai.data import load_decathlon_datalist  # imported here: the other converters need no MONAI

    layout = "Decathlon layout"
    _raise_problems("Decathlon", _argument_problems("Decathlon", val_frac, test_frac))
    root = Path(root)
    source = root / "dataset.json"
    if not source.is_file():
        _raise_problems(layout, [f"{source}: not found (give the task folder, e.g. Task01_BrainTumour)"])
    try:
        items = load_decathlon_datalist(source, is_segmentation=True, data_list_key="training", base_dir=root)
    except (OSError, ValueError, TypeError) as err:
        raise _problems_error(layout, [f"{source}: unreadable Decathlon dataset.json ({err})"]) from err
    problems = [] if items else [f"{source}: 'training' lists no case"]
    entries = [_decathlon_entry(root, source, n, item, problems) for n, item in enumerate(items)]
    _raise_problems(layout, problems)
    return _seeded_split(entries, val_frac, test_frac, seed)


def decathlon_properties(root: str | Path) -> dict:
    """``name``, ``modality`` (channel index -> name) and ``labels`` (value -> name) of a Decathlon task's
    ``dataset.json``, those present (MONAI's ``load_decathlon_properties``)."""
    from monai.data import load_decathlon_properties

    properties = {}
    for key in ("name", "modality", "labels"):
        try:
            properties.update(load_decathlon_properties(Path(root) / "dataset.json", key))
        except KeyError:
            continue
    return properties
