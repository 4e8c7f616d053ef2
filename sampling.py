"""Turning a step's logits into the next token: repetition penalty, temperature, top-k, top-p.

Its own module because three callers share it: GPT.generate_stream (model.py), batched decoding
(engine.py) and each request of the server (scheduler.py, serve.py). engine.py imports model.py, so the
sampler could not live in engine.py without model.py importing it back.
"""

import torch

from errors import UserError


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
