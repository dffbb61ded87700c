"""The training configuration of a run: the keys that change the result, stored in every checkpoint so that a run
folder is only ever resumed by the same configuration (docs/design.md section 3)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

IGNORED = ("device", "resume", "output_dir", "run_name", "evaluate_after", "evaluate_checkpoint", "pretrain_recipe",
           "pretrained_trusted", "eval", "hydra", "train.num_workers", "train.cache_rate", "train.ckpt_every",
           "train.keep_checkpoints")
"""Keys that do not change the trained weights (where they go, how they are evaluated, how fast data loads)."""


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}


def _ignored(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in IGNORED)


def training_config(cfg: DictConfig | Mapping) -> dict[str, Any]:
    """The resolved config as flat ``{"a.b": value}`` without the :data:`IGNORED` keys; ``pretrained`` as an
    absolute path."""
    plain = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    flat = {k: v for k, v in _flatten(plain).items() if not _ignored(k)}
    if flat.get("pretrained") and str(flat["pretrained"]).lower() != "none":
        flat["pretrained"] = str(Path(flat["pretrained"]).resolve())
    return flat


def differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``key: stored -> current`` for every key whose value differs (or exists on one side only)."""
    missing = object()
    return [f"{k}: {stored.get(k, '(unset)')} -> {current.get(k, '(unset)')}"
            for k in sorted(set(stored) | set(current)) if stored.get(k, missing) != current.get(k, missing)]


def check_same_run(stored: Mapping[str, Any] | None, current: Mapping[str, Any], run_dir: Path) -> None:
    """Raise a one-line ValueError when the checkpoints in ``run_dir`` were made by another training configuration."""
    if stored is None:
        raise ValueError(f"{run_dir} holds checkpoints without a recorded configuration (made by an older tcurseg): "
                         "resume=false starts a fresh folder, or choose another run_name")
    diff = differences(stored, current)
    if diff:
        shown = "; ".join(diff[:6]) + (f"; and {len(diff) - 6} more" if len(diff) > 6 else "")
        raise ValueError(f"{run_dir} holds a run with another configuration ({shown}): resume=false starts a fresh "
                         "folder, or choose another run_name")


def fresh_dir(run_dir: Path) -> Path:
    """``run_dir`` if it holds no training output, else the first free ``run_dir-2``, ``run_dir-3``, ..."""
    def used(path: Path) -> bool:
        return (path / "checkpoints").is_dir() or (path / "model.pt").is_file()

    if not used(run_dir):
        return run_dir
    n = 2
    while used(run_dir.with_name(f"{run_dir.name}-{n}")):
        n += 1
    return run_dir.with_name(f"{run_dir.name}-{n}")


PATH_KEYS = ("pretrained", "output_dir", "data.data_list", "data.data_root", "data.synth.out_dir")


def stored_config(cfg: DictConfig | Mapping) -> dict[str, Any]:
    """The resolved config to store in a model file or checkpoint, with its paths (:data:`PATH_KEYS`) absolute so
    that ``evaluate run=...`` works from any directory."""
    plain = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    for dotted in PATH_KEYS:
        *parents, leaf = dotted.split(".")
        node = plain
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(leaf), str) and node[leaf] and node[leaf].lower() != "none":
            node[leaf] = str(Path(node[leaf]).expanduser().resolve())
    return plain


NO_WEIGHTS = "none"
"""``pretrained=none``: adapt a randomly initialised network on purpose."""


def pretrained_weights(cfg: DictConfig) -> str | None:
    """The pretrained weights file of ``cfg``, or None for ``pretrained=none``. A method that keeps (part of) the
    encoder frozen without pretrained weights (``pretrained`` unset) is refused: it would adapt a random encoder."""
    value = cfg.get("pretrained")
    if value is None:
        if cfg.method.name != "full":
            raise ValueError(f"method={cfg.method.name} adapts a frozen encoder but no pretrained weights are given: "
                             f"pass pretrained=<weights file>, or pretrained={NO_WEIGHTS} to adapt a random encoder "
                             "on purpose")
        return None
    return None if str(value).lower() == NO_WEIGHTS else str(value)
