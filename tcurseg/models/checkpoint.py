"""Load pretrained weights (ours, MONAI, the authors') into a model and report what matched."""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

_SHOW = 5


@dataclass
class KeyReport:
    """Outcome of loading a checkpoint: which parameter/buffer names were copied, absent, extra or skipped.

    ``mismatched`` keys exist in both but differ in shape (e.g. an output head for other classes): they keep the
    model's fresh initialisation ("reinitialised"); ``shapes`` maps them to (checkpoint shape, model shape).
    """

    path: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """Counts plus the first few names of each non-empty category, one line per category."""
        lines = [f"pretrained {self.path}: loaded {len(self.loaded)} tensors"]
        named = (("missing (kept initialisation)", self.missing), ("unexpected (ignored)", self.unexpected))
        for label, names in named:
            if names:
                lines.append(f"  {label}: {len(names)}: {_first(names)}")
        if self.mismatched:
            shown = ", ".join(
                f"{k} {tuple(self.shapes[k][0])}->{tuple(self.shapes[k][1])}" for k in self.mismatched[:_SHOW]
            )
            more = f" (+{len(self.mismatched) - _SHOW} more)" if len(self.mismatched) > _SHOW else ""
            lines.append(f"  reinitialised (shape mismatch): {len(self.mismatched)}: {shown}{more}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _first(names: list[str]) -> str:
    more = f" (+{len(names) - _SHOW} more)" if len(names) > _SHOW else ""
    return ", ".join(names[:_SHOW]) + more


def _read(path: Path, notes: list[str], trusted: bool) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).splitlines()[0]
        if not trusted:
            raise ValueError(f"{path} holds objects beyond tensors ({reason}): reading it would run pickled code; "
                             "set pretrained_trusted=true only for a file you trust") from None
        note = f"{path} holds objects beyond tensors ({reason}); loaded with weights_only=False (pretrained_trusted)"
        warnings.warn(note, stacklevel=3)
        notes.append(note)
        return torch.load(path, map_location="cpu", weights_only=False)


def _state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise ValueError(f"pretrained checkpoint {path} is not a state dict (got {type(obj).__name__})")
    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _normalise(key: str, model_keys: set[str]) -> str:
    while key.startswith("module."):
        key = key[len("module.") :]
    if key not in model_keys and key.startswith("model."):
        key = key[len("model.") :]
    return key


def load_pretrained(model: nn.Module, path: str | Path, trusted: bool = False) -> KeyReport:
    """Copy matching tensors from a checkpoint at ``path`` into ``model`` (in place) and report the keys.

    Accepted layouts: ours ``{"model": state_dict, ...}``, a plain MONAI state dict, and the authors'
    ``{"state_dict": ...}`` whose keys carry ``module.`` (DataParallel) and/or ``model.`` prefixes, which are
    stripped. Read with ``torch.load(weights_only=True)``; a file that needs full unpickling (which runs code) is
    refused unless ``trusted``, then read with a warning recorded in ``KeyReport.notes``. Tensors whose shape differs from the
    model's are skipped (reported as reinitialised). Raises ``FileNotFoundError`` for a missing file and
    ``ValueError`` when no key matches the model.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained checkpoint not found: {path}")
    report = KeyReport(path=str(path))
    raw = _state_dict(_read(path, report.notes, trusted), path)
    target = model.state_dict()
    model_keys = set(target)
    source = {_normalise(key, model_keys): value for key, value in raw.items()}
    to_load: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        if key not in target:
            report.unexpected.append(key)
        elif tuple(value.shape) != tuple(target[key].shape):
            report.mismatched.append(key)
            report.shapes[key] = (tuple(value.shape), tuple(target[key].shape))
        else:
            to_load[key] = value
    if not to_load:
        raise ValueError(
            f"pretrained checkpoint {path} has no tensor matching the model "
            f"({len(source)} keys in the file, e.g. {_first(sorted(source))})"
        )
    model.load_state_dict(to_load, strict=False)
    report.loaded = sorted(to_load)
    report.missing = sorted(model_keys - set(source))
    report.unexpected.sort()
    report.mismatched.sort()
    return report
