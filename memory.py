"""The memory planner: estimated peak training memory for a model shape and settings, and what to change.

    python -m bench --mode=memory        # the table: gpt2 ... gpt2-xl x {full, full + 8-bit Adam, LoRA r=16}
train.py prints the plan for its own settings at start and puts its advice into an out-of-memory error.

The estimate adds up, in bytes, what a training step keeps alive at its peak (checked against measured peaks
by bench/memory.py; docs/lora.md has the figures):
  weights      4 bytes a parameter (fp32); with LoRA the frozen Linear weights are held in the autocast dtype
               (2 bytes) and the adapters in fp32
  optimizer    per trainable parameter: AdamW's two fp32 moments (8 bytes) or 8-bit AdamW's (2 bytes)
  gradients    4 bytes per trainable parameter
  casts        full fine-tune under autocast: the half-precision copies of every Linear weight that the
               forward pass makes and saves for backward (2 bytes a weight); none for a half-precision base
  activations  per token and layer, what backward needs, counted tensor by tensor for GPT-2's block (see
               layer_activation_bytes); with activation checkpointing only each block's input (4 bytes x
               width) plus one block's worth while it is recomputed
  logits       the (tokens x vocab) tensors around the loss: 12 bytes a logit on the plain path (fp32 copy,
               log-softmax saved, its gradient), 2 on the CPU's fused head (kernels.py)
Peak = weights + optimizer + max(gradients, casts + activations + logits + the LM head's gradient): backward
frees activations while it makes gradients (their sum is linear in between, so one end is the peak), and the
optimizer step comes once the activations are gone. With gradient accumulation the gradients of earlier
micro-steps are held through each backward, so there it is the sum. Not counted: the framework itself
(CUDA context, ~0.3-0.5 GB; Python and torch on a CPU) and allocator fragmentation, hence the margin below.
"""

import os
from dataclasses import dataclass, field

import torch

from kernels import cpu_kernels_pay_off, explicit_attention_pays_off
from model import GPT2_SIZES
from optimizers import STATE_BYTES

GB = 1e9
FIT_MARGIN = 0.9  # a plan "fits" a device when it needs at most 90 % of it: the rest for context and fragments
GPU_SIZES_GB = (16, 24, 40, 80)
GPT2_VOCAB = 50257
LORA_TARGETS = ("c_attn", "c_proj", "c_fc")


@dataclass
class Shape:
    n_layer: int
    n_head: int
    n_embd: int
    vocab_size: int = GPT2_VOCAB
    bias: bool = True

    @classmethod
    def gpt2(cls, name: str) -> "Shape":
        return cls(**GPT2_SIZES[name])

    def linear_shapes(self) -> dict[str, list[tuple[int, int]]]:
        """(in, out) of every Linear in one block, by module name."""
        h = self.n_embd
        return {"c_attn": [(h, 3 * h)], "c_proj": [(h, h), (4 * h, h)], "c_fc": [(h, 4 * h)]}

    def params(self, block_size: int) -> dict[str, int]:
        """Parameter counts: the block matrices, the tied token embedding / LM head, and the small rest."""
        h, L = self.n_embd, self.n_layer
        matrices = L * 12 * h * h
        small = L * (13 * h if self.bias else 2 * h) + (2 * h if self.bias else h)  # LayerNorms, biases, ln_f
        return {"matrices": matrices, "head": self.vocab_size * h, "positions": block_size * h, "small": small}


def lora_params(shape: Shape, rank: int, targets=LORA_TARGETS) -> int:
    """Adapter parameters: rank x (in + out) for each targeted Linear of each block."""
    return shape.n_layer * sum(rank * (i + o) for name, shapes in shape.linear_shapes().items() if name in targets
                               for i, o in shapes)


def layer_activation_bytes(shape: Shape, block_size: int, compute_bytes: int, attention: str,
                           saved_inputs: dict[str, bool]) -> float:
    """Bytes one block keeps for backward, per token. compute_bytes: 2 under half-precision autocast, 4 in
    fp32. saved_inputs: per Linear name, whether backward needs its input (its weight or adapter trains).

    LayerNorm inputs are the fp32 residual stream (4 h, twice); the qkv projection (3 h), attention's output
    and its contiguous copy (h each), the MLP's first output (4 h, for GELU) are saved whatever trains; the
    LayerNorm outputs (h, twice) and GELU's output (4 h) as the next Linear's input only when it trains.
    attention 'flash' saves a log-sum-exp per head (negligible); 'explicit' (kernels.py, CPU) saves the
    (T x T) probabilities and its own copies of q, k, v instead of the output.
    """
    h, b = shape.n_embd, compute_bytes
    total = 2 * 4 * h + 3 * b * h + 2 * b * h + 4 * b * h
    total += b * h * (saved_inputs["c_attn"] + saved_inputs["c_fc"]) + 4 * b * h * saved_inputs["c_proj"]
    if attention == "explicit":
        total += shape.n_head * block_size * b  # probabilities; the q, k, v copies replace qkv, the out its copy
    return total


@dataclass
class Plan:
    """An estimate, in bytes, of one training setup's peak memory, with the settings it was made for."""
    shape: Shape
    batch_size: int
    block_size: int
    lora_rank: int = 0
    optimizer: str = "adamw"
    gradient_checkpointing: bool = False
    dtype: str = "bfloat16"
    attention: str = "flash"
    fused_head: bool = False
    head_rows: int | None = None  # logit columns when the head is shortlisted (shortlist.py); None: vocab_size
    accumulation: bool = True
    lora_targets: tuple = LORA_TARGETS
    device: str = "cuda"
    capacity: float | None = None  # the device's memory in bytes, when known
    parts: dict = field(default_factory=dict)

    def __post_init__(self):
        self.parts = estimate_parts(self)

    @property
    def total(self) -> float:
        p = self.parts
        transient = p["casts"] + p["activations"] + p["logits"]
        if self.accumulation:
            return p["weights"] + p["optimizer"] + p["gradients"] + transient
        return p["weights"] + p["optimizer"] + max(p["gradients"], transient + p["head_gradient"])

    def fits(self, capacity: float) -> bool:
        return self.total <= FIT_MARGIN * capacity

    def label(self) -> str:
        kind = f"LoRA r={self.lora_rank}" if self.lora_rank else "full"
        opt = " + 8-bit Adam" if self.optimizer == "adamw8bit" else ""
        ckpt = ", activation checkpointing" if self.gradient_checkpointing else ""
        return f"{kind}{opt}{ckpt}"

    def describe(self) -> str:
        p = self.parts
        where = f" of {self.capacity / GB:.1f} GB on {self.device}" if self.capacity else ""
        verdict = "" if not self.capacity else (" (fits)" if self.fits(self.capacity) else
                                                " (will not fit: " + self.advice() + ")")
        return (f"memory plan: ~{self.total / GB:.2f} GB peak{where}{verdict} = weights {p['weights'] / GB:.2f} + "
                f"optimizer {p['optimizer'] / GB:.2f} + gradients {p['gradients'] / GB:.2f} + activations "
                f"{(p['activations'] + p['casts']) / GB:.2f} + logits {p['logits'] / GB:.2f} GB "
                f"({self.label()}, micro-batch {self.batch_size} x {self.block_size}, {self.dtype})")

    def variant(self, **changes) -> "Plan":
        settings = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "parts"}
        return Plan(**{**settings, **changes})

    def advice(self) -> str:
        """The planner's suggestion: the first changes, cheapest in speed or quality first, that fit."""
        if not self.capacity:
            return ""
        tries = []
        if not self.gradient_checkpointing:
            tries.append(("--gradient_checkpointing=True", dict(gradient_checkpointing=True)))
        if self.device.startswith("cuda") and not self.lora_rank and self.optimizer != "adamw8bit":
            tries.append(("--optimizer=adamw8bit", dict(optimizer="adamw8bit")))
        if not self.lora_rank:
            tries.append(("--lora_rank=16", dict(lora_rank=16)))
            tries.append(("--lora_rank=16 --gradient_checkpointing=True",
                          dict(lora_rank=16, gradient_checkpointing=True)))
        batch = self.batch_size // 2
        while batch >= 1:
            tries.append((f"--batch_size={batch} (more --gradient_accumulation_steps)", dict(batch_size=batch)))
            batch //= 2
        fitting = [(flag, self.variant(**change)) for flag, change in tries]
        fitting = [(flag, plan) for flag, plan in fitting if plan.fits(self.capacity)]
        if not fitting:
            return (f"the planner estimates {self.total / GB:.1f} GB against {self.capacity / GB:.1f} GB and finds "
                    "no single change that fits: a smaller model or block_size")
        flags = "; or ".join(f"{flag} (~{plan.total / GB:.1f} GB)" for flag, plan in fitting[:3])
        return f"the planner estimates {self.total / GB:.1f} GB of {self.capacity / GB:.1f} GB; fits with {flags}"


def estimate_parts(plan: Plan) -> dict[str, float]:
    s, T = plan.shape, plan.block_size
    tokens = plan.batch_size * T
    half = plan.dtype in ("bfloat16", "float16")
    b = 2 if half else 4
    counts = s.params(T)
    total_params = sum(counts.values())
    linear = counts["matrices"] + counts["head"]  # the weights of Linear layers (the head is tied to wte)
    if plan.lora_rank:
        adapters = lora_params(s, plan.lora_rank, plan.lora_targets)
        weights = linear * b + (total_params - linear) * 4 + adapters * 4
        trainable, casts, head_trains = adapters, 0, False
        saved = {name: name in plan.lora_targets for name in LORA_TARGETS}
    else:
        weights = total_params * 4
        trainable, casts, head_trains = total_params, (linear * 2 if half else 0), True
        saved = dict.fromkeys(LORA_TARGETS, True)
    per_layer = layer_activation_bytes(s, T, b, plan.attention, saved)
    if plan.gradient_checkpointing:
        activations = tokens * (s.n_layer * 4 * s.n_embd + per_layer)  # block inputs + one block recomputed
    else:
        activations = tokens * s.n_layer * per_layer
    logit_bytes = b if plan.fused_head else 12  # one buffer in the step's dtype (kernels.FusedHeadLoss)
    return {
        "weights": weights,
        "optimizer": trainable * STATE_BYTES[plan.optimizer],
        "gradients": trainable * 4,
        "casts": casts,
        "activations": activations,
        "logits": tokens * (plan.head_rows or s.vocab_size) * logit_bytes,
        "head_gradient": counts["head"] * 4 if head_trains else 0,
    }


def device_capacity(device: str) -> float | None:
    """Bytes of memory the device has: a GPU's total, or a CPU's physical memory."""
    kind = torch.device(device).type
    if kind == "cuda" and torch.cuda.is_available():
        return float(torch.cuda.get_device_properties(device).total_memory)
    if kind == "cpu" and hasattr(os, "sysconf"):
        try:
            return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (ValueError, OSError):
            return None
    return None


def attention_path(device: str, dtype: str, block_size: int) -> str:
    """Which attention a training step takes (model.py): the explicit one for CPU mixed precision at short
    context, else scaled_dot_product_attention's flash / memory-efficient kernels."""
    if cpu_kernels_pay_off(device) and explicit_attention_pays_off(block_size, getattr(torch, dtype)):
        return "explicit"
    return "flash"


def plan_for(model, batch_size: int, block_size: int, micro_steps: int, optimizer: str, lora_info: dict | None,
             gradient_checkpointing: bool, dtype: str, device: str) -> Plan:
    """The plan for train.py's own settings and model (its head_shortlist, if set, sizes the logits)."""
    cfg = model.config
    settings = (lora_info or {}).get("settings", {})
    return Plan(Shape(cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.vocab_size, cfg.bias), batch_size, block_size,
                lora_rank=settings.get("rank", 0), optimizer=optimizer,
                gradient_checkpointing=gradient_checkpointing, dtype=dtype,
                attention=attention_path(device, dtype, block_size), fused_head=cpu_kernels_pay_off(device),
                head_rows=len(model.head_shortlist.rows) if model.head_shortlist is not None else None,
                accumulation=micro_steps > 1, lora_targets=tuple(settings.get("targets", LORA_TARGETS)),
                device=device, capacity=device_capacity(device))


def gpu_table(rank: int = 16, block_size: int = 1024, batch_size: int = 4, dtype: str = "bfloat16") -> list[Plan]:
    """The planner's table: every GPT-2 size x {full, full + 8-bit Adam, LoRA} x {without, with checkpointing}."""
    plans = []
    for name in GPT2_SIZES:
        for lora_rank, optimizer in ((0, "adamw"), (0, "adamw8bit"), (rank, "adamw")):
            for ckpt in (False, True):
                plans.append(Plan(Shape.gpt2(name), batch_size, block_size, lora_rank=lora_rank,
                                  optimizer=optimizer, gradient_checkpointing=ckpt, dtype=dtype))
    return plans
