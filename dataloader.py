"""Batches from a prepared dataset (data/prepare.py): random training windows and fixed evaluation windows.

The token bins are memory-mapped, so a dataset of any size costs no RAM. Training draws windows of
block_size + 1 tokens at random offsets. The offsets of a whole iteration (every micro-step of every rank)
come from one generator seeded identically on all ranks; each rank takes its own rows. A run's data thus
depends on the global batch only, not on how it is split over processes, and the generator's state (saved in
the checkpoint) is all it takes to resume the exact same stream.

With loss_on='response' (train.py) the training targets of prompt tokens are -1 (ignored), so the loss
falls on responses only, for documents that record a prompt/response split (data/index.py); the others keep
every token. A response is trained only in windows that also hold its document's start: cut from its
prompt, a response could only be recalled, not read.

Evaluation uses fixed windows, drawn once from their own seed, so every eval sees the same tokens (losses are
comparable across evals and eval never disturbs the training stream). Per-tag validation loss comes from
windows that start at documents of each tag, as a prompt at sampling time would; every target token is
credited to the tag of the document it belongs to (data/index.py's tag_ids_at).
"""

import os

import numpy as np
import torch

from data.index import bin_path, is_complete, load_doc_index, load_meta, load_response_offsets, response_path, tag_ids_at
from errors import UserError

DATA_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
EVAL_SEED = 1234  # fixed: the eval windows must not depend on the training seed or on resuming


def dataset_dir(dataset: str) -> str:
    """'mini' -> <repo>/data/mini; a path (absolute, or containing a separator) is used as it is."""
    return dataset if os.path.isabs(dataset) or os.sep in dataset else os.path.join(DATA_ROOT, dataset)


def open_dataset(dataset: str, build_missing: bool = True) -> str:
    """The directory of a complete dataset. data/mini is built on first use (the offline default mixture);
    anything else missing is an error that names the command that builds it."""
    path = dataset_dir(dataset)
    if is_complete(path):
        if dataset == "mini" and build_missing and not os.path.isfile(response_path(path, "train")):
            # the default mixture from before prompt/response splits (and its current generators): remade in seconds
            from data.prepare import prepare_dataset
            print("data/mini predates prompt/response offsets: rebuilding it (python data/prepare.py --force)")
            return prepare_dataset("mini", force=True, progress=False)
        return path
    if dataset == "mini" and build_missing:
        from data.prepare import prepare_dataset
        print(f"data/mini is missing: building it now (python data/prepare.py), about 10 s")
        return prepare_dataset("mini", progress=False)
    command = {"phi": "python data/prepare.py --mixture=phi", "mini": "python data/prepare.py",
               "custom": "python data/prepare.py --input='my/*.jsonl'"}.get(
        dataset, f"python data/prepare.py --out_dir={path} ...")
    raise UserError(f"dataset '{dataset}' not found at {path} (no meta.json): build it with `{command}`")


def to_device(x: np.ndarray, device: str) -> torch.Tensor:
    """int64 tensor on device; on CUDA through pinned memory so the copy overlaps with compute."""
    t = torch.from_numpy(x.astype(np.int64))
    if torch.device(device).type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def windows(tokens: np.ndarray, offsets: np.ndarray, block_size: int) -> np.ndarray:
    """(len(offsets), block_size + 1) array: inputs are [:, :-1], targets [:, 1:]."""
    return tokens[np.asarray(offsets)[:, None] + np.arange(block_size + 1)]


class TaggedData:
    """One prepared dataset: its memory-mapped splits, document indexes and tag names."""

    def __init__(self, path: str, block_size: int):
        self.path = path
        self.meta = load_meta(path)
        self.tags: list[str] = list(self.meta["tags"])
        self.vocab_size: int = int(self.meta["vocab_size"])
        self.tokens = {split: np.memmap(bin_path(path, split), dtype=np.uint16, mode="r") for split in ("train", "val")}
        self.index = {split: load_doc_index(path, split) for split in ("train", "val")}
        for split, tokens in self.tokens.items():
            if len(tokens) <= block_size + 1:
                raise UserError(f"block_size={block_size} is too long for {path}: its {split} split has only "
                                f"{len(tokens):,} tokens; use a smaller --block_size or more data")


class TrainSampler:
    """Random training windows, drawn a whole iteration at a time (see the module docstring).

    With a Curriculum, the first `curriculum.iters` iterations draw every window from the curriculum's
    documents (their tokens, uniformly), and the remaining iterations draw from them less often than their
    share, so that over max_iters each document is as likely to be seen as without a curriculum: the order
    changes, the mixture does not."""

    def __init__(self, n_tokens: int, block_size: int, batch_size: int, micro_steps: int, seed: int,
                 curriculum: "Curriculum | None" = None):
        self.n_tokens, self.block_size = n_tokens, block_size
        self.batch_size, self.micro_steps = batch_size, micro_steps
        self.generator = torch.Generator().manual_seed(seed)
        self.curriculum = curriculum
        self.iterations = 0  # iterations drawn so far, for the fraction of an epoch seen

    def next_iteration(self) -> np.ndarray:
        """Offsets for every micro-step of the next iteration, all ranks: shape (micro_steps, batch_size)."""
        # a window is block_size + 1 tokens, so the last offset that fits is n_tokens - block_size - 1; randint's
        # bound is exclusive, so that offset + 1 (one less would never train on the split's last token)
        high = self.n_tokens - self.block_size
        shape = (self.micro_steps, self.batch_size)
        if self.curriculum is None:
            offsets = torch.randint(high, shape, generator=self.generator).numpy()
        else:
            c = self.curriculum
            inside = torch.rand(shape, generator=self.generator) < c.focus_probability(self.iterations)
            u = torch.rand(shape, generator=self.generator).numpy()
            offsets = np.where(inside.numpy(), c.focus.draw(u), c.rest.draw(u)).clip(0, high - 1)
        self.iterations += 1
        return offsets

    def epochs(self) -> float:
        return self.iterations * self.micro_steps * self.batch_size * self.block_size / self.n_tokens

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "iterations": self.iterations}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.iterations = int(state["iterations"])


class TokenRanges:
    """Some documents of a split as token ranges; draw() maps uniform numbers to token positions in them."""

    def __init__(self, starts: np.ndarray, ends: np.ndarray):
        self.starts = np.asarray(starts, dtype=np.int64)
        self.cum = np.cumsum(np.asarray(ends, dtype=np.int64) - self.starts)
        self.tokens = int(self.cum[-1]) if len(self.cum) else 0

    def draw(self, u: np.ndarray) -> np.ndarray:
        k = np.minimum((u * self.tokens).astype(np.int64), max(self.tokens - 1, 0))
        doc = np.searchsorted(self.cum, k, side="right")
        return self.starts[np.minimum(doc, len(self.starts) - 1)] + k - np.where(doc > 0, self.cum[doc - 1], 0)


class Curriculum:
    """The documents of some tags first: `iters` iterations on them alone, then the rest of the run on the
    others at a raised rate, so that each tag keeps its share of the windows over `max_iters`."""

    def __init__(self, data: TaggedData, tags: list[str], iters: int, max_iters: int):
        index = data.index["train"]
        starts = np.asarray(index["start"], dtype=np.int64)
        ends = np.append(starts[1:], len(data.tokens["train"]))
        chosen = np.isin(np.asarray(index["tag_id"]), [data.tags.index(t) for t in tags if t in data.tags])
        if not chosen.any() or chosen.all():
            raise UserError(f"curriculum_tags={','.join(tags)}: the dataset has {'none' if not chosen.any() else 'only'}"
                            f" of them; give tags some but not all of its documents have ({', '.join(data.tags)})")
        self.focus, self.rest = TokenRanges(starts[chosen], ends[chosen]), TokenRanges(starts[~chosen], ends[~chosen])
        self.share = self.focus.tokens / (self.focus.tokens + self.rest.tokens)
        # the focus phase may not take more than the focus tags' whole share of the run
        self.iters = min(iters, int(self.share * max_iters))
        self.later = (self.share * max_iters - self.iters) / max(max_iters - self.iters, 1)

    def focus_probability(self, iteration: int) -> float:
        return 1.0 if iteration < self.iters else self.later


LOSS_ON = ("all", "response")


class ResponseTargets:
    """Turns training windows into (x, y) with y = -1 on the targets that loss_on='response' leaves out."""

    def __init__(self, data: TaggedData, split: str = "train"):
        index = data.index[split]
        self.starts = np.asarray(index["start"])
        offsets = np.asarray(load_response_offsets(data.path, split), dtype=np.int64)
        self.has_split = offsets > 0
        self.response_at = self.starts + offsets  # absolute position of each document's first trained token

    def __call__(self, w: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        positions = np.asarray(offsets)[:, None] + np.arange(1, w.shape[1])  # where each target token sits
        doc = np.searchsorted(self.starts, positions, side="right") - 1
        whole = self.starts[doc] >= np.asarray(offsets)[:, None]  # the document starts inside the window
        keep = (positions >= self.response_at[doc]) & (~self.has_split[doc] | whole)
        return w[:, :-1], np.where(keep, w[:, 1:].astype(np.int64), -1)


class TrainBatches:
    """This rank's micro-batches (x, y), iteration by iteration, from a TrainSampler shared by all ranks."""

    def __init__(self, data: TaggedData, sampler: TrainSampler, rank: int, world_size: int, device: str,
                 loss_on: str = "all"):
        self.tokens, self.sampler, self.device = data.tokens["train"], sampler, device
        per_rank = sampler.micro_steps // world_size
        self.rows = slice(rank * per_rank, (rank + 1) * per_rank)
        if loss_on not in LOSS_ON:
            raise UserError(f"loss_on={loss_on!r}: use one of {', '.join(LOSS_ON)}")
        self.targets = ResponseTargets(data) if loss_on == "response" else None

    def iteration(self):
        """Yield this rank's micro-batches for one iteration. The next one is copied to the device while the
        current one is in use (asynchronous on CUDA)."""
        offsets = self.sampler.next_iteration()[self.rows]
        nxt = self._batch(offsets[0])
        for i in range(len(offsets)):
            cur = nxt
            if i + 1 < len(offsets):
                nxt = self._batch(offsets[i + 1])
            yield cur

    def _batch(self, offsets: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        w = windows(self.tokens, offsets, self.sampler.block_size)
        if self.targets is None:
            t = to_device(w, self.device)
            return t[:, :-1], t[:, 1:]
        x, y = self.targets(w, offsets)
        return to_device(x, self.device), to_device(y, self.device)


class EvalBatches:
    """Fixed evaluation batches: random train and val windows, and val windows from each tag's documents.

    Each batch is (x, y, tag_ids): tag_ids holds, for every target token, the id of its document's tag.
    """

    def __init__(self, data: TaggedData, block_size: int, batch_size: int, eval_iters: int, device: str):
        rng = np.random.default_rng(EVAL_SEED)
        self.tags, self.device, self.block_size = data.tags, device, block_size
        n = eval_iters * batch_size
        self.batches = {}
        for split in ("train", "val"):
            offsets = rng.integers(0, len(data.tokens[split]) - block_size - 1, size=n)
            self.batches[split] = self._batches(data, split, offsets, batch_size)
        # Per tag: as many windows in all as one val split's worth, spread evenly over the tags present.
        index = data.index["val"]
        starts = np.asarray(index["start"])
        last = len(data.tokens["val"]) - block_size - 1
        per_tag = max(1, n // len(self.tags))
        offsets = []
        for tag_id in range(len(self.tags)):
            docs = starts[np.asarray(index["tag_id"]) == tag_id]
            if len(docs):
                offsets.append(np.minimum(rng.choice(docs, size=min(per_tag, len(docs)), replace=False), last))
        self.batches["tags"] = self._batches(data, "val", np.concatenate(offsets), batch_size)

    def _batches(self, data: TaggedData, split: str, offsets: np.ndarray, batch_size: int) -> list:
        out = []
        for i in range(0, len(offsets), batch_size):
            chunk = offsets[i:i + batch_size]
            w = windows(data.tokens[split], chunk, self.block_size)
            target_positions = chunk[:, None] + 1 + np.arange(self.block_size)[None, :]
            tag_ids = tag_ids_at(data.index[split], target_positions)
            out.append((to_device(w[:, :-1], self.device), to_device(w[:, 1:], self.device),
                        torch.from_numpy(tag_ids.astype(np.int64)).to(self.device)))
        return out
