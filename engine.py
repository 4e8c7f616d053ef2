"""Inference plumbing shared by sample.py, chat.py, export.py and bench/decoding.py: one place for it.

- pick the device and the decoding dtype ('auto': bf16 where the hardware has fast bf16, else fp32),
- load a model for decoding (from a checkpoint, a GPT-2 name or a transformers directory, always safely),
- read and encode prompts (`FILE:path`, the `<eot>` marker) in the tokens the model knows, keeping the last
  tokens when one is too long,
- on CPUs with native bf16, repack the weights once so that decoding streams them at memory speed,
- or, opt-in (dtype='int8'), quantize them to int8 for half the bytes per token,
- stream a continuation as text, token by token, ending at end-of-text,
- generate continuations of many prompts of different lengths together, batch by batch (generate_batch).
"""

import codecs
import glob
import os
import sys
import weakref
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn as nn

import hardware
from checkpoint import CHECKPOINT_NAME, load_model
from errors import UserError
from kernels import Int8Linear, PackedLinear
from kv_cache import KVCache
from model import GPT
from sampling import TokenSampler
from shortlist import untrained_tokens
from tokenizer import EOT_ID, EOT_MARKER, EOT_TOKEN, Respeller, get_encoding

FILE_PREFIX = "FILE:"


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """The dtype the weights are cast to for decoding: training's choice (hardware.pick_dtype). 'auto' is
    bf16 on GPUs and CPUs with native bf16 (half the bytes to read per token; bench/decoding.py checks the
    log-probs hold), fp16 on older GPUs, and fp32 elsewhere, where bf16 would be emulated and slower."""
    return hardware.DTYPES[hardware.pick_dtype(device, name)[0]]


def newest_out_dir(init_from: str, out_dir: str) -> str:
    """out_dir as given; or, when it is empty and the model comes from a checkpoint, the run written most
    recently: the out*/ directory (under the current one, where train.py writes them) with the newest
    ckpt.pt, so `python train.py config/X.py` then `python sample.py` samples the model just trained. The
    choice is announced on stderr, the first line the user sees."""
    if out_dir or init_from != "resume":
        return out_dir
    candidates = [os.path.dirname(p) for p in glob.glob(os.path.join("out*", CHECKPOINT_NAME))]
    if not candidates:
        raise UserError(f"no out*/{CHECKPOINT_NAME} here: train a model first (python train.py "
                        "config/train_phi_mini.py), or give --out_dir (or --init_from=gpt2)")
    newest = max(candidates, key=lambda d: os.path.getmtime(os.path.join(d, CHECKPOINT_NAME)))
    print(f"reading {os.path.join(newest, CHECKPOINT_NAME)}, the newest out*/{CHECKPOINT_NAME} "
          f"(--out_dir picks another)", file=sys.stderr, flush=True)
    return newest


def load_for_inference(init_from: str, out_dir: str, device: str = "auto", dtype: str = "auto",
                       compile: bool = False) -> GPT:
    """The model in eval mode on its device, weights cast to the decoding dtype (or quantized, for
    dtype='int8'), optionally compiled."""
    device = hardware.pick_device(device)
    model, _ = load_model(init_from, out_dir, device)
    return for_decoding(model, device, dtype, compile)


def for_decoding(model: GPT, device: str, dtype: str = "auto", compile: bool = False) -> GPT:
    """load_for_inference's second half, for a model already loaded (eval.py also needs its fp32 weights and
    checkpoint): cast to the decoding dtype, quantize, pack or compile. The model is changed in place."""
    if dtype == "int8" and (compile or not can_quantize(device)):
        raise UserError("dtype=int8 is for CPU decoding without --compile (oneDNN's int8 kernels); "
                        "use auto, bfloat16 or float32 here")
    if dtype == "int8":
        embedding = model.transformer.wte.weight
        swap_linears(model.float(), Int8Linear)
        # the head's fp32 weight is the token embedding's too (tied), which decoding still reads; the
        # other fp32 weights are freed
        model.lm_head.weight = embedding
        return model
    model = model.to(resolve_dtype(dtype, device))
    if compile:  # inductor cannot lower the prepacked op; it lays weights out itself
        model.compile(dynamic=True)  # one graph for every context length instead of one per length
        return model
    return pack_for_decoding(model)


def can_pack(model: GPT) -> bool:
    weight = model.lm_head.weight
    return (weight.device.type == "cpu" and weight.dtype == torch.bfloat16 and not model.training
            and hasattr(torch.ops.mkldnn, "_linear_pointwise") and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def pack_for_decoding(model: GPT) -> GPT:
    """Swap every Linear of a bf16 model in eval mode on a bf16-capable CPU for a PackedLinear
    (a no-op anywhere else). Decoding only: the packed weights do not train."""
    return swap_linears(model, PackedLinear) if can_pack(model) else model


def swap_linears(model: GPT, replacement) -> GPT:
    """Replace every nn.Linear of model by replacement(linear), in place; return model."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is nn.Linear:
                setattr(module, name, replacement(child))
    return model


def can_quantize(device: str) -> bool:
    """Whether this torch has oneDNN's int8 linear for device (CPU only). It does not check that the CPU
    has VNNI or AMX; without them int8 decoding may be slower than fp32."""
    return (torch.device(device).type == "cpu" and hasattr(torch.ops.onednn, "qlinear_pointwise")
            and torch.backends.mkldnn.is_available())


# ---- prompts ---------------------------------------------------------------------------------------------

def read_start(start: str) -> str:
    """The prompt text: `start` itself, or the contents of the file named after `FILE:`."""
    if not start.startswith(FILE_PREFIX):
        return start
    path = start[len(FILE_PREFIX):]
    if not os.path.isfile(path):
        raise UserError(f"prompt file {path} not found (--start=FILE:path reads the prompt from a file)")
    with open(path, encoding="utf-8") as f:
        return f.read()


def encode(text: str, model: GPT | None = None) -> list[int]:
    """Token ids of text. `<eot>` (how NanoPhi's text files write it) and `<|endoftext|>` become the
    end-of-text token, as in the training data; everything else is ordinary text. Given the model that will
    read them, names it never trained are written as pieces it knows (respeller)."""
    ids = get_encoding().encode(text.replace(EOT_MARKER, EOT_TOKEN), allowed_special={EOT_TOKEN})
    return respeller(model)(ids) if model is not None else ids


_respellers: "weakref.WeakKeyDictionary[GPT, Respeller]" = weakref.WeakKeyDictionary()


def respeller(model: GPT) -> Respeller:
    """The model's tokenizer.Respeller, found once per model: its untrained tokens are the equal rows of its
    token embedding (shortlist.untrained_tokens), none for a model that trained them all."""
    if model not in _respellers:
        _respellers[model] = Respeller(untrained_tokens(model.transformer.wte.weight))
    return _respellers[model]


def decode(ids: list[int]) -> str:
    return get_encoding().decode(ids)


def keep_last(ids: list[int], limit: int) -> tuple[list[int], int]:
    """The last `limit` tokens of ids and how many were dropped from the front."""
    dropped = max(0, len(ids) - limit)
    return ids[dropped:], dropped


# ---- decoding --------------------------------------------------------------------------------------------

@dataclass
class Sampling:
    """How the next token is picked. temperature 0 is greedy; top_k 0/None and top_p 1.0 switch those off."""
    temperature: float = 0.85
    top_k: int | None = 8
    top_p: float = 1.0
    repetition_penalty: float = 1.0


def stream(model: GPT, ids: list[int], max_new_tokens: int, sampling: Sampling) -> Iterator[tuple[int, str]]:
    """Continue ids; yield (token, text) for each new token until end-of-text (not yielded) or
    max_new_tokens. text is what the token adds to the output: byte-level BPE may split a character over
    several tokens, so the bytes go through an incremental UTF-8 decoder and a piece may be ''. Sampling
    draws from torch's global generator: seed it once (torch.manual_seed) for reproducible runs."""
    if not ids:
        raise UserError("the prompt is empty: give some text to continue (e.g. --start=\"[Math] 1+1=\")")
    device = model.lm_head.weight.device
    idx = torch.tensor([ids], dtype=torch.long, device=device)
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
    enc = get_encoding()
    tokens = model.generate_stream(idx, max_new_tokens, temperature=sampling.temperature,
                                   top_k=sampling.top_k or None, top_p=sampling.top_p,
                                   repetition_penalty=sampling.repetition_penalty, stop_token=EOT_ID)
    for step in tokens:
        token = int(step[0])
        if token == EOT_ID:
            return
        # A model trained from scratch pads its vocabulary to 50304; the padding ids have no text.
        piece = enc.decode_single_token_bytes(token) if token < enc.n_vocab else b""
        yield token, utf8.decode(piece)


def generate_batch(model: GPT, prompts: list[list[int]], max_new_tokens: int, sampling: Sampling | None = None,
                   stop_token: int | None = EOT_ID, batch_size: int = 32, seed: int | None = None) -> list[list[int]]:
    """Continuations (token ids, the stop token left out) of many prompts, batch_size prompts per forward.

    Prompts of similar length are batched together (less padding); each batch is right-padded into one prefill
    and then decoded one token per row per step through one KVCache with per-row lengths (kv_cache.KVCache).
    A row stops at stop_token or after max_new_tokens, its cache row frozen (fed with valid=0); once half the
    rows have stopped, the batch is compacted so that decoding stops paying for them. sampling=None is greedy,
    and gives the same tokens as model.generate one prompt at a time (a test checks it). Batches do not slide
    the context window: a prompt keeps its last block_size tokens and its row stops when the window is full.
    """
    if any(len(p) == 0 for p in prompts):
        raise UserError("an empty prompt: every prompt needs at least one token")
    sampling = sampling or Sampling(temperature=0.0, top_k=None)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=model.lm_head.weight.device).manual_seed(seed)
    sampler = TokenSampler(sampling.temperature, sampling.top_k or None, sampling.top_p, sampling.repetition_penalty,
                           generator)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        for row, tokens in zip(rows, _generate_rows(model, [prompts[i] for i in rows], max_new_tokens, sampler,
                                                    stop_token)):
            out[row] = tokens
    return out


@torch.inference_mode()
def _generate_rows(model: GPT, prompts: list[list[int]], max_new_tokens: int, sampler: TokenSampler,
                   stop_token: int | None) -> list[list[int]]:
    """One batch of generate_batch."""
    device = model.lm_head.weight.device
    block = model.config.block_size
    prompts = [keep_last(p, block)[0] for p in prompts]
    # the token made from the forward at position block - 1 is the last one this window allows
    budgets = [min(max_new_tokens, block - len(p) + 1) for p in prompts]
    if max(budgets) <= 0:
        return [[] for _ in prompts]
    lengths = torch.tensor([len(p) for p in prompts], device=device)
    width = int(lengths.max())
    idx = torch.tensor([p + [0] * (width - len(p)) for p in prompts], device=device)
    # the cache holds each row's prompt and every generated token but the last (which is never fed back)
    max_len = max(len(p) + b - 1 for p, b in zip(prompts, budgets))
    cache = KVCache(model.config, len(prompts), max(width, max_len), device, model.lm_head.weight.dtype)
    logits, _ = model(idx, kv_cache=cache, valid=lengths)
    # the repetition penalty reads each row's tokens so far; padded with the row's own first token, which
    # changes nothing about which tokens it has seen
    history = torch.where(torch.arange(width, device=device) < lengths.unsqueeze(1), idx, idx[:, :1])
    out: list[list[int]] = [[] for _ in prompts]
    alive = list(range(len(prompts)))  # the prompt each cache row belongs to
    running = [True] * len(prompts)
    while True:
        next_token = sampler(logits[:, -1, :].float(), history)
        for row, (prompt, token) in enumerate(zip(alive, next_token.tolist())):
            if not running[row]:
                continue
            if token == stop_token:
                running[row] = False
                continue
            out[prompt].append(token)
            running[row] = len(out[prompt]) < budgets[prompt]
        if not any(running):
            return out
        if sum(running) <= len(alive) // 2:  # compact: drop the stopped rows from the batch
            keep = torch.tensor([row for row, going in enumerate(running) if going], device=device)
            cache.keep_rows(keep)
            alive = [alive[row] for row in keep.tolist()]
            next_token, history, running = next_token[keep], history[keep], [True] * len(keep)
        if sampler.repetition_penalty != 1.0:
            history = torch.cat([history, next_token.unsqueeze(1)], dim=1)
        valid = torch.tensor(running, dtype=torch.long, device=device)
        logits, _ = model(next_token.unsqueeze(1), kv_cache=cache, valid=valid)
