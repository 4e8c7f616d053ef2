"""Serve NanoPhi: a chat page in the browser and an OpenAI-compatible API, many users decoded together.

    python serve.py --out_dir=out-phi-mini                 # http://127.0.0.1:8000
    python serve.py --init_from=gpt2 --port=8080 --api_key=secret

The page is at /, the API at /v1 (completions, chat/completions, models), liveness at /health. Requests
that arrive while others decode join the running batch (scheduler.py). docs/serve.md has the details:
the fields each endpoint takes, errors, limits, and examples with curl and the openai client.
Ctrl-C stops the server.
"""

import asyncio
import hmac
import ipaddress
import json
import os
import random
import sys
import time
import uuid
from typing import Annotated, Literal

import torch
import uvicorn
from fastapi import FastAPI, Request as HttpRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException

import chat
import engine
import hardware
from configurator import configure
from errors import UserError, run_main
from model import GPT
from sampling import TokenSampler
from scheduler import Event, Request, Scheduler
from tags import TAGS, optional_tag
from tokenizer import EOT_ID

# -----------------------------------------------------------------------------
init_from = "resume"  # 'resume' (out_dir/ckpt.pt), 'gpt2' ... 'gpt2-xl', or a local transformers directory
out_dir = "out-phi-mini"
host = "127.0.0.1"  # 0.0.0.0 to be reachable from other machines (then set an api_key)
port = 8000
api_key = ""  # when set (or NANOPHI_API_KEY), /v1 needs `Authorization: Bearer <key>`
model_name = ""  # the id /v1/models reports; empty = the out_dir's or init_from's name
max_batch = 8  # requests decoded together
max_queue = 32  # requests waiting for a row beyond max_batch; past it, 429
max_tokens_cap = 1024  # the most tokens one request may ask for (also capped by the context)
chat_max_tokens = 256  # a chat request's max_tokens when it gives none
device = "auto"  # 'auto', 'cpu', 'cuda', 'mps'
dtype = "auto"  # 'auto', 'float32', 'bfloat16', 'float16', 'int8' (as in sample.py)
compile = False
# -----------------------------------------------------------------------------

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static", "chat.html")
MAX_BODY_BYTES = 1 << 20  # a request body (prompt and all) over 1 MiB is refused: memory stays bounded
MAX_STOPS = 4  # as OpenAI
MAX_STOP_CHARS = 64


# ---- request bodies ---------------------------------------------------------------------------------
# strict: a string where a number belongs is an error, not quietly converted. extra='forbid': a field we do
# not know is an error, because a client that sends it expects it to do something.

class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: StrictBool = False


class Sampled(BaseModel):
    """Fields both endpoints share."""
    model_config = ConfigDict(extra="forbid", strict=True)
    model: StrictStr | None = None
    max_tokens: StrictInt | None = None
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: StrictInt | None = Field(None, ge=0)  # extension: sample from the k likeliest tokens; 0/None = all
    stop: StrictStr | list[StrictStr] | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    seed: StrictInt | None = None
    n: Literal[1] = 1
    user: StrictStr | None = None
    # accepted only at the value that means "off": anything else would be silently ignored
    presence_penalty: Literal[0, 0.0] = 0
    frequency_penalty: Literal[0, 0.0] = 0
    logit_bias: dict[str, float] | None = Field(None, max_length=0)


class CompletionBody(Sampled):
    prompt: StrictStr | list[StrictInt] = Field(union_mode="left_to_right")
    max_tokens: StrictInt | None = 16  # OpenAI's default
    echo: Literal[False] = False
    logprobs: None = None
    best_of: Literal[1] | None = None
    suffix: None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    role: Literal["system", "user", "assistant"]
    content: StrictStr
    name: StrictStr | None = None


class ChatBody(Sampled):
    messages: Annotated[list[Message], Field(min_length=1)]
    tag: StrictStr | None = None  # extension: the tag for user messages that do not start with one
    max_completion_tokens: StrictInt | None = None


class ApiError(Exception):
    """An answer in OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers

    def response(self) -> JSONResponse:
        kind = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error"}.get(
            self.status, "invalid_request_error" if self.status < 500 else "server_error")
        body = {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


# ---- the app ----------------------------------------------------------------------------------------

class Server:
    """What the endpoints share: the model, the scheduler, the limits."""

    def __init__(self, model: GPT, scheduler: Scheduler, name: str, key: str = "",
                 max_tokens_cap: int = 1024, chat_max_tokens: int = 256):
        self.model, self.scheduler, self.name, self.key = model, scheduler, name, key
        self.block_size = model.config.block_size
        self.max_tokens_cap = max(1, min(max_tokens_cap, self.block_size - 1))
        self.chat_max_tokens = chat_max_tokens
        self.created = int(time.time())

    def check_key(self, request: HttpRequest) -> None:
        if not self.key:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.key.encode()):
            raise ApiError(401, "missing or wrong API key: send the header `Authorization: Bearer <key>`",
                           code="invalid_api_key")

    def max_tokens(self, body: Sampled, default: int) -> int:
        value = body.max_tokens
        if isinstance(body, ChatBody) and body.max_completion_tokens is not None:
            value = body.max_completion_tokens
        value = default if value is None else value
        if not 1 <= value <= self.max_tokens_cap:
            raise ApiError(400, f"max_tokens must be between 1 and {self.max_tokens_cap} (this server's cap "
                                f"within the model's {self.block_size}-token context), got {value}", "max_tokens")
        return value

    def stops(self, body: Sampled) -> tuple[str, ...]:
        stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        if len(stops) > MAX_STOPS or any(not s or len(s) > MAX_STOP_CHARS for s in stops):
            raise ApiError(400, f"stop takes at most {MAX_STOPS} non-empty strings of up to {MAX_STOP_CHARS} "
                                "characters", "stop")
        return tuple(stops)

    def sampler(self, body: Sampled) -> TokenSampler:
        # Every request draws from a generator of its own, so its answer does not depend on its batch mates;
        # without a seed the generator is seeded at random.
        seed = body.seed if body.seed is not None else random.getrandbits(63)
        generator = torch.Generator(device=self.scheduler.device).manual_seed(seed % (1 << 63))
        return TokenSampler(body.temperature, body.top_k or None, body.top_p, 1.0, generator)

    def completion_prompt(self, body: CompletionBody, max_tokens: int) -> tuple[list[int], int]:
        """The prompt's token ids, cut to its last tokens so that the answer fits in the context; and how
        many were dropped from the front."""
        if isinstance(body.prompt, str):
            if not body.prompt:
                raise ApiError(400, "prompt is empty: give some text to continue", "prompt")
            ids = engine.encode(body.prompt, self.model)
        else:
            if not body.prompt:
                raise ApiError(400, "prompt is empty: give some text or token ids to continue", "prompt")
            vocab = self.model.config.vocab_size
            if any(not 0 <= t < vocab for t in body.prompt):
                raise ApiError(400, f"prompt token ids must be between 0 and {vocab - 1}", "prompt")
            ids = list(body.prompt)
        return engine.keep_last(ids, self.block_size - max_tokens)

    def chat_prompt(self, body: ChatBody, max_tokens: int) -> list[int]:
        """The conversation laid out as chat.py lays it out: each past exchange a document of its own
        (question, answer, end-of-text), oldest dropped first while they do not fit, then the last user
        message. System messages are a leading document of their own."""
        if body.messages[-1].role != "user":
            raise ApiError(400, "the last message must be the user's", "messages")
        if not body.messages[-1].content.strip():
            raise ApiError(400, "the last user message is empty", "messages")
        try:
            tag = optional_tag(body.tag or "")
        except UserError as e:
            raise ApiError(400, str(e), "tag")
        conversation = chat.Chat(self.model, engine.Sampling(), tag, max_tokens)
        turn: list[int] = []
        for message in body.messages[:-1]:
            if message.role == "assistant":
                conversation.turns.append(turn + engine.encode(message.content, self.model) + [EOT_ID])
                turn = []
            else:
                if turn:  # two questions in a row: the first stands as a turn without an answer
                    conversation.turns.append(turn + [EOT_ID])
                text = message.content if message.role == "system" else conversation.question(message.content)
                turn = engine.encode(text, self.model)
                if message.role == "system":
                    conversation.turns.append(turn + [EOT_ID])
                    turn = []
        if turn:
            conversation.turns.append(turn + [EOT_ID])
        question = engine.encode(conversation.question(body.messages[-1].content), self.model)
        return conversation.context(question)


def create_app(server: Server) -> FastAPI:
    app = FastAPI(title="NanoPhi", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(ApiError)
    async def api_error(_, e: ApiError):
        return e.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(_, e: RequestValidationError):
        first = e.errors()[0]
        # the field's path (messages.0.role), without pydantic's names for the members of a union (prompt.str)
        where = ".".join(str(p) for p in first.get("loc", ())[1:]
                         if isinstance(p, int) or not ("[" in p or p in ("str", "int", "float", "bool")))
        if first.get("type") == "json_invalid":
            return ApiError(400, "the request body is not valid JSON", code="invalid_json").response()
        if first.get("type") == "extra_forbidden":
            return ApiError(400, f"unknown field '{where}': this server does not support it", where).response()
        return ApiError(400, f"{where or 'body'}: {first.get('msg', 'invalid')}", where or None).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_, e: StarletteHTTPException):
        return ApiError(e.status_code, str(e.detail)).response()

    @app.middleware("http")
    async def guard(request: HttpRequest, call_next):
        try:
            if request.url.path.startswith("/v1"):
                server.check_key(request)
            length = request.headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
                raise ApiError(413, f"the request body is larger than {MAX_BODY_BYTES} bytes")
        except ApiError as e:
            return e.response()
        return await call_next(request)

    @app.get("/")
    async def page():
        return FileResponse(PAGE, media_type="text/html")

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": server.name, "tags": list(TAGS), "block_size": server.block_size,
                "max_tokens_cap": server.max_tokens_cap, "chat_max_tokens": server.chat_max_tokens,
                "auth": bool(server.key), **server.scheduler.load()}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": server.name, "object": "model", "created": server.created,
                                            "owned_by": "nanophi"}]}

    @app.post("/v1/completions")
    async def completions(body: CompletionBody, request: HttpRequest):
        max_tokens = server.max_tokens(body, 16)
        prompt, dropped = server.completion_prompt(body, max_tokens)
        return await answer(request, body, prompt, max_tokens, dropped, "text_completion")

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatBody, request: HttpRequest):
        max_tokens = server.max_tokens(body, min(server.chat_max_tokens, server.max_tokens_cap))
        prompt = server.chat_prompt(body, max_tokens)
        return await answer(request, body, prompt, max_tokens, 0, "chat.completion")

    async def answer(request: HttpRequest, body: Sampled, prompt: list[int], max_tokens: int, dropped: int,
                     kind: str):
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()

        def emit(event: Event) -> None:  # called from the decoding thread
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:  # the loop is gone (server shutting down)
                pass

        job = Request(prompt, max_tokens, server.sampler(body), emit, server.stops(body))
        if not server.scheduler.submit(job):
            raise ApiError(429, "the server is busy (every batch row and queue place is taken): retry shortly",
                           code="server_busy", headers={"Retry-After": "1"})
        ident = ("cmpl-" if kind == "text_completion" else "chatcmpl-") + uuid.uuid4().hex[:24]
        meta = {"id": ident, "created": int(time.time()), "model": server.name}
        headers = {"X-Prompt-Tokens-Dropped": str(dropped)} if dropped else None
        if body.stream:
            usage = body.stream_options is not None and body.stream_options.include_usage
            return StreamingResponse(stream(job, events, meta, kind, usage, dropped), headers=headers,
                                     media_type="text/event-stream")
        text, last = [], None
        try:
            while last is None:
                try:
                    event = await asyncio.wait_for(events.get(), timeout=1.0)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        return None
                    continue
                if event.error:
                    raise ApiError(500, f"generation failed: {event.error}")
                text.append(event.text)
                last = event if event.finish_reason else None
        finally:
            job.cancel()
        content = "".join(text)
        choice = ({"index": 0, "text": content, "logprobs": None} if kind == "text_completion"
                  else {"index": 0, "message": {"role": "assistant", "content": content}, "logprobs": None})
        return JSONResponse({**meta, "object": kind, "choices": [{**choice, "finish_reason": last.finish_reason}],
                             "usage": usage_of(last, dropped)}, headers=headers)

    async def stream(job: Request, events: asyncio.Queue, meta: dict, kind: str, include_usage: bool,
                     dropped: int):
        """Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`. When the client goes
        away, starlette cancels this generator and `finally` frees the request's row."""
        chunk_kind = "text_completion" if kind == "text_completion" else "chat.completion.chunk"

        def chunk(text: str | None, finish: str | None, role: bool = False) -> str:
            if kind == "text_completion":
                choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
            else:
                delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text else {})
                choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            payload = {**meta, "object": chunk_kind, "choices": [choice]}
            if include_usage:
                payload["usage"] = None
            return f"data: {json.dumps(payload)}\n\n"

        try:
            if kind != "text_completion":
                yield chunk(None, None, role=True)
            while True:
                event = await events.get()
                if event.error:
                    error = {"error": {"message": f"generation failed: {event.error}", "type": "server_error",
                                       "param": None, "code": None}}
                    yield f"data: {json.dumps(error)}\n\n"
                    return
                if event.text:
                    yield chunk(event.text, None)
                if event.finish_reason:
                    yield chunk(None, event.finish_reason)
                    if include_usage:
                        payload = {**meta, "object": chunk_kind, "choices": [], "usage": usage_of(event, dropped)}
                        yield f"data: {json.dumps(payload)}\n\n"
                    yield "data: [DONE]\n\n"
                    return
        finally:
            job.cancel()

    return app


def usage_of(event: Event, dropped: int) -> dict:
    usage = {"prompt_tokens": event.prompt_tokens, "completion_tokens": event.completion_tokens,
             "total_tokens": event.prompt_tokens + event.completion_tokens}
    if dropped:
        usage["prompt_tokens_dropped"] = dropped  # the prompt was longer than the context: its start was cut
    return usage


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> None:
    configure(globals(), argv)
    key = api_key or os.environ.get("NANOPHI_API_KEY", "")
    if not 1 <= max_batch <= 256 or max_queue < 0:
        raise UserError(f"--max_batch must be 1..256 and --max_queue >= 0 (got {max_batch}, {max_queue})")
    if not is_loopback(host) and not key:
        print(f"warning: serving on {host} without an API key: anyone who can reach this machine can use it; "
              "set --api_key=... or NANOPHI_API_KEY", file=sys.stderr)
    threads = hardware.set_cpu_threads(idle_only=True)
    model = engine.load_for_inference(init_from, out_dir, device, dtype, compile)
    name = model_name or (os.path.basename(os.path.normpath(out_dir)) if init_from == "resume" else init_from)
    scheduler = Scheduler(model, max_batch, max_queue)
    server = Server(model, scheduler, name, key, max_tokens_cap, chat_max_tokens)
    config = uvicorn.Config(create_app(server), host=host, port=port, log_level="warning",
                            timeout_graceful_shutdown=3)
    http = uvicorn.Server(config)
    shown = f"[{host}]" if ":" in host else host
    print(f"NanoPhi serving {name} ({model.config.block_size}-token context, batch {max_batch}, "
          f"{threads} CPU thread{'s' if threads > 1 else ''}) at http://{shown}:{port}/ "
          f"(API at /v1; Ctrl-C stops)", flush=True)
    try:
        http.run()
    except KeyboardInterrupt:  # uvicorn shuts down gracefully on Ctrl-C, then passes the signal on
        print("stopped", flush=True)
    except SystemExit:  # uvicorn exits when it cannot bind; say so in our one line below
        if http.started:
            raise
    finally:
        scheduler.stop()
    if not http.started:
        raise UserError(f"could not listen on {host}:{port} (in use, or not an address of this machine): "
                        "pick another --port or --host")


if __name__ == "__main__":
    run_main(main)
