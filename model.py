"""GPT-2 itself, top to bottom: the model, loading OpenAI's weights, and fast generation with a KV cache.

The parameter layout is OpenAI's GPT-2, name for name, so weights from `transformers` map one to one.
Compared with nanoGPT this adds: generation that prefills the prompt once and then feeds one token per step
through a key/value cache; longer context by interpolating the learned position embeddings; activation
checkpointing; and MFU measured against the peak of the device actually in use.

The machinery it calls lives in files of its own, so that this one reads as the model and nothing else: the
KV cache (kv_cache.py, mostly per-row bookkeeping for batched serving), the token sampler (sampling.py),
transformers' weight layout (hf_gpt2.py) and the CPU fast paths (kernels.py).
"""

import math
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn as nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

import hardware
import hf_gpt2
from errors import UserError
from kernels import explicit_attention_pays_off, explicit_causal_attention, fused_head_loss, gelu_tanh_as_sigmoid
from kv_cache import KVCache
from sampling import TokenSampler

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


class CausalSelfAttention(nn.Module):

    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, layer: int = 0, kv_cache: KVCache | None = None,
                explicit: bool = False) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        mask, is_causal = None, True
        if kv_cache is not None:
            k, v, mask, is_causal = kv_cache.append(layer, k, v)
        if explicit and kv_cache is None and explicit_attention_pays_off(T, q.dtype):  # CPU training (kernels.py)
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

    def forward(self, x: torch.Tensor, layer: int = 0, kv_cache: KVCache | None = None,
                explicit_attention: bool = False) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), layer, kv_cache, explicit_attention)
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
        self.head_shortlist = None  # training only: a shortlist.HeadShortlist the loss computes the head over
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

    @torch.no_grad()
    def init_offset_heads(self, offsets: list[int], n_freq: int = 32, amplitude: float = 0.1) -> None:
        """Start layer 0's first heads attending `offsets` tokens back (1: the previous token), for a model
        trained from scratch. `3+4=` needs the operands 1 and 3 tokens back and copying from the prompt needs a
        previous-token head; a fresh model with learned positions finds these only after a long loss plateau
        (docs/capability.md: 10 % vs 100 % of the single-digit sums after 250 steps). Plain GPT-2 weights, so
        export and loading are unchanged: position p gets sinusoids at n_freq random frequencies in (0, pi)
        in the last 2*n_freq dims of wpe, head h's keys read them as they are and its queries rotated back by
        offsets[h], so q_i . k_j = sum over frequencies of cos(w (i - offsets[h] - j)): a sharp peak at
        j = i - offsets[h] and no other (random frequencies do not alias). Values stay random; training
        takes it from there."""
        C, hd = self.config.n_embd, self.config.n_embd // self.config.n_head
        n_freq = self._position_freqs(n_freq)
        if len(offsets) > self.config.n_head or any(not 0 < d < self.config.block_size for d in offsets):
            raise UserError(f"offset_heads {offsets}: at most {self.config.n_head} offsets (layer 0's heads), "
                            f"each between 1 and {self.config.block_size - 1}")
        w = torch.rand(n_freq, generator=torch.Generator().manual_seed(0)) * math.pi
        pos = torch.arange(self.config.block_size, dtype=torch.float)[:, None]
        wpe, first = self.transformer.wpe.weight, C - 2 * n_freq
        wpe[:, first:] = 0
        wpe[:, first::2], wpe[:, first + 1::2] = amplitude * torch.sin(pos * w), amplitude * torch.cos(pos * w)
        attn = self.transformer.h[0].attn.c_attn  # rows: queries | keys | values
        for h, d in enumerate(offsets):
            q, k = slice(h * hd, (h + 1) * hd), slice(C + h * hd, C + (h + 1) * hd)
            for rows in (q, k):
                attn.weight[rows] = 0
                if attn.bias is not None:
                    attn.bias[rows] = 0
            for f in range(n_freq):  # (sin, cos) of w*j as keys; the same rotated by -w*d as queries
                s, c = math.sin(w[f] * d), math.cos(w[f] * d)
                ks, kc, qs, qc, i_s, i_c = (C + h * hd + 2 * f, C + h * hd + 2 * f + 1, h * hd + 2 * f,
                                            h * hd + 2 * f + 1, first + 2 * f, first + 2 * f + 1)
                attn.weight[ks, i_s] = attn.weight[kc, i_c] = 1.0
                attn.weight[qs, i_s], attn.weight[qs, i_c] = c, -s
                attn.weight[qc, i_c], attn.weight[qc, i_s] = c, s

    def _position_freqs(self, n_freq: int = 32) -> int:
        """How many sinusoid frequencies init_offset_heads puts in the last 2 * n_freq dims of wpe."""
        return min(n_freq, self.config.n_embd // self.config.n_head // 2, self.config.n_embd // 4)

    def _token_dims(self) -> int:
        """init_induction_head's layout: token content in dims [0, this), then a head's width of slot for the
        previous token, then the position sinusoids."""
        return self.config.n_embd - 2 * self._position_freqs() - self.config.n_embd // self.config.n_head

    @torch.no_grad()
    def init_induction_head(self, prev_head: int, layer: int = 1, head: int = 0, token_std: float = 0.1,
                            match: float = 2.0, copy: float = 4.0) -> None:
        """Start `head` of `layer` as an induction head: at a token seen before, it attends to the token that
        followed the earlier occurrence and predicts it. Copying from the prompt (a year from the excerpt, a
        name from the premises, an operand from the question) builds on this circuit, and a fresh model does
        not form it within the embedded default's budget: 0 % on repeated random tokens after 1,200 steps
        (docs/capability.md). Call after init_offset_heads; prev_head is its head looking 1 back.
        The residual is split so that the parts do not blur one another under LayerNorm: token content in the
        first dims (wte, std token_std, five times GPT-2's so that it stands out from the blocks' outputs),
        a slot for the previous token's content after it, position sinusoids in the last 2 * n_freq dims
        (the rest of wpe zero). prev_head's values read the token through an orthonormal map P and write it
        into the slot; the induction head's queries read the token through P, its keys the slot (both scaled
        by `match`), its values the token through P, and its output writes `copy` * P^T back into the token
        dims, which the tied LM head reads as that token. Plain GPT-2 weights, free to train."""
        C, nh = self.config.n_embd, self.config.n_head
        hd = C // nh
        n_tok = self._token_dims()  # token dims [0, n_tok), slot [n_tok, positions)
        positions = n_tok + hd
        if not 0 < layer < self.config.n_layer or not 0 <= head < nh or not 0 <= prev_head < nh or n_tok < hd:
            raise UserError(f"induction_head needs at least 2 layers and n_embd of at least 2 heads' width plus "
                            f"the offset heads' {C - positions} position dims (n_layer={self.config.n_layer}, "
                            f"n_head={nh}, n_embd={C})")
        P = torch.linalg.qr(torch.randn(n_tok, hd, generator=torch.Generator().manual_seed(0)))[0].T  # (hd, n_tok)
        wte, wpe = self.transformer.wte.weight, self.transformer.wpe.weight
        wte[:, n_tok:] = 0
        wte[:, :n_tok].normal_(0.0, token_std)
        wpe[:, :positions] = 0
        wpe[:, positions:] *= 2  # the offset heads' sinusoids, as sharp beside the larger token embeddings
        slot = torch.zeros(C, hd)
        slot[n_tok:positions] = torch.eye(hd)
        tok = torch.zeros(hd, C)
        tok[:, :n_tok] = P

        def set_head(attn, h: int, q=None, k=None, v=None, out=None) -> None:
            for part, w in enumerate((q, k, v)):
                if w is not None:
                    rows = slice(part * C + h * hd, part * C + (h + 1) * hd)
                    attn.c_attn.weight[rows] = w
                    if attn.c_attn.bias is not None:
                        attn.c_attn.bias[rows] = 0
            attn.c_proj.weight[:, h * hd:(h + 1) * hd] = out

        set_head(self.transformer.h[0].attn, prev_head, v=tok, out=slot)
        set_head(self.transformer.h[layer].attn, head, q=match * tok, k=match * slot.T, v=tok, out=copy * tok.T)

    @torch.no_grad()
    def init_number_embeddings(self, numbers: dict[int, str], feature_std: float = 0.06, own_std: float = 0.03,
                               seed: int = 1, periods: tuple[int, ...] = (2, 5, 10), tens_scale: float = 2.0) -> None:
        """Start the number tokens' embeddings as sums of their digits' (`numbers`: token id -> its text, up to
        three digits with or without a leading space, as tokenizer.number_tokens gives them). GPT-2's BPE makes
        ` 47` one token with nothing in common with ` 46` or ` 17`: every two-digit sum is a fact of its own,
        and a sum training never showed cannot be worked out (0-6 % on held-out pairs; 24-50 % with this and
        the embedded default's two-digit drills, 58-68 % with Math at 39 % of the tokens, docs/capability.md).
        Here ` 47` starts as ones[7] + tens[4] + hundreds[blank] + space, random vectors shared by all numbers,
        plus a little of its own: the tied LM head then scores an answer's digits separately, so `12 + 35 =`
        can be answered digit by digit, the single-digit table being the ones digit's.
        Plus the value's Fourier features: cos and sin of 2 pi n / T for each of `periods`, each along random
        vectors of its own. Pretrained LMs hold numbers so to add them (Zhou et al., 2024): adding b turns every
        number's features by the same angles, so one way of working out the ones digit serves every sum.
        Held-out two-digit sums 31-37 % -> 61-68 % of 150 (docs/capability.md, E104, E105). Periods 100 and
        1000 (the size) gave sums 65-81 % but made numbers near each other so alike that excerpt years, one
        token each, lost to ` 13` or ` 15`, which start a year of two tokens (E100-E102).
        Then every miss had the ones digit right and the tens one off (` 69` for 79): the tens digit has only
        its digit vector. `tens_scale` makes it longer, so numbers ten apart are as distinct as numbers one
        apart: sums 52-68 % (three runs) -> 66-78 % of 150 (four runs, E118-E121). In the token dims of
        init_induction_head's layout; plain GPT-2 weights, free to train."""
        n_tok = self._token_dims()
        if n_tok < 16:
            raise UserError(f"number_embeddings needs at least 16 token dims beside the position and slot dims; "
                            f"n_embd={self.config.n_embd} with n_head={self.config.n_head} leaves {max(n_tok, 0)}: "
                            "raise n_embd, or set --number_embeddings=False")
        g = torch.Generator().manual_seed(seed)
        places = torch.randn(3, 11, n_tok, generator=g) * feature_std  # ones, tens, hundreds x digit 0-9 or blank
        space = torch.randn(2, n_tok, generator=g) * feature_std
        places[1] *= tens_scale  # the ones digit has the Fourier features too; the tens digit only this (see above)
        # cos and sin directions per period, from a generator of their own: periods=() leaves the digits' init as it was
        fourier = torch.randn(len(periods), 2, n_tok, generator=torch.Generator().manual_seed(seed + 1)) * feature_std
        wte = self.transformer.wte.weight
        for tok, text in numbers.items():
            digits = text.lstrip(" ")
            if not (digits.isdigit() and len(digits) <= 3 and text in (digits, " " + digits)):
                raise ValueError(f"init_number_embeddings: token {tok} is {text!r}, not a number of 1-3 digits")
            padded = [int(d) for d in reversed(digits)] + [10] * (3 - len(digits))
            v = space[len(text) - len(digits)] + sum(places[p, d] for p, d in enumerate(padded))
            angles = torch.tensor([2 * math.pi * int(digits) / t for t in periods])
            v = v + angles.cos() @ fourier[:, 0] + angles.sin() @ fourier[:, 1]
            wte[tok, :n_tok] = v + torch.randn(n_tok, generator=g) * own_std

    def get_num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; position embeddings are left out by default (token embeddings count, as
        they are the LM head's weights too)."""
        n_params = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n_params -= self.transformer.wpe.weight.numel()
        return n_params

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, kv_cache: KVCache | None = None,
                all_logits: bool = False, reduction: str = "mean", cpu_kernels: bool = False,
                valid: torch.Tensor | None = None):
        """(logits, None) without targets; (None, loss) with targets (-1 = ignore): training and eval need only
        the loss, and not returning the (tokens x vocab) logits lets their memory go before backward.

        cpu_kernels=True (train.py passes it for training on a CPU) takes kernels.py's fast paths: the LM head
        fused with the mean loss, and attention with explicit scores in bf16 at short context.

        Without targets only the last position's logits are computed (all of them with all_logits=True),
        which is all that generation needs. With a kv_cache, idx continues the cached sequence: row b's tokens
        go at positions kv_cache.lengths[b] onwards. valid (B,) (with a kv_cache only) says how many of each
        row's T tokens are real, the rest being right padding: lengths advance by valid, and the logits
        returned without all_logits are each row's at its last real token (valid - 1).
        reduction='none' returns the per-token loss, shaped like targets.
        """
        B, T = idx.size()
        if kv_cache is None:
            if T > self.config.block_size:
                raise ValueError(f"cannot forward {T} positions, block size is only {self.config.block_size}")
            pos = torch.arange(T, dtype=torch.long, device=idx.device)
        else:
            if kv_cache.max_len > self.config.block_size:
                raise ValueError(f"a cache of {kv_cache.max_len} positions, block size is only "
                                 f"{self.config.block_size}")
            pos = kv_cache.begin(T, valid)  # (T,), or (B, T) when rows differ in length
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for layer, block in enumerate(self.transformer.h):
            if self.gradient_checkpointing and self.training and kv_cache is None:
                x = checkpoint(block, x, layer, None, cpu_kernels, use_reentrant=False)
            else:
                x = block(x, layer, kv_cache, cpu_kernels)
        if kv_cache is not None:
            kv_cache.end(T)
        x = self.transformer.ln_f(x)
        shortlist = self.head_shortlist if targets is not None else None
        if shortlist is not None:  # the head's rows the data uses and one for all the rest (shortlist.py)
            head, targets = shortlist.narrow(self.lm_head.weight, targets)
        if targets is not None and reduction == "mean" and cpu_kernels:
            # the head and loss fused (kernels.FusedHeadLoss), whose logits turn into their gradient in place.
            # Elsewhere the plain path below, which torch.compile fuses where train.py compiles.
            return None, fused_head_loss(x.view(-1, x.size(-1)), self.lm_head.weight if shortlist is None else head,
                                         targets.reshape(-1), shortlist.log_rest if shortlist else 0.0)
        if targets is not None:
            if shortlist is None:
                logits = self.lm_head(x)
            else:
                logits = F.linear(x, head)
                logits[..., -1] += shortlist.log_rest
            # In the logits' own dtype, outside autocast (which would make full fp32 copies of the tokens x
            # vocab logits and their log-softmax): the softmax still sums in fp32 inside the kernel, and the
            # per-token losses are averaged in fp32, so bf16/fp16 round each token's loss, not the mean.
            with torch.autocast(logits.device.type, enabled=False):
                loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1,
                                       reduction="none").float()
            if reduction == "none":
                return None, loss.view(targets.shape)
            valid = (targets != -1).sum()
            return None, loss.sum() / valid if reduction == "mean" else loss.sum()
        if not all_logits:
            # each row's last real token: with right-padded rows (valid) that is not the last column
            if valid is None:
                x = x[:, [-1], :]
            else:
                x = x[torch.arange(B, device=x.device), (valid - 1).clamp(min=0)].unsqueeze(1)
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
        hf_model = hf_gpt2.load_transformers_gpt2(name_or_dir)
        hf = hf_model.config
        if getattr(hf, "activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
            raise UserError(f"{name_or_dir} uses activation {hf.activation_function}; only GPT-2's gelu_new is supported")
        config = GPTConfig(block_size=hf.n_positions, vocab_size=hf.vocab_size, n_layer=hf.n_layer,
                           n_head=hf.n_head, n_embd=hf.n_embd, bias=True,
                           dropout=override_args.get("dropout", 0.0))
        model = GPT(config)
        model.load_state_dict(hf_gpt2.state_dict_from_transformers(hf_model.state_dict()))
        return model

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

    def flops_per_token(self, head_fraction: float = 1.0) -> float:
        """Training FLOPs (forward + backward) per token, as in the PaLM paper's appendix B. head_fraction:
        the share of positions the LM head runs on (the CPU path skips those loss_on='response' ignores)."""
        cfg = self.config
        head_dim = cfg.n_embd // cfg.n_head
        skipped_head = cfg.vocab_size * cfg.n_embd * (1.0 - head_fraction)
        return 6 * (self.get_num_params() - skipped_head) + 12 * cfg.n_layer * cfg.n_head * head_dim * cfg.block_size

    def estimate_mfu(self, fwdbwd_per_iter: int, dt: float, device: str | torch.device = "cuda",
                     dtype: torch.dtype = torch.bfloat16, peak_flops: float | None = None,
                     head_fraction: float = 1.0) -> float | None:
        """Model FLOPs utilization: achieved FLOP/s over the peak of the device in use for this dtype.
        peak_flops overrides the lookup; returns None when the peak is unknown."""
        peak = peak_flops or hardware.device_peak_flops(device, dtype)
        if not peak:
            return None
        flops_per_iter = self.flops_per_token(head_fraction) * self.config.block_size * fwdbwd_per_iter
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
                keep = block_size if cache is None else max(1, block_size * 3 // 4)  # a 1-position model keeps 1
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
