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
    """Read a checkpoint safely (weights_only); one clear error if it is missing, corrupt or unsafe."""
    if not os.path.isfile(path):
        raise UserError(f"no checkpoint at {path}: train one first (python train.py ...) or point --out_dir "
                        "at the directory that holds ckpt.pt")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise UserError(f"refusing to load {path}: it contains objects that need arbitrary code to unpickle, "
                        "which could run anything; only checkpoints of tensors and plain values are loaded "
                        "(save one with train.py)") from e
    except (RuntimeError, EOFError, OSError) as e:
        raise UserError(f"cannot read checkpoint {path}: {str(e).splitlines()[0]} (is it truncated?)") from e
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


def run_checkpoint(init_from: str) -> str | None:
    """The checkpoint file init_from names when it is another run's out_dir or checkpoint file, else None."""
    if os.path.isfile(init_from):
        return init_from
    if os.path.isfile(checkpoint_path(init_from)):
        return checkpoint_path(init_from)
    return None


def model_from_init(init_from: str, override_args: dict | None = None) -> GPT:
    """The weights init_from names, other than 'scratch'/'resume': a run's out_dir or checkpoint file (a LoRA
    run's merged), or a GPT-2 name / transformers directory. override_args may set dropout."""
    path = run_checkpoint(init_from)
    if path is None:
        return GPT.from_pretrained(init_from, override_args)
    checkpoint = load_checkpoint(path)
    checkpoint["model_args"].update(override_args or {})  # before the model is built: its dropout layers take it
    return model_from_checkpoint(checkpoint)


def load_model(init_from: str, out_dir: str, device: str | torch.device = "cpu") -> tuple[GPT, dict | None]:
    """The model to sample from or export, in eval mode on device, and its checkpoint if it came from one.

    init_from: 'resume' (out_dir/ckpt.pt), 'gpt2' ... 'gpt2-xl', a local transformers directory, or another
    run's out_dir / checkpoint file.
    """
    if init_from == "resume":
        checkpoint = load_checkpoint(checkpoint_path(out_dir), map_location="cpu")
        model = model_from_checkpoint(checkpoint)
    else:
        checkpoint = None
        model = model_from_init(init_from)
    return model.to(device).eval(), checkpoint
