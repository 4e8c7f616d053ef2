"""OpenAI's GPT-2 weights through `transformers`: loading GPT2LMHeadModel, and mapping its state dict to ours
and back.

GPT.from_pretrained (model.py) reads weights through this module, export.py writes them through it. The
layout knowledge (which weights transformers stores transposed, which entries are buffers rather than
weights) lives here once, for both directions.
"""

import os

import torch

from errors import UserError

# transformers' GPT-2 stores these as Conv1D weights, (in, out): the transpose of nn.Linear's (out, in).
TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# causal-mask buffers that some transformers versions keep in GPT-2's state dict: not weights
TRANSFORMERS_BUFFERS = (".attn.bias", ".attn.masked_bias")


def load_transformers_gpt2(name_or_dir: str):
    """GPT2LMHeadModel from a local directory or a hub name, or one short error saying how to get it.

    A hub name is looked up in the local cache first, and downloaded only if one quick request reaches the
    Hub: offline, transformers would otherwise retry with backoff for about a minute before failing."""
    from transformers import GPT2LMHeadModel
    local = os.path.isdir(name_or_dir)
    if not local and (os.sep in name_or_dir or name_or_dir.startswith((".", "~"))):
        from model import GPT2_SIZES  # (here, not at the top: model.py imports this module)
        raise UserError(f"no such directory {name_or_dir}: init_from takes a local transformers directory "
                        f"(config.json + model.safetensors) or a GPT-2 name ({', '.join(GPT2_SIZES)})")
    if not local:
        try:
            return GPT2LMHeadModel.from_pretrained(name_or_dir, local_files_only=True)
        except OSError:
            pass  # not cached: download below if the Hub can be reached
        if not hub_reachable():
            raise UserError(f"could not load GPT-2 weights '{name_or_dir}': not cached here and the Hugging Face "
                            f"Hub is unreachable. Download them where there is internet, or pass a local "
                            f"transformers directory: --init_from=/path/to/{name_or_dir}")
    try:
        return GPT2LMHeadModel.from_pretrained(name_or_dir)
    except (OSError, ValueError) as e:
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise UserError(f"could not load GPT-2 weights '{name_or_dir}': {reason}. Pass a local transformers "
                        f"directory (config.json + model.safetensors) or a GPT-2 name") from e


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether one request to the Hugging Face Hub gets an answer (False in offline mode, without asking)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session
    if constants.HF_HUB_OFFLINE:
        return False
    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
        return True
    except Exception:  # any failure to connect (DNS, refused, TLS, proxy, timeout) means: do not retry
        return False


def state_dict_from_transformers(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map GPT2LMHeadModel's state dict onto ours: same names, Conv1D weights transposed, buffers dropped."""
    out = {}
    for name, tensor in hf_state.items():
        if name.endswith(TRANSFORMERS_BUFFERS):
            continue
        out[name] = tensor.t() if name.endswith(TRANSPOSED) else tensor
    if "lm_head.weight" not in out:
        out["lm_head.weight"] = out["transformer.wte.weight"]
    return out


def state_dict_to_transformers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict under transformers' GPT2LMHeadModel names and layout (for export): the inverse of
    state_dict_from_transformers."""
    out = {}
    for name, tensor in state.items():
        if name.endswith(TRANSPOSED):
            tensor = tensor.t()
        out[name] = tensor.contiguous()
    return out
