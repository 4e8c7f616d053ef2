"""Shared pytest fixtures: tiny GPT-2 models and an offline environment, so every test runs in seconds on a CPU."""

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

TINY = dict(n_layer=2, n_head=2, n_embd=32, n_positions=64)


def save_tiny_transformers_gpt2(directory: str, seed: int = 0, vocab_size: int = 50257, **overrides) -> str:
    """Build a tiny random GPT2LMHeadModel with transformers and save it as a local checkpoint directory."""
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab_size, **{**TINY, **overrides})
    GPT2LMHeadModel(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory) -> str:
    """A tiny random transformers GPT-2 (2 layers, 32 wide, 64 positions, GPT-2 vocab) saved to a temp dir."""
    return save_tiny_transformers_gpt2(str(tmp_path_factory.mktemp("tiny-gpt2")))
