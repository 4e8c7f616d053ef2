"""Batched vs one-at-a-time generation on eval.py's prompts: `python -m bench --mode=eval`.

The suite's prompts (--limit per task, each task's own max_new_tokens, greedy, stopping at end-of-text) are
decoded two ways on the same model in this one process: one prompt at a time through model.generate (what
sample.py does), and all of a task's prompts together through engine.generate_batch (what eval.py does).
Runs are interleaved and repeated; medians are reported, as tokens generated per second. Also reported: how
many continuations are identical both ways (all of them in fp32; bf16 rounding can differ with the batch).
The last line is the results as JSON.
"""

import json
import os
import statistics
import time

import torch

import engine
import hardware
from checkpoint import load_model
from configurator import configure
from data.eval_tasks import build_items, registry
from tokenizer import EOT_ID

# -----------------------------------------------------------------------------
out_dir = "out-phi-mini"  # a trained run; without one, a random model of the embedded default's shape
limit = 16  # prompts per task
batch_size = 64
repeats = 3
device = "cpu"
dtype = "auto"
threads = 0  # 0: as eval.py, the idle cores
seed = 2024
# -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    configure(globals(), argv)
    if threads:
        torch.set_num_threads(threads)
    else:
        hardware.set_cpu_threads(idle_only=True)
    if os.path.exists(os.path.join(out_dir, "ckpt.pt")):
        model, _ = load_model("resume", out_dir, device)
        source = out_dir
    else:
        from model import GPT, GPTConfig
        torch.manual_seed(seed)
        model = GPT(GPTConfig(n_layer=4, n_head=4, n_embd=256, block_size=256)).eval()
        source = "random 4x256 model (no checkpoint at out_dir)"
    model = engine.for_decoding(model, hardware.pick_device(device), dtype)
    work = []  # (prompts, max_new_tokens) per task
    for task in registry().values():
        items, _ = build_items(task, seed, min(limit, task.finite or limit))
        work.append(([engine.encode(i.prompt, model) for i in items], task.max_new_tokens))
    n_prompts = sum(len(p) for p, _ in work)
    print(f"{source}, {str(model.lm_head.weight.dtype).removeprefix('torch.')}, {torch.get_num_threads()} threads, "
          f"{n_prompts} prompts from {len(work)} tasks, load average {os.getloadavg()[0]:.1f}")

    def single() -> list[list[int]]:
        out = []
        for prompts, n in work:
            for p in prompts:
                new = model.generate(torch.tensor([p]), n, temperature=0, stop_token=EOT_ID)[0, len(p):].tolist()
                out.append(new[:new.index(EOT_ID)] if EOT_ID in new else new)
        return out

    def batched() -> list[list[int]]:
        return [o for prompts, n in work for o in engine.generate_batch(model, prompts, n, batch_size=batch_size)]

    seconds = {"one at a time": [], "batched": []}
    outputs = {}
    for _ in range(repeats):
        for name, fn in (("one at a time", single), ("batched", batched)):
            t0 = time.perf_counter()
            outputs[name] = fn()
            seconds[name].append(time.perf_counter() - t0)
    # tokens each way made, end-of-text included (the step that made it was paid for)
    tokens = {name: sum(len(o) + 1 for o in out) for name, out in outputs.items()}
    rate = {name: tokens[name] / statistics.median(s) for name, s in seconds.items()}
    same = sum(a == b for a, b in zip(outputs["one at a time"], outputs["batched"]))
    for name in seconds:
        print(f"{name:15s} {statistics.median(seconds[name]):7.2f} s  {rate[name]:8.1f} tokens/s")
    ratio = rate["batched"] / rate["one at a time"]
    print(f"batched / one at a time: {ratio:.2f}x (target >= 3x); identical continuations {same}/{n_prompts}")
    print(json.dumps({"source": source, "threads": torch.get_num_threads(), "prompts": n_prompts,
                      "seconds": {k: [round(x, 3) for x in v] for k, v in seconds.items()},
                      "tokens_per_s": {k: round(v, 1) for k, v in rate.items()}, "ratio": round(ratio, 3),
                      "identical": same}))
