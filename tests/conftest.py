"""Shared pytest fixtures: tiny GPT-2 models, checkpoints and a tagged dataset, and an offline environment, so
every test runs in seconds on a CPU. Plain helpers are in helpers.py.

Tiers: `python -m pytest -q -m "not slow" tests` for the edit-test loop; `python -m pytest -q tests` (CI) runs
everything, including the tests marked slow (DDP, compile, the out-of-memory probe, long end-to-end runs)."""

import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# No test may reach the network: the Hub and wandb are asked to stay offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

from checkpoint import checkpoint_path  # noqa: E402
from helpers import save_tiny_checkpoint, save_tiny_transformers_gpt2, tiny_documents  # noqa: E402
from model import GPT  # noqa: E402
from tokenizer import EOT_ID  # noqa: E402


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory) -> str:
    """A tiny random transformers GPT-2 (2 layers, 32 wide, 64 positions, GPT-2 vocab) saved to a temp dir."""
    return save_tiny_transformers_gpt2(str(tmp_path_factory.mktemp("tiny-gpt2")))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> str:
    """A small tagged dataset (700 short regular documents of every tag, 20 % validation), built once."""
    from data.binwriter import write_dataset
    out = str(tmp_path_factory.mktemp("tiny-data"))
    write_dataset(tiny_documents(), out, val_fraction=0.2, num_threads=1, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_model(tiny_hf_dir) -> GPT:
    """The tiny random GPT-2 of tiny_hf_dir (2 layers, 32 wide, 64 positions) as our GPT, in eval mode."""
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
