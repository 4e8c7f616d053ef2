"""The memory planner's table, and its estimates checked against measured peaks: `python -m bench --mode=memory`.

1. The table (memory.py): estimated peak training memory of gpt2 ... gpt2-xl at block 1024, micro-batch 4,
   for a full fine-tune (fp32 weights, AdamW), the same with 8-bit AdamW, and LoRA r=16 (frozen half-precision
   base), each without and with activation checkpointing, and whether it fits 16 / 24 / 40 / 80 GB GPUs.
   Half precision (fp16 on a T4, bf16 on newer GPUs: the same bytes).
2. Measurement (--measure=True, default): training steps of random-weight models run here, each in a fresh
   process, full fine-tune vs LoRA, and per run the memory peak of the steps (on a CPU the process's peak RSS,
   /proc VmHWM, less its RSS before the model was built; on a GPU torch.cuda.max_memory_allocated) against
   the planner's estimate for the same settings; plus step times. Medians over `repeats` runs, interleaved.
   Default shapes: gpt2-medium's and gpt2's at block 256, micro-batch 2 (--shapes=gpt2-medium,gpt2).

Prints the tables, then one JSON line.
"""

import json
import os
import statistics
import subprocess
import sys
import time

import torch

import hardware
import memory
from configurator import configure
from errors import UserError
from model import GPT2_SIZES

# -----------------------------------------------------------------------------
measure = True  # also measure training steps here and compare with the estimates
shapes = "gpt2-medium,gpt2"  # GPT-2 sizes to measure (random weights)
block_size = 256
batch_size = 2
gradient_accumulation_steps = 2  # micro-steps per optimizer step, as fine-tunes run (gradients held between)
lora_rank = 16
setups = "full,lora"  # which to measure (the ratios need both)
steps = 4  # optimizer steps per run; the first is warm-up and not timed
repeats = 3
device = "auto"
dtype = "auto"
gradient_checkpointing = False
worker = ""  # internal: a JSON spec; run one measurement in this process and print its result
# -----------------------------------------------------------------------------


def table() -> list[dict]:
    plans = memory.gpu_table()
    name_of = {tuple(v.values()): k for k, v in GPT2_SIZES.items()}
    header = f"{'model':12} {'setup':46} {'peak GB':>8}  " + " ".join(f"{g:>5}" for g in memory.GPU_SIZES_GB)
    print("Planned peak training memory, block 1024, micro-batch 4, half precision (fits: <= 90% of the GPU)")
    print(header)
    print("-" * len(header))
    rows = []
    for plan in plans:
        name = name_of[(plan.shape.n_layer, plan.shape.n_head, plan.shape.n_embd)]
        fits = {g: plan.fits(g * memory.GB) for g in memory.GPU_SIZES_GB}
        print(f"{name:12} {plan.label():46} {plan.total / memory.GB:8.1f}  "
              + " ".join(f"{'yes' if fits[g] else '-':>5}" for g in memory.GPU_SIZES_GB))
        rows.append({"model": name, "setup": plan.label(), "peak_gb": round(plan.total / memory.GB, 2),
                     **{f"fits_{g}gb": fits[g] for g in memory.GPU_SIZES_GB}})
    return rows


# ---- one measurement, in its own process ------------------------------------------------------------------

def rss_bytes(field: str) -> int:
    """VmRSS or VmHWM (peak RSS) of this process, from /proc (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise UserError("measuring CPU memory needs Linux's /proc/self/status")


def run_worker(spec: dict) -> dict:
    """Build a random GPT-2-shaped model as train.py would (LoRA or not), run spec['steps'] optimizer steps,
    and return the memory peak of the steps and their times."""
    import lora
    import optimizers
    from kernels import cpu_kernels_pay_off
    from model import GPT, GPTConfig
    dev = hardware.pick_device(spec["device"])
    dtype_name, _ = hardware.pick_dtype(dev, spec["dtype"])
    cuda = torch.device(dev).type == "cuda"
    if not cuda:
        hardware.keep_freed_memory_on_cpu()
        hardware.set_cpu_threads(1)
    torch.manual_seed(0)
    import peft  # noqa: F401  (imported by both kinds before the baseline: its libraries are not training memory)
    baseline = rss_bytes("VmRSS")
    shape = GPT2_SIZES[spec["shape"]]
    model = GPT(GPTConfig(block_size=spec["block_size"], vocab_size=memory.GPT2_VOCAB, **shape))
    settings = dict(rank=spec["lora_rank"], alpha=2.0 * spec["lora_rank"], dropout=0.0,
                    targets=",".join(memory.LORA_TARGETS))
    if spec["lora_rank"]:
        lora.add_adapters(model, settings)
        if dtype_name != "float32":
            lora.hold_base_in(model, hardware.DTYPES[dtype_name])
    model.gradient_checkpointing = spec["gradient_checkpointing"]
    model.to(dev)
    optimizer = optimizers.build(model, "adamw", 0.1, 1e-4, (0.9, 0.95), torch.device(dev).type)
    ctx = hardware.autocast(dev, dtype_name)
    cpu_kernels = cpu_kernels_pay_off(dev)
    x = torch.randint(0, memory.GPT2_VOCAB, (spec["batch_size"], spec["block_size"]), device=dev)
    y = torch.randint(0, memory.GPT2_VOCAB, (spec["batch_size"], spec["block_size"]), device=dev)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        # The peak is the steps' own: building the model (fp32, then cast for LoRA) is not a training step.
        # Hand freed heap back to the kernel and reset the peak-RSS counter (Linux: clear_refs 5).
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    times = []
    for _ in range(spec["steps"]):
        t0 = time.perf_counter()
        for _ in range(spec["accumulation"]):
            with ctx:
                _, loss = model(x, y, cpu_kernels=cpu_kernels)
            (loss / spec["accumulation"]).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    if cuda:
        peak = torch.cuda.max_memory_allocated()  # weights included: they were allocated before the reset
    else:
        peak = rss_bytes("VmHWM") - baseline
    plan = memory.Plan(memory.Shape(**shape), spec["batch_size"], spec["block_size"], lora_rank=spec["lora_rank"],
                       gradient_checkpointing=spec["gradient_checkpointing"], dtype=dtype_name,
                       attention=memory.attention_path(dev, dtype_name, spec["block_size"]), fused_head=cpu_kernels,
                       accumulation=spec["accumulation"] > 1, device=dev)
    return {"peak": peak, "estimate": plan.total, "step_s": statistics.median(times[1:]), "dtype": dtype_name,
            "device": dev}


def measure_all() -> list[dict]:
    names = [s.strip() for s in shapes.split(",") if s.strip()]
    unknown = [n for n in names if n not in GPT2_SIZES]
    if unknown:
        raise UserError(f"--shapes: {unknown} are not GPT-2 sizes ({', '.join(GPT2_SIZES)})")
    ranks = [r for kind, r in (("full", 0), ("lora", lora_rank)) if kind in setups.split(",")]
    runs: dict[tuple, list[dict]] = {}
    for _ in range(repeats):  # interleaved, so a busy spell on a shared machine hits both kinds alike
        for name in names:
            for rank in ranks:
                spec = dict(shape=name, lora_rank=rank, block_size=block_size, batch_size=batch_size,
                            accumulation=gradient_accumulation_steps, steps=steps, device=device, dtype=dtype,
                            gradient_checkpointing=gradient_checkpointing)
                out = subprocess.run([sys.executable, "-m", "bench", "--mode=memory", f"--worker={json.dumps(spec)}"],
                                     cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                     capture_output=True, text=True)
                if out.returncode != 0:
                    raise UserError(f"measurement of {name} (lora_rank={rank}) failed: "
                                    f"{(out.stderr.strip().splitlines() or ['?'])[-1]}")
                runs.setdefault((name, rank), []).append(json.loads(out.stdout.strip().splitlines()[-1]))
    rows = []
    print(f"\nMeasured here: block {block_size}, micro-batch {batch_size}, {gradient_accumulation_steps} micro-steps "
          f"per step, random weights; medians of {repeats} runs")
    print(f"{'model':12} {'setup':12} {'measured GB':>11} {'planned GB':>10} {'error':>7} {'s/step':>7} "
          f"{'memory vs full':>14} {'time vs full':>12}")
    for name in names:
        full = runs.get((name, 0))
        for rank in ranks:
            r = runs[(name, rank)]
            peak = statistics.median(x["peak"] for x in r)
            est = r[0]["estimate"]
            step = statistics.median(x["step_s"] for x in r)
            mem_ratio = peak / statistics.median(x["peak"] for x in full) if full else float("nan")
            time_ratio = step / statistics.median(x["step_s"] for x in full) if full else float("nan")
            setup = f"LoRA r={rank}" if rank else "full"
            print(f"{name:12} {setup:12} {peak / memory.GB:11.2f} {est / memory.GB:10.2f} "
                  f"{(est - peak) / peak * 100:+6.1f}% {step:7.2f} {mem_ratio * 100:13.0f}% {time_ratio * 100:11.0f}%")
            rows.append({"model": name, "setup": setup, "measured_gb": round(peak / memory.GB, 3),
                         "planned_gb": round(est / memory.GB, 3), "error": round((est - peak) / peak, 3),
                         "step_s": round(step, 3), "memory_vs_full": round(mem_ratio, 3),
                         "time_vs_full": round(time_ratio, 3), "device": r[0]["device"], "dtype": r[0]["dtype"],
                         "peaks_gb": [round(x["peak"] / memory.GB, 3) for x in r],
                         "steps_s": [round(x["step_s"], 3) for x in r]})
    return rows


def main(argv: list[str] | None = None) -> None:
    configure(globals(), argv)
    if worker:
        print(json.dumps(run_worker(json.loads(worker))))
        return
    result = {"table": table()}
    if measure:
        result["measured"] = measure_all()
    print(json.dumps(result))
