"""Continuous batching for serve.py: one thread decodes every running request together, one token a step.

Decoding a token reads all the weights, whatever the batch, so eight requests decoded together cost little
more than one. Requests that arrive while others decode are prefilled and join the batch at the next step;
finished or abandoned ones leave it at once and their KV-cache row goes to the next in line. Each request
keeps its own sampling settings (its own TokenSampler and random generator, so a seed reproduces its answer
whoever else is in the batch), its own stop strings and its own cache row.

Memory is bounded: the cache holds max_batch rows of block_size positions, allocated once; at most
max_queue requests wait beyond them, and submit() refuses more (serve.py answers 429).

The running rows are kept packed at the front of the cache (rows 0..n-1): a request that leaves hands its
row to the last running one, so each step forwards exactly the n running rows, and a lone request costs what
sample.py's decoding does.

The model runs in this module's one thread (torch releases the GIL inside its ops); the asyncio side talks to
it through submit()/Request.cancel() and gets its events through the callback each request carries.
"""

import codecs
import collections
import copy
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

import torch

from kv_cache import KVCache
from model import GPT
from sampling import TokenSampler
from tokenizer import EOT_ID, get_encoding


@dataclass
class Event:
    """What a request hears from the decoding thread: a piece of text, then one final event with
    finish_reason 'stop' or 'length' (or error, when the decoding thread failed)."""
    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


@dataclass
class Request:
    """One generation: prompt token ids, how many tokens at most, how to sample, where to stop.

    emit(event) is called from the decoding thread; it must be thread-safe (serve.py hands it to the event
    loop with call_soon_threadsafe)."""
    prompt: list[int]
    max_tokens: int
    sampler: TokenSampler
    emit: Callable[[Event], None]
    stop: tuple[str, ...] = ()
    cancelled: threading.Event = field(default_factory=threading.Event)
    # decoding state, owned by the decoding thread
    tokens: list[int] = field(default_factory=list)
    text: str = ""  # everything decoded so far
    sent: int = 0  # how much of text has been emitted
    last_token: int = 0
    _utf8: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace"))

    def cancel(self) -> None:
        """The client went away: its row is freed at the next step (from any thread)."""
        self.cancelled.set()


class Scheduler:
    """Owns the model and its batched KV cache; decodes in a thread of its own until stop()."""

    def __init__(self, model: GPT, max_batch: int = 8, max_queue: int = 32, gather_ms: float = 3.0):
        self.model, self.max_batch, self.max_queue = model, max_batch, max_queue
        self.gather_s = gather_ms / 1000
        self.block_size = model.config.block_size
        weight = model.lm_head.weight
        self.device = weight.device
        self.cache = KVCache(model.config, max_batch, self.block_size, weight.device, weight.dtype)
        self.running: list[Request] = []  # running[i] owns cache row i; changed by the decoding thread only
        self.waiting: collections.deque[Request] = collections.deque()
        self.lock = threading.Condition()
        self.steps = 0  # decode steps taken (for tests and the health endpoint)
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="decode", daemon=True)
        self._thread.start()

    # ---- the asyncio side --------------------------------------------------------------------------

    def submit(self, request: Request) -> bool:
        """Queue request; False when max_queue requests already wait (the caller answers 429)."""
        with self.lock:
            if len(self.waiting) >= self.max_queue:  # clients that left while waiting give their place back
                self.waiting = collections.deque(r for r in self.waiting if not r.cancelled.is_set())
            if self._stopping or len(self.waiting) >= self.max_queue:
                return False
            self.waiting.append(request)
            self.lock.notify()
            return True

    def load(self) -> dict:
        with self.lock:
            return {"running": len(self.running), "waiting": len(self.waiting), "max_batch": self.max_batch,
                    "max_queue": self.max_queue, "steps": self.steps}

    def stop(self) -> None:
        with self.lock:
            self._stopping = True
            self.lock.notify()
        self._thread.join(timeout=30)

    # ---- the decoding thread -----------------------------------------------------------------------

    def _loop(self) -> None:
        with torch.inference_mode():
            while True:
                with self.lock:
                    waited = False
                    while not self._stopping and not self.running and not self.waiting:
                        self.lock.wait()
                        waited = True
                if waited and self.gather_s:
                    self._gather()
                with self.lock:
                    if self._stopping:
                        return
                    joining = []
                    while self.waiting and len(self.running) + len(joining) < self.max_batch:
                        request = self.waiting.popleft()
                        if not request.cancelled.is_set():
                            joining.append(request)
                try:
                    self._step(joining)
                except Exception as e:  # a bug must not leave clients hanging: fail this batch, keep serving
                    traceback.print_exc()
                    for request in self.running + joining:
                        request.emit(Event(error=f"{type(e).__name__}: {e}"))
                    self.running = []
                    for row in range(self.cache.k.size(1)):
                        self.cache.reset_row(row)

    def _gather(self) -> None:
        """Woken from idle: while requests keep arriving (clients that start together), let them, for a few
        milliseconds, so that they share one prefill instead of all but the first waiting for it."""
        deadline = time.monotonic() + 8 * self.gather_s
        seen = -1
        while time.monotonic() < deadline:
            with self.lock:
                arrived = len(self.waiting)
            if arrived == seen or arrived >= self.max_batch:
                return
            seen = arrived
            time.sleep(self.gather_s)

    def _step(self, joining: list[Request]) -> None:
        """The running requests' next tokens and the newcomers' first ones, each row sampled with its own
        settings; then let finished and abandoned requests go. Newcomers whose prompts pad cheaply into the
        decode step's batch ride along in its one forward (the weights are read once for all of them, and
        they wait no extra step for their first token); the others are prefilled in groups of similar
        length."""
        groups = prefill_groups(joining)
        if any(not r.cancelled.is_set() for r in self.running):
            rows = list(self.running)
            inputs = [[r.last_token] for r in rows]
            if groups and cheap_padding([1] * len(rows) + [len(r.prompt) for r in groups[0]]):
                newcomers = groups.pop(0)
                inputs += [r.prompt for r in newcomers]
                self.running.extend(newcomers)
            self._sample(self.running, self._forward(0, inputs, fresh=len(rows)))
            self.steps += 1
        for group in groups:
            start = len(self.running)
            self.running.extend(group)
            self._sample(group, self._forward(start, [r.prompt for r in group], fresh=0))
        self._retire()

    def _advance(self, request: Request, logits: torch.Tensor) -> None:
        """Sample request's next token from its logits (1, vocab) and pass on the text it completes."""
        seq = None
        if request.sampler.repetition_penalty != 1.0:
            seq = torch.tensor([request.prompt + request.tokens], dtype=torch.long, device=self.device)
        token = int(request.sampler(logits.float(), seq))
        request.last_token = token
        if token == EOT_ID:
            return self._finish(request, "stop")
        request.tokens.append(token)
        enc = get_encoding()
        piece = enc.decode_single_token_bytes(token) if token < enc.n_vocab else b""  # padded-vocab ids: no text
        request.text += request._utf8.decode(piece)
        for stop in request.stop:
            at = request.text.find(stop, max(0, request.sent - len(stop) + 1))
            if at >= 0:
                request.text = request.text[:at]
                return self._finish(request, "stop")
        if len(request.tokens) >= request.max_tokens or len(request.prompt) + len(request.tokens) >= self.block_size:
            return self._finish(request, "length")
        # Hold back a tail that could be the start of a stop string, so no client ever sees part of one.
        hold = max((len(s) - 1 for s in request.stop), default=0)
        safe = len(request.text) - hold
        if safe > request.sent:
            request.emit(Event(text=request.text[request.sent:safe]))
            request.sent = safe

    def _finish(self, request: Request, reason: str) -> None:
        request.emit(Event(text=request.text[request.sent:], finish_reason=reason,
                           prompt_tokens=len(request.prompt), completion_tokens=len(request.tokens)))
        request.sent = len(request.text)
        request.cancelled.set()  # done: its row is free

    def _retire(self) -> None:
        """Free the rows of finished and abandoned requests; the last running row moves into each gap so
        the running rows stay packed at the front."""
        row = 0
        while row < len(self.running):
            if self.running[row].cancelled.is_set():
                last = len(self.running) - 1
                if row != last:
                    self._move_row(last, row)
                    self.running[row] = self.running[last]
                self.running.pop()
                self._reset_row(last)
            else:
                row += 1

    # ---- the model ---------------------------------------------------------------------------------

    def _forward(self, start: int, inputs: list[list[int]], fresh: int) -> torch.Tensor:
        """Feed inputs[i] to cache row start + i, right-padded into one batch; rows from start + fresh on
        are emptied first (new prompts). Each row's logits at its last token, (len(inputs), vocab)."""
        for row in range(start + fresh, start + len(inputs)):
            self.cache.reset_row(row)
        lengths = [len(x) for x in inputs]
        width = max(lengths)
        idx = torch.tensor([x + [0] * (width - len(x)) for x in inputs], dtype=torch.long, device=self.device)
        valid = None if min(lengths) == width else torch.tensor(lengths, dtype=torch.long, device=self.device)
        view = rows_view(self.cache, start, start + len(inputs))
        logits, _ = self.model(idx, kv_cache=view, valid=valid)
        view.lengths  # noqa: B018  reading writes the rows' lengths back (a same-length forward counts in an int)
        return logits[:, -1, :]

    def _sample(self, requests: list[Request], logits: torch.Tensor) -> None:
        for i, request in enumerate(requests):
            if not request.cancelled.is_set():
                self._advance(request, logits[i:i + 1])

    def _move_row(self, src: int, dst: int) -> None:
        self.cache.copy_row_from(self.cache, dst, src)

    def _reset_row(self, row: int) -> None:
        self.cache.reset_row(row)


def prefill_groups(requests: list[Request]) -> list[list[Request]]:
    """Newcomers in groups to prefill together: one forward reads the weights once for all of them, but
    right padding costs compute, so a group's padding stays cheap."""
    groups: list[list[Request]] = []
    for request in sorted(requests, key=lambda r: len(r.prompt)):
        n = len(request.prompt)
        if groups and cheap_padding([len(r.prompt) for r in groups[-1]] + [n]):
            groups[-1].append(request)
        else:
            groups.append([request])
    return groups


def cheap_padding(lengths: list[int]) -> bool:
    """Whether rows of these lengths, right-padded to the longest, cost at most about twice their real
    tokens (plus a little, so that short prompts and single tokens always go together)."""
    return len(lengths) * max(lengths) <= 2 * sum(lengths) + 64


def rows_view(cache: KVCache, start: int, stop: int) -> KVCache:
    """Rows start..stop-1 of cache as a cache of their own that shares its memory: a forward through it
    writes the rows' keys, values and lengths in place, and costs what a cache of stop - start rows costs.
    Rows of one length take KVCache's plain-slice path (no masks), as single-prompt decoding does."""
    view = copy.copy(cache)
    view.k, view.v, view._lengths = cache.k[:, start:stop], cache.v[:, start:stop], cache.lengths[start:stop]
    lengths = set(view._lengths.tolist())
    view.same_length = lengths.pop() if len(lengths) == 1 else None
    return view

