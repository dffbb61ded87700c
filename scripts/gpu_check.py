#!/usr/bin/env python
"""GPU acceptance check: on a GPU machine, run this first. One command (at most ~8 minutes on one GPU) that proves the
CUDA path end to end, prints a table and writes a JSON report; it exits non-zero when any check fails.

    python scripts/gpu_check.py                      # CUDA, full sizes (UNETR-B at 128^3, BraTS-sized volume)
    python scripts/gpu_check.py --device cpu --quick # the same code at tiny sizes (a test runs this)

Checks:
  versions      torch / CUDA / cuDNN / MONAI versions, the GPU and its bf16 support
  train_<amp>   a short ``tcurseg.train`` run (validation, test evaluation) in bf16 and in fp16 (GradScaler), then
                the same command again, which resumes from its checkpoint
  torchrun      a world-size-1 run through torchrun (nccl on CUDA: collectives, DDP over complex adapter buffers)
  methods       UNETR-B at 128^3 (batch 4), AMP, all 8 methods: step time and peak memory, as ratios to LoRA and to
                full fine-tuning (the paper: tCURLoRA 495 ms / 11.7 GB, LoRA 562 ms / 15.9 GB at batch 4)
  host_syncs    host-device copies and synchronisations in one training step (torch.profiler), per method; the
                tensor adapters must add none to what full fine-tuning has
  tcur_paths    tCURLoRA's low-rank update against the materialised one (W0 + dW per pass), step time and memory
  precision     fp32 vs bf16 vs fp16 logits and argmax of an adapted UNETR-B
  inference     sliding-window inference on a 4 x 240 x 240 x 155 volume, with and without mirroring
  data          training crops per second per data-loading worker at BraTS geometry (scripts/bench_data.py), and
                the workers the measured step time needs
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tcurseg.engine.runtime import amp_dtype, native_bf16  # noqa: E402
from tcurseg.models import build_network, cnn_presets  # noqa: E402
from tcurseg.peft import VIT_GROUPS, apply  # noqa: E402

METHODS = ["full", "decoder_only", "lora", "dora", "pissa", "curlora", "lorapt", "tcurlora"]
FULL = {"model": {"hidden_size": 768, "mlp_dim": 3072, "num_heads": 12, "feature_size": 16}, "size": 128, "batch": 4,
        "volume": (4, 240, 240, 155), "steps": 5, "warmup": 3}
QUICK = {"model": {"hidden_size": 48, "mlp_dim": 96, "num_heads": 4, "feature_size": 8}, "size": 32, "batch": 1,
         "volume": (4, 48, 48, 40), "steps": 2, "warmup": 1}
TRAIN_MODEL = ["model.img_size=[32,32,32]", "model.hidden_size=48", "model.mlp_dim=96", "model.num_heads=4",
               "model.feature_size=8"]
SUBPROCESS_TIMEOUT = 300


class Check:
    """Runs ``fn(device, sizes, workdir) -> dict`` and records its numbers, or the error that stopped it."""

    def __init__(self, name: str, fn: Callable[..., dict]) -> None:
        self.name, self.fn = name, fn

    def __call__(self, device: torch.device, sizes: dict, workdir: Path) -> dict:
        start = time.perf_counter()
        try:
            result = {"ok": True, **self.fn(device, sizes, workdir)}
        except Exception as err:  # a failed check is reported, the others still run
            result = {"ok": False, "error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc()[-3000:]}
            if isinstance(err, SubprocessFailed):
                result["output"] = err.output
        result["seconds"] = round(time.perf_counter() - start, 1)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return result


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def versions(device: torch.device, sizes: dict, workdir: Path) -> dict:
    import monai

    info = {"torch": torch.__version__, "monai": monai.__version__, "python": platform.python_version(),
            "device": str(device), "amp": str(amp_dtype(device, "auto"))}
    if device.type == "cuda":
        info.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                    gpu=torch.cuda.get_device_name(device), capability=list(torch.cuda.get_device_capability(device)),
                    native_bf16=native_bf16(device), memory_gb=round(torch.cuda.get_device_properties(device)
                                                                     .total_memory / 2**30, 1))
    else:
        info["cpu"] = platform.processor() or platform.machine()
    return info


class SubprocessFailed(RuntimeError):
    """A command of a check exited non-zero; ``output`` is the end of what it printed (kept in the report, since the
    log folder does not outlive the run)."""

    def __init__(self, message: str, output: str) -> None:
        super().__init__(message)
        self.output = output


NOT_THE_CAUSE = ("Set the environment variable HYDRA_FULL_ERROR", "=====", "-----")
"""Lines that end a failed command's output without saying what failed (Hydra's hint, torchrun's banners)."""


def _run(command: list[str], log: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        cause = next((line for line in reversed(lines) if line.strip() and not line.startswith(NOT_THE_CAUSE)), "")
        raise SubprocessFailed(f"exit {proc.returncode}: {cause}", "\n".join(lines[-80:]))
    return proc


def _train_args(device: torch.device, workdir: Path, out: Path, *extra: str) -> list[str]:
    data = workdir / "data"
    return ["+experiment=demo", *TRAIN_MODEL, f"data.synth.out_dir={data}", f"data.data_list={data}/datalist.json",
            "data.synth.n_subjects=6", "pretrained=none", "pretrain_recipe=null", "train.epochs=2",
            "train.val_every=1", "eval.overlays=0", f"device={device.type}", "train.num_workers=0",
            f"output_dir={out}", *extra]


def _train_check(amp: str) -> Callable[..., dict]:
    def check(device: torch.device, sizes: dict, workdir: Path) -> dict:
        if amp == "fp16" and device.type != "cuda":
            return {"skipped": "fp16 with a GradScaler needs CUDA"}
        out = workdir / f"train_{amp}"
        command = [sys.executable, "-m", "tcurseg.train", *_train_args(device, workdir, out, f"amp={amp}")]
        _run(command, workdir / f"train_{amp}.log")
        summary = json.loads((out / "summary.json").read_text())
        dice = summary["test"]["hippocampus"]["dice_mean"]
        _run(command, workdir / f"train_{amp}_resume.log")
        resumed = "resumed from" in (out / "train.log").read_text()
        if not resumed or not 0.0 <= dice <= 1.0:
            raise RuntimeError(f"resumed={resumed}, test Dice {dice}")
        return {"step_s": summary["step_s"], "peak_mb": summary["peak_memory_mb"], "test_dice": dice,
                "resumed": resumed}
    return check


def torchrun(device: torch.device, sizes: dict, workdir: Path) -> dict:
    out = workdir / "torchrun"
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "tcurseg.train",
          *_train_args(device, workdir, out, "train.epochs=1")], workdir / "torchrun.log")
    summary = json.loads((out / "summary.json").read_text())
    if summary["world_size"] != 1:
        raise RuntimeError(f"world size {summary['world_size']}")
    return {"backend": "nccl" if device.type == "cuda" else "gloo", "step_s": summary["step_s"]}


def _model(method: str, device: torch.device, sizes: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_network({"name": "unetr", "in_channels": 1, "out_channels": 2, "img_size": [sizes["size"]] * 3,
                           **sizes["model"]})
    apply(model, {"name": method, "rank": 8, "groups": VIT_GROUPS,
                  "trainable_modules": cnn_presets("unetr")["default"]})
    return model.to(device)


def _step_fn(model: torch.nn.Module, device: torch.device, sizes: dict) -> Callable[[], None]:
    """One training step (forward, DiceCE, backward, Adam) under the AMP the trainer would use here."""
    from monai.losses import DiceCELoss

    dtype = amp_dtype(device, "auto")
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    g = torch.Generator().manual_seed(1)
    shape = (sizes["batch"], 1, *[sizes["size"]] * 3)
    x, y = torch.randn(shape, generator=g).to(device), torch.randint(0, 2, shape, generator=g).to(device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def _time_steps(step: Callable[[], None], device: torch.device, sizes: dict) -> tuple[float, float | None]:
    for _ in range(sizes["warmup"]):
        step()
    sync(device)
    reset_peak(device)
    times = []
    for _ in range(sizes["steps"]):
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), peak_mb(device)


def methods(device: torch.device, sizes: dict, workdir: Path) -> dict:
    rows = {}
    for method in METHODS:
        sync(device)
        start = time.perf_counter()
        model = _model(method, device, sizes)
        sync(device)
        init_s = time.perf_counter() - start
        step_s, peak = _time_steps(_step_fn(model, device, sizes), device, sizes)
        rows[method] = {"init_s": round(init_s, 3), "step_ms": round(1000 * step_s, 1),
                        "peak_mb": None if peak is None else round(peak)}
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for row in rows.values():
        for ref in ("lora", "full"):
            row[f"step_vs_{ref}"] = round(row["step_ms"] / rows[ref]["step_ms"], 3)
            if row["peak_mb"] is not None:
                row[f"peak_vs_{ref}"] = round(row["peak_mb"] / rows[ref]["peak_mb"], 3)
    return {"size": sizes["size"], "batch": sizes["batch"], "rows": rows}


HOST_EVENTS = ("Memcpy HtoD", "Memcpy DtoH", "cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")


def host_syncs(device: torch.device, sizes: dict, workdir: Path) -> dict:
    """Counts of host-device copies and synchronisations in one profiled step (CUDA); on the CPU there are none to
    count, and the meta-device test (tests/test_gpu_path.py) checks the adapters instead."""
    if device.type != "cuda":
        return {"skipped": "no host-device traffic on the CPU; see tests/test_gpu_path.py"}
    from torch.profiler import ProfilerActivity, profile

    counts = {}
    for method in METHODS:
        model = _model(method, device, sizes)
        step = _step_fn(model, device, sizes)
        step()
        sync(device)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            step()
            sync(device)
        events = [e.name for e in prof.events()]
        counts[method] = {kind: sum(kind in name for name in events) for kind in HOST_EVENTS}
        del model, step
    # the final sync() of the profiled step is the check's own: subtract what full fine-tuning has
    extra = {m: {k: counts[m][k] - counts["full"][k] for k in HOST_EVENTS} for m in ("tcurlora", "lorapt", "curlora")}
    if any(v > 0 for row in extra.values() for v in row.values()):
        raise RuntimeError(f"adapters add host-device traffic over full fine-tuning: {extra}")
    return {"counts": counts, "adapter_extra": extra}


def tcur_paths(device: torch.device, sizes: dict, workdir: Path) -> dict:
    """tCURLoRA's low-rank path (what tcurseg runs) against the materialised update W0 + dW, side by side."""
    from tcurseg.peft.spectral import materialised

    rows = {}
    for variant in ("lowrank", "materialised"):
        model = _model("tcurlora", device, sizes)
        with materialised(model) if variant == "materialised" else contextlib.nullcontext():
            step_s, peak = _time_steps(_step_fn(model, device, sizes), device, sizes)
        rows[variant] = {"step_ms": round(1000 * step_s, 1), "peak_mb": None if peak is None else round(peak)}
        del model
    rows["faster"] = min(("lowrank", "materialised"), key=lambda v: rows[v]["step_ms"])
    return rows


def precision(device: torch.device, sizes: dict, workdir: Path) -> dict:
    model = _model("tcurlora", device, sizes).eval()
    with torch.no_grad():
        for group in model.adapter_groups.values():  # a non-zero update, so the adapter's path is compared too
            group.dU.real.normal_(std=0.05)
    x = torch.randn(1, 1, *[sizes["size"]] * 3, generator=torch.Generator().manual_seed(2)).to(device)
    dtypes = {"fp32": None, "bf16": torch.bfloat16, **({"fp16": torch.float16} if device.type == "cuda" else {})}
    logits = {}
    with torch.no_grad():
        for name, dtype in dtypes.items():
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits[name] = model(x).float()
    ref = logits["fp32"]
    result = {}
    for name in dtypes:
        if name == "fp32":
            continue
        finite = bool(torch.isfinite(logits[name]).all())
        agree = float((logits[name].argmax(1) == ref.argmax(1)).float().mean())
        result[name] = {"finite": finite, "max_abs_diff": float((logits[name] - ref).abs().max()),
                        "logit_scale": float(ref.abs().max()), "argmax_agreement": round(agree, 5)}
        if not finite or agree < 0.99:
            raise RuntimeError(f"{name} logits disagree with fp32: {result[name]}")
    return result


def inference(device: torch.device, sizes: dict, workdir: Path) -> dict:
    from tcurseg.engine.inference import merged_for_inference, sliding_window_predict

    model = merged_for_inference(_model("tcurlora", device, sizes)).to(device)
    volume = torch.randn(1, *sizes["volume"][1:], generator=torch.Generator().manual_seed(3))
    image = volume.expand(1, 1, *sizes["volume"][1:]).contiguous().to(device)
    dtype = amp_dtype(device, "auto")
    result = {"volume": list(sizes["volume"])}
    for label, mirror in (("plain", ()), ("mirrored_lr", (0,))):
        reset_peak(device)
        sync(device)
        start = time.perf_counter()
        logits = sliding_window_predict(model, image, [sizes["size"]] * 3, overlap=0.5,
                                        sw_batch_size=8 if device.type == "cuda" else 2, dtype=dtype,
                                        mirror_axes=mirror)
        sync(device)
        result[label] = {"seconds": round(time.perf_counter() - start, 2), "peak_mb": peak_mb(device),
                         "finite": bool(torch.isfinite(logits).all())}
        if not result[label]["finite"]:
            raise RuntimeError(f"non-finite logits ({label})")
    return result


def data(device: torch.device, sizes: dict, workdir: Path, step_s: float | None = None) -> dict:
    out = workdir / "bench_data.json"
    quick = ["--quick"] if sizes is QUICK else []
    _run([sys.executable, str(REPO / "scripts" / "bench_data.py"), *quick, "--out", str(out),
          *(["--step-s", f"{step_s:.3f}"] if step_s else [])], workdir / "bench_data.log")
    return json.loads(out.read_text())


CHECKS = {"versions": versions, "train_bf16": _train_check("bf16"), "train_fp16": _train_check("fp16"),
          "torchrun": torchrun, "methods": methods, "host_syncs": host_syncs, "tcur_paths": tcur_paths,
          "precision": precision, "inference": inference, "data": data}


def _short(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "{" + " ".join(f"{k}={_short(v)}" for k, v in value.items()) + "}"
    return str(value)


def summary_lines(report: dict) -> list[str]:
    """The report as a table: one line per check, then the per-method rows."""
    lines = [f"{'check':12s} {'ok':4s} {'s':>6s}  result", "-" * 100]
    for name, result in report["checks"].items():
        shown = result.get("error") or result.get("skipped") or ", ".join(
            f"{k}={_short(v)}" for k, v in result.items()
            if k not in ("ok", "seconds", "rows", "trace", "counts", "output"))
        lines.append(f"{name:12s} {'yes' if result['ok'] else 'NO':4s} {result['seconds']:6.1f}  {shown[:200]}")
    rows = report["checks"].get("methods", {}).get("rows")
    if rows:
        lines += ["", f"{'method':13s} {'init s':>7s} {'step ms':>8s} {'x LoRA':>7s} {'x full':>7s} {'peak MB':>8s} "
                      f"{'x LoRA':>7s} {'x full':>7s}"]
        for method, r in rows.items():
            lines.append(f"{method:13s} {r['init_s']:7.2f} {r['step_ms']:8.1f} {r['step_vs_lora']:7.2f} "
                         f"{r['step_vs_full']:7.2f} {r['peak_mb'] if r['peak_mb'] is not None else '-':>8} "
                         f"{r.get('peak_vs_lora', '-'):>7} {r.get('peak_vs_full', '-'):>7}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (for a CPU run and the test)")
    parser.add_argument("--checks", nargs="+", choices=list(CHECKS), default=list(CHECKS))
    parser.add_argument("--out", default=str(REPO / "docs" / "gpu_check.json"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print("gpu_check: CUDA is not available here; use --device cpu --quick for the CPU run", file=sys.stderr)
            return 2
        torch.backends.cudnn.benchmark = True
    sizes = QUICK if args.quick else FULL
    report = {"device": str(device), "quick": args.quick, "checks": {}}
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        for name in args.checks:
            print(f"gpu_check: {name} ...", file=sys.stderr, flush=True)
            if name == "data":
                step_ms = report["checks"].get("methods", {}).get("rows", {}).get("tcurlora", {}).get("step_ms")
                result = Check(name, lambda d, s, w: data(d, s, w, step_ms / 1000 if step_ms else None))(
                    device, sizes, Path(tmp))
            else:
                result = Check(name, CHECKS[name])(device, sizes, Path(tmp))
            report["checks"][name] = result
    report["ok"] = all(r["ok"] for r in report["checks"].values())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, default=str) + "\n")
    print("\n".join(summary_lines(report)))
    for name, result in report["checks"].items():
        if not result["ok"]:
            print(f"\n{name} failed:\n{result.get('output') or result['trace']}", file=sys.stderr)
    print(f"\n{'all checks passed' if report['ok'] else 'FAILED'}; report: {args.out}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
