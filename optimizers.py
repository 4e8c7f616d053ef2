"""The optimizer train.py builds: `optimizer = 'adamw'` (torch's fused AdamW) or `'adamw8bit'` (bitsandbytes).

8-bit AdamW keeps both moments in 8 bits with block-wise scales: 2 bytes of state per parameter instead of
8, which is what lets a full fine-tune of gpt2-large fit on a 24 GB GPU (memory.py has the figures). Its
kernels are CUDA's; elsewhere asking for it is an error, not a quiet switch to the 32-bit optimizer, whose
state would need four times the memory the user planned for.
"""

import torch

from errors import UserError

# optimizer state bytes per trainable parameter (memory.py plans with these): two fp32 moments, or two
# 8-bit moments (bitsandbytes' block-wise scales add 8 bytes per 2048 values, well under 1 %)
STATE_BYTES = {"adamw": 8, "adamw8bit": 2}


def build(model: torch.nn.Module, name: str, weight_decay: float, learning_rate: float,
          betas: tuple[float, float], device_type: str) -> torch.optim.Optimizer:
    """AdamW over the parameters that require grad: decay on matrices only, as model.configure_optimizers."""
    if name not in STATE_BYTES:
        raise UserError(f"optimizer={name!r}: use {' or '.join(STATE_BYTES)}")
    if name == "adamw8bit" and device_type != "cuda":
        raise UserError(f"optimizer='adamw8bit' needs a CUDA GPU (bitsandbytes' 8-bit kernels), not {device_type}: "
                        "use --optimizer=adamw here")
    adamw = model.configure_optimizers(weight_decay, learning_rate, betas, device_type)
    if name == "adamw":
        return adamw
    import bitsandbytes as bnb
    # the same parameter groups (decay on matrices only); torch's AdamW holds no state until its first step
    groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in adamw.param_groups]
    return bnb.optim.AdamW8bit(groups, lr=learning_rate, betas=betas)
