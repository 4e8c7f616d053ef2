"""An exact LM head over only the tokens a dataset uses, for models trained from scratch on small data.

GPT-2's head has a row for each of 50,304 tokens, and for a small model it is most of a training step: the
4 x 256 embedded default has 13M of its 16M weights there, and data/mini uses about 20,400 of those tokens. A token
the data never holds is never an input and never a target, so all its row gets in training is a push down
through the softmax's normaliser, the same push for every such row. Rows that start out equal therefore get
equal gradients every step, AdamW (moments, weight decay) moves them alike, and they stay equal. Then the
softmax over all rows is exactly a softmax over the used rows plus one more logit, h . u + log(n), for the n
equal rows u (n copies of exp(h . u) in the normaliser).

So the head multiplies only the used rows and one representative of the rest, and after backward the
representative's gradient (n times each row's) is shared out among all n, so that clipping, the optimizer and
weight decay see what the full head would give them. The loss, the gradients and the weights are the full
head's (to float rounding: tests/test_shortlist.py); the model stays an ordinary GPT-2 of 50,304 rows that
sample.py, export.py and transformers load as before, its unused tokens all alike. Alike means the model
cannot tell one from another: a name the data never holds cannot be copied from a prompt (data/mini's name
pool is wide for that reason), so a prompt's names are given to such a model in the tokens it knows
(tokenizer.Respeller, after untrained_tokens below finds the equal rows). Measured on the embedded default's
step: docs/capability.md.
"""

import math

import numpy as np
import torch

CHUNK = 1 << 26  # tokens counted at a time: bincount of a memmap a slice at a time keeps memory flat


def used_tokens(splits: list[np.ndarray], vocab_size: int) -> torch.Tensor:
    """Sorted ids of the tokens that occur in any of splits (token arrays, e.g. the train and val memmaps)."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for tokens in splits:
        for start in range(0, len(tokens), CHUNK):
            counts += np.bincount(tokens[start:start + CHUNK], minlength=vocab_size)[:vocab_size]
    return torch.from_numpy(np.flatnonzero(counts))


class HeadShortlist:
    """The head rows for `used` token ids out of vocab_size: the used rows, then one for all the others."""

    def __init__(self, used: torch.Tensor, vocab_size: int):
        is_used = torch.zeros(vocab_size, dtype=torch.bool)
        is_used[used] = True
        self.rest = torch.nonzero(~is_used).flatten()  # the rows kept equal; rest[0] stands in for them all
        if len(self.rest) == 0:
            raise ValueError("every token is used: there is nothing to leave out of the head")
        used = torch.nonzero(is_used).flatten()
        self.rows = torch.cat([used, self.rest[:1]])
        self.log_rest = math.log(len(self.rest))  # added to the last logit: n rows' worth of exp(h . u)
        # a target's column among rows; a target outside `used` would land on the rest's column, whose
        # probability is all n rows' together, so the data the shortlist is built from must cover every target
        self.column = torch.full((vocab_size,), len(used), dtype=torch.long)
        self.column[used] = torch.arange(len(used))

    def to(self, device) -> "HeadShortlist":
        self.rest, self.rows, self.column = (t.to(device) for t in (self.rest, self.rows, self.column))
        return self

    @torch.no_grad()
    def tie(self, weight: torch.Tensor) -> None:
        """Make the rest's rows equal (a fresh model's init): each gets the representative's random draw."""
        weight[self.rest] = weight[self.rest[0]].clone()

    @torch.no_grad()
    def tied(self, weight: torch.Tensor) -> bool:
        """Whether the rest's rows are all equal, which is what makes the short head exact."""
        return bool((weight[self.rest] == weight[self.rest[0]]).all())

    def narrow(self, weight: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The head's rows, and targets (-1 = ignore) as columns of them."""
        columns = torch.where(targets >= 0, self.column[targets.clamp(min=0)], -1)
        return weight[self.rows], columns

    @torch.no_grad()
    def share_grad(self, weight: torch.Tensor) -> None:
        """After backward: give each of the rest's rows its share of the representative's gradient."""
        if weight.grad is not None:
            weight.grad[self.rest] = weight.grad[self.rest[0]] / len(self.rest)

    def describe(self) -> str:
        return (f"LM head over the {len(self.rows) - 1:,} tokens the data uses and one row for the other "
                f"{len(self.rest):,} (kept equal; exact: shortlist.py)")


def untrained_tokens(weight: torch.Tensor) -> set[int]:
    """Ids of the largest group of equal rows in a token embedding, if it has more than one row: the tokens a
    model trained with a shortlisted head never saw (their rows stay equal, HeadShortlist.tie), which it can
    neither tell apart nor write. Empty for a model whose rows all differ (GPT-2's own, a full head)."""
    w = np.ascontiguousarray(weight.detach().float().cpu().numpy())
    # equal rows have equal first columns: only rows whose first value repeats need the exact comparison
    _, first, counts = np.unique(w[:, 0], return_inverse=True, return_counts=True)
    candidates = np.flatnonzero(counts[first] > 1)
    if len(candidates) < 2:
        return set()
    rows = w[candidates].view(np.dtype((np.void, w.shape[1] * w.itemsize))).ravel()
    _, group, sizes = np.unique(rows, return_inverse=True, return_counts=True)
    if sizes.max() < 2:
        return set()
    return set(candidates[group.ravel() == sizes.argmax()].tolist())
