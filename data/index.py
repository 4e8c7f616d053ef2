"""Read a prepared dataset dir: file names, meta.json and the per-split document index.

A dataset dir holds, per split in ("train", "val"):
  <split>.bin        uint16 GPT-2 token ids, documents back to back, each followed by end-of-text (50256)
  <split>_index.npy  one row per document, numpy structured dtype INDEX_DTYPE:
                     start (int64, offset of its first token in <split>.bin), length (int32, its tokens
                     without the end-of-text, which sits at start+length), tag_id (uint8, position in meta["tags"])
  <split>_response.npy  RESPONSE_DTYPE, one per document in index order: where its response begins, in
                     tokens from its start (0: no prompt/response split, every token is trained on);
                     train.py's loss_on='response' reads it (datasets built before it lack the file)
and meta.json (written last: a dir without it is not a complete dataset) with vocab_size, tokenizer,
bpe_hash, eot_id, dtype, tags (names, in tag_id order), splits {split: {docs, tokens}},
per_tag {split: {tag: {docs, tokens}}} (tokens include each document's end-of-text, so they sum to the
.bin length), duplicates_dropped, seed, val_fraction, mixture, sources, settings, build_seconds, built_at.
"""

import json
import os

import numpy as np

from errors import UserError

SPLITS = ("train", "val")
META_NAME = "meta.json"
INDEX_DTYPE = np.dtype([("start", "<i8"), ("length", "<i4"), ("tag_id", "u1")])
RESPONSE_DTYPE = np.dtype("<i4")


def bin_path(dataset_dir: str, split: str) -> str:
    return os.path.join(dataset_dir, f"{split}.bin")


def index_path(dataset_dir: str, split: str) -> str:
    return os.path.join(dataset_dir, f"{split}_index.npy")


def response_path(dataset_dir: str, split: str) -> str:
    return os.path.join(dataset_dir, f"{split}_response.npy")


def is_complete(dataset_dir: str) -> bool:
    """True if dataset_dir holds a finished build (meta.json is written last)."""
    return os.path.isfile(os.path.join(dataset_dir, META_NAME))


def load_meta(dataset_dir: str) -> dict:
    if not is_complete(dataset_dir):
        raise UserError(f"no complete dataset in {dataset_dir} (meta.json missing): run `python data/prepare.py`")
    with open(os.path.join(dataset_dir, META_NAME)) as f:
        return json.load(f)


def load_doc_index(dataset_dir: str, split: str) -> np.ndarray:
    """The document index of one split: a read-only memory-mapped structured array (start, length, tag_id)."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    path = index_path(dataset_dir, split)
    if not os.path.isfile(path):
        raise UserError(f"document index {path} missing: rebuild with `python data/prepare.py --force`")
    return np.load(path, mmap_mode="r")


def load_response_offsets(dataset_dir: str, split: str) -> np.ndarray:
    """Each document's response offset (see the module docstring); UserError for datasets built without them."""
    path = response_path(dataset_dir, split)
    if not os.path.isfile(path):
        raise UserError(f"{dataset_dir} has no prompt/response offsets ({os.path.basename(path)}), which "
                        "loss_on='response' needs: rebuild it with `python data/prepare.py --force ...`")
    return np.load(path, mmap_mode="r")


def tag_ids_at(index: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The tag id of the document each token position (an offset into the split's .bin) belongs to.

    A document's end-of-text counts as part of it, so every position maps to exactly one document.
    Use it for per-task validation loss: tag_ids_at(index, offsets_of_target_tokens).
    """
    doc = np.searchsorted(index["start"], positions, side="right") - 1
    return np.asarray(index["tag_id"])[doc]
