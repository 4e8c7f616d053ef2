"""LoRA fine-tuning through peft: adapters on a frozen base, their checkpoints, and merging them for decoding.

    python train.py config/finetune_phi_lora.py                      # gpt2-xl + LoRA r=16 on one 16 GB GPU
    python train.py --init_from=out-phi-mini --lora_rank=16 ...      # a LoRA pass on a model NanoPhi trained

peft's LoRA layers go straight into our GPT (peft.inject_adapter_in_model finds custom nn.Modules by name:
c_attn, c_proj and c_fc by default), so the model stays a GPT with GPT's forward, and peft owns the
arithmetic (initialisation, scaling alpha/r, dropout, merging). The base is frozen; under mixed precision its
matrices are held in the autocast dtype (bf16/fp16), which is what autocast would cast them to for every
matmul anyway, so training computes the same thing in half the weight memory and with no per-step copies.
Position embeddings, LayerNorms and biases stay fp32 (they are small, and the fp32 position embedding keeps
the residual stream fp32). The adapters and their optimizer state are fp32.

A LoRA checkpoint holds the adapters (under 'model'), the optimizer state for them, and under 'lora' the
settings plus a reference to the base: the init_from it came from, its resolved path, and a SHA-256 of the
base weights as training started. Loading rebuilds the base from that reference and refuses, in one line, a
base whose hash differs (retrained, re-exported or another model under the same path).
"""

import hashlib
import logging
import os
import warnings

import torch

from errors import UserError
from model import GPT

# peft imports bitsandbytes, whose CPU backend looks for a `kernels` package and finds our kernels.py,
# then logs a warning about it on every start. Nothing here uses its 4-bit CPU kernels.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

DEFAULT_TARGETS = ("c_attn", "c_proj", "c_fc")  # attention qkv and output, MLP in and out: all block matmuls
ADAPTER_NAME = "default"


def target_list(targets) -> list[str]:
    """lora_targets as a list: a comma-separated string (as --lora_targets=c_attn,c_fc gives) or a sequence."""
    if isinstance(targets, str):
        targets = targets.split(",")
    return [t.strip() for t in targets if t.strip()]


def lora_config(rank: int, alpha: float, dropout: float, targets):
    """The peft LoraConfig for our settings (targets: module names, a list or a comma-separated string)."""
    from peft import LoraConfig
    targets = target_list(targets)
    if rank < 1:
        raise UserError(f"lora_rank={rank}: use a positive rank (16 is a common choice) or 0 for a full fine-tune")
    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none")


def add_adapters(model: GPT, settings: dict) -> GPT:
    """Inject peft LoRA layers into model (in place) per settings {rank, alpha, dropout, targets}; only the
    adapters require grad afterwards."""
    from peft import inject_adapter_in_model
    config = lora_config(settings["rank"], settings["alpha"], settings["dropout"], settings["targets"])
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    unknown = [t for t in config.target_modules if t not in names]
    if unknown:
        raise UserError(f"lora_targets {sorted(unknown)} name no layer of the model: use some of {sorted(names)}")
    return inject_adapter_in_model(config, model, adapter_name=ADAPTER_NAME)


def hold_base_in(model: GPT, dtype: torch.dtype) -> None:
    """Cast the frozen Linear weights (the LoRA bases and the tied LM head / token embedding) to dtype."""
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and not module.weight.requires_grad:
            module.weight.data = module.weight.data.to(dtype)


def adapter_state(model: GPT) -> dict[str, torch.Tensor]:
    """The adapters' weights only (peft's names, without the adapter name), as saved in a checkpoint."""
    from peft import get_peft_model_state_dict
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model, adapter_name=ADAPTER_NAME).items()}


def load_adapter_state(model: GPT, state: dict[str, torch.Tensor]) -> None:
    from peft import set_peft_model_state_dict
    result = set_peft_model_state_dict(model, state, adapter_name=ADAPTER_NAME)
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing or result.unexpected_keys:
        raise UserError(f"the checkpoint's adapters do not fit the model: missing {missing[:2]}, "
                        f"unexpected {list(result.unexpected_keys)[:2]}")


def merge(model: GPT) -> GPT:
    """Fold each adapter into its base weight (W + B A alpha/r, peft's merge) and put the plain nn.Linear
    back, so decoding runs the model at full speed with no LoRA layers left."""
    from peft.tuners.lora import LoraLayer
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge(safe_merge=True)
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, module.get_base_layer())
    for attr in ("peft_config", "_hf_peft_config_loaded"):  # the tuner's bookkeeping, meaningless once merged
        if hasattr(model, attr):
            delattr(model, attr)
    return model


# ---- the base a LoRA run refers to -----------------------------------------------------------------------

def weights_hash(model: GPT) -> str:
    """SHA-256 over the model's weights (names, dtypes, shapes, bytes): the same weights from any file give
    the same hash. About 3 s per GB of weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.view(torch.uint8).reshape(-1).numpy())
    return digest.hexdigest()


def base_reference(init_from: str, model: GPT) -> dict:
    """What a LoRA checkpoint records about its base: the init_from as given, the resolved path (a local
    directory or checkpoint file made absolute; a hub name stays a name) and the weights' hash."""
    path = os.path.abspath(init_from) if os.path.exists(init_from) else init_from
    return {"name": init_from, "path": path, "sha256": weights_hash(model)}


def load_base(reference: dict, block_size: int, dropout: float = 0.0) -> GPT:
    """The base model a reference points at, at block_size positions, checked against its hash."""
    from checkpoint import init_model
    path = reference["path"]
    if not (os.path.exists(path) or not os.path.isabs(path)):
        raise UserError(f"this LoRA checkpoint's base {path} is gone: put the base back there (its weights "
                        f"must hash to {reference['sha256'][:12]}...)")
    base, _ = init_model(path, "", dropout=dropout, block_size=block_size)
    found = weights_hash(base)
    if found != reference["sha256"]:
        raise UserError(f"base mismatch: {path} has weights {found[:12]}..., but the adapters were trained on "
                        f"{reference['sha256'][:12]}...; give them the base they were trained on")
    return base


def is_lora_checkpoint(checkpoint: dict | None) -> bool:
    return bool(checkpoint) and "lora" in checkpoint


def model_from_checkpoint(checkpoint: dict, merged: bool = True) -> GPT:
    """Base + adapters from a LoRA checkpoint: merged into a plain GPT for decoding, or (merged=False) with
    live adapters to go on training."""
    info = checkpoint["lora"]
    args = checkpoint["model_args"]
    model = load_base(info["base"], args["block_size"], args.get("dropout", 0.0))
    add_adapters(model, info["settings"])
    load_adapter_state(model, checkpoint["model"])
    return merge(model) if merged else model


def checkpoint_entries(model: GPT, info: dict) -> dict:
    """What a LoRA run puts into its checkpoint instead of the full weights: adapters + the 'lora' record."""
    return {"model": adapter_state(model), "lora": info}


# ---- train.py's entry point -----------------------------------------------------------------------------

def prepare(model: GPT, init_from: str, checkpoint: dict | None, settings: dict,
            base_dtype: torch.dtype) -> tuple[GPT, dict | None]:
    """Make model a LoRA model when the settings (rank > 0) or the resumed checkpoint ask for one.

    Returns (model, info): info is None for a full fine-tune, else the 'lora' record for checkpoints. A
    resumed LoRA run comes with its adapters already in (checkpoint.model_from_checkpoint(merged=False))
    and keeps its own settings.
    """
    if is_lora_checkpoint(checkpoint):
        info = checkpoint["lora"]
    elif init_from == "resume" and settings["rank"] > 0:
        raise UserError("lora_rank is set but the run to resume is a full fine-tune: resume it with "
                        "--lora_rank=0, or start a LoRA pass on it with --init_from=<its out_dir>")
    elif settings["rank"] > 0:
        info = {"settings": dict(settings, targets=target_list(settings["targets"])),
                "base": base_reference(init_from, model)}
        add_adapters(model, info["settings"])
    else:
        return model, None
    if base_dtype != torch.float32:
        hold_base_in(model, base_dtype)
    return model, info


def describe(model: GPT, info: dict) -> str:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    s, base = info["settings"], info["base"]
    return (f"LoRA r={s['rank']} alpha={s['alpha']} on {','.join(s['targets'])}: {trainable:,} trainable "
            f"of {total:,} parameters; base {base['name']} (sha256 {base['sha256'][:12]}...)")


# ---- export ---------------------------------------------------------------------------------------------

def export_adapters(checkpoint: dict, directory: str) -> None:
    """Write a LoRA checkpoint's adapters as a peft adapter directory (adapter_config.json +
    adapter_model.safetensors) for transformers' GPT2LMHeadModel of the same base:

        PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(base), directory)

    Our module names are GPT-2's, and peft's adapters on transformers' Conv1D layers have nn.Linear's
    shapes, so the weights go over as they are; peft's own save_pretrained writes the directory."""
    import shutil
    from peft import get_peft_model, set_peft_model_state_dict
    from export import transformers_model
    if not is_lora_checkpoint(checkpoint):
        raise UserError("--adapters_only needs a LoRA run's checkpoint (trained with --lora_rank > 0); "
                        "this one is a full fine-tune: export it without --adapters_only")
    info = checkpoint["lora"]
    s = info["settings"]
    base = load_base(info["base"], checkpoint["model_args"]["block_size"])
    config = lora_config(s["rank"], s["alpha"], s["dropout"], s["targets"])
    config.fan_in_fan_out = True  # transformers' GPT-2 stores its weights as Conv1D (in, out)
    hf_model = transformers_model(base)
    hf_model.name_or_path = info["base"]["path"]  # peft records this as base_model_name_or_path
    tmp = f"{directory.rstrip(os.sep)}.tmp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers' deprecation notice, a name peft still reads
        # a NanoPhi base is no transformers directory, so peft cannot look for a resized vocabulary: none is
        warnings.filterwarnings("ignore", message="Could not find a config file")
        peft_model = get_peft_model(hf_model, config)
        state = {f"base_model.model.{k}": v for k, v in checkpoint["model"].items()}
        result = set_peft_model_state_dict(peft_model, state)
        if result.unexpected_keys:
            raise UserError(f"cannot export: transformers' GPT-2 has no layer for {list(result.unexpected_keys)[:2]}")
        shutil.rmtree(tmp, ignore_errors=True)
        peft_model.save_pretrained(tmp)
    shutil.rmtree(directory, ignore_errors=True)  # replaced whole: no stale files from an earlier export
    os.replace(tmp, directory)
