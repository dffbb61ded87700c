"""Data lists made from the downloaded trees: what ``scripts/convert_*.py`` run, and the list a real-data experiment
makes itself when its ``data.data_list`` is missing (``data.layout``, called by ``tcurseg.cli.prepare_data``).

Layouts (``data.layout.name``) and their options:
- ``brats``: BraTS 2021 or 2023/2024 glioma (``release``: ``2021`` | ``gli``, detected from the case folders when
  unset), ``modalities`` (default all four); seeded split.
- ``hippocampus``: the authors' EADC / LPBA40 / HFH layout with its own split files; ``exclude_flagged`` leaves out
  the EADC subjects whose label does not match the image (unset: when the folder's name contains "EADC").
- ``decathlon``: a Medical Segmentation Decathlon task folder; its channel and label names are kept in the list.
- ``upenn_gbm``: UPENN-GBM (TCIA); ``skip_unlabelled``, ``modalities``; seeded split.
The seeded split takes ``round(test_frac * n)`` test and ``round(val_frac * n)`` validation cases (defaults 0.2 and
0.1, seed 0: the converters' defaults).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tcurseg.data.errors import DataError
from tcurseg.data.lists import (
    BRATS_GLI_MODALITIES,
    BRATS_MODALITIES,
    EADC_FLAGGED,
    SPLITS,
    brats_gli_layout_to_list,
    brats_layout_to_list,
    decathlon_layout_to_list,
    decathlon_properties,
    detect_brats_layout,
    hippocampus_layout_to_list,
    split_summary,
    upenn_gbm_layout_to_list,
    write_data_list,
)

log = logging.getLogger(__name__)

SEEDED = {"val_frac": 0.1, "test_frac": 0.2, "seed": 0}
"""The seeded split of the converters (``--val-frac``, ``--test-frac``, ``--seed``)."""
OPTIONS = {"brats": {"release", "modalities"}, "hippocampus": {"exclude_flagged"}, "decathlon": set(),
           "upenn_gbm": {"skip_unlabelled", "modalities"}}
SCRIPTS = {"brats": "convert_brats.py", "hippocampus": "convert_hippocampus.py", "decathlon": "convert_decathlon.py",
           "upenn_gbm": "convert_upenn_gbm.py"}
BRATS_RELEASES = {"2021": ("BraTS 2021", brats_layout_to_list, BRATS_MODALITIES),
                  "gli": ("BraTS 2023/2024 glioma", brats_gli_layout_to_list, BRATS_GLI_MODALITIES)}
SHOWN = 5
PATH = "<list>"
"""Stands for the written list's path in a note."""


@dataclass
class Converted:
    """A converted tree: the splits (with the converter's extra keys, e.g. ``excluded``), extra top-level keys of the
    JSON, what was read (``BraTS 2021 layout; channels ...``) and notes for the user, one a line (:meth:`notes_for`
    puts the list's path in)."""

    splits: dict[str, list[dict]]
    extra: dict = field(default_factory=dict)
    described: str = ""
    notes: list[str] = field(default_factory=list)

    def notes_for(self, path: str | Path) -> list[str]:
        """The notes with the written list's path in place of :data:`PATH`."""
        return [note.replace(PATH, str(path)) for note in self.notes]


def _names(mapping: Mapping) -> str:
    return ", ".join(f"{key} {value}" for key, value in mapping.items())


def _brats(root: Path, split: dict, release: str | None = None, modalities: Sequence[str] | None = None) -> Converted:
    release = release or detect_brats_layout(root)
    if release not in BRATS_RELEASES:
        raise DataError(f"unknown BraTS release {release!r}; choose one of {', '.join(BRATS_RELEASES)}")
    name, convert, default = BRATS_RELEASES[release]
    modalities = list(modalities or default)
    splits = convert(root, split["val_frac"], split["test_frac"], split["seed"], modalities)
    return Converted(splits, described=f"{name} layout; channels {', '.join(modalities)}")


def _hippocampus(root: Path, split: dict, exclude_flagged: bool | None = None) -> Converted:
    if exclude_flagged is None:
        exclude_flagged = "eadc" in root.resolve().name.lower()
    splits = hippocampus_layout_to_list(root, EADC_FLAGGED if exclude_flagged else ())
    notes = []
    if splits.get("excluded"):
        subjects = ", ".join(entry["id"] for entry in splits["excluded"])
        notes.append(f"left out the EADC subjects whose label does not match the image: {subjects} (--keep-flagged)")
    return Converted(splits, described="hippocampus layout", notes=notes)


def _decathlon(root: Path, split: dict) -> Converted:
    splits = decathlon_layout_to_list(root, split["val_frac"], split["test_frac"], split["seed"])
    properties = decathlon_properties(root)
    note = (f"{properties.get('name', root.name)}: channels {_names(properties.get('modality', {}))}; "
            f"labels {_names(properties.get('labels', {}))}")
    return Converted(splits, extra=properties, described="Decathlon layout", notes=[note])


def _upenn_gbm(root: Path, split: dict, skip_unlabelled: bool = False,
               modalities: Sequence[str] | None = None) -> Converted:
    kwargs = {"modalities": list(modalities)} if modalities else {}
    splits = upenn_gbm_layout_to_list(root, split["val_frac"], split["test_frac"], split["seed"],
                                      skip_unlabelled=skip_unlabelled, **kwargs)
    unlabelled = [entry["id"] for entry in splits.get("unlabelled", [])]
    notes = []
    if unlabelled:
        more = f", ... ({len(unlabelled)} in all)" if len(unlabelled) > SHOWN else ""
        notes.append(f"left out {len(unlabelled)} case(s) without a manual segmentation: "
                     f"{', '.join(unlabelled[:SHOWN])}{more} (listed under 'unlabelled' in {PATH})")
    return Converted(splits, described="UPENN-GBM layout", notes=notes)


CONVERTERS = {"brats": _brats, "hippocampus": _hippocampus, "decathlon": _decathlon, "upenn_gbm": _upenn_gbm}


def convert(layout: str, root: str | Path, val_frac: float = SEEDED["val_frac"], test_frac: float = SEEDED["test_frac"],
            seed: int = SEEDED["seed"], **options: Any) -> Converted:
    """Convert the tree at ``root`` in ``layout`` (module docstring) to data-list splits; raises DataError listing
    every problem of the tree, or naming an unknown layout or option."""
    if layout not in CONVERTERS:
        raise DataError(f"unknown data layout {layout!r}; choose one of {', '.join(CONVERTERS)}")
    unknown = sorted(set(options) - OPTIONS[layout])
    if unknown:
        raise DataError(f"data layout {layout} has no option {', '.join(unknown)}; its options: "
                        f"{', '.join(sorted(OPTIONS[layout])) or 'none'}")
    split = {"val_frac": float(val_frac), "test_frac": float(test_frac), "seed": int(seed)}
    return CONVERTERS[layout](Path(root), split, **options)


def write_converted(converted: Converted, out: str | Path) -> Path:
    """Write the converted splits (and their extra keys) to ``out`` atomically; returns the path."""
    return write_data_list(out, converted.splits, extra=converted.extra or None)


def _command(layout: Mapping, data_list: str) -> str:
    """The converter command that makes ``data_list`` for ``layout`` (the root left for the user to fill in)."""
    name = layout["name"]
    args = ["python", f"scripts/{SCRIPTS[name]}", "--root", "/path/to/the/dataset", "--out", data_list]
    if layout.get("modalities"):
        args += ["--modalities", *map(str, layout["modalities"])]
    if layout.get("skip_unlabelled"):
        args.append("--skip-unlabelled")
    if layout.get("exclude_flagged") is not None:
        args.append("--exclude-flagged" if layout["exclude_flagged"] else "--keep-flagged")
    for key in ("val_frac", "test_frac", "seed"):
        if key in layout:
            args += [f"--{key.replace('_', '-')}", str(layout[key])]
    return " ".join(args)


def _root_variable(data_cfg: Any) -> str | None:
    """The environment variable ``data_root`` reads (``${oc.env:BRATS_ROOT,...}``), if it reads one."""
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(data_cfg, resolve=False) if OmegaConf.is_config(data_cfg) else dict(data_cfg)
    found = re.search(r"oc\.env:(\w+)", str(raw.get("data_root") or ""))
    return found.group(1) if found else None


def ensure_data_list(data_cfg: Any) -> Path | None:
    """Make ``data.data_list`` from ``data.data_root`` with ``data.layout`` when the list is missing (logged, with
    the seeded split), or raise DataError in one line naming the variable to set and the converter command when the
    root is not a folder. Returns the path of a list made now, else None (the list exists, or the config has no
    layout)."""
    from omegaconf import OmegaConf

    layout = data_cfg.get("layout")
    path = Path(str(data_cfg["data_list"]))
    if not layout or path.is_file():
        return None
    layout = OmegaConf.to_container(layout, resolve=True) if OmegaConf.is_config(layout) else dict(layout)
    root = data_cfg.get("data_root")
    if not root or not Path(str(root)).expanduser().is_dir():
        variable = _root_variable(data_cfg)
        where = f"{variable}=/path/to/the/dataset" if variable else "data.data_root=/path/to/the/dataset"
        raise DataError(f"{path}: data list not found, and data_root {root} is not a folder: set {where} (the list "
                        f"is then made from it), or make the list with: {_command(layout, str(path))}")
    root = Path(str(root)).expanduser()
    options = {k: v for k, v in layout.items() if k != "name"}
    converted = convert(layout["name"], root, **options)
    write_converted(converted, path)
    split = {key: options.get(key, default) for key, default in SEEDED.items()}
    how = ("the folder's split files" if layout["name"] == "hippocampus" else
           f"seeded split: seed {split['seed']}, validation {split['val_frac']:g}, test {split['test_frac']:g}")
    log.info("%s not found: made it from %s (%s; %s): %s", path, root, converted.described, how,
             split_summary({s: converted.splits.get(s, []) for s in SPLITS}))
    for note in converted.notes_for(path):
        log.info("%s", note)
    return path
