"""Serving benchmark: `python -m bench --mode=serve`.

A GPT-2 small shaped model (12 layers, 768 wide, 1024 positions) with random weights is saved as a
checkpoint and served by serve.py in a process of its own on 127.0.0.1. Then, interleaved and repeated:
  - sample.py's path in this process (engine.stream, the same weights and decoding dtype): tokens/s,
  - one streaming client alone: tokens/s and time to first token (TTFT),
  - `clients` streaming clients at once: aggregate tokens/s (all their tokens over the wall time from the
    first request to the last token) and their median TTFT.
Every request asks for new_tokens tokens after a prompt_tokens-token prompt, sampled at temperature/top_k as
sample.py samples. Targets (issue 16): aggregate >= 4x a lone client, a lone client within 10 % of sample.py,
median TTFT with `clients` <= 2x a lone client's. Medians over repeats; the last line is the results as JSON.
"""

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict

import httpx
import torch

import engine
import hardware
from checkpoint import checkpoint_path, save_checkpoint
from configurator import configure
from errors import UserError, run_main
from model import GPT, GPTConfig

# -----------------------------------------------------------------------------
n_layer = 12
n_head = 12
n_embd = 768
block_size = 1024
prompt_tokens = 16
new_tokens = 128
clients = 8
repeats = 3
temperature = 0.85
top_k = 8
dtype = "auto"  # the decoding dtype, as sample.py's --dtype
# CPU threads for the server and sample.py's path alike. 0: as sample.py, one per core that other processes
# leave idle (measured once, at the start, so both get the same count).
threads = 0
seed = 1337
# -----------------------------------------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def save_random_model(out_dir: str) -> str:
    torch.manual_seed(seed)
    config = GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, vocab_size=50257)
    model = GPT(config)
    save_checkpoint({"model": model.state_dict(), "model_args": asdict(config), "iter_num": 0,
                     "best_val_loss": 0.0, "config": {}}, checkpoint_path(out_dir))
    return out_dir


def prompt_ids() -> list[int]:
    ids = engine.encode("[Textbook] The history of the printing press begins with movable type, and " * 8)
    return ids[:prompt_tokens]


def sample_py_speed(model: GPT, ids: list[int]) -> float:
    """Tokens/s of sample.py's decoding (engine.stream), prefill included as a client's time includes it."""
    t0 = time.perf_counter()
    n = sum(1 for _ in engine.stream(model, ids, new_tokens, engine.Sampling(temperature, top_k)))
    return n / (time.perf_counter() - t0)


async def one_client(http: httpx.AsyncClient, url: str, ids: list[int]) -> tuple[float, float, float, int]:
    """(start, first token, end, tokens) of one streamed completion."""
    body = {"prompt": ids, "max_tokens": new_tokens, "temperature": temperature, "top_k": top_k, "stream": True,
            "stream_options": {"include_usage": True}}
    start, first, tokens = time.perf_counter(), None, 0
    async with http.stream("POST", url + "/v1/completions", json=body) as r:
        if r.status_code != 200:
            raise UserError(f"the server answered {r.status_code}: {(await r.aread()).decode()[:200]}")
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            elif first is None and chunk["choices"] and chunk["choices"][0]["text"]:
                first = time.perf_counter()
    end = time.perf_counter()
    return start, first if first is not None else end, end, tokens


async def concurrent_clients(http: httpx.AsyncClient, url: str, ids: list[int], n: int) -> dict:
    results = await asyncio.gather(*(one_client(http, url, ids) for _ in range(n)))
    wall = max(r[2] for r in results) - min(r[0] for r in results)
    return {"tokens_per_s": sum(r[3] for r in results) / wall,
            "ttft_s": statistics.median(r[1] - r[0] for r in results),
            "tokens": sum(r[3] for r in results)}


async def measure(model: GPT, url: str, ids: list[int]) -> dict[str, list]:
    """The three contenders, interleaved, repeats times. One HTTP client whose connections stay open, as a
    busy client library's do: a timed request does not pay for a TCP handshake."""
    runs: dict[str, list] = {"sample_py": [], "one": [], "many": []}
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients)) as http:
        await concurrent_clients(http, url, ids, clients)  # warm up: open the connections, first allocations
        sample_py_speed(model, ids)
        for r in range(repeats):
            runs["sample_py"].append(sample_py_speed(model, ids))
            runs["one"].append(await concurrent_clients(http, url, ids, 1))
            runs["many"].append(await concurrent_clients(http, url, ids, clients))
            print(f"  repeat {r + 1}: sample.py {runs['sample_py'][-1]:.1f} tok/s, 1 client "
                  f"{runs['one'][-1]['tokens_per_s']:.1f} tok/s (TTFT {runs['one'][-1]['ttft_s'] * 1e3:.0f} ms), "
                  f"{clients} clients {runs['many'][-1]['tokens_per_s']:.1f} tok/s "
                  f"(median TTFT {runs['many'][-1]['ttft_s'] * 1e3:.0f} ms)", flush=True)
    return runs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(out_dir: str, n_threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(n_threads)}
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "serve.py"), f"--out_dir={out_dir}",
                             f"--port={port}", f"--dtype={dtype}", f"--max_batch={max(clients, 1)}"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UserError(f"serve.py exited: {proc.stderr.read()[-500:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    raise UserError("serve.py did not start within 300 s")


def main(argv: list[str] | None = None) -> None:
    configure(globals(), argv)
    if threads:
        torch.set_num_threads(threads)
    n_threads = hardware.set_cpu_threads(idle_only=True) if not threads else threads
    ids = prompt_ids()
    with tempfile.TemporaryDirectory() as out_dir:
        save_random_model(out_dir)
        model = engine.load_for_inference("resume", out_dir, "auto", dtype)
        print(f"GPT-2 small shape ({n_layer} x {n_embd}), random weights, {model.lm_head.weight.dtype}, "
              f"{n_threads} thread(s); {prompt_tokens}-token prompt, {new_tokens} new tokens, "
              f"temperature {temperature}, top_k {top_k}; {clients} clients vs 1; {repeats} repeats", flush=True)
        proc, url = start_server(out_dir, n_threads)
        try:
            runs = asyncio.run(measure(model, url, ids))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    med = statistics.median
    sample_tps = med(runs["sample_py"])
    one_tps, many_tps = med(x["tokens_per_s"] for x in runs["one"]), med(x["tokens_per_s"] for x in runs["many"])
    one_ttft, many_ttft = med(x["ttft_s"] for x in runs["one"]), med(x["ttft_s"] for x in runs["many"])
    result = {"sample_py_tok_s": round(sample_tps, 2), "one_client_tok_s": round(one_tps, 2),
              f"{clients}_clients_tok_s": round(many_tps, 2), "aggregate_speedup": round(many_tps / one_tps, 2),
              "one_client_vs_sample_py": round(one_tps / sample_tps, 3),
              "one_client_ttft_ms": round(one_ttft * 1e3, 1), f"{clients}_clients_median_ttft_ms": round(many_ttft * 1e3, 1),
              "ttft_ratio": round(many_ttft / one_ttft, 2), "threads": n_threads, "repeats": repeats}
    print(f"\n{'':34}{'median':>10}  target")
    print(f"{'sample.py path, tok/s':34}{sample_tps:10.1f}")
    print(f"{'1 client, tok/s':34}{one_tps:10.1f}  {one_tps / sample_tps:.2f}x sample.py (>= 0.90)")
    print(f"{f'{clients} clients, aggregate tok/s':34}{many_tps:10.1f}  {many_tps / one_tps:.2f}x 1 client (>= 4)")
    print(f"{'TTFT 1 client, ms':34}{one_ttft * 1e3:10.0f}")
    print(f"{f'TTFT {clients} clients (median), ms':34}{many_ttft * 1e3:10.0f}  {many_ttft / one_ttft:.2f}x (<= 2)")
    print(json.dumps(result))


if __name__ == "__main__":
    run_main(main)
