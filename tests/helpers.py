"""Plain helpers the tests share (fixtures live in conftest.py): tiny checkpoints and datasets, and running
the scripts as users do."""

import os
import subprocess
import sys
from dataclasses import asdict

import pytest
import torch

import hardware
from tags import TAGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_GPT2 = dict(n_layer=2, n_head=2, n_embd=32, n_positions=64)

# The precision train.py trains in on this CPU (dtype='auto'): bf16 where the CPU has bf16 instructions, else
# fp32. A whole training run in bf16 on a CPU without them multiplies at 1-2 GFLOP/s (a tiny model's step takes
# 500 ms, against 60 in fp32), tests a path no user there takes, and made the suite 20 minutes long on a 2-core
# AVX2 CPU; test_model.py and test_shortlist.py check the bf16 kernels' arithmetic on every CPU.
NATIVE_BF16 = bool(hardware.cpu_has_native_bf16())
CPU_TRAINING_DTYPE = hardware.pick_dtype("cpu", "auto")[0]


def bf16_run(*values):
    """A parametrize case whose training run is in bf16: skipped on a CPU without bf16 instructions."""
    return pytest.param(*values, marks=pytest.mark.skipif(
        not NATIVE_BF16, reason="a bf16 training run on a CPU without bf16 instructions: the float32 case covers it"))


def save_tiny_transformers_gpt2(directory: str, seed: int = 0, vocab_size: int = 50257, **overrides) -> str:
    """Build a tiny random GPT2LMHeadModel with transformers and save it as a local checkpoint directory."""
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab_size, **{**TINY_GPT2, **overrides})
    GPT2LMHeadModel(config).save_pretrained(directory)
    return directory


def save_tiny_checkpoint(model, out_dir: str) -> str:
    """Save model as out_dir/ckpt.pt, laid out as train.py writes it."""
    from checkpoint import checkpoint_path, save_checkpoint
    save_checkpoint({"model": model.state_dict(), "model_args": asdict(model.config), "iter_num": 0,
                     "best_val_loss": 0.0, "config": {}}, checkpoint_path(out_dir))
    return out_dir


def run_script(script: str, *args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a repo script in a fresh Python, with the arguments and stdin a user would give it."""
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], input=stdin, capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout)


def run_in_process(module, argv: list[str], capsys, stderr: bool = False):
    """Run a script's main(argv) in this process and return its stdout (with stderr=True: stdout, stderr);
    its settings (module globals that configure() overwrites) and torch's thread count are put back
    afterwards, so nothing leaks into the tests that follow."""
    from configurator import settings_of
    saved, threads = settings_of(vars(module)), torch.get_num_threads()
    try:
        module.main(argv)
        captured = capsys.readouterr()
        return (captured.out, captured.err) if stderr else captured.out
    finally:
        vars(module).update(saved)
        torch.set_num_threads(threads)



def run_as_user(module, argv: list[str], capsys) -> tuple[int, str, str]:
    """Run a script's main(argv) in this process the way its `__main__` does (errors.run_main: a UserError
    becomes one `error: ...` line on stderr and exit status 1); return (exit status, stdout, stderr). The
    same check as a subprocess, without starting Python and importing torch again. Settings and torch's
    thread count are put back afterwards."""
    from configurator import settings_of
    from errors import run_main
    saved, threads = settings_of(vars(module)), torch.get_num_threads()
    code = 0
    try:
        run_main(lambda: module.main(argv))
    except SystemExit as e:
        code = e.code
    finally:
        vars(module).update(saved)
        torch.set_num_threads(threads)
    captured = capsys.readouterr()
    return code, captured.out, captured.err

def tiny_documents(n: int = 700):
    """Short documents of every tag, regular enough for a 2-layer model to learn in a few dozen steps."""
    words = ["red", "blue", "green", "cat", "dog", "sun", "tree", "ball"]
    for i in range(n):
        tag = TAGS[i % len(TAGS)]
        a, b = i % 13, (i * 7) % 11
        text = {
            "Textbook": f"Chapter {a}: the {words[a % 8]} {words[b % 8]}\n\nThe {words[a % 8]} is {words[b % 8]}.",
            "QA": f"**Question:** what is the {words[a % 8]}?\n**Answer:** it is {words[b % 8]} {i}.",
            "Code": f"def f{i}(x):\n    return x + {a}",
            "Math": f"{a}+{b}={a + b} {b}+{a}={a + b} #{i}",
            "Logic": f"All {words[a % 8]}s are {words[b % 8]}. So this {words[a % 8]} is {words[b % 8]}. {i}",
            "Roleplay": f"Ann: hello {words[a % 8]} {i}\nBob: hello {words[b % 8]}",
            "Excerpt": f"The {words[a % 8]} sat. {i} [Response] {words[b % 8]}",
        }[tag]
        yield tag, f"[{tag}] {text}"


def generated_texts(name: str, n: int = 60) -> list[str]:
    """The texts n calls of one data/mini_generators generator make (a call may make several documents)."""
    import random

    from data.mini_generators import GENERATORS
    rng = random.Random(f"test-{name}")
    out = []
    for _ in range(n):
        made = GENERATORS[name](rng)
        out += [text for _, text in (made if isinstance(made, list) else [made])]
    return out
