"""Errors a user reads when a model cannot be loaded: one short line that says what is wrong and what to do."""

import logging
import os
import zipfile

import pytest
import torch

from checkpoint import checkpoint_path, load_checkpoint
from errors import UserError
from hf_gpt2 import load_transformers_gpt2


@pytest.fixture
def unreachable_hub(monkeypatch, tmp_path):
    """Online mode, an empty cache, and a Hub endpoint that refuses connections at once (no network used)."""
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")


def test_unreachable_hub_fails_at_once_with_our_line(unreachable_hub, caplog):
    # transformers retries an unreachable Hub five times with backoff (about a minute) before its own
    # paragraph; ours asks once and says what to do
    with caplog.at_level(logging.WARNING), pytest.raises(UserError) as err:
        load_transformers_gpt2("gpt2-medium")
    message = str(err.value)
    assert "'gpt2-medium'" in message and "unreachable" in message and "--init_from=/path/to/gpt2-medium" in message
    assert "\n" not in message and len(message) < 300
    assert "Retry" not in caplog.text


def test_a_missing_directory_is_not_sent_to_the_hub(tmp_path):
    with pytest.raises(UserError, match="no such directory") as err:
        load_transformers_gpt2(str(tmp_path / "does" / "not" / "exist"))
    assert len(str(err.value)) < 300


def zip_cut_short(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) // 2])


def text_file(path):
    open(path, "w").write("not a checkpoint\n")


def empty_file(path):
    open(path, "wb").close()


def damaged_member(path):
    """A whole zip whose tensor data is overwritten: the archive reads, its contents do not."""
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        members = {name: z.read(name) for name in names}
    with zipfile.ZipFile(path, "w") as z:
        for name in names:
            z.writestr(name, b"\x00garbage" if name.endswith("data.pkl") else members[name])


@pytest.mark.parametrize("damage", [zip_cut_short, text_file, empty_file, damaged_member])
def test_damaged_checkpoint_is_one_line(tmp_path, damage):
    path = checkpoint_path(str(tmp_path))
    torch.save({"model": {"w": torch.zeros(256)}, "model_args": {}}, path)
    damage(path)
    with pytest.raises(UserError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert message.startswith(f"{path} is damaged or not a checkpoint (truncated?)")
    assert "\n" not in message and len(message) < 300 and "miniz" not in message
