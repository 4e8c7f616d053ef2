"""Training throughput: `python -m bench` (or `python -m bench --mode=train`).

Training mode times full optimizer steps (forward, backward, AdamW) of a random-weight GPT-2 shaped model on
random tokens, in this one process, for:
  1. a plain fp32 eager PyTorch loop (the baseline: default allocator, default AdamW, no autocast), then
  2. train.py's setup: dtype chosen for the hardware (hardware.py), CPU allocator tuning, the model's own
     optimizer, and torch.compile where train.py would use it (--compile=False/True forces it off/on); each
     step does what train.py's does: the GradScaler (active in fp16), unscaling, the gradient norm and
     clipping to 1.0.
Where the fp32 baseline does not fit in the device's memory (gpt2-medium's shape on a 16 GB T4), it says
so in one line and the table has train.py's row alone.
Each is a median over `iters` timed steps after `warmup` steps. FLOPs are counted honestly with
model.flops_per_token() (6 x parameters + attention; the LM head included, no recompute counted), and MFU is
against the peak this device reaches on large matmuls (2048^3 on a CPU, 4096^3 on a GPU) in the chosen dtype
(measured before, between and after the timed steps, the best kept), or the data-sheet peak on known GPUs.
Prints a table, then one JSON line.

Default shape on CPU: 6 layers, 6 heads, 384 wide, block 256, batch 8. On a GPU: gpt2-medium (24 layers,
16 heads, 1024 wide), block 1024, batch 4. Any of them can be set with --key=value.
"""

import json
import os
import statistics
import time

import torch

import hardware
from configurator import configure
from kernels import cpu_kernels_pay_off
from model import GPT, GPTConfig
from shortlist import HeadShortlist

# -----------------------------------------------------------------------------
n_layer = None  # None: 6 on CPU, 24 on GPU (gpt2-medium)
n_head = None  # None: 6 on CPU, 16 on GPU
n_embd = None  # None: 384 on CPU, 1024 on GPU
block_size = None  # None: 256 on CPU, 1024 on GPU
batch_size = None  # None: 8 on CPU, 4 on GPU
vocab_size = 50304  # GPT-2's 50257, padded to a multiple of 64 as train.py does for scratch models
device = "auto"
dtype = "auto"
compile = None  # None: as train.py decides (hardware.compile_pays_off); True/False forces it
baseline = True  # also time the plain fp32 eager loop
shortlist = 19377  # also time train.py's step with the LM head shortlisted to this many tokens (shortlist.py;
# data/mini uses 19,377), the batch drawn from them; 0 skips it
warmup = 3
iters = 10
seed = 1337
# -----------------------------------------------------------------------------

CPU_SHAPE = dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=8)
GPU_SHAPE = dict(n_layer=24, n_head=16, n_embd=1024, block_size=1024, batch_size=4)


BASELINE = "fp32 eager (baseline)"


def time_steps(model: GPT, optimizer, ctx, x, y, dev: str, warmup: int, iters: int, between=lambda: None,
               cpu_kernels: bool = False, scaler: torch.amp.GradScaler | None = None,
               grad_clip: float = 0.0, after_backward=None) -> list[float]:
    """Seconds per optimizer step, one per timed step; `between` runs after each, untimed. With a scaler,
    a step is train.py's: scaled backward, (after_backward,) unscale, gradient norm, clipping to grad_clip,
    scaler step."""
    def step():
        with ctx:
            _, loss = model(x, y, cpu_kernels=cpu_kernels)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            if after_backward:
                after_backward()
            scaler.unscale_(optimizer)
            params = [p for p in model.parameters() if p.grad is not None]
            total_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
            if grad_clip > 0:
                torch.nn.utils.clip_grads_with_norm_(params, grad_clip, total_norm)
            scaler.step(optimizer)
            scaler.update()
        optimizer.zero_grad(set_to_none=True)

    def sync():
        if torch.device(dev).type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
        between()
    return times


def rounded(row: dict) -> dict:
    """A table row's figures to 4 significant digits, for the JSON line."""
    return {k: float(f"{v:.4g}") for k, v in row.items()}


def unless_out_of_memory(what: str, run, dev: str):
    """run()'s result, or None after one line saying that `what` does not fit on dev (other errors pass)."""
    try:
        return run()
    except (torch.OutOfMemoryError, RuntimeError) as e:
        if not hardware.is_out_of_memory(e):
            raise
    if torch.device(dev).type == "cuda":
        torch.cuda.empty_cache()
    print(f"{what}: out of memory on {dev} ({hardware.memory_bytes(dev) / 2**30:.0f} GiB); left out of this run "
          "(a smaller --batch_size fits, or --baseline=False skips it)")
    return None


def train_bench(shape: dict) -> None:
    dev = hardware.pick_device(device)
    dtype_name, why = hardware.pick_dtype(dev, dtype)
    ptdtype = hardware.DTYPES[dtype_name]
    use_compile = hardware.compile_pays_off(dev)[0] if compile is None else compile
    B, T = shape["batch_size"], shape["block_size"]
    config = GPTConfig(block_size=T, vocab_size=vocab_size, n_layer=shape["n_layer"], n_head=shape["n_head"],
                       n_embd=shape["n_embd"], dropout=0.0, bias=True)
    gen = torch.Generator().manual_seed(seed)
    tokens = min(vocab_size, 50257)  # GPT-2's real tokens; the padding rows are never targets
    used = torch.randperm(tokens, generator=gen)[:shortlist] if 0 < shortlist < tokens else torch.arange(tokens)
    x = used[torch.randint(0, len(used), (B, T), generator=gen)].to(dev)
    y = used[torch.randint(0, len(used), (B, T), generator=gen)].to(dev)
    cpu = torch.device(dev).type == "cpu"
    print(f"{dev}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}; model "
          f"{config.n_layer} layers x {config.n_embd} wide, {config.n_head} heads, block {T}, batch {B}, "
          f"vocab {vocab_size}; train.py's dtype: {dtype_name} ({why})")

    # the best of matmul bursts taken before, between and after the timed steps, where there is no data sheet
    peak = hardware.PeakFlops(dev, ptdtype)
    results = {}
    if baseline:  # before any tuning: the process is as plain PyTorch leaves it
        def plain_loop():
            torch.manual_seed(seed)
            model = GPT(config).to(dev)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
            return time_steps(model, optimizer, hardware.autocast(dev, "float32"), x, y, dev, warmup, iters)
        times = unless_out_of_memory(BASELINE, plain_loop, dev)
        if times:
            results[BASELINE] = times
    if cpu:
        hardware.keep_freed_memory_on_cpu()
    ours = f"train.py: {dtype_name}{', compiled' if use_compile else ', eager'}"
    flops_per_step = {}
    for name, short in [(ours, None)] + ([(f"{ours}, shortlist", HeadShortlist(used, vocab_size))]
                                         if len(used) < tokens else []):
        torch.manual_seed(seed)
        model = GPT(config).to(dev)
        optimizer = model.configure_optimizers(0.1, 1e-4, (0.9, 0.95), torch.device(dev).type)
        # the shortlisted head multiplies len(rows) of the vocab_size rows: its FLOPs count only those
        flops_per_step[name] = model.flops_per_token(len(short.rows) / vocab_size if short else 1.0) * B * T
        if short:
            short.tie(model.lm_head.weight)
            model.head_shortlist = short.to(dev)
        share = (lambda m=model, s=short: s.share_grad(m.lm_head.weight)) if short else None
        if use_compile:
            model = torch.compile(model)
        results[name] = time_steps(model, optimizer, hardware.autocast(dev, dtype_name), x, y, dev, warmup, iters,
                                   between=peak.sample, cpu_kernels=cpu_kernels_pay_off(dev),
                                   scaler=hardware.grad_scaler(dev, dtype_name), grad_clip=1.0, after_backward=share)

    flops_per_step[BASELINE] = flops_per_step[ours]  # the same model
    peak.sample()
    fp32_peak = hardware.PeakFlops(dev, torch.float32).flops
    rows = {}
    for name, times in results.items():
        dt = statistics.median(times)
        flops = flops_per_step[name]
        rows[name] = {"tokens_per_s": B * T / dt, "ms_per_iter": dt * 1000, "flops_per_s": flops / dt,
                      "mfu": flops / dt / peak.flops, "ms_min": min(times) * 1000,
                      "ms_max": max(times) * 1000}
    print(f"peak: {peak.flops / 1e12:.2f} TFLOP/s ({peak.describe()}); fp32 peak {fp32_peak / 1e12:.2f} TFLOP/s; "
          f"{flops_per_step[ours] / 1e9:.1f} GFLOP per step; median of {iters} steps after {warmup} warm-up")
    print(f"{'':40} {'tokens/s':>9} {'ms/iter':>9} {'(min-max)':>15} {'TFLOP/s':>8} {'MFU':>6} {'speedup':>8}")
    base = rows.get(BASELINE)
    for name, r in rows.items():
        speedup = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x" if base else "-"
        print(f"{name:40} {r['tokens_per_s']:9,.0f} {r['ms_per_iter']:9.1f} {r['ms_min']:7.0f}-{r['ms_max']:<7.0f} "
              f"{r['flops_per_s'] / 1e12:8.3f} {r['mfu'] * 100:5.1f}% {speedup:>8}")
    summary = {"device": dev, "dtype": dtype_name, "compile": use_compile, "shape": {**shape, "vocab_size": vocab_size},
               "peak_flops": peak.flops, "peak_source": peak.describe(), "threads": torch.get_num_threads(),
               **rounded(rows[ours])}
    if base:
        summary["baseline"] = rounded(base)
        summary["baseline"]["mfu_vs_fp32_peak"] = float(f"{base['flops_per_s'] / fp32_peak:.4g}")
        summary["speedup_vs_baseline"] = float(f"{rows[ours]['tokens_per_s'] / base['tokens_per_s']:.4g}")
    short = rows.get(f"{ours}, shortlist")
    if short:
        summary["shortlist"] = {"tokens": len(used), **rounded(short)}
        summary["shortlist_speedup"] = float(f"{rows[ours]['ms_per_iter'] / short['ms_per_iter']:.4g}")
    print(json.dumps(summary))


def main(argv: list[str] | None = None) -> None:
    configure(globals(), argv)
    gpu = torch.device(hardware.pick_device(device)).type == "cuda"
    defaults = GPU_SHAPE if gpu else CPU_SHAPE
    given = dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, batch_size=batch_size)
    train_bench({k: defaults[k] if v is None else v for k, v in given.items()})
