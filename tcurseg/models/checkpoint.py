"""Load pretrained weights into a UNETR or a SwinUNETR and report what matched.

Layouts (docs/design.md, section 3c): ours (``{"model": ..., "config": ...}``), a plain MONAI state dict,
the authors' ``{"state_dict", "epoch", "optim_dict"}`` with ``module.``, MONAI research-contributions UNETR
(``{"state_dict", "epoch", "best_acc"}``, perceptron patch embedding, legacy ``cls_token``), MONAI's
self-supervised ``ViTAutoEnc`` (keys without ``vit.``, decoder ``conv3d_transpose*`` extras), the self-supervised
Swin encoder of MONAI research-contributions (``model_swinvit.pt``: ``{"state_dict"}`` with ``module.``, keys without
``swinViT.`` or under ``swin_vit.``, MLP ``fc1`` / ``fc2``), and keys under ``module.`` / ``backbone.`` / ``model.``.
Position embeddings of another patch grid are interpolated. The encoder is the model's ``vit`` (UNETR) or ``swinViT``
(SwinUNETR) child."""

from __future__ import annotations

import math
import pickle
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from tcurseg.models.networks import encoder_prefix_of

_SHOW = 5
PREFIXES = ("module.", "backbone.", "model.")
ALIASES = (("swin_vit.", "swinViT."), (".mlp.fc1.", ".mlp.linear1."), (".mlp.fc2.", ".mlp.linear2."))
"""(old, new) name parts of Swin checkpoints: research-contributions' ``swin_vit`` attribute and the ``fc1`` / ``fc2``
MLP names that MONAI's ``SwinUNETR.load_from`` maps onto ``mlp.linear1`` / ``mlp.linear2``."""
NOT_REQUIRED = ("norm_cross_attn", "relative_position_index")
"""Encoder tensors a checkpoint need not provide: MONAI's unused cross-attention norms (ViT) and Swin's constant
relative-position index (a function of the window size)."""
POSITION = "vit.patch_embedding.position_embeddings"
LEGACY = {key: f"legacy {key} dropped (older MONAI ViTs created it without classification)"
          for key in ("vit.cls_token", "vit.patch_embedding.cls_token")}


@dataclass
class KeyReport:
    """Outcome of loading a checkpoint: which parameter/buffer names were copied, absent, extra or skipped.

    ``mismatched`` keys exist in both but differ in shape (e.g. an output head for other classes): they keep the
    model's fresh initialisation ("reinitialised"); ``shapes`` maps them to (checkpoint shape, model shape).
    ``encoder_loaded`` / ``encoder_total`` count the encoder tensors (keys under ``encoder_prefix``: ``vit.`` for
    UNETR, ``swinViT.`` for SwinUNETR) copied / required.
    """

    path: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    encoder_loaded: int = 0
    encoder_total: int = 0
    encoder_prefix: str = "vit."

    def summary(self) -> str:
        """Counts plus the first few names of each non-empty category, one line per category."""
        lines = [f"pretrained {self.path}: loaded {len(self.loaded)} tensors; "
                 f"encoder: {self.encoder_loaded}/{self.encoder_total} tensors"]
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


def _rename(key: str) -> str:
    """``key`` with the :data:`ALIASES` applied (``swin_vit.`` only as the leading part)."""
    for old, new in ALIASES:
        if old.startswith("."):
            key = key.replace(old, new)
        elif key.startswith(old):
            key = new + key[len(old):]
    return key


def _normalise(key: str, model_keys: set[str], encoder: str) -> str:
    """The model key a checkpoint key stands for: DataParallel / wrapper prefixes stripped, Swin aliases renamed
    (:data:`ALIASES`), and the encoder prefix ``encoder`` added to a bare encoder key (``ViTAutoEnc`` / ``ViT``
    weights, ``model_swinvit.pt``). A key that matches nothing comes back with its prefixes stripped only."""
    while key not in model_keys and key.startswith(PREFIXES):
        key = key.split(".", 1)[1]
    if key in model_keys:
        return key
    renamed = _rename(key)
    return next((k for k in (renamed, encoder + renamed) if k in model_keys), key)


def _is_encoder_key(key: str, encoder: str) -> bool:
    """Whether a checkpoint must provide ``key``: under ``encoder`` and not in :data:`NOT_REQUIRED`."""
    return key.startswith(encoder) and not any(part in key for part in NOT_REQUIRED)


def _grid(n: int, config: object) -> tuple[int, ...] | None:
    """The patch grid of a checkpoint's n position embeddings: from our stored config, else a cube."""
    if isinstance(config, Mapping) and isinstance(config.get("model"), Mapping) and "img_size" in config["model"]:
        from tcurseg.models.unetr import PATCH_SIZE

        grid = tuple(int(s) // PATCH_SIZE for s in config["model"]["img_size"])
        if math.prod(grid) == n:
            return grid
    side = round(n ** (1 / 3))
    return (side,) * 3 if side**3 == n else None


def interpolate_position_embeddings(pos: torch.Tensor, source: tuple[int, ...],
                                    target: tuple[int, ...]) -> torch.Tensor:
    """Position embeddings (1, prod(source), h) of a row-major patch grid (MONAI's flattening) resampled to the grid
    ``target``: trilinear, ``align_corners=False`` (so the same grid returns them unchanged)."""
    h = pos.shape[-1]
    field = pos.reshape(1, *source, h).permute(0, 4, 1, 2, 3).float()
    out = F.interpolate(field, size=tuple(target), mode="trilinear", align_corners=False)
    return out.permute(0, 2, 3, 4, 1).reshape(1, -1, h).to(pos.dtype)


def _adapt_position_embeddings(source: dict, target: Mapping, model: nn.Module, config: object,
                               notes: list[str]) -> None:
    if POSITION not in source or POSITION not in target or source[POSITION].shape == target[POSITION].shape:
        return
    pos, want = source[POSITION], target[POSITION]
    grid_from = _grid(pos.shape[1], config)
    grid_to = tuple(int(s) for s in getattr(model, "feat_size", ()) or ()) or _grid(want.shape[1], None)
    if pos.shape[-1] != want.shape[-1] or grid_from is None or grid_to is None or math.prod(grid_to) != want.shape[1]:
        return  # reported as a shape mismatch
    source[POSITION] = interpolate_position_embeddings(pos, grid_from, grid_to)
    notes.append(f"position embeddings interpolated (trilinear) from the patch grid {grid_from} -> {grid_to}")


def require_complete_encoder(report: KeyReport, method: str) -> None:
    """Refuse, in one line, to keep an encoder frozen that the checkpoint did not fully provide (every method but
    ``full`` freezes the encoder, or part of it). A report that counted no encoder tensor at all proves nothing and
    is refused too."""
    if method == "full":
        return
    if report.encoder_total == 0:
        raise ValueError(f"pretrained {report.path}: no {report.encoder_prefix}* tensor of the model was counted, so "
                         f"nothing shows that method={method} keeps a loaded encoder frozen")
    if report.encoder_loaded == report.encoder_total:
        return
    hints = " ".join(n for n in report.notes if "model.proj_type" in n)
    missing = [k for k in report.missing if _is_encoder_key(k, report.encoder_prefix)]
    raise ValueError(f"pretrained {report.path}: the encoder was loaded in part ({report.encoder_loaded}/"
                     f"{report.encoder_total} tensors; missing e.g. {_first(missing)}), and method={method} keeps it "
                     f"frozen: check that model.* matches the checkpoint. {hints}".rstrip())


def load_pretrained(model: nn.Module, path: str | Path, trusted: bool = False) -> KeyReport:
    """Copy matching tensors from a checkpoint at ``path`` into ``model`` (in place) and report the keys.

    Accepted layouts: ours ``{"model": state_dict, ...}``, a plain MONAI state dict, the authors'
    ``{"state_dict": ...}`` whose keys carry ``module.`` (DataParallel) and/or ``model.`` prefixes, which are
    stripped, and the others of the module docstring (``model_swinvit.pt`` into a SwinUNETR). Read with
    ``torch.load(weights_only=True)``; a file that needs full unpickling (which runs code) is refused unless
    ``trusted``, then read with a warning recorded in ``KeyReport.notes``. Tensors whose shape differs from the
    model's are skipped (reported as reinitialised). Raises ``FileNotFoundError`` for a missing file and
    ``ValueError`` when no key matches the model.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained checkpoint not found: {path}")
    report = KeyReport(path=str(path), encoder_prefix=encoder_prefix_of(model) + ".")
    obj = _read(path, report.notes, trusted)
    raw = _state_dict(obj, path)
    target = model.state_dict()
    model_keys = set(target)
    source = {_normalise(key, model_keys, report.encoder_prefix): value for key, value in raw.items()}
    for key, note in LEGACY.items():
        if source.pop(key, None) is not None and key not in model_keys:
            report.notes.append(note)
    if any(k.startswith("vit.patch_embedding.patch_embeddings.1.") for k in source) and \
            "vit.patch_embedding.patch_embeddings.weight" in model_keys:
        report.notes.append("the checkpoint's patch embedding is a perceptron (MONAI research-contributions UNETR): "
                            "set model.proj_type=perceptron")
    _adapt_position_embeddings(source, target, model, obj.get("config") if isinstance(obj, Mapping) else None,
                               report.notes)
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
    encoder = {k for k in model_keys if _is_encoder_key(k, report.encoder_prefix)}
    report.encoder_loaded, report.encoder_total = len(encoder & set(to_load)), len(encoder)
    report.missing = sorted(model_keys - set(source))
    report.unexpected.sort()
    report.mismatched.sort()
    return report
