"""serve.py as clients meet it: a real uvicorn server on 127.0.0.1 (a free port) with a tiny model, driven by
the openai client, raw HTTP and lm-eval; bad input, disconnects, a full queue, and a scripted load."""

import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

import engine
from conftest import save_tiny_transformers_gpt2
from helpers import ROOT, run_script, save_tiny_checkpoint
from model import GPT

PROMPT = "[Math] 1+1=2 2+2=4 3+3="


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """A serve.py process; url is its base URL."""

    def __init__(self, out_dir: str, *args: str, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "serve.py"), f"--out_dir={out_dir}",
                                      f"--port={self.port}", "--dtype=float32", *args], cwd=ROOT,
                                     env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 240  # a busy shared machine can take minutes
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve.py exited: {self.proc.stderr.read()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        self.proc.kill()
        raise RuntimeError("serve.py did not start in 240 s")

    def health(self) -> dict:
        return httpx.get(self.url + "/health", timeout=5).json()

    def rss_mib(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

    def wait_idle(self, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            health = self.health()
            if (health["running"] == 0 and health["waiting"] == 0) or time.monotonic() > deadline:
                return health
            time.sleep(0.05)

    def stop(self) -> tuple[int, str, str]:
        """Ctrl-C, as a user stops it; (exit status, stdout, stderr)."""
        self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, out, err


@pytest.fixture(scope="session")
def serve_out_dir(tmp_path_factory) -> str:
    """A tiny random model with room for long answers (512 positions), so requests overlap in time."""
    hf = save_tiny_transformers_gpt2(str(tmp_path_factory.mktemp("tiny-serve-hf")), n_positions=512)
    return save_tiny_checkpoint(GPT.from_pretrained(hf).eval(), str(tmp_path_factory.mktemp("out-serve")))


@pytest.fixture(scope="session")
def server(serve_out_dir):
    served = Served(serve_out_dir, "--max_batch=8", "--max_queue=16", "--max_tokens_cap=400")
    yield served
    status, out, err = served.stop()
    assert status == 0, err  # Ctrl-C is a clean stop
    assert f"at http://127.0.0.1:{served.port}/" in out


def client(server):
    import openai
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def complete(server, **body) -> httpx.Response:
    return httpx.post(server.url + "/v1/completions", json=body, timeout=180)


# ---- the openai client ------------------------------------------------------------------------------

def test_openai_client_streams_a_completion_and_a_chat_answer(server):
    api = client(server)
    assert [m.id for m in api.models.list().data] == ["out-serve0"]
    pieces, finish = [], None
    for chunk in api.completions.create(model="x", prompt=PROMPT, max_tokens=12, temperature=0, stream=True):
        pieces.append(chunk.choices[0].text)
        finish = chunk.choices[0].finish_reason or finish
    whole = api.completions.create(model="x", prompt=PROMPT, max_tokens=12, temperature=0)
    assert "".join(pieces) == whole.choices[0].text and len(pieces) > 1
    assert finish == whole.choices[0].finish_reason
    if finish == "length":
        assert whole.usage.completion_tokens == 12
    n = len(engine.encode(PROMPT))
    assert whole.usage.prompt_tokens == n and whole.usage.total_tokens == n + whole.usage.completion_tokens

    chunks = list(api.chat.completions.create(model="x", messages=[{"role": "user", "content": "2+2="}],
                                              max_tokens=10, stream=True, seed=3,
                                              stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage.completion_tokens >= 1 and chunks[-2].choices[0].finish_reason in ("stop", "length")
    answer = api.chat.completions.create(model="x", messages=[{"role": "user", "content": "2+2="}],
                                         max_tokens=10, seed=3)
    assert answer.choices[0].message.content == text  # the same seed, the same answer, streamed or not


def test_stream_ends_with_done_and_stop_strings_cut(server):
    free = complete(server, prompt=PROMPT, max_tokens=30, temperature=0).json()["choices"][0]["text"]
    assert len(free) > 4
    stop = free[3:5]
    with httpx.stream("POST", server.url + "/v1/completions", timeout=60,
                      json={"prompt": PROMPT, "max_tokens": 30, "temperature": 0, "stop": [stop], "stream": True}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == free[:free.index(stop)]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_greedy_answer_equals_sample_py(server, serve_out_dir):
    r = run_script("sample.py", f"--out_dir={serve_out_dir}", f"--start={PROMPT}", "--num_samples=1",
                   "--max_new_tokens=40", "--temperature=0", "--dtype=float32")
    assert r.returncode == 0, r.stderr
    expected = r.stdout.removeprefix(PROMPT).removesuffix("\n---------------\n")
    got = complete(server, prompt=PROMPT, max_tokens=40, temperature=0).json()["choices"][0]["text"]
    assert got == expected


def test_seeded_answers_do_not_depend_on_the_batch(server):
    body = dict(prompt="[Code] def add(a, b):", max_tokens=40, temperature=1.0, top_k=50, seed=11)
    alone = complete(server, **body).json()["choices"][0]["text"]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        noise = [pool.submit(complete, server, prompt="Hello", max_tokens=60, temperature=1.0) for _ in range(5)]
        together = pool.submit(complete, server, **body)
        assert together.result().json()["choices"][0]["text"] == alone
        assert all(f.result().status_code == 200 for f in noise)


# ---- errors -----------------------------------------------------------------------------------------

BAD = [  # (body, the field the error should name or None)
    ({"prompt": ""}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": [-1]}, "prompt"),
    ({"prompt": "hi", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "hi", "max_tokens": 401}, "max_tokens"),
    ({"prompt": "hi", "max_tokens": "5"}, "max_tokens"),
    ({"prompt": "hi", "temperature": -0.1}, "temperature"),
    ({"prompt": "hi", "temperature": "hot"}, "temperature"),
    ({"prompt": "hi", "top_p": 0}, "top_p"),
    ({"prompt": "hi", "top_k": -1}, "top_k"),
    ({"prompt": "hi", "stream": "yes"}, "stream"),
    ({"prompt": "hi", "n": 2}, "n"),
    ({"prompt": "hi", "logprobs": 1}, "logprobs"),
    ({"prompt": "hi", "echo": True}, "echo"),
    ({"prompt": "hi", "frequency_penalty": 0.5}, "frequency_penalty"),
    ({"prompt": "hi", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"prompt": "hi", "stop": [""]}, "stop"),
    ({"prompt": "hi", "prompt_file": "/etc/passwd"}, "prompt_file"),
    ({"prompt": 5}, "prompt"),
    ({}, "prompt"),
]
BAD_CHAT = [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "assistant", "content": "hi"}]}, "messages"),
    ({"messages": [{"role": "user", "content": ""}]}, "messages"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": "hi"}], "tag": "Poetry"}, "tag"),
    ({"messages": "hi"}, "messages"),
]


def assert_openai_error(response: httpx.Response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param, error
    return error


@pytest.mark.parametrize("body,param", BAD)
def test_bad_completions_get_a_400_in_openai_shape(server, body, param):
    assert_openai_error(complete(server, **body), 400, param)


@pytest.mark.parametrize("body,param", BAD_CHAT)
def test_bad_chats_get_a_400(server, body, param):
    assert_openai_error(httpx.post(server.url + "/v1/chat/completions", json=body, timeout=30), 400, param)


def test_malformed_json_unknown_route_and_big_body(server):
    r = httpx.post(server.url + "/v1/completions", content=b'{"prompt": "hi",', timeout=30,
                   headers={"Content-Type": "application/json"})
    assert assert_openai_error(r, 400)["code"] == "invalid_json"
    assert_openai_error(httpx.get(server.url + "/v1/nothing", timeout=30), 404)
    assert_openai_error(complete(server, prompt="x" * (1 << 20)), 413)


def test_a_prompt_longer_than_the_context_keeps_its_last_tokens(server):
    prompt = "one two " * 400
    dropped = len(engine.encode(prompt)) - (512 - 12)  # 512 positions, 12 of them for the answer
    r = complete(server, prompt=prompt, max_tokens=12, temperature=0)
    assert r.status_code == 200
    usage = r.json()["usage"]
    assert usage["prompt_tokens"] == 500 and usage["prompt_tokens_dropped"] == dropped > 0
    assert r.headers["X-Prompt-Tokens-Dropped"] == str(dropped)


def test_chat_history_is_laid_out_as_chat_py_does(server):
    """Old turns drop out first: a long history still gets an answer, and a tag leads the question."""
    long = [{"role": "user", "content": "tell me more " * 60}, {"role": "assistant", "content": "ok " * 60}] * 6
    r = httpx.post(server.url + "/v1/chat/completions", timeout=60,
                   json={"messages": [{"role": "system", "content": "Be brief."}, *long,
                                      {"role": "user", "content": "2+2="}], "tag": "math", "max_tokens": 8})
    assert r.status_code == 200, r.text
    assert 0 < r.json()["usage"]["prompt_tokens"] <= 512 - 8


# ---- concurrency and faults -------------------------------------------------------------------------

def test_a_client_that_disconnects_frees_its_row(server):
    with httpx.stream("POST", server.url + "/v1/completions", timeout=60,
                      json={"prompt": "Hello", "max_tokens": 400, "temperature": 1.0, "stream": True}) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
        assert server.health()["running"] == 1
    health = server.wait_idle(timeout=5)
    assert health["running"] == 0 and health["waiting"] == 0


def test_a_full_queue_answers_429_with_retry_after(server):
    """8 rows + 16 queue places: of 40 long requests at once, some are refused, the rest answered."""
    def one(_):
        return complete(server, prompt="Hello", max_tokens=150, temperature=1.0, top_k=8, seed=1)

    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        responses = list(pool.map(one, range(40)))
    busy = [r for r in responses if r.status_code == 429]
    assert busy and all(r.headers["Retry-After"] == "1" for r in busy)
    assert_openai_error(busy[0], 429)
    answered = [r for r in responses if r.status_code == 200]
    assert len(answered) + len(busy) == 40 and len(answered) >= 24
    assert len({r.json()["choices"][0]["text"] for r in answered}) == 1  # same seed, same answer, any batch


@pytest.mark.slow
def test_scripted_load_with_bad_and_vanishing_clients(server):
    """300 requests from 16 clients: good ones (checked against answers given alone), each bad input, and
    clients that disconnect mid-stream. No 5xx, every good answer right, the server healthy and its memory
    flat afterwards."""
    goods = [dict(prompt=f"[Math] {i}+{i}=", max_tokens=20 + 5 * i, temperature=0.0 if i % 2 else 0.9, seed=i,
                  top_k=0 if i % 3 else 20) for i in range(6)]
    expected = [complete(server, **g).json()["choices"][0]["text"] for g in goods]

    def vanish(i: int) -> str:
        with httpx.stream("POST", server.url + "/v1/chat/completions", timeout=60,
                          json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 300,
                                "stream": True}) as r:
            for k, _ in enumerate(r.iter_lines()):
                if k == i % 4 + 1:
                    break
        return "gone"

    def act(i: int) -> str:
        kind = i % 5
        if kind in (0, 1, 2):
            g = goods[i % len(goods)]
            if i % 2:  # streamed
                with httpx.stream("POST", server.url + "/v1/completions", json={**g, "stream": True},
                                  timeout=60) as r:
                    assert r.status_code == 200
                    lines = [line for line in r.iter_lines() if line]
                assert lines[-1] == "data: [DONE]"
                text = "".join(json.loads(line[6:])["choices"][0]["text"] for line in lines[:-1])
            else:
                r = complete(server, **g)
                assert r.status_code == 200, r.text
                text = r.json()["choices"][0]["text"]
            assert text == expected[i % len(goods)]
            return "good"
        if kind == 3:
            body, _ = BAD[i % len(BAD)] if i % 2 else BAD_CHAT[i % len(BAD_CHAT)]
            path = "/v1/completions" if i % 2 else "/v1/chat/completions"
            r = httpx.post(server.url + path, json=body, timeout=30)
            assert 400 <= r.status_code < 500, r.text
            return "bad"
        return vanish(i)

    for i in range(40):  # warm up: allocator pools, tokenizer caches
        act(i)
    before = server.rss_mib()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(act, range(300)))
    assert outcomes.count("good") == 180 and outcomes.count("bad") == 60 and outcomes.count("gone") == 60
    health = server.wait_idle(timeout=10)
    assert health["status"] == "ok" and health["running"] == 0 and health["waiting"] == 0
    assert server.rss_mib() - before < 40, (before, server.rss_mib())
    assert complete(server, **goods[1]).json()["choices"][0]["text"] == expected[1]


# ---- the key, the address, lm-eval ------------------------------------------------------------------

@pytest.mark.slow
def test_api_key_and_the_warning_for_open_addresses(serve_out_dir):
    served = Served(serve_out_dir, env={"NANOPHI_API_KEY": "s3cret"})
    try:
        assert_openai_error(complete(served, prompt="hi"), 401)
        r = httpx.post(served.url + "/v1/completions", json={"prompt": "hi", "max_tokens": 2}, timeout=30,
                       headers={"Authorization": "Bearer wrong"})
        assert_openai_error(r, 401)
        r = httpx.post(served.url + "/v1/completions", json={"prompt": "hi", "max_tokens": 2}, timeout=30,
                       headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200
        assert httpx.get(served.url + "/health", timeout=5).json()["auth"] is True  # the page asks for the key
        # all addresses, on a port taken by the server above: the warning, then a one-line bind error
        r = run_script("serve.py", f"--out_dir={serve_out_dir}", "--host=0.0.0.0", f"--port={served.port}")
        assert "warning: serving on 0.0.0.0 without an API key" in r.stderr
        assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith("error: could not listen")
    finally:
        served.stop()


@pytest.mark.slow
def test_lm_eval_local_completions_runs_a_local_task(server, tmp_path):
    rows = [{"question": f"{a}+{a}=", "answer": str(2 * a)} for a in range(1, 6)]
    (tmp_path / "data.json").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "tiny_math.yaml").write_text(f"""task: nanophi_tiny_math
dataset_path: json
dataset_kwargs:
  data_files:
    test: {tmp_path / 'data.json'}
test_split: test
output_type: generate_until
doc_to_text: "[Math] {{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 8
  temperature: 0
metric_list:
  - metric: exact_match
""")
    out = tmp_path / "results"
    r = subprocess.run([sys.executable, "-m", "lm_eval", "--model", "local-completions", "--model_args",
                        f"model=nanophi,base_url={server.url}/v1/completions,tokenizer_backend=none,"
                        "tokenized_requests=False,num_concurrent=4,max_retries=1",
                        "--tasks", "nanophi_tiny_math", "--include_path", str(tmp_path),
                        "--output_path", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"]["nanophi_tiny_math"]
    assert 0.0 <= results["exact_match,none"] <= 1.0
