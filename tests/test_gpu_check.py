"""bench/gpu_check.sh, the prepared GPU check, in its CPU dry run: every step it takes on a GPU machine (data,
train.py with the recipe's settings in auto, fp16 and at long context, decoding at batch 1 and 16), at a
tiny shape, so the script a GPU session runs is known to work before a GPU is lent."""

import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_gpu_check_dry_run_on_cpu(tmp_path):
    env = {**os.environ, "GPU_CHECK_DIR": str(tmp_path)}
    result = subprocess.run(["bash", "bench/gpu_check.sh", "--device=cpu"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
    summary = result.stdout.split("==== summary (cpu")[1].splitlines()[1:]
    assert [line.split()[0] for line in summary[:-1]] == ["auto", "fp16", "long4096", "decode-b1", "decode-b16"]
    assert summary[-1] == "all steps passed"
    for line in summary[:3]:
        assert float(line.split()[1].replace(",", "")) > 0  # tokens/s
    assert "activation checkpointing off (auto:" in (tmp_path / "long4096.log").read_text()
    assert "precision float16 (set by dtype)" in (tmp_path / "fp16.log").read_text()
    assert "ddp2: skipped" in result.stdout
