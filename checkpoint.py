"""Saving and loading checkpoints, and getting a model from wherever the user points: the one place for it.

A checkpoint (`out_dir/ckpt.pt`) is a dict of plain values and tensors:
  model (state dict), model_args (GPTConfig fields), iter_num, best_val_loss, config (the run's settings),
  plus whatever training needs to resume (optimizer, scaler, RNG and sampler state).
It is written atomically (temp file, fsync, rename), so a crash mid-write leaves the previous one intact,
and it is read with `torch.load(weights_only=True)`, which cannot run code hidden in a pickle: a file that
needs arbitrary unpickling is refused.
"""

import os
import pickle
import zipfile

import torch

from errors import UserError
from model import GPT, GPTConfig

CHECKPOINT_NAME = "ckpt.pt"
COMPILED_PREFIX = "_orig_mod."  # torch.compile wraps the module and prefixes its parameter names


def checkpoint_path(out_dir: str) -> str:
    return os.path.join(out_dir, CHECKPOINT_NAME)


def save_checkpoint(checkpoint: dict, path: str) -> None:
    """Write checkpoint to path atomically: the old file stays whole until the new one is on disk."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        torch.save(checkpoint, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def load_checkpoint(path: str, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint safely (weights_only); one clear error if it is missing, damaged or unsafe."""
    if not os.path.isfile(path):
        raise UserError(f"no checkpoint at {path}: train one first (python train.py ...) or point --out_dir "
                        "at the directory that holds ckpt.pt")
    # torch.save writes a zip archive whose directory is at the end: a file cut short (a full disk, a copy
    # stopped early) or some other file is not one, and torch would answer with miniz's paragraph about it
    damaged = f"{path} is damaged or not a checkpoint (truncated?): train again or point --out_dir at another run"
    if not zipfile.is_zipfile(path):
        raise UserError(damaged)
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" not in str(e):  # a damaged pickle, not a refused one
            raise UserError(damaged) from e
        raise UserError(f"refusing to load {path}: it contains objects that need arbitrary code to unpickle, "
                        "which could run anything; only checkpoints of tensors and plain values are loaded "
                        "(save one with train.py)") from e
    except PermissionError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from e
    except (RuntimeError, EOFError, OSError, KeyError, ValueError, IndexError, zipfile.BadZipFile) as e:
        raise UserError(damaged) from e
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "model_args" not in checkpoint:
        raise UserError(f"{path} is not a NanoPhi checkpoint (expected a dict with 'model' and 'model_args')")
    return checkpoint


def model_from_checkpoint(checkpoint: dict) -> GPT:
    """Build the GPT described by checkpoint['model_args'] and load its weights."""
    model = GPT(GPTConfig(**checkpoint["model_args"]))
    state = {k.removeprefix(COMPILED_PREFIX): v for k, v in checkpoint["model"].items()}
    model.load_state_dict(state)
    return model


def load_model(init_from: str, out_dir: str, device: str | torch.device = "cpu") -> tuple[GPT, dict | None]:
    """The model to sample from or export, in eval mode on device, and its checkpoint if it came from one.

    init_from: 'resume' (out_dir/ckpt.pt), 'gpt2' ... 'gpt2-xl', or a local transformers directory.
    """
    if init_from == "resume":
        checkpoint = load_checkpoint(checkpoint_path(out_dir), map_location="cpu")
        model = model_from_checkpoint(checkpoint)
    else:
        checkpoint = None
        model = GPT.from_pretrained(init_from)
    return model.to(device).eval(), checkpoint
