"""How far fine-tuning moved the pretrained encoder: ``||W - W0||_F / ||W0||_F`` for every linear map of the ViT
blocks, W the run's weights with the adapter merged in, W0 the pretrained weights the run started from.

An adapter whose update is a fraction of W0 adapts the encoder; one whose update is several times W0 has replaced it.
tCURLoRA has no alpha / r scaling, so at a fixed learning rate its update grows with the rank (docs/design.md).

    python scripts/update_size.py outputs/compare/ranks/default/tcurlora_r*_s0 --json update_size.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from tcurseg.engine.trainer import load_run_model, model_config, run_model_file
from tcurseg.export import plain_network
from tcurseg.models.checkpoint import load_pretrained
from tcurseg.models.networks import build_network

BLOCKS = "vit.blocks."


@torch.no_grad()
def relative_update(tuned: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor],
                    prefix: str = BLOCKS) -> dict[str, float]:
    """``{layer: ||W - W0|| / ||W0||}`` over the weight matrices under ``prefix`` of two plain state dicts."""
    return {key.removesuffix(".weight"): ((tuned[key].to(w0.dtype) - w0).norm() / w0.norm()).item()
            for key, w0 in base.items()
            if key.startswith(prefix) and key.endswith(".weight") and w0.dim() == 2 and key in tuned}


def run_update(run_dir: Path, checkpoint: str = "best") -> dict:
    """Mean relative update per kind of linear map (qkv, out_proj, linear1, linear2) of one finished run."""
    model, cfg = load_run_model(run_model_file(run_dir, checkpoint))
    base = build_network(model_config(cfg))
    load_pretrained(base, cfg.pretrained, trusted=bool(cfg.get("pretrained_trusted")))
    rel = relative_update(plain_network(model, cfg).state_dict(), base.state_dict())
    if not rel:
        raise ValueError(f"{run_dir}: no weight matrix under {BLOCKS!r} matches the pretrained weights")
    kinds: dict[str, list[float]] = {}
    for name, value in rel.items():
        kinds.setdefault(name.rsplit(".", 1)[-1], []).append(value)
    return {"run": str(run_dir), "method": cfg.method.name, "rank": cfg.method.get("rank"),
            "adapter_lr": cfg.optim.get("adapter_lr"), "maps": len(rel), "mean": statistics.fmean(rel.values()),
            "max": max(rel.values()), **{k: statistics.fmean(v) for k, v in sorted(kinds.items())}}


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="run folders (with model_best.pt)")
    p.add_argument("--checkpoint", default="best", help="best, last or an epoch number")
    p.add_argument("--json", type=Path, help="write the rows here")
    args = p.parse_args(argv)
    rows = [run_update(run, args.checkpoint) for run in args.runs]
    kinds = sorted({k for r in rows for k in r} - {"run", "method", "rank", "adapter_lr", "maps", "mean", "max"})
    print("| run | mean | max | " + " | ".join(kinds) + " |")
    print("|---|---:|---:|" + "---:|" * len(kinds))
    for r in rows:
        print(f"| {Path(r['run']).name} | {r['mean']:.3f} | {r['max']:.3f} | "
              + " | ".join(f"{r[k]:.3f}" for k in kinds) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
