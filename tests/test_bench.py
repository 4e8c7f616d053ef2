"""bench/: the training table and JSON line on a tiny shape, and the one entry point's --mode dispatch."""

import json
import subprocess
import sys

import pytest

import bench.__main__ as entry
from errors import UserError


def test_train_bench_prints_table_and_json(capsys):
    entry.main(["--n_layer=1", "--n_head=2", "--n_embd=32", "--block_size=16", "--batch_size=2",
                "--vocab_size=512", "--warmup=1", "--iters=2", "--device=cpu", "--compile=False", "--shortlist=200"])
    out = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("fp32 eager (baseline)") for line in out)
    assert any(line.startswith("train.py: ") for line in out)
    summary = json.loads(out[-1])
    for key in ("tokens_per_s", "ms_per_iter", "flops_per_s", "mfu", "peak_flops", "speedup_vs_baseline"):
        assert summary[key] > 0, key
    assert summary["baseline"]["tokens_per_s"] > 0
    assert any(line.startswith("train.py: ") and ", shortlist" in line for line in out)
    assert summary["shortlist"]["tokens"] == 200 and summary["shortlist_speedup"] > 0
    # its FLOPs count 201 head rows, not 512
    assert summary["shortlist"]["flops_per_s"] * summary["shortlist"]["ms_per_iter"] < \
        summary["flops_per_s"] * summary["ms_per_iter"]
    assert summary["shape"] == {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 16, "batch_size": 2,
                                "vocab_size": 512}


def test_mode_picks_the_benchmark_and_passes_the_rest(monkeypatch):
    import bench.decoding
    calls = []
    monkeypatch.setattr(bench.decoding, "main", calls.append)
    entry.main(["--mode=sample", "--new_tokens=4"])
    assert calls == [["--new_tokens=4"]]


def test_unknown_mode_is_one_line():
    with pytest.raises(UserError, match="--mode=nope: use train, sample, data"):
        entry.main(["--mode=nope"])
    run = subprocess.run([sys.executable, "-m", "bench", "--mode=nope"], capture_output=True, text=True)
    assert run.returncode != 0 and "Traceback" not in run.stderr and "use train, sample, data" in run.stderr
