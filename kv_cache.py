"""The key/value cache that generation decodes through: every layer's keys and values for the tokens seen so far.

Kept out of model.py, which only calls begin/append/end on it, because most of it serves batched decoding
(engine.generate_batch, scheduler.py's continuous batching): a length per row, right-padded prefills,
rows emptied and refilled while the others keep decoding. Single-prompt generation takes the first, plain
branch of each method.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # model.py imports this module, so the config is named for the type checker only
    from model import GPTConfig


class KVCache:
    """Keys and values of every layer for the tokens seen so far, preallocated to `max_len` positions per row.

    Each row b has its own filled length, `lengths[b]`: the next tokens fed for that row go to positions
    lengths[b], lengths[b] + 1, ... (their position embeddings too), and each attends to the row's keys up
    to itself. So rows of different lengths share one batch: prompts right-padded into one prefill (GPT.forward's
    `valid` says how many of each row's tokens are real), and rows reset and refilled on their own while the
    others keep decoding (continuous batching: `reset_row`, then `copy_row_from` a batch-1 cache that prefilled
    the new prompt, or a prefill in place with valid=0 for the rows that wait). Padding tokens' keys go to one
    spare slot past max_len that no query attends to, so padding never overwrites a row's real keys.

    While every row is equally long and no padding is fed (single-prompt generation, sample.py and chat.py),
    `same_length` holds that length as a Python int, and each forward writes and reads plain slices as before
    per-row lengths existed: no masks, no scatter, no device sync.
    """

    def __init__(self, config: GPTConfig, batch_size: int, max_len: int, device, dtype):
        shape = (config.n_layer, batch_size, config.n_head, max_len + 1, config.n_embd // config.n_head)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self._lengths = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.same_length: int | None = 0  # the common length while all rows have one, else None
        self._step = None  # where this forward's tokens go: set by begin(), read by append() in every layer
        self._valid = None

    @property
    def lengths(self) -> torch.Tensor:
        """Filled positions per row, (B,). Change rows through reset_row and copy_row_from: while all rows are
        equally long the tensor is only brought up to date when read, so single-prompt decoding pays nothing."""
        if self.same_length is not None:
            self._lengths.fill_(self.same_length)
        return self._lengths

    @property
    def pos(self) -> int:
        """Positions filled in the longest row (all rows, in single-prompt generation)."""
        return self.same_length if self.same_length is not None else int(self.lengths.max())

    def begin(self, T: int, valid: torch.Tensor | None) -> torch.Tensor:
        """Plan a forward of T new tokens per row (valid[b] of them real): return their positions, (T,) while
        rows are equally long, else (B, T) with padding positions clamped to the last one."""
        if valid is None and self.same_length is not None:
            start = self.same_length
            if start + T > self.max_len:
                raise ValueError(f"cannot cache {start + T} positions, the cache holds {self.max_len}")
            self._step = (start, T)
            return torch.arange(start, start + T, dtype=torch.long, device=self._lengths.device)
        steps = torch.arange(T, device=self.lengths.device)
        if valid is None:
            valid = torch.full_like(self.lengths, T)
        positions = self.lengths.unsqueeze(1) + steps  # (B, T)
        needed = int((self.lengths + valid).max())
        if needed > self.max_len:
            raise ValueError(f"cannot cache {needed} positions, the cache holds {self.max_len}")
        slots = torch.where(steps < valid.unsqueeze(1), positions, self.max_len)  # padding -> the spare slot
        keys = min(self.max_len, int(self.lengths.max()) + T)  # the columns any real query can reach
        mask = torch.arange(keys, device=steps.device) <= positions.unsqueeze(2)  # (B, T, keys): up to itself
        self._step = (slots, keys, mask.unsqueeze(1))
        self._valid = valid
        return positions.clamp(max=self.max_len - 1)

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store this layer's new keys/values; return (all keys, all values, attention mask or None,
        whether the plain causal mask applies)."""
        if len(self._step) == 2:
            start, T = self._step
            end = start + T
            self.k[layer, :, :, start:end] = k
            self.v[layer, :, :, start:end] = v
            # New queries see every cached position plus the new ones up to themselves. A single new token
            # sees everything, so it needs no mask at all (the common decode step).
            mask = None
            if start > 0 and T > 1:
                mask = torch.ones(T, end, dtype=torch.bool, device=k.device).tril(diagonal=start)
            return self.k[layer, :, :, :end], self.v[layer, :, :, :end], mask, start == 0
        slots, keys, mask = self._step
        rows = torch.arange(k.size(0), device=k.device).unsqueeze(1)
        self.k[layer, rows, :, slots] = k.transpose(1, 2)  # (B, T, H, D) at [row, :, slot]
        self.v[layer, rows, :, slots] = v.transpose(1, 2)
        return self.k[layer, :, :, :keys], self.v[layer, :, :, :keys], mask, False

    def end(self, T: int) -> None:
        """Advance the lengths past this forward's real tokens."""
        if len(self._step) == 2:
            self.same_length += T
        else:
            self._lengths += self._valid
            self.same_length = None
        self._step = None

    def reset_row(self, row: int) -> None:
        """Empty one row (its old keys are simply overwritten as it refills)."""
        self.lengths[row] = 0  # (reading .lengths first brings it up to date)
        self.same_length = 0 if self._lengths.numel() == 1 else None

    def copy_row_from(self, other: "KVCache", row: int, other_row: int = 0) -> None:
        """Put other's row other_row (e.g. a new prompt prefilled alone in a batch-1 cache) into this row."""
        n = int(other.lengths[other_row])
        if n > self.max_len:
            raise ValueError(f"cannot copy {n} positions into a cache of {self.max_len}")
        self.k[:, row, :, :n] = other.k[:, other_row, :, :n]
        self.v[:, row, :, :n] = other.v[:, other_row, :, :n]
        self.lengths[row] = n
        self.same_length = n if self._lengths.numel() == 1 else None

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Keep only these rows, in this order (e.g. drop finished ones so that decoding stops paying for them)."""
        self.k, self.v, self._lengths = self.k[:, rows], self.v[:, rows], self.lengths[rows]
