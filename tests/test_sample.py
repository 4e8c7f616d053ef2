"""sample.py end to end on tiny checkpoints, and the engine pieces it stands on."""

import os
import subprocess
import sys
import time

import pytest
import torch

import engine
import hardware
import sample
from errors import UserError
from helpers import NATIVE_BF16, run_as_user, run_in_process, run_script
from tokenizer import EOT_ID, get_encoding

SEPARATOR = "---------------"


def greedy_text(model, prompt: str, n: int) -> str:
    ids = engine.encode(prompt)
    out = model.generate(torch.tensor([ids]), n, temperature=0, stop_token=EOT_ID)[0, len(ids):].tolist()
    if EOT_ID in out:
        out = out[:out.index(EOT_ID)]
    return get_encoding().decode(out)


@pytest.mark.slow  # a fresh Python: the run a user makes, end to end
def test_sample_streams_greedy_continuations(tiny_model, tiny_out_dir):
    prompt = "[Math] 1+1=2 2+2=4 3+3="
    r = run_script("sample.py", f"--out_dir={tiny_out_dir}", f"--start={prompt}", "--num_samples=2",
                   "--max_new_tokens=12", "--temperature=0", "--dtype=float32")
    assert r.returncode == 0, r.stderr
    expected = prompt + greedy_text(tiny_model, prompt, 12)
    assert r.stdout == f"{expected}\n{SEPARATOR}\n" * 2


def test_sample_is_reproducible_with_a_seed(tiny_out_dir, capsys):
    args = [f"--out_dir={tiny_out_dir}", "--start=[Textbook] Python", "--num_samples=2", "--max_new_tokens=10",
            "--seed=7"]
    first, second = run_in_process(sample, args, capsys), run_in_process(sample, args, capsys)
    assert first == second
    one, two = first.split(SEPARATOR)[:2]
    assert one.strip() != two.strip()  # samples within a run differ


def test_sample_stops_at_end_of_text(eot_out_dir, capsys):
    code, out, err = run_as_user(sample, [f"--out_dir={eot_out_dir}", "--start=[QA] hi", "--num_samples=1",
                                          "--max_new_tokens=30"], capsys)
    assert code == 0, err
    assert out == f"[QA] hi\n{SEPARATOR}\n"


def test_sample_reads_file_prompts(tiny_out_dir, tmp_path, capsys):
    path = tmp_path / "prompt.txt"
    path.write_text("[Code] def add(a, b):\n", encoding="utf-8")
    code, out, err = run_as_user(sample, [f"--out_dir={tiny_out_dir}", f"--start=FILE:{path}", "--num_samples=1",
                                          "--max_new_tokens=4"], capsys)
    assert code == 0, err
    assert out.startswith("[Code] def add(a, b):\n")
    with pytest.raises(UserError, match="nope.txt not found"):
        run_in_process(sample, [f"--out_dir={tiny_out_dir}", f"--start=FILE:{tmp_path / 'nope.txt'}"], capsys)


def test_long_prompt_keeps_its_last_block_size_tokens(tiny_out_dir, capsys):
    words = " ".join(f"w{i}" for i in range(100))  # > 64 tokens, the tiny model's context
    ids = engine.encode(words)
    assert len(ids) > 64
    code, out, err = run_as_user(sample, [f"--out_dir={tiny_out_dir}", f"--start={words}", "--num_samples=2",
                                          "--max_new_tokens=3"], capsys)
    assert code == 0, err
    assert err.count("keeping its last 64 tokens") == 1  # said once, not per sample
    kept = get_encoding().decode(ids[-64:])
    assert out.startswith(kept) and out.count(kept) == 2


def test_missing_checkpoint_and_bad_flags_are_one_line_errors(tmp_path, tiny_out_dir, capsys):
    for args, message in (([f"--out_dir={tmp_path / 'nothing'}"], "no checkpoint"),
                          ([f"--out_dir={tiny_out_dir}", "--temprature=0.5"], "did you mean --temperature"),
                          ([f"--out_dir={tiny_out_dir}", "--max_new_tokens=many"], "max_new_tokens"),
                          ([f"--out_dir={tiny_out_dir}", "--dtype=float8"], "dtype"),
                          ([f"--out_dir={tiny_out_dir}", "--temperature=-1"], "temperature"),
                          ([f"--out_dir={tiny_out_dir}", "--top_p=0"], "top_p")):
        code, out, err = run_as_user(sample, args, capsys)
        assert code == 1, args
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_malicious_pickle_checkpoint_is_refused(malicious_out_dir, capsys):
    out_dir, marker = malicious_out_dir
    code, out, err = run_as_user(sample, [f"--out_dir={out_dir}", "--max_new_tokens=2"], capsys)
    assert code == 1
    assert "refusing to load" in err and err.count("\n") == 1
    assert not os.path.exists(marker)


def test_encode_reads_the_eot_marker():
    assert engine.encode("a<eot>b") == engine.encode("a<|endoftext|>b")
    assert EOT_ID in engine.encode("a<eot>b")


def test_keep_last():
    assert engine.keep_last([1, 2, 3, 4], 2) == ([3, 4], 2)
    assert engine.keep_last([1, 2], 5) == ([1, 2], 0)


def test_stream_decodes_characters_split_over_tokens(tiny_model, monkeypatch):
    text = "héllo 🙂 wörld"
    tokens = get_encoding().encode(text)

    def fake_generate_stream(idx, max_new_tokens, **kwargs):
        for t in tokens + [EOT_ID, 0]:
            yield torch.tensor([t])

    monkeypatch.setattr(tiny_model, "generate_stream", fake_generate_stream)
    pieces = [piece for _, piece in engine.stream(tiny_model, [1], 50, engine.Sampling())]
    assert "".join(pieces) == text and len(pieces) == len(tokens)  # stops at end-of-text
    with pytest.raises(UserError):
        list(engine.stream(tiny_model, [], 5, engine.Sampling()))


def test_dtype_choice():
    assert engine.resolve_dtype("float32", "cpu") == torch.float32
    expected = torch.bfloat16 if NATIVE_BF16 else torch.float32
    assert engine.resolve_dtype("auto", "cpu") == expected
    with pytest.raises(UserError):
        engine.resolve_dtype("int3", "cpu")


def test_decoding_leaves_busy_cores_alone(monkeypatch):
    before = torch.get_num_threads()
    cores = hardware.cpu_cores()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(hardware, "idle_cores", lambda: 0.2)  # another process holds every core
        assert hardware.set_cpu_threads(idle_only=True) == 1
        monkeypatch.setattr(hardware, "idle_cores", lambda: cores - 0.4)  # idle, give or take a tick
        assert hardware.set_cpu_threads(idle_only=True) == cores
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(2)
        assert hardware.set_cpu_threads(idle_only=True) == 2  # the user's choice stands
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or not os.path.exists("/proc/stat"),
                    reason="needs Linux's CPU affinity and /proc/stat")
def test_idle_cores_sees_a_busy_core_now():
    # on one core of its own choosing, this process sees that core idle less than half the time while a
    # spinning process shares it: a measurement of now, not the load average of the last minute
    core = min(os.sched_getaffinity(0))
    before = os.sched_getaffinity(0)
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"],
                               preexec_fn=lambda: os.sched_setaffinity(0, {core}))
    try:
        os.sched_setaffinity(0, {core})
        time.sleep(0.3)  # let it start spinning
        assert 0.0 <= hardware.idle_cores(window=0.3) < 0.5
    finally:
        spinner.kill()
        spinner.wait()
        os.sched_setaffinity(0, before)
    assert 0.0 <= hardware.idle_cores() <= len(before)


def test_without_out_dir_the_newest_run_is_read(tiny_model, tiny_out_dir, eot_out_dir, tmp_path, monkeypatch,
                                                 capsys):
    # `python train.py config/X.py` then `python sample.py`: the run just trained, announced first
    import shutil
    for name, source, age in (("out-new", tiny_out_dir, 0), ("out-old", eot_out_dir, 3600)):
        (tmp_path / name).mkdir()
        shutil.copy(os.path.join(source, "ckpt.pt"), tmp_path / name / "ckpt.pt")
        os.utime(tmp_path / name / "ckpt.pt", (time.time() - age, time.time() - age))
    monkeypatch.chdir(tmp_path)
    prompt = "[Math] 1+1=2 2+2=4 3+3="
    args = [f"--start={prompt}", "--num_samples=1", "--max_new_tokens=8", "--temperature=0", "--dtype=float32"]
    tiny_sample = f"{prompt}{greedy_text(tiny_model, prompt, 8)}\n{SEPARATOR}\n"
    out, err = run_in_process(sample, args, capsys, stderr=True)
    assert out == tiny_sample
    assert err.splitlines()[0].startswith(f"reading {os.path.join('out-new', 'ckpt.pt')}, the newest")
    os.utime(tmp_path / "out-old" / "ckpt.pt")  # now the other run is the newer: its model answers end-of-text
    out, err = run_in_process(sample, args, capsys, stderr=True)
    assert out == f"{prompt}\n{SEPARATOR}\n" and os.path.join("out-old", "ckpt.pt") in err.splitlines()[0]
    out, err = run_in_process(sample, ["--out_dir=out-new", *args], capsys, stderr=True)  # explicit stays so
    assert out == tiny_sample and err == ""


def test_without_out_dir_or_runs_the_error_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"no out\*/ckpt.pt here: train a model first") as e:
        engine.newest_out_dir("resume", "")
    assert "\n" not in str(e.value)
    assert engine.newest_out_dir("gpt2", "") == "" and engine.newest_out_dir("resume", "mine") == "mine"
