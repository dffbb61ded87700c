#!/usr/bin/env python
"""Speed / memory / parameter benchmark of the eight fine-tuning methods on UNETR-B (MONAI; in 1, out 2, feature 16,
hidden 768, 12 blocks), with ``--model unetr_small`` the comparison's small UNETR (``conf/model/unetr_small.yaml``:
hidden 192, 12 blocks), or with ``--model swin_unetr`` SwinUNETR (MONAI; in 1, out 2, feature 48, depths 2/2/2/2, the
per-stage adapter groups of ``conf/model/swin_unetr.yaml``), the default CNN preset trainable beside every encoder
adapter.

For every method: trainable parameters (adapter / decoder), init time of ``tcurseg.peft.apply`` (s), the median time
of a training step (forward + DiceCE loss + backward + Adam step, ``--batch`` cases (default 1), random input and
labels), the peak memory of training, and the eval-forward time of the merged model against the plain base model.

How it is measured (and why):
- Every method lives in its own worker process for the whole run (plus one worker holding the plain base model).
  The workers are started one after the other, so the ``apply`` init times do not overlap.
- Timing is interleaved: in each round the main process asks every worker, one at a time (never two at once), for
  one training step, in an order rotated from round to round; the first ``--warmup`` rounds are discarded and the
  median of the remaining ``--steps`` rounds is reported. Slow drifts of a shared, noisy machine thus hit every method
  alike. Merged inference is timed the same way (base worker included) after ``merge``.
- Memory is per process, so methods do not see each other's allocations. CUDA: ``torch.cuda.max_memory_allocated``
  over the timed steps (reset after warm-up). CPU: the peak resident set size (VmHWM of /proc/self/status) over the
  timed steps, reset after warm-up by writing 5 to /proc/self/clear_refs; ``peak`` is the absolute process peak (model,
  optimizer state, activations, plus the same ~0.3-0.5 GB of torch/MONAI runtime for all), ``train`` is its growth
  over the resident size right after ``apply`` (optimizer state + gradients + activations).
- Before merging, each worker records its eval output; the max abs difference to the merged output is reported.

Usage: python scripts/bench_methods.py [--model unetr|unetr_small|swin_unetr] [--size 64] [--device auto] [--rank 8]
       [--batch 1] [--steps 5] [--warmup 2] [--methods tcurlora lora full ...] [--json out.json] [--threads N] [--amp]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import statistics
import sys
import time
from pathlib import Path

ALL_METHODS = ["full", "decoder_only", "lora", "dora", "pissa", "curlora", "lorapt", "tcurlora"]
BASE = "base"
MODELS = {"unetr": ("UNETR-B", 16), "unetr_small": ("small UNETR", 16), "swin_unetr": ("SwinUNETR", 32)}
"""--model -> (label, what every roi side must be a multiple of)."""
SMALL_UNETR = Path(__file__).resolve().parents[1] / "conf" / "model" / "unetr_small.yaml"
"""The comparison's (and the demo's) small UNETR: ``--model unetr_small`` builds it from this config."""


def _network_config(name: str, size: int) -> dict:
    """The build_network config of ``--model name`` at roi ``size``; in 1, out 2 channels."""
    if name == "unetr_small":
        import yaml

        cfg = yaml.safe_load(SMALL_UNETR.read_text())
        cfg.pop("adapter_groups")
    else:
        cfg = {"name": name, "feature_size": 16 if name == "unetr" else 48}
    return {**cfg, "in_channels": 1, "out_channels": 2, "img_size": [size] * 3}


# ----------------------------------------------------------------------------------------------------------- worker
def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return -1


def _rss_mb() -> float:
    return _status_kb("VmRSS") / 1024


def _worker(conn, method: str, opts: dict) -> None:
    import torch

    if opts["threads"]:
        torch.set_num_threads(opts["threads"])
    from monai.losses import DiceCELoss

    from tcurseg.models import build_network, cnn_presets
    from tcurseg.models.swin_unetr import ADAPTER_GROUPS
    from tcurseg.peft import VIT_GROUPS, apply, merge, trainable_parameters, trainable_report

    device = torch.device(opts["device"])
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    size = opts["size"]
    torch.manual_seed(0)
    name = opts["model"]
    groups = ADAPTER_GROUPS if name == "swin_unetr" else VIT_GROUPS
    cfg = _network_config(name, size)
    model = build_network(cfg).to(device)
    name = cfg["name"]
    sync()
    t0 = time.perf_counter()
    if method != BASE:
        apply(model, {"name": method, "rank": opts["rank"], "groups": groups,
                      "trainable_modules": cnn_presets(name)["default"]})
    sync()
    init_s = time.perf_counter() - t0
    report = trainable_report(model) if method != BASE else {"adapter": 0, "decoder": 0, "trainable": 0,
                                                              "total": sum(p.numel() for p in model.parameters())}
    params = trainable_parameters(model) if method != BASE else []
    opt = torch.optim.Adam(params, lr=1e-4) if params else None
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    g = torch.Generator().manual_seed(1)
    batch = opts["batch"]
    x = torch.randn(batch, 1, size, size, size, generator=g).to(device)
    y = torch.randint(0, 2, (batch, 1, size, size, size), generator=g).to(device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(opts["amp"]) and cuda)
    rss_ready = _rss_mb()
    conn.send({"init_s": init_s, "report": report, "rss_ready_mb": rss_ready})

    reference = None
    while True:
        cmd = conn.recv()
        if cmd == "step":
            model.train()
            sync()
            t = time.perf_counter()
            with amp:
                loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sync()
            conn.send(time.perf_counter() - t)
        elif cmd == "reset_peak":
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            else:
                try:
                    Path("/proc/self/clear_refs").write_text("5")
                except OSError:
                    pass  # then VmHWM is the peak since process start
            conn.send(None)
        elif cmd == "peak":
            if cuda:
                conn.send({"peak_mb": torch.cuda.max_memory_allocated(device) / 2**20, "train_mb": None})
            else:
                peak = _status_kb("VmHWM") / 1024
                conn.send({"peak_mb": peak, "train_mb": peak - rss_ready})
        elif cmd == "merge":
            model.eval()
            with torch.no_grad(), amp:
                before = model(x).float()
                if method != BASE:
                    merge(model)
                reference = model(x).float()
            conn.send((reference - before).abs().max().item())
        elif cmd == "infer":
            model.eval()
            sync()
            t = time.perf_counter()
            with torch.no_grad(), amp:
                model(x)
            sync()
            conn.send(time.perf_counter() - t)
        elif cmd == "stop":
            conn.send(None)
            break


# ------------------------------------------------------------------------------------------------------ orchestrator
def _rounds(workers: dict, command: str, rounds: int, discard: int) -> dict[str, list[float]]:
    names = list(workers)
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(rounds):
        order = names[i % len(names):] + names[:i % len(names)]
        for n in order:
            workers[n][0].send(command)
            t = workers[n][0].recv()
            if i >= discard:
                times[n].append(t)
        print(f"  {command} round {i + 1}/{rounds}" + (" (warm-up)" if i < discard else ""), flush=True)
    return times


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "-"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="unetr", choices=sorted(MODELS), help="the network (default unetr: UNETR-B)")
    ap.add_argument("--size", type=int, default=None, help="roi edge (default 64 on CPU, 128 on CUDA)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--batch", type=int, default=1, help="cases per step (the paper times batch 4)")
    ap.add_argument("--steps", type=int, default=5, help="timed rounds (median reported)")
    ap.add_argument("--warmup", type=int, default=2, help="discarded rounds before the timed ones")
    ap.add_argument("--methods", nargs="+", default=ALL_METHODS, choices=ALL_METHODS)
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: torch's default)")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA only)")
    args = ap.parse_args(argv)

    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    size = args.size or (128 if device.startswith("cuda") else 64)
    model_label, divisor = MODELS[args.model]
    if size % divisor:
        ap.error(f"--size must be divisible by {divisor} for --model {args.model}")
    if args.steps < 1 or args.warmup < 0:
        ap.error("--steps must be >= 1 and --warmup >= 0")
    methods = list(dict.fromkeys(args.methods))
    opts = {"device": device, "model": args.model, "size": size, "rank": args.rank, "batch": args.batch,
            "threads": args.threads, "amp": args.amp}
    dev_name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else platform.processor()
    print(f"{model_label} roi {size}^3 on {device} ({dev_name or platform.machine()}), rank {args.rank}, "
          f"batch {args.batch}, threads {args.threads or torch.get_num_threads()}, "
          f"amp {args.amp and device.startswith('cuda')}, {args.warmup} warm-up + {args.steps} timed rounds",
          flush=True)

    ctx = mp.get_context("spawn")
    workers: dict[str, tuple] = {}
    ready: dict[str, dict] = {}
    try:
        for name in [BASE, *methods]:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, name, opts), daemon=True)
            proc.start()
            workers[name] = (parent, proc)
            if not parent.poll(1800):
                raise RuntimeError(f"worker {name} did not start")
            ready[name] = parent.recv()
            print(f"  {name}: ready, apply {ready[name]['init_s']:.2f} s, {ready[name]['report']}", flush=True)

        trainers = {n: w for n, w in workers.items() if n != BASE and ready[n]["report"]["trainable"] > 0}
        _rounds(trainers, "step", args.warmup, args.warmup)
        for n, w in workers.items():
            w[0].send("reset_peak")
            w[0].recv()
        steps = _rounds(trainers, "step", args.steps, 0)
        peaks = {}
        for n, w in workers.items():
            w[0].send("peak")
            peaks[n] = w[0].recv()
        merge_err = {}
        for n, w in workers.items():
            w[0].send("merge")
            merge_err[n] = w[0].recv()
        infer = _rounds(workers, "infer", args.warmup + args.steps, args.warmup)
    finally:
        for n, (conn, proc) in workers.items():
            try:
                conn.send("stop")
                conn.recv()
            except (OSError, EOFError):
                pass
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()

    results = {}
    for n in methods:
        step = statistics.median(steps[n]) if steps.get(n) else None
        results[n] = {
            "adapter": ready[n]["report"]["adapter"],
            "decoder": ready[n]["report"]["decoder"],
            "trainable": ready[n]["report"]["trainable"],
            "total": ready[n]["report"]["total"],
            "init_s": ready[n]["init_s"],
            "step_s": step,
            "step_s_all": steps.get(n, []),
            "peak_mb": peaks[n]["peak_mb"],
            "train_mb": peaks[n]["train_mb"],
            "infer_merged_s": statistics.median(infer[n]),
            "infer_merged_s_all": infer[n],
            "merge_max_abs_diff": merge_err[n],
        }
    base_infer = statistics.median(infer[BASE])
    ref = {k: results.get(k, {}) for k in ("lora", "full")}

    mem_col = "peak MB" if device.startswith("cuda") else "peak RSS MB"
    header = (f"| method | adapter | decoder | init s | step s | step min s | x lora | x full | {mem_col} | train MB "
              f"| x lora | merged infer s | x base | merge diff |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for n, r in results.items():
        train = f"{r['train_mb']:.0f}" if r["train_mb"] is not None else "-"
        mem_ref = ref["lora"].get("train_mb") if r["train_mb"] is not None else ref["lora"].get("peak_mb")
        mem_val = r["train_mb"] if r["train_mb"] is not None else r["peak_mb"]
        lines.append(
            f"| {n} | {r['adapter']:,} | {r['decoder']:,} | {r['init_s']:.2f} | "
            f"{r['step_s']:.3f} | {min(r['step_s_all']):.3f} | {_ratio(r['step_s'], ref['lora'].get('step_s'))} | "
            f"{_ratio(r['step_s'], ref['full'].get('step_s'))} | {r['peak_mb']:.0f} | {train} | "
            f"{_ratio(mem_val, mem_ref)} | {r['infer_merged_s']:.3f} | {_ratio(r['infer_merged_s'], base_infer)} | "
            f"{r['merge_max_abs_diff']:.1e} |"
        )
    table = "\n".join(lines)
    print()
    print(table)
    print(f"\nbase model eval forward: {base_infer:.3f} s; peak {peaks[BASE]['peak_mb']:.0f} MB")
    print("(step s: median of the timed rounds, ratios use it; step min s: the fastest round, a steadier estimate "
          "on a shared machine)")
    print("('x lora' of memory compares the train MB column on CPU, the CUDA peak on GPU)")

    targets = []
    t = results.get("tcurlora")
    if t:
        lora, full = ref["lora"], ref["full"]
        if lora:
            targets.append(("tcurlora step <= 1.00 x lora", t["step_s"] / lora["step_s"], 1.00))
            mem_t = t["train_mb"] if t["train_mb"] is not None else t["peak_mb"]
            mem_l = lora["train_mb"] if lora["train_mb"] is not None else lora["peak_mb"]
            targets.append(("tcurlora train memory <= 1.05 x lora", mem_t / mem_l, 1.05))
        if full:
            targets.append(("tcurlora step <= 0.85 x full", t["step_s"] / full["step_s"], 0.85))
        targets.append(("tcurlora init <= 1 s", t["init_s"], 1.0))
        targets.append(("tcurlora merged inference within 3% of base", t["infer_merged_s"] / base_infer, 1.03))
    if targets:
        print("\ntargets (not asserted):")
        for label, value, limit in targets:
            print(f"  {label:48s} measured {value:.3f}  {'met' if value <= limit else 'NOT met'}")

    out = {
        "model": args.model, "device": device, "device_name": dev_name, "size": size, "rank": args.rank,
        "batch": args.batch, "steps": args.steps, "warmup": args.warmup,
        "threads": args.threads or torch.get_num_threads(),
        "amp": bool(args.amp and device.startswith("cuda")), "torch": torch.__version__,
        "memory": "cuda max_memory_allocated" if device.startswith("cuda") else "per-process VmHWM over timed steps",
        "base_infer_s": base_infer, "base_infer_s_all": infer[BASE], "methods": results, "table": table,
        "targets": [{"target": a, "measured": b, "limit": c, "met": b <= c} for a, b, c in targets],
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
        print(f"\nwrote {args.json}")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
