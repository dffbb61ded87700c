"""The comparison's protocol and presets, read from ``conf/compare/`` (``protocol.yaml`` and one file per preset)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from tcurseg.paths import conf_dir

ALL_METHODS = ("full", "decoder_only", "lora", "dora", "pissa", "curlora", "lorapt", "tcurlora")
NO_ADAPTER = ("full", "decoder_only")
NAMES = {"full": "full fine-tuning", "decoder_only": "decoder-only", "lora": "LoRA", "dora": "DoRA",
         "pissa": "PiSSA", "curlora": "CURLoRA", "lorapt": "LoRA-PT", "tcurlora": "tCURLoRA"}


def rate_key(method: str) -> str:
    """Which rate of a preset's grid a method searches: ``base`` (``optim.lr``) for full fine-tuning and
    decoder-only, ``adapter`` (``optim.adapter_lr``) for the methods that add parameters."""
    return "base" if method in NO_ADAPTER else "adapter"


@dataclass(frozen=True)
class Preset:
    """What the runs of one headline table train with and which runs it has: the CNN preset (``method.cnn``), further
    overrides, the epochs, the methods and seeds, each rate's grid (chosen on seed-0 validation) and the seed-0 runs
    one step beyond the grid that check whether its edge binds."""

    name: str
    cnn: str
    setting: str
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    grid: dict[str, tuple[float, ...]]
    epochs: int
    val_every: int
    overrides: tuple[str, ...] = ()
    edge_checks: dict[str, tuple[float, ...]] = field(default_factory=dict)
    changes_training: bool = False

    def rates(self, method: str) -> tuple[float, ...]:
        """The rates searched for ``method``."""
        return self.grid[rate_key(method)]


@dataclass(frozen=True)
class Curves:
    """Dice vs training subjects and Dice vs adapter size: one preset, its methods at its chosen rates."""

    preset: str
    seeds: tuple[int, ...]
    methods: tuple[str, ...]
    subjects: tuple[int, ...]
    ranks: dict[str, tuple[int, ...]]
    chosen_rank_seeds: tuple[int, ...]
    extra: tuple[dict, ...]


@dataclass(frozen=True)
class Protocol:
    """``conf/compare/protocol.yaml`` with its presets, in the report's order."""

    records: Path
    work: Path
    report: Path
    presets: dict[str, Preset]
    subjects: int
    epochs: int
    val_every: int
    patience: int | None
    seeds: tuple[int, ...]
    experiments: dict[str, str]
    ranks: dict[str, dict[str, int]]
    model_presets: dict[str, tuple[str, ...]]
    curves: Curves
    bootstrap: int
    stuck_dice: float
    ci_target: float
    primary: dict
    machine: str
    answer: tuple[str, ...]

    def steps_per_epoch(self, model: str = "unetr") -> int:
        """Optimiser steps per epoch with all training subjects, from the experiment's batch size."""
        experiment = OmegaConf.load(conf_dir() / "experiment" / f"{self.experiments[model]}.yaml")
        return self.subjects // int(OmegaConf.select(experiment, "train.batch_size", default=1))


def _preset(name: str, raw: dict, base: dict) -> Preset:
    epochs = int(raw.get("epochs", base["epochs"]))
    overrides = tuple(raw.get("overrides", ()))
    return Preset(name=name, cnn=raw["cnn"], setting=raw["setting"], methods=tuple(raw["methods"]),
                  seeds=tuple(raw.get("seeds", base["seeds"])),
                  grid={k: tuple(float(v) for v in vs) for k, vs in raw["grid"].items()},
                  epochs=epochs, val_every=base["val_every"] * epochs // base["epochs"], overrides=overrides,
                  edge_checks={m: tuple(float(v) for v in vs) for m, vs in raw.get("edge_checks", {}).items()},
                  changes_training=bool(overrides) or epochs != base["epochs"])


def load_protocol(folder: Path | None = None, root: Path | None = None) -> Protocol:
    """The protocol in ``folder`` (default ``conf/compare``); its paths resolved against ``root`` (default: the
    working directory, the repository root the runs are launched from)."""
    folder = folder or conf_dir() / "compare"
    root = root or Path.cwd()
    raw = OmegaConf.to_container(OmegaConf.load(folder / "protocol.yaml"), resolve=True)
    presets = {name: _preset(name, OmegaConf.to_container(OmegaConf.load(folder / "presets" / f"{name}.yaml")), raw)
               for name in raw["presets"]}
    curves = raw["curves"]
    protocol = Protocol(
        records=root / raw["records"], work=root / raw["work"], report=root / raw["report"], presets=presets,
        subjects=raw["subjects"], epochs=raw["epochs"], val_every=raw["val_every"], patience=raw["patience"],
        seeds=tuple(raw["seeds"]),
        experiments={m: spec["experiment"] for m, spec in raw["models"].items()},
        ranks={m: dict(spec["ranks"]) for m, spec in raw["models"].items()},
        model_presets={m: tuple(spec.get("presets", presets)) for m, spec in raw["models"].items()},
        curves=Curves(preset=curves["preset"], seeds=tuple(curves["seeds"]), methods=tuple(curves["methods"]),
                      subjects=tuple(curves["subjects"]),
                      ranks={m: tuple(rs) for m, rs in curves["ranks"].items()},
                      chosen_rank_seeds=tuple(curves["chosen_rank_seeds"]), extra=tuple(curves.get("extra", ()))),
        bootstrap=raw["bootstrap"], stuck_dice=raw["stuck_dice"], ci_target=raw["ci_target"], primary=raw["primary"],
        machine=raw["machine"], answer=tuple(raw["answer"]))
    primary = presets[protocol.primary["preset"]]
    if primary.epochs * protocol.steps_per_epoch() != protocol.primary["steps"]:
        raise ValueError(f"primary comparison: {protocol.primary['steps']} steps declared, but preset "
                         f"`{primary.name}` trains {primary.epochs * protocol.steps_per_epoch()}")
    return protocol
