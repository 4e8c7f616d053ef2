"""The whole GPT-2 in one file: the model, loading OpenAI's weights, and fast generation with a KV cache.

The parameter layout is OpenAI's GPT-2, name for name, so weights from `transformers` map one to one.
Compared with nanoGPT this adds: generation that prefills the prompt once and then feeds one token per step
through a key/value cache; longer context by interpolating the learned position embeddings; activation
checkpointing; and MFU measured against the peak of the device actually in use.
"""

import math
import time
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn as nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from errors import UserError

GPT2_SIZES = {  # OpenAI's four checkpoints: layers, heads, width
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768),
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280),
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600),
}


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304  # GPT-2's 50257 padded up to a multiple of 64 for speed when training from scratch
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm layers, as GPT-2 has


class FusedHeadLoss(torch.autograd.Function):
    """LM head + mean cross-entropy for mixed-precision CPU training, with as few passes over the logits as
    possible.

    The (tokens x vocab) logits are the largest tensors of a training step (2048 x 50304 at the CPU bench
    shape: 206 MB in bf16), and on a CPU every pass over them costs about as much as the matmul that makes
    them. The plain path makes many (an fp32 copy, log_softmax, a zero-filled gradient, log_softmax's
    backward, a bf16 copy of the gradient). Here:
      - one bf16 matmul writes all the logits into one buffer (one call: oneDNN re-lays the weight out on
        every call, so per-chunk calls cost more);
      - the softmax runs in place on that buffer (fp32 arithmetic inside, bf16 stored); then one pass sums
        each row's non-target probabilities. That sum, 1 - p_target, is exact to bf16's relative precision
        even for a confident prediction, where p_target itself rounds to 1 in bf16: it gives the target's
        gradient entry (p - 1) and, for p > 0.5, the loss -log(p) = -log1p(-(1 - p));
      - backward multiplies that buffer into x's and the weight's gradients, the 1/n and grad_output
        scaling applied only to (tokens x width) tensors.
    Measured on a 2-core AVX-512/AMX CPU at the bench.py shape: forward + backward of the head about 1.3x
    faster than the chunked fp32 softmax it replaced (medians of 12 interleaved runs).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # matmuls in autocast's dtype when autocast is on (bf16 on CPUs that have it), else in x's dtype
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        xc, wc = x.to(dtype), weight.to(dtype)
        valid = targets != -1
        safe_targets = targets.clamp(min=0)
        rows = torch.arange(x.size(0), device=x.device)
        grad_logits = xc @ wc.t()
        torch.softmax(grad_logits, dim=-1, out=grad_logits)  # row by row, so in place is safe
        p_target = grad_logits[rows, safe_targets].float()
        grad_logits[rows, safe_targets] = 0
        others = grad_logits.sum(dim=-1).float()  # 1 - p_target (bf16 sums accumulate in fp32)
        row_losses = torch.where(p_target > 0.5, -torch.log1p(-others), -p_target.log())
        underflow = ~torch.isfinite(row_losses) & valid
        if underflow.any():  # a target 88+ nats below the best: its loss from logsumexp of recomputed logits
            logits = (xc[underflow] @ wc.t()).float()
            exact = torch.logsumexp(logits, -1) - logits.gather(1, safe_targets[underflow].unsqueeze(1)).squeeze(1)
            row_losses[underflow] = exact
        grad_logits[rows, safe_targets] = (-others).to(dtype)  # softmax - one-hot, at the targets
        n_valid = valid.sum().clamp(min=1)
        ctx.save_for_backward(grad_logits, xc, wc, valid, n_valid)
        ctx.x_dtype, ctx.weight_dtype = x.dtype, weight.dtype
        return torch.where(valid, row_losses, 0.0).sum() / n_valid

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad_logits, xc, wc, valid, n_valid = ctx.saved_tensors
        # rows of ignored targets hold a meaningless gradient: zeroed through the (tokens x width) tensors
        scale = (valid * (grad_output / n_valid)).unsqueeze(1)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = ((grad_logits @ wc).float() * scale).to(ctx.x_dtype)
        if ctx.needs_input_grad[1]:
            grad_w = (grad_logits.t() @ (xc.float() * scale).to(xc.dtype)).to(ctx.weight_dtype)
        return grad_x, grad_w, None


@torch.compiler.disable  # already fused by hand; a compiled model runs it eager, between its graphs
def fused_head_loss(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of x @ weight.T against targets (-1 = ignore), with few passes over the logits."""
    return FusedHeadLoss.apply(x, weight, targets)


class KVCache:
    """Keys and values of every layer for the tokens seen so far, preallocated to `max_len` positions."""

    def __init__(self, config: GPTConfig, batch_size: int, max_len: int, device, dtype):
        shape = (config.n_layer, batch_size, config.n_head, max_len, config.n_embd // config.n_head)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.pos = 0  # how many positions are filled

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this layer's new keys/values at the current position; return all keys/values so far."""
        end = self.pos + k.size(2)
        self.k[layer, :, :, self.pos:end] = k
        self.v[layer, :, :, self.pos:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


def cpu_mixed_precision_training(x: torch.Tensor) -> bool:
    """Whether this forward is a CPU training step under autocast, where model.py takes its CPU fast paths
    (fp32 CPU training takes the plain paths, as bench.py's plain-PyTorch baseline must)."""
    return x.device.type == "cpu" and torch.is_grad_enabled() and torch.is_autocast_enabled("cpu")


# Longest context at which CPU mixed-precision training forms the attention scores explicitly. Measured in
# bf16 on a 2-core AVX-512/AMX CPU, forward + backward of one layer: batch 8 x 6 heads x 256 tokens, flash
# 22 ms vs explicit 12 ms; batch 2 x 6 heads x 1024 tokens, flash 39 ms vs explicit 48 ms.
EXPLICIT_ATTENTION_MAX_T = 512


def explicit_causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float) -> torch.Tensor:
    """Causal attention with the (T x T) scores formed, as nanoGPT's fallback does: for CPU training at short
    context, where the backward of PyTorch's CPU flash attention is slower (EXPLICIT_ATTENTION_MAX_T)."""
    B, H, T, D = q.size()
    causal = torch.full((T, T), float("-inf"), dtype=q.dtype, device=q.device).triu(1)
    scores = torch.baddbmm(causal.expand(B * H, T, T), q.reshape(B * H, T, D), k.reshape(B * H, T, D).transpose(1, 2),
                           alpha=1 / math.sqrt(D))
    probs = F.dropout(scores.softmax(dim=-1), dropout)
    return (probs @ v.reshape(B * H, T, D)).view(B, H, T, D)


class CausalSelfAttention(nn.Module):

    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, layer: int = 0, kv_cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        mask, is_causal = None, True
        if kv_cache is not None:
            past = kv_cache.pos
            k, v = kv_cache.append(layer, k, v)
            if past > 0:
                # New queries see every cached position plus the new ones up to themselves. A single new
                # token sees everything, so it needs no mask at all (the common decode step).
                is_causal = False
                if T > 1:
                    mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
        if kv_cache is None and T <= EXPLICIT_ATTENTION_MAX_T and cpu_mixed_precision_training(x):
            y = explicit_causal_attention(q, k, v, self.dropout if self.training else 0.0)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                               dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's activation ("gelu_new": GELU with the tanh approximation; the exact erf GELU differs slightly).

    Compiled for a CPU it is written as x * sigmoid(2u), the same function (0.5 * (1 + tanh(u)) equals
    sigmoid(2u)): inductor's CPU code computes tanh with a slow vectorized routine and sigmoid with its fast
    exp. Measured in bf16 on 2048 x 1536 (one MLP at the CPU bench shape), forward + backward 4.0 ms against
    9.9 ms for the tanh form, compiled or eager. (GPUs keep the tanh form: not measured there.)
    """
    if torch.compiler.is_compiling() and x.device.type == "cpu":
        return gelu_tanh_as_sigmoid(x)
    return F.gelu(x, approximate="tanh")


def gelu_tanh_as_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """0.5 x (1 + tanh(u)) with u = sqrt(2/pi) (x + 0.044715 x^3), computed as x * sigmoid(2u)."""
    two_c = 2 * math.sqrt(2 / math.pi)
    two_u = x * (two_c + two_c * 0.044715 * x * x)
    return x * torch.sigmoid(two_u)


class MLP(nn.Module):

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(gelu_tanh(self.c_fc(x))))


class Block(nn.Module):

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, layer: int = 0, kv_cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), layer, kv_cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):

    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.vocab_size is not None and config.block_size is not None
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied, as in GPT-2
        self.gradient_checkpointing = False  # recompute each block's activations in backward to save memory
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2's scaled init of the residual projections
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def get_num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; position embeddings are left out by default (token embeddings count, as
        they are the LM head's weights too)."""
        n_params = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n_params -= self.transformer.wpe.weight.numel()
        return n_params

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, kv_cache: KVCache | None = None,
                all_logits: bool = False, reduction: str = "mean"):
        """Logits and, given targets (-1 = ignore), the cross-entropy loss.

        A CPU training step under autocast (train mode, grad enabled, targets, mean loss) returns None for the
        logits: its head and loss are fused, and the logits' buffer becomes their gradient in place.

        Without targets only the last position's logits are computed (all of them with all_logits=True),
        which is all that generation needs. With a kv_cache, idx continues the cached sequence.
        reduction='none' returns the per-token loss, shaped like targets.
        """
        B, T = idx.size()
        start = kv_cache.pos if kv_cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"cannot forward {start + T} positions, block size is only {self.config.block_size}")
        pos = torch.arange(start, start + T, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for layer, block in enumerate(self.transformer.h):
            if self.gradient_checkpointing and self.training and kv_cache is None:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x, layer, kv_cache)
        if kv_cache is not None:
            kv_cache.pos += T
        x = self.transformer.ln_f(x)
        if targets is not None and reduction == "mean" and self.training and cpu_mixed_precision_training(x):
            # mixed-precision CPU training step: the head and loss fused (FusedHeadLoss), whose logits turn
            # into their gradient in place, so None is returned for them. Elsewhere the plain path below, which
            # torch.compile fuses where train.py compiles; bench.py's fp32 baseline runs it eager.
            return None, fused_head_loss(x.view(-1, x.size(-1)), self.lm_head.weight, targets.reshape(-1))
        if targets is not None:
            logits = self.lm_head(x)
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1),
                                   ignore_index=-1, reduction=reduction)
            if reduction == "none":
                loss = loss.view(targets.shape)
            return logits, loss
        if not all_logits:
            x = x[:, [-1], :]
        return self.lm_head(x), None

    # ---- context length -------------------------------------------------------------------------------

    def crop_block_size(self, block_size: int) -> None:
        """Shrink the context, e.g. to fine-tune GPT-2 (1024) at 256: keeps the first positions."""
        if not 0 < block_size <= self.config.block_size:
            raise UserError(f"block_size {block_size} must be between 1 and the model's {self.config.block_size}")
        self.config.block_size = block_size
        self.transformer.wpe.weight = nn.Parameter(self.transformer.wpe.weight[:block_size].detach().clone())

    def extend_block_size(self, block_size: int) -> None:
        """Grow the context beyond what the checkpoint was trained with (1024 -> 4096 or 8192).

        Position interpolation: new position j takes the embedding of old position j * old/new, linearly
        interpolated, so with an integer ratio r the new position r*i holds exactly the old position i and
        the model sees familiar embeddings, only spread r times wider. Fine-tuning at the new length then
        teaches it the finer steps.
        """
        old = self.config.block_size
        if block_size <= old:
            raise UserError(f"block_size {block_size} is not larger than the model's {old}; use crop_block_size")
        weight = self.transformer.wpe.weight.detach()
        where = torch.arange(block_size, dtype=torch.float64) * (old / block_size)
        lo = where.floor().long().clamp(max=old - 1)
        hi = (lo + 1).clamp(max=old - 1)
        frac = (where - lo).clamp(max=1.0).to(weight.dtype).unsqueeze(1).to(weight.device)
        new = weight[lo] * (1 - frac) + weight[hi] * frac
        self.config.block_size = block_size
        self.transformer.wpe = nn.Embedding(block_size, self.config.n_embd, device=weight.device, dtype=weight.dtype)
        self.transformer.wpe.weight = nn.Parameter(new)

    def set_block_size(self, block_size: int) -> None:
        """Crop or extend the positions to block_size (no-op if equal)."""
        if block_size < self.config.block_size:
            self.crop_block_size(block_size)
        elif block_size > self.config.block_size:
            self.extend_block_size(block_size)

    # ---- OpenAI's weights ---------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, name_or_dir: str, override_args: dict | None = None) -> "GPT":
        """GPT-2 weights from `transformers`: 'gpt2' ... 'gpt2-xl' (downloaded into its cache when online),
        or a local directory holding a transformers GPT-2 checkpoint (config.json + safetensors/bin).
        override_args may set dropout."""
        override_args = override_args or {}
        unknown = set(override_args) - {"dropout"}
        if unknown:
            raise UserError(f"from_pretrained can only override dropout, not {sorted(unknown)}")
        hf_model = load_transformers_gpt2(name_or_dir)
        hf = hf_model.config
        if getattr(hf, "activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
            raise UserError(f"{name_or_dir} uses activation {hf.activation_function}; only GPT-2's gelu_new is supported")
        config = GPTConfig(block_size=hf.n_positions, vocab_size=hf.vocab_size, n_layer=hf.n_layer,
                           n_head=hf.n_head, n_embd=hf.n_embd, bias=True,
                           dropout=override_args.get("dropout", 0.0))
        model = GPT(config)
        model.load_state_dict(state_dict_from_transformers(hf_model.state_dict()))
        return model

    def to_transformers_state_dict(self) -> dict[str, torch.Tensor]:
        """Our weights under transformers' GPT2LMHeadModel names and layout (for export)."""
        out = {}
        for name, tensor in self.state_dict().items():
            if name.endswith(TRANSPOSED):
                tensor = tensor.t()
            out[name] = tensor.contiguous()
        return out

    # ---- training helpers ----------------------------------------------------------------------------

    def configure_optimizers(self, weight_decay: float, learning_rate: float, betas: tuple[float, float],
                             device_type: str) -> torch.optim.AdamW:
        """AdamW with weight decay on matrices only (not biases, LayerNorm gains); one fused kernel per
        parameter on CUDA and CPU (a single pass over weights and moments instead of one per operation)."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=device_type in ("cuda", "cpu"))

    def flops_per_token(self) -> int:
        """Training FLOPs (forward + backward) per token, as in the PaLM paper's appendix B."""
        cfg = self.config
        head_dim = cfg.n_embd // cfg.n_head
        return 6 * self.get_num_params() + 12 * cfg.n_layer * cfg.n_head * head_dim * cfg.block_size

    def estimate_mfu(self, fwdbwd_per_iter: int, dt: float, device: str | torch.device = "cuda",
                     dtype: torch.dtype = torch.bfloat16, peak_flops: float | None = None) -> float | None:
        """Model FLOPs utilization: achieved FLOP/s over the peak of the device in use for this dtype.
        peak_flops overrides the lookup; returns None when the peak is unknown."""
        peak = peak_flops or device_peak_flops(device, dtype)
        if not peak:
            return None
        flops_per_iter = self.flops_per_token() * self.config.block_size * fwdbwd_per_iter
        return flops_per_iter / dt / peak

    # ---- generation ------------------------------------------------------------------------------------

    @torch.inference_mode()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, repetition_penalty: float = 1.0, stop_token: int | None = None,
                 seed: int | None = None, use_cache: bool = True) -> torch.Tensor:
        """Continue each row of idx (B, T) by up to max_new_tokens tokens; return (B, T + new).

        temperature 0 is greedy. Generation ends early once every row has produced stop_token (rows that
        stopped first are padded with it). use_cache=False recomputes the whole context each step, as
        nanoGPT does; it exists to check the cache and to measure what it saves.
        """
        new = list(self.generate_stream(idx, max_new_tokens, temperature, top_k, top_p, repetition_penalty,
                                        stop_token, seed, use_cache))
        if not new:
            return idx
        return torch.cat([idx, torch.stack(new, dim=1)], dim=1)

    @torch.inference_mode()
    def generate_stream(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                        top_k: int | None = None, top_p: float | None = None, repetition_penalty: float = 1.0,
                        stop_token: int | None = None, seed: int | None = None,
                        use_cache: bool = True) -> Iterator[torch.Tensor]:
        """Like generate, but yields each step's new tokens, shape (B,), as soon as they are made."""
        if idx.dim() != 2 or idx.size(1) == 0:
            raise UserError("generation needs a non-empty prompt of shape (batch, tokens)")
        generator = torch.Generator(device=idx.device).manual_seed(seed) if seed is not None else None
        sampler = TokenSampler(temperature, top_k, top_p, repetition_penalty, generator)
        block_size = self.config.block_size
        seq = idx
        cache = None
        finished = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
        for _ in range(max_new_tokens):
            if not use_cache:
                logits, _ = self(seq[:, -block_size:])
            elif cache is None or cache.pos >= block_size:
                # (Re)fill the cache. Past block_size the window slides: learned absolute positions cannot be
                # shifted inside a cache, so keep the last 3/4 block and prefill it again; that costs one
                # prefill per block/4 new tokens instead of a full recompute per token.
                keep = block_size if cache is None else block_size * 3 // 4
                context = seq[:, -keep:]
                cache = KVCache(self.config, seq.size(0), block_size, idx.device, self.lm_head.weight.dtype)
                logits, _ = self(context, kv_cache=cache)
            else:
                logits, _ = self(seq[:, -1:], kv_cache=cache)
            next_token = sampler(logits[:, -1, :].float(), seq)
            if stop_token is not None:
                next_token = torch.where(finished, torch.full_like(next_token, stop_token), next_token)
                finished |= next_token == stop_token
            seq = torch.cat([seq, next_token.unsqueeze(1)], dim=1)
            yield next_token
            if stop_token is not None and bool(finished.all()):
                return


class TokenSampler:
    """Turns last-position logits into the next token: repetition penalty, temperature, top-k, top-p."""

    def __init__(self, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 repetition_penalty: float = 1.0, generator: torch.Generator | None = None):
        if temperature < 0:
            raise UserError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
        if top_k is not None and top_k < 1:
            raise UserError(f"top_k must be >= 1 or None, got {top_k}")
        if top_p is not None and not 0 < top_p <= 1:
            raise UserError(f"top_p must be in (0, 1], got {top_p}")
        if repetition_penalty <= 0:
            raise UserError(f"repetition_penalty must be > 0 (1 = off), got {repetition_penalty}")
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.repetition_penalty, self.generator = repetition_penalty, generator

    def __call__(self, logits: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
        if self.repetition_penalty != 1.0:
            # CTRL's penalty: make every token already in the sequence less likely, whatever its sign.
            seen = logits.gather(1, seq)
            seen = torch.where(seen > 0, seen / self.repetition_penalty, seen * self.repetition_penalty)
            logits = logits.scatter(1, seq, seen)
        if self.temperature == 0 or self.top_k == 1:
            return logits.argmax(dim=-1)
        logits = logits / self.temperature
        candidates = None  # token ids of the columns of logits, when they are not the whole vocabulary
        if self.top_k is not None and self.top_k < logits.size(-1):
            # Keep only the k likeliest columns: the same distribution as masking the rest to -inf, but the
            # softmax and multinomial below then cost k instead of the vocabulary (1.5 ms a token on a CPU).
            logits, candidates = torch.topk(logits, self.top_k)
        if self.top_p is not None and self.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, descending=True)
            cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
            drop = cumulative - sorted_logits.softmax(dim=-1) >= self.top_p  # keep the smallest set reaching top_p
            logits = logits.masked_fill(drop.scatter(1, order, drop), -float("inf"))
        choice = torch.multinomial(logits.softmax(dim=-1), num_samples=1, generator=self.generator)
        return (choice if candidates is None else candidates.gather(1, choice)).squeeze(1)


# ---- transformers interop ------------------------------------------------------------------------------

# transformers' GPT-2 stores these as Conv1D weights, (in, out): the transpose of nn.Linear's (out, in).
TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def load_transformers_gpt2(name_or_dir: str):
    """GPT2LMHeadModel from a hub name or local directory, or one clear error saying how to get it."""
    from transformers import GPT2LMHeadModel
    try:
        return GPT2LMHeadModel.from_pretrained(name_or_dir)
    except (OSError, ValueError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"could not load GPT-2 weights '{name_or_dir}': not found locally and could not be "
                        f"downloaded ({reason}). Download once where there is internet, or pass a local "
                        f"transformers directory (config.json + model.safetensors), e.g. "
                        f"--init_from=/path/to/gpt2-medium") from e


def state_dict_from_transformers(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map GPT2LMHeadModel's state dict onto ours: same names, Conv1D weights transposed, buffers dropped."""
    out = {}
    for name, tensor in hf_state.items():
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # causal-mask buffers in older transformers versions, not weights
        out[name] = tensor.t() if name.endswith(TRANSPOSED) else tensor
    if "lm_head.weight" not in out:
        out["lm_head.weight"] = out["transformer.wte.weight"]
    return out


# ---- device peaks for MFU -----------------------------------------------------------------------------

# Dense tensor-core peaks in FLOP/s from the vendors' data sheets, by device name and dtype. fp32 on
# A100/H100 is TF32. Matched by substring of torch.cuda.get_device_name(), most specific first.
GPU_PEAK_FLOPS = {
    "H200": {"bf16": 989e12, "fp16": 989e12, "fp32": 495e12},
    "H100 PCIe": {"bf16": 756e12, "fp16": 756e12, "fp32": 378e12},
    "H100": {"bf16": 989e12, "fp16": 989e12, "fp32": 495e12},
    "A100": {"bf16": 312e12, "fp16": 312e12, "fp32": 156e12},
    "L40S": {"bf16": 362e12, "fp16": 362e12, "fp32": 91.6e12},
    "A10G": {"bf16": 70e12, "fp16": 70e12, "fp32": 35e12},
    "A10": {"bf16": 125e12, "fp16": 125e12, "fp32": 31.2e12},
    "L4": {"bf16": 121e12, "fp16": 121e12, "fp32": 30.3e12},
    "RTX 4090": {"bf16": 165e12, "fp16": 165e12, "fp32": 82.6e12},
    "RTX 3090": {"bf16": 71e12, "fp16": 71e12, "fp32": 35.6e12},
    "V100": {"fp16": 125e12, "fp32": 15.7e12},
    "T4": {"fp16": 65e12, "fp32": 8.1e12},
}
DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


def device_peak_flops(device: str | torch.device, dtype: torch.dtype) -> float | None:
    """The data-sheet peak of this CUDA device for dtype, or None (CPU, unknown GPU: measure it instead)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(device)
    for key, peaks in GPU_PEAK_FLOPS.items():
        if key in name:
            return peaks.get(DTYPE_NAMES.get(dtype, "fp32"))
    return None


def measure_peak_flops(device: str | torch.device, dtype: torch.dtype, n: int = 2048, repeats: int = 10,
                       min_seconds: float = 0.5) -> float:
    """Achievable matmul FLOP/s on this device and dtype: the best of many n x n x n products.
    The honest denominator for MFU where no data-sheet peak applies (a CPU). It keeps multiplying for at
    least min_seconds, so a moment of contention (another process, a CPU clocking up) cannot set the peak."""
    device = torch.device(device)
    gen = torch.Generator(device).manual_seed(0)  # its own: measuring never moves the training RNG (dropout)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    best = float("inf")
    a @ b  # warm up caches and kernels
    started, done = time.perf_counter(), 0
    while done < repeats or time.perf_counter() - started < min_seconds:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
        done += 1
    return 2 * n ** 3 / best


class PeakFlops:
    """The peak FLOP/s that MFU divides by, for one device and dtype: the data sheet's on known GPUs, else the
    best matmul burst measured so far.

    On a shared machine any one measurement can fall in a busy moment and read low: on a 2-core VM, neighbours
    once held the bf16 peak at 0.87 TFLOP/s (2.1 when quiet) through train.py's start, and its log then showed
    94% MFU. So runs call sample() now and then, and the best burst wins.
    """

    def __init__(self, device: str | torch.device, dtype: torch.dtype):
        self.device, self.dtype = device, dtype
        self.datasheet = device_peak_flops(device, dtype)
        self.bursts = [] if self.datasheet else [measure_peak_flops(device, dtype)]
        self.last_sample = time.perf_counter()

    def sample(self, min_interval: float = 0.0) -> None:
        """Measure once more (a few short bursts, well under a second), unless the peak is a data sheet's or
        the last measurement is less than min_interval seconds old."""
        if not self.datasheet and time.perf_counter() - self.last_sample >= min_interval:
            self.bursts.append(measure_peak_flops(self.device, self.dtype, repeats=3, min_seconds=0.05))
            self.last_sample = time.perf_counter()

    @property
    def flops(self) -> float:
        return self.datasheet or max(self.bursts)

    def describe(self) -> str:
        if self.datasheet:
            return "data sheet"
        measured = f"measured {DTYPE_NAMES.get(self.dtype, str(self.dtype))} matmul"
        if len(self.bursts) == 1:
            return measured
        # a lowest burst far below the best means something else used the device meanwhile
        return f"{measured}, best of {len(self.bursts)} bursts; lowest {min(self.bursts) / 1e12:.2f}"
