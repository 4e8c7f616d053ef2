"""Benchmark: data/prepare.py's tokens/s on the mini mixture vs raw tiktoken encode_ordinary_batch.

    python -m bench --mode=data [--scale=1.0] [--runs=5] [--num_threads=0]

Three numbers, each the median of `runs` interleaved timings, on the same documents (the unique documents prepare writes)
and the same number of threads:
  raw         enc.encode_ordinary_batch(texts, num_threads): tokenization alone, nothing written
  end-to-end  prepare_dataset("mini", force=True): generating the documents, hashing, deduplicating, splitting,
              tokenizing, writing bins, index and meta.json
  pipeline    write_dataset(documents already in memory): everything prepare does except generating them
The target: end-to-end >= 80% of raw. Token counts exclude the end-of-text tokens prepare adds.
"""

import os
import statistics
import tempfile
import time

from configurator import configure
from data.binwriter import doc_hash, write_dataset
from data.index import load_meta
from data.mini_sources import mini_documents
from data.prepare import prepare_dataset
from errors import run_main
from tokenizer import get_encoding

scale = 1.0  # size of the mini mixture (1.0 is the default build)
runs = 5  # timings per measurement (interleaved); the median is reported
num_threads = 0  # 0: all cores
seed = 1337


def median_times(fns: dict) -> dict[str, float]:
    """Median wall time of each function; runs are interleaved so a change in machine load hits all alike."""
    times = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    configure(globals(), argv)
    threads = num_threads or os.cpu_count()
    enc = get_encoding()
    seen, docs = set(), []
    for tag, text in mini_documents(seed, scale):  # the unique documents, as prepare keeps them
        h = doc_hash(text, seed)
        if h not in seen:
            seen.add(h)
            docs.append((tag, text))
    texts = [t for _, t in docs]
    n_tokens = sum(map(len, enc.encode_ordinary_batch(texts, num_threads=threads)))
    with tempfile.TemporaryDirectory() as tmp:
        t = median_times({
            "raw encode_ordinary_batch": lambda: enc.encode_ordinary_batch(texts, num_threads=threads),
            "prepare end-to-end": lambda: prepare_dataset("mini", os.path.join(tmp, "e2e"), force=True, seed=seed,
                                                          scale=scale, num_threads=threads, progress=False),
            "prepare pipeline only": lambda: write_dataset(docs, os.path.join(tmp, "pipe"), seed=seed,
                                                           num_threads=threads, progress=False)})
        meta = load_meta(os.path.join(tmp, "e2e"))
        written = sum(s["tokens"] - s["docs"] for s in meta["splits"].values())
        assert written == n_tokens, (written, n_tokens)  # same text, same tokens
    print(f"mini mixture, scale {scale}: {len(docs):,} unique documents, {n_tokens:,} tokens, {threads} threads, "
          f"median of {runs}")
    raw = t["raw encode_ordinary_batch"]
    for name, seconds in t.items():
        print(f"  {name:<26} {seconds:6.2f}s {n_tokens / seconds / 1e6:6.2f}M tokens/s  {raw / seconds:6.1%} of raw")
