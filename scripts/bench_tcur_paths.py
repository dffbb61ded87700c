"""Measure the two ways of applying the tCURLoRA update in a training step (docs/design.md section 2), side by side:

* ``lowrank``: what tcurseg does — per model pass, a small mixing tensor per group; per layer a rank-2Kr real product.
* ``materialised``: per model pass, dW = irfft(C dU R) for the whole group (L x m x n), then F.linear(x, W0 + dW_l)
  (``tcurseg.peft.spectral.materialised``).

Each variant (and peft LoRA at the same rank, for reference) runs in its own subprocess so that its peak resident
memory (CPU) or max allocated memory (CUDA) is its own. Prints a table and writes JSON.

    python scripts/bench_tcur_paths.py --size 64 --steps 3 --json docs/bench_tcur_paths.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time

VARIANTS = ("lora", "lowrank", "materialised")


def measure(variant: str, size: int, rank: int, steps: int, warmup: int, device_name: str) -> dict:
    import torch
    from monai.losses import DiceCELoss

    from tcurseg import peft
    from tcurseg.engine.runtime import peak_memory_mb
    from tcurseg.models import CNN_PRESETS, build_unetr
    from tcurseg.peft.spectral import materialised

    device = torch.device(device_name)
    torch.manual_seed(0)
    model = build_unetr({"in_channels": 1, "out_channels": 2, "img_size": [size] * 3})
    method = "lora" if variant == "lora" else "tcurlora"
    peft.apply(model, {"name": method, "rank": rank, "alpha": rank, "trainable_modules": CNN_PRESETS["default"]})
    model.to(device).train()
    optimizer = torch.optim.Adam(peft.trainable_parameters(model), lr=1e-4)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    x = torch.randn(1, 1, size, size, size, device=device)
    y = (torch.rand(1, 1, size, size, size, device=device) > 0.9).float()
    times = []
    with materialised(model) if variant == "materialised" else contextlib.nullcontext():
        for i in range(warmup + steps):
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return {"variant": variant, "step_s": statistics.median(times), "peak_mb": peak_memory_mb(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None)
    parser.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.size, args.rank, args.steps, args.warmup, args.device)))
        return
    rows = []
    for variant in VARIANTS:
        cmd = [sys.executable, __file__, "--one", variant, "--size", str(args.size), "--rank", str(args.rank),
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--device", args.device]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        rows.append(json.loads(out))
    lora = rows[0]
    print(f"UNETR-B {args.size}^3, r={args.rank}, {args.device}")
    print(f"{'variant':14s} {'step s':>8s} {'x LoRA':>7s} {'peak MB':>9s} {'x LoRA':>7s}")
    for r in rows:
        r["step_vs_lora"], r["peak_vs_lora"] = r["step_s"] / lora["step_s"], r["peak_mb"] / lora["peak_mb"]
        print(f"{r['variant']:14s} {r['step_s']:8.3f} {r['step_vs_lora']:7.2f} {r['peak_mb']:9.0f} {r['peak_vs_lora']:7.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"size": args.size, "rank": args.rank, "device": args.device, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
