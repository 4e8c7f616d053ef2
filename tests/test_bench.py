"""bench.py: the training table and JSON line on a tiny shape, and --mode=sample handing over to bench_sample.py."""

import json
import sys
import types

import pytest

import bench
from errors import UserError


def test_train_bench_prints_table_and_json(capsys):
    bench.main(["--n_layer=1", "--n_head=2", "--n_embd=32", "--block_size=16", "--batch_size=2",
                "--vocab_size=512", "--warmup=1", "--iters=2", "--device=cpu", "--compile=False"])
    out = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("fp32 eager (baseline)") for line in out)
    assert any(line.startswith("train.py: ") for line in out)
    summary = json.loads(out[-1])
    for key in ("tokens_per_s", "ms_per_iter", "flops_per_s", "mfu", "peak_flops", "speedup_vs_baseline"):
        assert summary[key] > 0, key
    assert summary["baseline"]["tokens_per_s"] > 0
    assert summary["shape"] == {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 16, "batch_size": 2,
                                "vocab_size": 512}


def test_sample_mode_calls_bench_sample_main(monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "bench_sample", types.SimpleNamespace(main=calls.append))
    bench.main(["--mode=sample", "--new_tokens=4"])
    assert calls == [["--new_tokens=4"]]


def test_sample_mode_without_bench_sample_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "bench_sample", None)  # import fails as if the file were absent
    with pytest.raises(UserError, match="bench_sample.py"):
        bench.main(["--mode=sample"])
