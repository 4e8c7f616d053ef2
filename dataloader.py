"""Batches from a prepared dataset (data/prepare.py): random training windows and fixed evaluation windows.

The token bins are memory-mapped, so a dataset of any size costs no RAM. Training draws windows of
block_size + 1 tokens at random offsets. The offsets of a whole iteration (every micro-step of every rank)
come from one generator seeded identically on all ranks; each rank takes its own rows. A run's data thus
depends on the global batch only, not on how it is split over processes, and the generator's state (saved in
the checkpoint) is all it takes to resume the exact same stream.

Evaluation uses fixed windows, drawn once from their own seed, so every eval sees the same tokens (losses are
comparable across evals and eval never disturbs the training stream). Per-tag validation loss comes from
windows that start at documents of each tag, as a prompt at sampling time would; every target token is
credited to the tag of the document it belongs to (data/index.py's tag_ids_at).
"""

import os

import numpy as np
import torch

from data.index import bin_path, is_complete, load_doc_index, load_meta, tag_ids_at
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
    """Random training windows, drawn a whole iteration at a time (see the module docstring)."""

    def __init__(self, n_tokens: int, block_size: int, batch_size: int, micro_steps: int, seed: int):
        self.n_tokens, self.block_size = n_tokens, block_size
        self.batch_size, self.micro_steps = batch_size, micro_steps
        self.generator = torch.Generator().manual_seed(seed)
        self.iterations = 0  # iterations drawn so far, for the fraction of an epoch seen

    def next_iteration(self) -> np.ndarray:
        """Offsets for every micro-step of the next iteration, all ranks: shape (micro_steps, batch_size)."""
        # a window is block_size + 1 tokens, so the last offset that fits is n_tokens - block_size - 1; randint's
        # bound is exclusive, so that offset + 1 (one less would never train on the split's last token)
        high = self.n_tokens - self.block_size
        offsets = torch.randint(high, (self.micro_steps, self.batch_size), generator=self.generator)
        self.iterations += 1
        return offsets.numpy()

    def epochs(self) -> float:
        return self.iterations * self.micro_steps * self.batch_size * self.block_size / self.n_tokens

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "iterations": self.iterations}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.iterations = int(state["iterations"])


class TrainBatches:
    """This rank's micro-batches (x, y), iteration by iteration, from a TrainSampler shared by all ranks."""

    def __init__(self, data: TaggedData, sampler: TrainSampler, rank: int, world_size: int, device: str):
        self.tokens, self.sampler, self.device = data.tokens["train"], sampler, device
        per_rank = sampler.micro_steps // world_size
        self.rows = slice(rank * per_rank, (rank + 1) * per_rank)

    def iteration(self):
        """Yield this rank's micro-batches for one iteration. The next one is copied to the device while the
        current one is in use (asynchronous on CUDA)."""
        offsets = self.sampler.next_iteration()[self.rows]
        block = self.sampler.block_size
        nxt = to_device(windows(self.tokens, offsets[0], block), self.device)
        for i in range(len(offsets)):
            cur = nxt
            if i + 1 < len(offsets):
                nxt = to_device(windows(self.tokens, offsets[i + 1], block), self.device)
            yield cur[:, :-1], cur[:, 1:]


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
