"""Decoding speed benchmark: `python -m bench --mode=sample`.

A GPT-2 small shaped model (12 layers, 768 wide; gpt2-medium's 24 x 1024 on a GPU) with random weights is
built with transformers and saved as a transformers directory; then, in this one process, decoding of
new_tokens tokens after a prompt_tokens-token prompt (batch_size rows) with top-k sampling is timed for:
  - ours: sample.py's path (KV cache, weights in the 'auto' decoding dtype), the same in fp32, and on CPUs
    the opt-in int8 weights (--dtype=int8),
  - transformers' generate on the same weights (its own KV cache), fp32 as loaded by default, and bf16,
  - recomputing the whole context every step (nanoGPT's way, fp32): too slow to run 256 steps each
    repeat, so it is timed for a few tokens at contexts spread over the run and scaled to new_tokens.
Runs are interleaved and repeated, and medians reported, so a busy machine slows every contender alike.
Also reported: the memory-bandwidth floor (bytes of weights read per token / measured bandwidth, for a
copy as asked and for a plain read, which is what decoding does),
how far bf16 and int8 move the per-token log-probs from fp32, and the time to first token for a long prompt.
The last line is the results as JSON.
"""

import json
import os
import statistics
import tempfile
import time

import torch

import engine
import hardware
from configurator import configure
from errors import run_main
from model import GPT
from tokenizer import EOT_ID

# -----------------------------------------------------------------------------
device = "auto"  # 'auto' (cuda if present, else cpu), 'cpu', 'cuda'
n_layer = None  # None: 12 on CPU (GPT-2 small), 24 on GPU (gpt2-medium)
n_head = None  # None: 12 on CPU, 16 on GPU
n_embd = None  # None: 768 on CPU, 1024 on GPU
block_size = 1024
batch_size = 1
prompt_tokens = 16
new_tokens = 256
ttft_prompt_tokens = 512
repeats = 3  # timed runs per contender; medians are reported
recompute_segments = 4  # recompute: contexts at which it is timed...
recompute_tokens = 4  # ...and tokens timed at each
temperature = 0.85
top_k = 8
# CPU threads for every contender. 0: as sample.py, one per core that other processes leave idle (on a
# 2-core machine busy with other work a second thread stalls every op of every contender 10-100x).
threads = 0
seed = 1337
# -----------------------------------------------------------------------------


def build_transformers_dir(directory: str) -> str:
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_positions=block_size)
    GPT2LMHeadModel(config).save_pretrained(directory)
    return directory


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn) -> float:
    synchronize()
    t0 = time.perf_counter()
    fn()
    synchronize()
    return time.perf_counter() - t0


def memory_bandwidth(device: str, megabytes: int = 512, repeats: int = 5) -> tuple[float, float]:
    """Bytes per second (best of several) copying a tensor much larger than the caches (read + write
    counted) and reading it (a sum)."""
    src = torch.ones(megabytes * 2 ** 20 // 4, device=device)
    dst = torch.ones_like(src)  # ones, not empty: untouched pages would all map to one zero page
    nbytes = src.numel() * src.element_size()
    copy = min(timed(lambda: dst.copy_(src)) for _ in range(repeats))
    read = min(timed(lambda: src.sum()) for _ in range(repeats))
    return 2 * nbytes / copy, nbytes / read


def bytes_per_token(model: GPT) -> int:
    """Weight bytes one decoding step reads: every parameter but the position table (one row of it), the
    tied token embedding counted as the LM head; an Int8Linear's weight counted as it is stored (int8
    values and their scales), and then the fp32 embedding only as a table (one row)."""
    int8 = [m for m in model.modules() if isinstance(m, engine.Int8Linear)]
    quantized = sum(t.numel() * t.element_size() for m in int8 for t in (m.packed, m.weight_scale))
    skip = {"transformer.wpe.weight"} | ({"transformer.wte.weight"} if int8 else set())
    return quantized + sum(p.numel() * p.element_size() for name, p in model.named_parameters() if name not in skip)


def ours(model: GPT, prompt: torch.Tensor, n: int, use_cache: bool = True) -> torch.Tensor:
    return model.generate(prompt, n, temperature=temperature, top_k=top_k, use_cache=use_cache)


def theirs(hf_model, prompt: torch.Tensor, n: int) -> torch.Tensor:
    with torch.inference_mode():
        return hf_model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True,
                                 temperature=temperature, top_k=top_k, max_new_tokens=n, min_new_tokens=n,
                                 pad_token_id=EOT_ID)


def recompute_seconds(model: GPT, context: torch.Tensor) -> float:
    """Time to generate new_tokens recomputing the context each step, estimated from recompute_tokens
    steps at each of recompute_segments evenly spaced points of the run (step cost grows with context)."""
    seconds = 0.0
    segment = new_tokens // recompute_segments
    for i in range(recompute_segments):
        length = prompt_tokens + i * segment + segment // 2  # each segment timed at its middle
        step = timed(lambda: ours(model, context[:, :length], recompute_tokens, use_cache=False)) / recompute_tokens
        seconds += step * segment
    return seconds


@torch.inference_mode()
def logprob_drift(reference: GPT, other: GPT, tokens: torch.Tensor) -> dict:
    """How other's per-token log-probs of tokens (teacher forced) differ from reference's."""
    ref = reference(tokens[:, :-1], all_logits=True)[0].float().log_softmax(-1)
    out = other(tokens[:, :-1], all_logits=True)[0].float().log_softmax(-1)
    target = tokens[:, 1:].unsqueeze(-1)
    diff = (ref.gather(-1, target) - out.gather(-1, target)).abs()
    return {"max_abs_logprob_diff": diff.max().item(), "mean_abs_logprob_diff": diff.mean().item(),
            "top1_agreement": (ref.argmax(-1) == out.argmax(-1)).float().mean().item()}


def main(argv: list[str] | None = None) -> None:
    global n_layer, n_head, n_embd
    configure(globals(), argv)
    from transformers import GPT2LMHeadModel
    dev = hardware.pick_device(device)
    on_gpu = torch.device(dev).type == "cuda"
    n_layer, n_head, n_embd = n_layer or (24 if on_gpu else 12), n_head or (16 if on_gpu else 12), n_embd or (1024 if on_gpu else 768)
    if threads:
        torch.set_num_threads(threads)
    else:
        hardware.set_cpu_threads(idle_only=True)
    directory = build_transformers_dir(tempfile.mkdtemp(prefix="bench-gpt2-"))
    auto = engine.load_for_inference(directory, "", dev, "auto")
    fp32 = engine.load_for_inference(directory, "", dev, "float32")
    hf32 = GPT2LMHeadModel.from_pretrained(directory).to(dev).eval()
    hf16 = GPT2LMHeadModel.from_pretrained(directory, dtype=torch.bfloat16).to(dev).eval()
    int8 = engine.load_for_inference(directory, "", dev, "int8") if engine.can_quantize(dev) else None
    auto_dtype = str(auto.lm_head.weight.dtype).removeprefix("torch.")
    gen = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, 50257, (batch_size, prompt_tokens), generator=gen).to(dev)
    long_prompt = torch.randint(0, 50257, (1, ttft_prompt_tokens), generator=gen).to(dev)
    where = torch.cuda.get_device_name(dev) if on_gpu else f"CPU, {torch.get_num_threads()} threads"
    print(f"GPT-2 {n_layer}x{n_embd}, batch {batch_size}, {prompt_tokens}-token prompt, {new_tokens} new tokens, "
          f"top_k={top_k}; {where}, load average {os.getloadavg()[0]:.1f}; "
          f"ours 'auto' = {auto_dtype}{' (oneDNN-packed)' if engine.can_pack(auto) else ''}")

    ours_models = {f"{auto_dtype} (auto)": auto, "float32": fp32}  # ours, by decoding dtype
    if int8 is not None:
        ours_models["int8 (opt-in)"] = int8
    contenders = {
        **{f"ours, KV cache, {name}": (lambda m=model: ours(m, prompt, new_tokens))
           for name, model in ours_models.items()},
        "transformers generate, float32": lambda: theirs(hf32, prompt, new_tokens),
        "transformers generate, bfloat16": lambda: theirs(hf16, prompt, new_tokens),
    }
    context = ours(fp32, prompt, new_tokens)  # a realistic context for the recompute timings
    for model in ours_models.values():  # warm-up: first-call allocations, oneDNN kernel creation
        ours(model, prompt, 8)
    for model in (hf32, hf16):
        theirs(model, prompt, 8)
    seconds = {name: [] for name in contenders}
    seconds["recompute every step (nanoGPT), float32"] = []
    for _ in range(repeats):
        for name, fn in contenders.items():
            seconds[name].append(timed(fn))
        seconds["recompute every step (nanoGPT), float32"].append(recompute_seconds(fp32, context))
    tok_s = {name: batch_size * new_tokens / statistics.median(s) for name, s in seconds.items()}

    def first_token_seconds(fn) -> float:
        return statistics.median(timed(fn) for _ in range(repeats))

    ttft = {f"ours, {name}": first_token_seconds(lambda m=model: ours(m, long_prompt, 1))
            for name, model in ours_models.items()}
    ttft["transformers, float32"] = first_token_seconds(lambda: theirs(hf32, long_prompt, 1))
    copy_bw, read_bw = memory_bandwidth(dev)
    weight_bytes = {f"ours, {name}": bytes_per_token(model) for name, model in ours_models.items()}
    drift = {name: logprob_drift(fp32, model, context[:1]) for name, model in ours_models.items() if model is not fp32}

    best = tok_s[f"ours, KV cache, {auto_dtype} (auto)"]
    baseline_hf = tok_s["transformers generate, float32"]
    baseline_recompute = tok_s["recompute every step (nanoGPT), float32"]
    print(f"\n{'decoding (tokens/s: all rows together)':45s} {'tokens/s':>9s} {'ours(auto) is':>14s}")
    for name, rate in tok_s.items():
        print(f"{name:45s} {rate:9.1f} {best / rate:13.2f}x")
    print("(recompute: timed on %d x %d tokens at contexts spread over the run, scaled to %d tokens)"
          % (recompute_segments, recompute_tokens, new_tokens))
    # One step reads every weight once for all batch_size rows, so the floor in tokens/s scales with the batch.
    floor = {name: {"copy": batch_size * copy_bw / nbytes, "read": batch_size * read_bw / nbytes}
             for name, nbytes in weight_bytes.items()}
    print(f"\nmemory-bandwidth floor: copy {copy_bw / 1e9:.1f} GB/s (read + write), read {read_bw / 1e9:.1f} GB/s")
    for name, nbytes in weight_bytes.items():
        decoding = tok_s[f"ours, KV cache, {name.removeprefix('ours, ')}"]
        limit = floor[name]
        print(f"  {name:24s} {nbytes / 1e6:4.0f} MB/step -> at most {limit['copy']:6.1f} tokens/s by copy, "
              f"{limit['read']:6.1f} by read; reached {decoding:6.1f} "
              f"({100 * decoding / limit['copy']:.0f}% / {100 * decoding / limit['read']:.0f}%)")
    for name, d in drift.items():
        print(f"\nlog-probs of {name} vs float32 over {context.size(1) - 1} tokens: max |diff| "
              f"{d['max_abs_logprob_diff']:.4f}, mean {d['mean_abs_logprob_diff']:.4f}, "
              f"top-1 agreement {100 * d['top1_agreement']:.1f}%")
    print(f"\ntime to first token, {ttft_prompt_tokens}-token prompt:")
    for name, t in ttft.items():
        print(f"  {name:30s} {1000 * t:7.0f} ms")
    speedups = {name: {"vs_transformers": tok_s[f"ours, KV cache, {name}"] / baseline_hf,
                       "vs_recompute": tok_s[f"ours, KV cache, {name}"] / baseline_recompute}
                for name in ours_models}
    print("\nspeedup of ours (targets: >= 1.5x transformers generate fp32, >= 10x recompute):")
    for name, s in speedups.items():
        print(f"  {name:24s} {s['vs_transformers']:5.2f}x transformers, {s['vs_recompute']:5.1f}x recompute")
    print(json.dumps({
        "model": f"{n_layer}x{n_embd}", "device": where, "batch_size": batch_size, "auto_dtype": auto_dtype,
        "tokens_per_s": {k: round(v, 2) for k, v in tok_s.items()},
        "speedups": {name: {k: round(v, 3) for k, v in s.items()} for name, s in speedups.items()},
        "copy_bandwidth_gb_s": round(copy_bw / 1e9, 2), "read_bandwidth_gb_s": round(read_bw / 1e9, 2),
        "bandwidth_floor_tokens_per_s": {k: {m: round(v, 1) for m, v in f.items()} for k, f in floor.items()},
        "ttft_ms": {k: round(1000 * v, 1) for k, v in ttft.items()},
        "logprob_drift": {name: {k: round(v, 5) for k, v in d.items()} for name, d in drift.items()},
    }))
