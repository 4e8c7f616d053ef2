"""Fixtures for the inference tests: tiny NanoPhi checkpoints, and running the scripts as users do."""

import os
import subprocess
import sys
from dataclasses import asdict

import pytest
import torch

from checkpoint import checkpoint_path, save_checkpoint
from model import GPT
from tokenizer import EOT_ID

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def save_tiny_checkpoint(model: GPT, out_dir: str) -> str:
    """Save model as out_dir/ckpt.pt, laid out as train.py writes it."""
    save_checkpoint({"model": model.state_dict(), "model_args": asdict(model.config), "iter_num": 0,
                     "best_val_loss": 0.0, "config": {}}, checkpoint_path(out_dir))
    return out_dir


def run_script(script: str, *args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a repo script in a fresh Python, with the arguments and stdin a user would give it."""
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], input=stdin, capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_model(tiny_hf_dir) -> GPT:
    """The tiny random GPT-2 of conftest (2 layers, 32 wide, 64 positions) as our GPT, in eval mode."""
    return GPT.from_pretrained(tiny_hf_dir).eval()


@pytest.fixture(scope="session")
def tiny_out_dir(tiny_model, tmp_path_factory) -> str:
    """An out_dir holding the tiny model's checkpoint."""
    return save_tiny_checkpoint(tiny_model, str(tmp_path_factory.mktemp("out-tiny")))


@pytest.fixture(scope="session")
def eot_out_dir(tiny_hf_dir, tmp_path_factory) -> str:
    """A checkpoint whose model answers end-of-text to everything: the final LayerNorm outputs a constant
    vector and the end-of-text embedding points along it, so its logit wins at every position."""
    model = GPT.from_pretrained(tiny_hf_dir)
    with torch.no_grad():
        direction = torch.randn(model.config.n_embd)
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(direction)
        model.transformer.wte.weight[EOT_ID] = direction * 100
    return save_tiny_checkpoint(model, str(tmp_path_factory.mktemp("out-eot")))


class Evil:
    """Unpickling this runs code: it creates the file named by `marker`."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def malicious_out_dir(tmp_path) -> tuple[str, str]:
    """An out_dir whose ckpt.pt would create a marker file if unpickled: (out_dir, marker path)."""
    marker = str(tmp_path / "pwned")
    out_dir = tmp_path / "out-evil"
    out_dir.mkdir()
    torch.save({"model": Evil(marker), "model_args": {}}, checkpoint_path(str(out_dir)))
    return str(out_dir), marker


def run_in_process(module, argv: list[str], capsys, stderr: bool = False):
    """Run a script's main(argv) in this process and return its stdout (with stderr=True: stdout, stderr);
    its settings (module globals that configure() overwrites) and torch's thread count are put back
    afterwards, so nothing leaks into the tests that follow."""
    from configurator import settings_of
    saved, threads = settings_of(vars(module)), torch.get_num_threads()
    try:
        module.main(argv)
        captured = capsys.readouterr()
        return (captured.out, captured.err) if stderr else captured.out
    finally:
        vars(module).update(saved)
        torch.set_num_threads(threads)
