"""Stream (tag, text) documents into a nanoGPT dataset dir: train/val .bin, per-split document index, meta.json.

Documents are deduplicated and split by a seeded hash of their text (so the split is deterministic, does not
depend on order, and a document can never land in both splits), tokenized with GPT-2's BPE on all cores in a
background thread while the main thread reads the next batch, and written with an end-of-text token after each. Everything is written under *.tmp names and renamed at the end; meta.json is
written last, so its presence marks a complete dataset. A document that records its prompt/response split
(tags.PromptResponse) gets its response's token offset in <split>_response.npy (0 for the others). Memory is bounded by the batch size, except for the
set of 8-byte document hashes used to drop exact duplicates (one entry per unique document, not per token).
"""

import hashlib
import itertools
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Iterator

import numpy as np
from tqdm import tqdm

from data.index import INDEX_DTYPE, META_NAME, RESPONSE_DTYPE, SPLITS, bin_path, index_path, response_path
from errors import UserError
from tags import TAGS, response_start, tag_id
from tokenizer import EOT_ID, EOT_TOKEN, VOCAB_SIZE, bpe_hash, get_encoding

Doc = tuple[str, str]  # (tag, formatted text)
GROUP_DOCS = 256  # documents per string handed to the tokenizer


def split_of(h: int, val_fraction: float) -> str:
    """'val' for a fraction val_fraction of hashes, else 'train'."""
    return "val" if (h >> 11) / float(1 << 53) < val_fraction else "train"


def doc_hash(text: str, seed: int) -> int:
    """Seeded 64-bit hash of a document's text: both its identity for deduplication and its split."""
    key = seed.to_bytes(8, "little", signed=True)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8, key=key).digest(), "little")


def batched(docs: Iterable[Doc], n: int) -> Iterator[list[Doc]]:
    it = iter(docs)
    while batch := list(itertools.islice(it, n)):
        yield batch


class SplitWriter:
    """Appends one split's tokens to <split>.bin.tmp and its index rows to a raw temp file."""

    def __init__(self, out_dir: str, split: str):
        self.bin_final, self.index_final = bin_path(out_dir, split), index_path(out_dir, split)
        self.bin_tmp = self.bin_final + ".tmp"
        self.rows_tmp = self.index_final + ".rows.tmp"
        self.index_tmp = self.index_final[:-len(".npy")] + ".tmp.npy"  # np.save insists on the .npy suffix
        self.response_final = response_path(out_dir, split)
        self.response_rows_tmp = self.response_final + ".rows.tmp"
        self.response_tmp = self.response_final[:-len(".npy")] + ".tmp.npy"
        self.bin = open(self.bin_tmp, "wb")
        self.rows = open(self.rows_tmp, "wb")
        self.response_rows = open(self.response_rows_tmp, "wb")
        self.n_tokens = 0
        self.n_docs = 0

    def write(self, tokens: np.ndarray, tag_ids: list[int], response_offsets: np.ndarray) -> np.ndarray:
        """Append documents laid out as `doc EOT doc EOT ...` (uint16), their index rows and response offsets;
        return their lengths."""
        ends = np.flatnonzero(tokens == EOT_ID)
        assert len(ends) == len(tag_ids), "a document contains a literal end-of-text"
        starts = np.concatenate(([0], ends[:-1] + 1))
        rows = np.empty(len(ends), dtype=INDEX_DTYPE)
        rows["start"] = self.n_tokens + starts
        rows["length"] = ends - starts
        rows["tag_id"] = tag_ids
        self.bin.write(tokens.tobytes())
        self.rows.write(rows.tobytes())
        self.response_rows.write(np.asarray(response_offsets, dtype=RESPONSE_DTYPE).tobytes())
        self.n_tokens += len(tokens)
        self.n_docs += len(ends)
        return rows["length"]

    def finish(self) -> None:
        """Close the temp files and turn the raw index rows (13 bytes a document) into a temp .npy."""
        self.bin.close()
        self.rows.close()
        self.response_rows.close()
        np.save(self.index_tmp, np.memmap(self.rows_tmp, dtype=INDEX_DTYPE, mode="r"))  # paged, not loaded
        np.save(self.response_tmp, np.memmap(self.response_rows_tmp, dtype=RESPONSE_DTYPE, mode="r"))
        os.remove(self.rows_tmp)
        os.remove(self.response_rows_tmp)

    def commit(self) -> None:
        os.replace(self.bin_tmp, self.bin_final)
        os.replace(self.index_tmp, self.index_final)
        os.replace(self.response_tmp, self.response_final)

    def discard(self) -> None:
        self.bin.close()
        self.rows.close()
        self.response_rows.close()
        for tmp in (self.bin_tmp, self.rows_tmp, self.index_tmp, self.response_rows_tmp, self.response_tmp):
            if os.path.exists(tmp):
                os.remove(tmp)


def open_writers(out_dir: str) -> dict[str, SplitWriter]:
    writers: dict[str, SplitWriter] = {}
    try:
        os.makedirs(out_dir, exist_ok=True)
        meta = os.path.join(out_dir, META_NAME)
        if os.path.exists(meta):
            os.remove(meta)  # from here on the dir no longer claims to hold a complete dataset
        for split in SPLITS:
            writers[split] = SplitWriter(out_dir, split)
        return writers
    except OSError as e:
        for w in writers.values():
            w.discard()
        raise UserError(f"cannot write to output dir {out_dir}: {e.strerror or e}; choose another with --out_dir") from e


def write_dataset(docs: Iterable[Doc], out_dir: str, *, seed: int = 1337, val_fraction: float = 0.03,
                  num_threads: int = 0, batch_docs: int = 4096, info: dict | None = None,
                  progress: bool = True) -> dict:
    """Tokenize `docs` into out_dir and return the meta dict also written to out_dir/meta.json.

    `info` (mixture, sources, settings...) is merged into meta.json. UserError if a split ends up empty;
    on any error the temp files are removed and out_dir holds no dataset that looks complete.
    """
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"val_fraction={val_fraction} must be between 0 and 1 (e.g. 0.03)")
    enc = get_encoding()
    threads = num_threads or os.cpu_count() or 1
    t0 = time.time()
    writers = open_writers(out_dir)
    n_docs = {split: np.zeros(len(TAGS), np.int64) for split in SPLITS}
    n_tokens = {split: np.zeros(len(TAGS), np.int64) for split in SPLITS}
    n_split = {split: 0 for split in SPLITS}  # documents with a prompt/response split
    seen: set[int] = set()
    duplicates = 0
    bar = tqdm(desc="tokenizing", unit=" docs", unit_scale=True, disable=None if progress else True)

    def select(batch: list[Doc]) -> dict[str, tuple[list[str], list[int], list[int]]]:
        """Drop empty and duplicate documents, assign the rest to splits: split -> (texts, tag ids, prompt
        lengths in characters, 0 for documents without a prompt/response split)."""
        nonlocal duplicates
        out = {split: ([], [], []) for split in SPLITS}
        for tag, text in batch:
            # a literal <|endoftext|> inside a document would read as a document boundary in the bins
            split_at = response_start(text) or 0
            prompt = text[:split_at].replace(EOT_TOKEN, "")
            text = prompt + text[split_at:].replace(EOT_TOKEN, "")
            if not text.strip():
                continue
            h = doc_hash(text, seed)
            if h in seen:
                duplicates += 1
                continue
            seen.add(h)
            texts, ids, prompts = out[split_of(h, val_fraction)]
            texts.append(text)
            ids.append(tag_id(tag))
            prompts.append(len(prompt))
        return out

    def encode_all(texts: list[str]) -> np.ndarray:
        """The texts as one uint16 array `text EOT text EOT ...`.

        Texts are joined with <|endoftext|> in groups and each group encoded with the special token
        allowed: tiktoken encodes the text between special tokens independently, so this gives exactly the
        per-text encode_ordinary tokens, with far less per-call overhead than one call per text.
        """
        groups = [EOT_TOKEN.join(texts[i:i + GROUP_DOCS]) + EOT_TOKEN for i in range(0, len(texts), GROUP_DOCS)]
        encoded = enc.encode_batch(groups, num_threads=threads, allowed_special={EOT_TOKEN})
        return np.fromiter(itertools.chain.from_iterable(encoded), dtype=np.uint16, count=sum(map(len, encoded)))

    def encode(selected) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Each split's documents as one uint16 array `doc EOT doc EOT ...`, and each document's response
        offset in tokens: the token count of its prompt, which ends where the tokenizer splits anyway
        (tags.PromptResponse), so it is the same count as inside the whole document."""
        out = {}
        for split, (texts, _, prompt_chars) in selected.items():
            tokens = encode_all(texts)
            offsets = np.zeros(len(texts), dtype=RESPONSE_DTYPE)
            has = [i for i, n in enumerate(prompt_chars) if n]
            if has:
                prompt_tokens = encode_all([texts[i][:prompt_chars[i]] for i in has])
                ends = np.flatnonzero(prompt_tokens == EOT_ID)
                offsets[has] = np.diff(np.concatenate(([-1], ends))) - 1
            out[split] = (tokens, offsets)
        return out

    def write(selected, encoded) -> None:
        for split, (_, ids, _) in selected.items():
            if ids:
                tokens, offsets = encoded[split]
                lengths = writers[split].write(tokens, ids, offsets) + 1  # each document's tokens and its EOT
                n_split[split] += int(np.count_nonzero(offsets))
                n_docs[split] += np.bincount(ids, minlength=len(TAGS))
                n_tokens[split] += np.bincount(ids, weights=lengths, minlength=len(TAGS)).astype(np.int64)
        bar.update(sum(len(ids) for _, ids, _ in selected.values()))
        total = sum(w.n_tokens for w in writers.values())
        bar.set_postfix_str(f"{total / 1e6:.1f}M tokens, {total / max(time.time() - t0, 1e-9) / 1e6:.2f}M tokens/s",
                            refresh=False)

    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = None  # the previous batch, tokenizing in the background while we read the next one
            for batch in batched(docs, batch_docs):
                selected = select(batch)
                future = pool.submit(encode, selected)
                if pending is not None:
                    write(pending[0], pending[1].result())
                pending = (selected, future)
            if pending is not None:
                write(pending[0], pending[1].result())
        for split, w in writers.items():
            if w.n_docs == 0:
                n = sum(x.n_docs for x in writers.values())
                raise UserError(f"the {split} split is empty ({n} unique documents in all): add documents or "
                                f"change --val_fraction (now {val_fraction})")
            w.finish()
        for w in writers.values():
            w.commit()
    except BaseException:
        for w in writers.values():
            w.discard()
        raise
    finally:
        bar.close()
    elapsed = time.time() - t0
    meta = {
        "vocab_size": VOCAB_SIZE, "tokenizer": enc.name, "bpe_hash": bpe_hash(), "eot_id": EOT_ID, "dtype": "uint16",
        "tags": list(TAGS),
        "splits": {s: {"docs": writers[s].n_docs, "tokens": writers[s].n_tokens, "prompt_response_docs": n_split[s]}
                   for s in SPLITS},
        "response_offsets": True,
        "per_tag": {s: {tag: {"docs": int(n_docs[s][i]), "tokens": int(n_tokens[s][i])} for i, tag in enumerate(TAGS)}
                    for s in SPLITS},
        "duplicates_dropped": duplicates, "seed": seed, "val_fraction": val_fraction,
        **(info or {}),
        "build_seconds": round(elapsed, 2), "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_meta(out_dir, meta)
    return meta


def write_meta(out_dir: str, meta: dict) -> None:
    path = os.path.join(out_dir, META_NAME)
    with open(path + ".tmp", "w") as f:
        json.dump(meta, f, indent=2)
    os.replace(path + ".tmp", path)
