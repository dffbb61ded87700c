"""Inference cost of an adapted UNETR-B, side by side in one run: sliding-window prediction of one volume with the
adapter unmerged (the update applied per layer) and merged into the weights (what evaluate / predict / export do),
at 1 tile and at 4 tiles per forward pass (``eval.sw_batch_size``). Prints a table and writes JSON.

    python scripts/bench_inference.py --size 64 --volume 96 --json docs/bench_inference.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="roi (the network's img_size) per side")
    parser.add_argument("--volume", type=int, default=96, help="side of the cubic volume predicted")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    import torch

    from tcurseg import peft
    from tcurseg.engine.inference import merged_for_inference, sliding_window_predict
    from tcurseg.models import CNN_PRESETS, build_unetr

    device = torch.device(args.device)
    x = torch.randn(1, 1, *[args.volume] * 3, generator=torch.Generator().manual_seed(0)).to(device)
    rows = []
    for method in ("tcurlora", "lora"):
        torch.manual_seed(0)
        model = build_unetr({"in_channels": 1, "out_channels": 2, "img_size": [args.size] * 3})
        peft.apply(model, {"name": method, "rank": 8, "trainable_modules": CNN_PRESETS["default"]})
        with torch.no_grad():
            for p in peft.parameter_groups(model)["adapter"]:
                p.add_(1e-3 * torch.randn_like(p))
        variants = {"unmerged": model.to(device).eval(), "merged": merged_for_inference(model).to(device)}
        outputs = {}
        for sw in (1, 4):
            for name, net in variants.items():
                sliding_window_predict(net, x, [args.size] * 3, overlap=0.25, sw_batch_size=sw)  # warm-up
                times = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    outputs[name] = sliding_window_predict(net, x, [args.size] * 3, overlap=0.25, sw_batch_size=sw)
                    times.append(time.perf_counter() - start)
                rows.append({"method": method, "weights": name, "sw_batch_size": sw,
                             "seconds": statistics.median(times)})
            diff = (outputs["merged"] - outputs["unmerged"]).abs().max().item()
            for row in rows[-2:]:
                row["max_abs_diff"] = diff
    base = {(r["method"], r["sw_batch_size"]): r["seconds"] for r in rows if r["weights"] == "unmerged"}
    print(f"UNETR-B, roi {args.size}^3, volume {args.volume}^3, overlap 0.25, {args.device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| method | weights | sw_batch_size | seconds | x unmerged | max abs diff |\n|---|---|---:|---:|---:|---:|")
    for r in rows:
        r["x_unmerged"] = r["seconds"] / base[(r["method"], r["sw_batch_size"])]
        print(f"| {r['method']} | {r['weights']} | {r['sw_batch_size']} | {r['seconds']:.2f} | {r['x_unmerged']:.2f} | "
              f"{r['max_abs_diff']:.1e} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "machine": platform.processor() or platform.machine(), "rows": rows}, f,
                      indent=1)


if __name__ == "__main__":
    main()
