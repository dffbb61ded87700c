"""Training-data throughput at BraTS geometry with the real transforms: can the data path keep a GPU busy?

Usage: python scripts/bench_data.py [--root BRATS_TREE] [--cases 2] [--crops 24] [--step-s 0.5] [--batch 4]
       [--out docs/bench_data.json] [--quick]
The cases are fabricated at BraTS's geometry (``tcurseg.data.brats_tree``: 240 x 240 x 155 at 1 mm, 4 contrasts)
unless ``--root`` names a BraTS 2021 tree; the transforms are ``+experiment=brats``'s (UNETR-B, 128^3 crops, the
default augmentation). Everything runs in this process on one thread, what one data-loading worker has (DataLoader
workers run torch on one thread):
- uncached: a crop made from the files (load, resample, brain crop, z-score, then the random part), ``--crops`` / 4
  times;
- cached: the random part alone (crop, augmentation) from the case as the training cache holds it, at the
  configured ``augment.affine_prob`` and with the rotation and scaling on every crop / on none.
Reported: seconds per crop, crops per second per worker, the workers a GPU step of ``--step-s`` at ``--batch``
crops needs, the cache's memory per case. ``--quick`` runs the same code on tiny cases (4 mm voxels, 32^3 crops).
The table is printed and the numbers written to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from monai.data import CacheDataset
from omegaconf import DictConfig, OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tcurseg.data.brats_tree import write_brats_tree  # noqa: E402
from tcurseg.data.errors import DataError  # noqa: E402
from tcurseg.data.lists import brats_layout_to_list  # noqa: E402
from tcurseg.data.transforms import train_transforms  # noqa: E402
from tcurseg.engine.dataload import cache_options as training_cache_options  # noqa: E402
from tcurseg.paths import conf_dir  # noqa: E402

QUICK = {"spacing": 4.0, "roi": 32, "cases": 1, "crops": 4}
TransformFactory = Callable[[DictConfig, DictConfig], object]


def brats_config(roi: int | None = None, spacing: float | None = None) -> DictConfig:
    """The composed ``+experiment=brats`` config (``roi``: another crop and network input size; ``spacing``: another
    voxel size in mm)."""
    overrides = ["+experiment=brats"] + ([f"model.img_size=[{roi},{roi},{roi}]"] if roi else [])
    overrides += [f"data.spacing=[{spacing},{spacing},{spacing}]"] if spacing else []
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        return compose(config_name="config", overrides=overrides)


def _nbytes(value: object) -> int:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return int(value.nbytes)
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    return 0


def _timed(call: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = call()
    return time.perf_counter() - start, out


def _row(seconds: list[float], step_s: float, batch: int) -> dict:
    mean = float(np.mean(seconds))
    return {"s_per_crop": mean, "s_per_crop_p90": float(np.percentile(seconds, 90)), "crops_per_s": 1.0 / mean,
            "workers_needed": math.ceil(batch / step_s * mean), "n": len(seconds)}


def measure(entries: list[dict], cfg: DictConfig, crops: int, step_s: float, batch: int,
            make_transforms: TransformFactory = train_transforms, cache_options: dict | None = None) -> dict:
    """Time ``make_transforms(cfg.data, augment)`` on ``entries`` as described in the module docstring, cached as
    the training cache holds its cases (``cache_options``, default ``tcurseg.engine.dataload.cache_options``).
    Returns the rows, the cache's memory and build time per case and the shape of a cached case."""
    samples = int(cfg.data.get("num_samples", 1))
    uncached = []
    transform = make_transforms(cfg.data, cfg.augment)
    for k in range(max(crops // 4, len(entries))):
        transform.set_random_state(seed=k)
        elapsed, _ = _timed(lambda k=k: transform(dict(entries[k % len(entries)])))
        uncached.append(elapsed / samples)
    rows = {"uncached": _row(uncached, step_s, batch)}
    cache_info = {}
    variants = {"cached": None, "cached, affine on every crop": 1.0, "cached, no affine": 0.0}
    for name, prob in variants.items():
        augment = cfg.augment if prob is None else OmegaConf.merge(cfg.augment, {"affine_prob": prob})
        transform = make_transforms(cfg.data, augment)
        options = cache_options or training_cache_options(transform)
        build, cache = _timed(lambda transform=transform, options=options: CacheDataset(
            entries, transform, cache_rate=1.0, progress=False, **options))
        if not cache_info:
            first = cache._cache[0]
            cache_info = {"cache_mib_per_case": float(np.mean([_nbytes(c) for c in cache._cache])) / 2**20,
                          "cache_build_s_per_case": build / len(entries),
                          "cached_image_shape": list(first["image"].shape)}
        seconds = []
        for k in range(crops):
            cache.transform.set_random_state(seed=1000 + k)
            elapsed, _ = _timed(lambda k=k, cache=cache: cache[k % len(entries)])
            seconds.append(elapsed / samples)
        rows[name] = _row(seconds, step_s, batch)
    return {"rows": rows, **cache_info}


def format_table(result: dict) -> str:
    """The rows as a Markdown table, then the cache line."""
    header = (f"| pipeline (one thread) | s per crop | p90 | crops/s per worker | workers for a {result['step_s']:g} s "
              f"step at batch {result['batch']} |")
    lines = [header, "|---|---|---|---|---|"]
    for name, row in result["rows"].items():
        lines.append(f"| {name} | {row['s_per_crop']:.3f} | {row['s_per_crop_p90']:.3f} | {row['crops_per_s']:.2f} | "
                     f"{row['workers_needed']} |")
    shape = " x ".join(map(str, result["cached_image_shape"]))
    load = result["load_average_1min"]
    lines.append(f"\ncache: {result['cache_mib_per_case']:.0f} MiB per case (cached image {shape}), built in "
                 f"{result['cache_build_s_per_case']:.2f} s per case; crops {' x '.join(map(str, result['roi']))}, "
                 f"affine_prob {result['affine_prob']:g}; {result['cpu']}, load average {load[0]:.1f} -> {load[1]:.1f}")
    return "\n".join(lines)


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run(args: argparse.Namespace, make_transforms: TransformFactory = train_transforms,
        cache_options: dict | None = None) -> dict:
    """Fabricate (or find) the cases, measure, print the table and write the JSON; returns the result."""
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    spacing, roi = (QUICK["spacing"], QUICK["roi"]) if args.quick else (1.0, None)
    cfg = brats_config(roi, spacing if args.quick else None)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root) if args.root else Path(tmp) / "BraTS2021"
        if not args.root:
            write_brats_tree(root, args.cases, "2021", seed=0, spacing=spacing)
        entries = brats_layout_to_list(root, 0.0, 0.0)["training"][: args.cases]
        entries = [{**e, "image": [str(root / p) for p in e["image"]], "label": str(root / e["label"])}
                   for e in entries]
        result = measure(entries, cfg, args.crops, args.step_s, args.batch, make_transforms, cache_options)
    result.update({"cases": len(entries), "roi": [int(r) for r in cfg.data.roi_size],
                   "affine_prob": float(cfg.augment.affine_prob), "step_s": args.step_s, "batch": args.batch,
                   "threads": torch.get_num_threads(), "torch": torch.__version__,
                   "cpu": cpu_model(), "load_average_1min": [load_before, os.getloadavg()[0]],
                   "quick": bool(args.quick)})
    print(format_table(result))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (module docstring)."""
    parser = argparse.ArgumentParser(description="training-data throughput at BraTS geometry (one worker's thread)")
    parser.add_argument("--root", default=None, help="a BraTS 2021 tree to read (default: fabricate the cases)")
    parser.add_argument("--cases", type=int, default=2, help="cases to fabricate / read")
    parser.add_argument("--crops", type=int, default=24, help="crops timed per cached variant")
    parser.add_argument("--step-s", type=float, default=0.5, help="GPU step time to feed (s)")
    parser.add_argument("--batch", type=int, default=4, help="crops per GPU step")
    parser.add_argument("--out", default="docs/bench_data.json")
    parser.add_argument("--quick", action="store_true", help="tiny cases and crops (the test runs this)")
    args = parser.parse_args(argv)
    if args.quick:
        args.cases, args.crops = min(args.cases, QUICK["cases"]), min(args.crops, QUICK["crops"])
    return args


def main() -> None:
    """Run the benchmark; a tree that is not a BraTS 2021 one ends it with one line."""
    try:
        run(parse_args())
    except DataError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
