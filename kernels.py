"""CPU speed machinery for training and decoding, kept out of model.py so that GPT-2 reads plainly there.

Each piece computes exactly what the plain PyTorch path in model.py computes, only faster on a CPU; each was
measured against that path on a 2-core AVX-512/AMX machine (docs/performance.md has the figures):
- FusedHeadLoss / fused_head_loss: LM head + cross-entropy for CPU training steps, bf16 or fp32;
- explicit_causal_attention: attention with the scores formed, faster to train in bf16 than CPU flash
  attention at short context;
- gelu_tanh_as_sigmoid: GPT-2's GELU written so that inductor's CPU code runs it fast;
- PackedLinear / Int8Linear: bf16 weights prepacked for oneDNN, or int8 weights, for CPU decoding.
model.py takes the training paths only when train.py asks for them (GPT.forward's cpu_kernels argument).
"""

import math

import torch
import torch.nn as nn
from torch.nn import functional as F

import hardware


class FusedHeadLoss(torch.autograd.Function):
    """LM head + mean cross-entropy for CPU training, with as few passes over the logits as possible.

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
    Measured on a 2-core AVX-512/AMX CPU at the training bench shape: forward + backward of the head about 1.3x
    faster than the chunked fp32 softmax it replaced (medians of 12 interleaved runs). In fp32 (CPUs without
    bf16 instructions) the same passes are saved: on a 2-core AVX2 CPU, the embedded default's whole training
    step 1.11-1.12x faster than the plain head, compiled or not (docs/performance.md).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, last_offset: float = 0.0
                ) -> torch.Tensor:
        # matmuls in autocast's dtype when autocast is on (bf16 on CPUs that have it), else in x's dtype
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        xc, wc = x.to(dtype), weight.to(dtype)
        valid = targets != -1
        safe_targets = targets.clamp(min=0)
        rows = torch.arange(x.size(0), device=x.device)
        grad_logits = xc @ wc.t()
        if last_offset:  # a head shortlist's column for the rows it leaves out (shortlist.py)
            grad_logits[:, -1] += last_offset
        torch.softmax(grad_logits, dim=-1, out=grad_logits)  # row by row, so in place is safe
        p_target = grad_logits[rows, safe_targets].float()
        grad_logits[rows, safe_targets] = 0
        others = grad_logits.sum(dim=-1).float()  # 1 - p_target (bf16 sums accumulate in fp32)
        row_losses = torch.where(p_target > 0.5, -torch.log1p(-others), -p_target.log())
        underflow = ~torch.isfinite(row_losses) & valid
        if underflow.any():  # a target 88+ nats below the best: its loss from logsumexp of recomputed logits
            logits = (xc[underflow] @ wc.t()).float()
            logits[:, -1] += last_offset
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
        return grad_x, grad_w, None, None


def fused_head_loss(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, last_offset: float = 0.0
                    ) -> torch.Tensor:
    """Mean cross-entropy of x @ weight.T (last_offset added to the last column) against targets (-1 =
    ignore), with few passes over the logits.

    Only the rows whose target counts go through the head: the same mean loss and gradients, and with
    train.py's loss_on='response' most prompt rows drop out of the step's largest matmuls. The row count is
    rounded up to an eighth of all rows (topped up with ignored rows, which add nothing): the logits then
    come in at most 8 sizes, which the heap kept by hardware.keep_freed_memory_on_cpu reuses. With a new size
    every step it fragmented instead (a 4x256 run grew to 5.4 GB and was OOM-killed)."""
    if torch.compiler.is_compiling():
        # fused by hand already: a compiled model runs it eager, between its graphs. Marked here, not with a
        # decorator: torch.compiler.disable imports torch._dynamo, 3.3 s of every script's start on a 2-core CPU
        # (sample.py, eval.py, serve.py, uncompiled training), which only a compiled model needs
        return torch.compiler.disable(fused_head_loss)(x, weight, targets, last_offset)
    valid = targets != -1
    n_rows, n_valid = targets.numel(), int(valid.sum())
    if n_valid < n_rows:
        bucket = max(1, n_rows // 8)
        keep = torch.argsort((~valid).to(torch.int8), stable=True)[:min(n_rows, -(-n_valid // bucket) * bucket)]
        x, targets = x[keep], targets[keep]
    return FusedHeadLoss.apply(x, weight, targets, last_offset)


def cpu_kernels_pay_off(device: str) -> bool:
    """Whether training on device should take these kernels: CPU training, in bf16 or fp32 (the fused head in
    both, explicit attention where explicit_attention_pays_off says). GPUs take the plain paths, where flash
    attention and the compiled head are the fast ones, as does the training bench's plain-PyTorch baseline."""
    return torch.device(device).type == "cpu"


# Longest context at which CPU mixed-precision training forms the attention scores explicitly. Measured in
# bf16 on a 2-core AVX-512/AMX CPU, forward + backward of one layer: batch 8 x 6 heads x 256 tokens, flash
# 22 ms vs explicit 12 ms; batch 2 x 6 heads x 1024 tokens, flash 39 ms vs explicit 48 ms.
EXPLICIT_ATTENTION_MAX_T = 512


def explicit_attention_pays_off(T: int, dtype: torch.dtype) -> bool:
    """Whether a CPU training step's attention over T positions in dtype should form its scores explicitly:
    in bf16 at short context. In fp32 CPU flash attention is the faster one (2-core AVX2 CPU, batch 12 x 4
    heads x 256 tokens, forward + backward: flash 36 ms, explicit 41 ms)."""
    return T <= EXPLICIT_ATTENTION_MAX_T and dtype != torch.float32


def explicit_causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float) -> torch.Tensor:
    """Causal attention with the (T x T) scores formed, as nanoGPT's fallback does: for CPU training at short
    context, where the backward of PyTorch's CPU flash attention is slower (EXPLICIT_ATTENTION_MAX_T)."""
    B, H, T, D = q.size()
    causal = torch.full((T, T), float("-inf"), dtype=q.dtype, device=q.device).triu(1)
    scores = torch.baddbmm(causal.expand(B * H, T, T), q.reshape(B * H, T, D), k.reshape(B * H, T, D).transpose(1, 2),
                           alpha=1 / math.sqrt(D))
    probs = F.dropout(scores.softmax(dim=-1), dropout)
    return (probs @ v.reshape(B * H, T, D)).view(B, H, T, D)


def gelu_tanh_as_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """0.5 x (1 + tanh(u)) with u = sqrt(2/pi) (x + 0.044715 x^3), computed as x * sigmoid(2u)."""
    two_c = 2 * math.sqrt(2 / math.pi)
    two_u = x * (two_c + two_c * 0.044715 * x * x)
    return x * torch.sigmoid(two_u)


class PackedLinear(nn.Module):
    """A frozen bf16 nn.Linear whose weight oneDNN has reordered once into its blocked layout.

    Decoding one token is a matrix-vector product per weight matrix, so its speed is how fast the weights
    stream from memory. Plain bf16 F.linear on a CPU re-lays the weight out (or takes a slow path) on
    every call and reaches about half the memory bandwidth; the prepacked product reaches about all of
    it (and uses AMX for long prompts). The same op is what torch.compile's freezing pass emits on CPU.
    The original parameter stays (the embedding shares lm_head's), so names and tying are unchanged.
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias
        self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), 1),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


class Int8Linear(nn.Module):
    """A frozen nn.Linear run by oneDNN's int8 kernels (fastest with AVX512-VNNI / AMX): decoding's opt-in
    dtype='int8'.

    Weights are int8 with one scale per output row, quantized once; each call quantizes every input row
    (token) to int8 with its own scale, so a row's result never depends on the rows beside it (batch
    mates, the rest of a prompt). Half of bf16's bytes per token, and on a CPU decoding speed is memory
    bandwidth; the price is precision, which bench/decoding.py measures as per-token log-prob drift against
    fp32 beside bf16's. The fp32 weight is not kept (see load_for_inference).
    On x86 CPUs without VNNI or AMX the kernel adds pairs of byte products in saturating int16
    (hardware.cpu_int8_dot_is_exact): there the weights take 7 bits, +-63, so that no pair sum (at most
    2 x 255 x 63 = 32,130) clips, as PyTorch's fbgemm does (reduce_range). With 8 bits a 256 x 1024 layer was
    0.52 off exact integer arithmetic on a 2-core AVX2 EPYC, with 7 bits exact (and 0.024 off fp32).
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.bias = linear.bias
        weight = linear.weight.detach().float()
        levels = 127 if hardware.cpu_int8_dot_is_exact() else 63
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / levels
        quantized = torch.round(weight / scale.unsqueeze(1)).to(torch.int8)
        self.register_buffer("packed", torch.ops.onednn.qlinear_prepack(quantized, None), persistent=False)
        self.register_buffer("weight_scale", scale, persistent=False)
        self.register_buffer("weight_zero", torch.zeros(weight.size(0), dtype=torch.long), persistent=False)
        # the kernel's own input scale and zero point stay 1 and 0: the per-row scales are applied after it
        self.register_buffer("unit", torch.ones(()), persistent=False)
        self.register_buffer("zero", torch.zeros((), dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.size(-1))
        scale = rows.abs().amax(dim=1, keepdim=True).clamp_(min=1e-12).div_(127)
        quantized = (rows / scale).round_().to(torch.int8)
        out = torch.ops.onednn.qlinear_pointwise.tensor(quantized, self.unit, self.zero, self.packed,
                                                        self.weight_scale, self.weight_zero, None, 1.0, 0,
                                                        torch.float32, "none", [], "")
        out = out * scale if self.bias is None else torch.addcmul(self.bias, out, scale)
        return out.view(*x.shape[:-1], out.size(-1))
