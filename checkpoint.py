"""Saving and loading checkpoints, and getting a model from wherever the user points: the one place for it.

A training run writes two files to out_dir, each a dict of plain values and tensors:
  ckpt.pt  the latest state, everything --init_from=resume needs to continue bit for bit: model (state
           dict), model_args (GPTConfig fields), iter_num, best_val_loss, config (the run's settings),
           optimizer, scaler, RNG and sampler state.
  best.pt  the weights with the lowest val loss so far: model, model_args, iter_num, best_val_loss, config.
sample.py, chat.py and export.py use best.pt when there is one, else ckpt.pt (model_checkpoint_path).
It is written atomically (temp file, fsync, rename), so a crash mid-write leaves the previous one intact,
and it is read with `torch.load(weights_only=True)`, which cannot run code hidden in a pickle: a file that
needs arbitrary unpickling is refused.
"""

import os
import pickle
import zipfile

import torch

from errors import UserError
from model import GPT, GPT2_SIZES, GPTConfig

CHECKPOINT_NAME = "ckpt.pt"  # the latest full state: what --init_from=resume continues
BEST_NAME = "best.pt"  # the weights with the best val loss
COMPILED_PREFIX = "_orig_mod."  # torch.compile wraps the module and prefixes its parameter names


def checkpoint_path(out_dir: str) -> str:
    return os.path.join(out_dir, CHECKPOINT_NAME)


def best_path(out_dir: str) -> str:
    return os.path.join(out_dir, BEST_NAME)


def run_checkpoint(init_from: str) -> str | None:
    """The checkpoint file init_from names when it is another run's out_dir or a checkpoint file, else None."""
    if os.path.isfile(init_from):
        return init_from
    if os.path.isfile(checkpoint_path(init_from)):
        return model_checkpoint_path(init_from)
    return None


def model_checkpoint_path(out_dir: str) -> str:
    """The checkpoint whose weights a trained out_dir stands for (sampling, chat, export): best.pt, the lowest
    val loss, when the run wrote one; else ckpt.pt (an older run, or one stopped before its first save)."""
    best = best_path(out_dir)
    return best if os.path.isfile(best) else checkpoint_path(out_dir)


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


def model_from_checkpoint(checkpoint: dict, merged: bool = True) -> GPT:
    """Build the GPT described by checkpoint['model_args'] and load its weights."""
    if "lora" in checkpoint:  # a LoRA run's: its base + adapters (lora.py), merged unless training resumes
        import lora
        return lora.model_from_checkpoint(checkpoint, merged=merged)
    model = GPT(GPTConfig(**checkpoint["model_args"]))
    state = {k.removeprefix(COMPILED_PREFIX): v for k, v in checkpoint["model"].items()}
    model.load_state_dict(state)
    return model


def init_model(init_from: str, out_dir: str, scratch: GPTConfig | None = None, dropout: float | None = None,
               block_size: int | None = None, training: bool = False) -> tuple[GPT, dict | None]:
    """The one place init_from is read: the model it names (on the CPU) and its checkpoint, if it has one.

      scratch            a new GPT(scratch) with random weights (training only)
      resume             training=True: out_dir/ckpt.pt, the full state to continue from; otherwise the
                         weights the run stands for (model_checkpoint_path: best.pt, else ckpt.pt)
      gpt2 ... gpt2-xl   OpenAI's weights (transformers' cache; downloaded when online)
      a run's out_dir    another NanoPhi run's weights (best.pt, else ckpt.pt; a LoRA run's merged), or a
      or checkpoint file checkpoint file itself: to fine-tune further with a fresh optimizer and schedule
      an existing dir    a local transformers GPT-2 (config.json + weights)
    For these weights, dropout overrides theirs and block_size crops or extends the positions.
    Anything else is one line; a path that does not exist is said to be one, and never tried on the Hub.
    """
    if init_from == "scratch":
        if scratch is None:
            raise UserError("init_from=scratch has no weights to load: use resume (a trained --out_dir), "
                            f"{', '.join(GPT2_SIZES)}, or a local transformers GPT-2 directory")
        if scratch.n_embd % scratch.n_head:
            raise UserError(f"n_embd={scratch.n_embd} must be divisible by n_head={scratch.n_head}")
        return GPT(scratch), None
    if init_from == "resume":
        checkpoint = load_checkpoint(checkpoint_path(out_dir) if training else model_checkpoint_path(out_dir))
        return model_from_checkpoint(checkpoint, merged=not training), checkpoint  # LoRA training: adapters live
    run = run_checkpoint(init_from)
    if run is not None:
        checkpoint = load_checkpoint(run)
        if dropout is not None:
            checkpoint["model_args"]["dropout"] = dropout  # before the model is built: its dropout layers take it
        model = model_from_checkpoint(checkpoint)
    elif init_from not in GPT2_SIZES and not os.path.isdir(init_from):
        if os.sep in init_from or init_from.startswith((".", "~")):  # a path, not a name
            raise UserError(f"init_from={init_from}: no such directory; point it at a local transformers GPT-2 "
                            "directory (config.json + model.safetensors)")
        raise UserError(f"unknown init_from '{init_from}': use scratch, resume, {', '.join(GPT2_SIZES)}, "
                        "a local transformers GPT-2 directory, or another run's out_dir or checkpoint file")
    else:
        model = GPT.from_pretrained(init_from, None if dropout is None else dict(dropout=dropout))
    if block_size is not None:
        model.set_block_size(block_size)  # extend (position interpolation) or crop the checkpoint's positions
    return model, None


def load_model(init_from: str, out_dir: str, device: str | torch.device = "cpu") -> tuple[GPT, dict | None]:
    """The model to sample from or export (init_model's choice of weights), in eval mode on device, and its
    checkpoint if it came from one."""
    model, checkpoint = init_model(init_from, out_dir)
    return model.to(device).eval(), checkpoint
