"""train.py end to end, run as users run it (a subprocess with --key=value overrides), on a tiny tagged dataset.

Loss falls; resume equals the uninterrupted run; 2-process DDP (gloo) equals 1 process at the same global
batch; per-tag eval; fp16 with a GradScaler; SIGTERM saves; and each user error is one clear line.
"""

import contextlib
import re
import shutil
import signal
import subprocess
import sys

import pytest
import torch

import hardware
from checkpoint import best_path, checkpoint_path, load_checkpoint, load_model, model_checkpoint_path, save_checkpoint
from helpers import CPU_TRAINING_DTYPE, ROOT, bf16_run
from tags import TAGS

# Every test here runs train.py in a fresh Python (some under torchrun), as users run it: the slow tier.
pytestmark = pytest.mark.slow

TINY = ["--device=cpu", "--dtype=float32", "--compile=False", "--n_layer=2", "--n_head=2", "--n_embd=32",
        "--block_size=32", "--batch_size=4", "--eval_iters=2", "--log_interval=1", "--warmup_iters=2",
        "--learning_rate=3e-3", "--min_lr=3e-4"]


def run_train(out_dir, *args, torchrun: bool = False, check: bool = True, timeout: int = 180):
    command = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"] if torchrun
               else [sys.executable]) + ["train.py", f"--out_dir={out_dir}", *TINY, *args]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"train.py failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def train_until_sigterm(out_dir, *args) -> str:
    """Run train.py as a user would for (nearly) ever, send SIGTERM once it logs iteration 3, and return its
    output after it has exited cleanly."""
    command = [sys.executable, "train.py", f"--out_dir={out_dir}", *TINY, "--max_iters=100000", *args]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if line.startswith("iter 3:"):
            proc.send_signal(signal.SIGTERM)
            break
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, out
    return out


def iteration_losses(stdout: str) -> dict[int, float]:
    return {int(i): float(x) for i, x in re.findall(r"^iter (\d+): loss ([\d.]+)", stdout, re.M)}


def eval_rows(stdout: str) -> list[list[float]]:
    """The eval table's rows: [iter, train, val, per-tag val...]."""
    return [[float(v) for v in line.split("|")] for line in stdout.splitlines()
            if re.match(r"^\s+\d+ \|", line)]


def same_losses_then_weights(tmp_path, runs: dict, iters: int, tolerance: float) -> list[dict]:
    """Assert that two runs (out_dir name -> result) logged the same iterations with losses within tolerance;
    return their saved weights."""
    one, two = (iteration_losses(result.stdout) for result in runs.values())
    assert one.keys() == two.keys() and len(one) == iters
    assert all(abs(one[i] - two[i]) < tolerance for i in one), (one, two)
    return [load_checkpoint(checkpoint_path(str(tmp_path / name)))["model"] for name in runs]


def test_loss_falls_and_eval_reports_every_tag(tmp_path, tiny_data):
    result = run_train(tmp_path, f"--dataset={tiny_data}", "--max_iters=24", "--eval_interval=12")
    header = next(line for line in result.stdout.splitlines() if line.strip().startswith("iter |"))
    assert [c.strip() for c in header.split("|")] == ["iter", "train", "val", *TAGS]
    rows = eval_rows(result.stdout)
    assert [r[0] for r in rows] == [0, 12, 24]
    assert all(len(r) == 3 + len(TAGS) and all(v == v for v in r) for r in rows)  # no NaN: every tag measured
    assert rows[-1][2] < rows[0][2] - 2.0, rows  # val loss falls from ~10.8 (uniform over 50k tokens)
    assert all(last < first for first, last in zip(rows[0][3:], rows[-1][3:]))  # and on every tag
    assert "tokens per iteration: 128" in result.stdout
    assert "precision float32 (set by dtype)" in result.stdout
    etas = re.findall(r"^iter (\d+): .*, eta (\d+)m (\d\d)s$", result.stdout, re.M)  # time left, on every line
    assert etas and len(etas) == len(iteration_losses(result.stdout)) and etas[-1] == ("24", "0", "00"), etas
    assert re.search(r"^trained 24 iterations in \d+m \d\ds$", result.stdout, re.M)
    ckpt = load_checkpoint(checkpoint_path(str(tmp_path)))
    assert ckpt["iter_num"] == 24 and ckpt["best_val_loss"] == pytest.approx(rows[-1][2], abs=1e-4)
    assert {"optimizer", "scaler", "sampler", "rng", "config", "model_args"} <= set(ckpt)


@pytest.mark.parametrize("dtype", ["float32", bf16_run("bfloat16")])  # bfloat16: the CPU's explicit attention path
def test_resume_continues_exactly(tmp_path, tiny_data, dtype):
    schedule = [f"--dataset={tiny_data}", "--eval_interval=3", "--lr_decay_iters=8", "--dropout=0.1",
                f"--dtype={dtype}"]
    whole = run_train(tmp_path / "whole", *schedule, "--max_iters=8")
    run_train(tmp_path / "parts", *schedule, "--max_iters=5")
    resumed = run_train(tmp_path / "parts", *schedule, "--max_iters=8", "--init_from=resume")
    assert "resuming from" in resumed.stdout and "at iteration 5" in resumed.stdout
    expected = {i: v for i, v in iteration_losses(whole.stdout).items() if i > 5}
    assert iteration_losses(resumed.stdout) == expected and len(expected) == 3
    a = load_checkpoint(checkpoint_path(str(tmp_path / "whole")))
    b = load_checkpoint(checkpoint_path(str(tmp_path / "parts")))
    for name, tensor in a["model"].items():  # dropout on: the RNG state was restored too
        assert torch.equal(tensor, b["model"][name]), name


@pytest.mark.parametrize("dtype,compile", [("float32", False), bf16_run("bfloat16", False),
                                           (CPU_TRAINING_DTYPE, True)])
def test_ddp_two_processes_match_one(tmp_path, tiny_data, dtype, compile):
    # the same global batch: 2 accumulation steps in one process, or one on each of two processes; compiled
    # too, as train.py runs on a CPU by default (DDP splits the compiled graph at its gradient buckets)
    if compile and not hardware.compile_pays_off("cpu")[0]:
        pytest.skip("inductor cannot build CPU kernels here")
    common = [f"--dataset={tiny_data}", "--max_iters=6", "--eval_interval=6", "--gradient_accumulation_steps=2",
              f"--dtype={dtype}", f"--compile={compile}"]
    single = run_train(tmp_path / "one", *common, timeout=600)
    ddp = run_train(tmp_path / "two", *common, torchrun=True, timeout=600)
    assert "2 process(es) on cpu" in ddp.stdout
    a, b = same_losses_then_weights(tmp_path, {"one": single, "two": ddp}, iters=6, tolerance=1e-3)
    # a real DDP fault (a missed all-reduce, a wrong split) moves every weight by about the learning rate, 3e-3,
    # and the losses above by far more than 1e-3. In fp32 the weights agree to 1e-4 everywhere. In bf16, matmuls
    # of a 4-row and an 8-row batch (or on another thread count) round differently, and a weight whose gradient
    # is near zero can get its sign flipped, which Adam turns into a whole step the other way (0.005 once on a
    # loaded 2-core AVX2 CPU, 0 when quiet): there at most 1 % of the weights may differ by more than 4e-4
    if dtype == "float32":
        assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a), max((a[k] - b[k]).abs().max() for k in a)
    else:
        moved = sum(int(((a[k] - b[k]).abs() > 4e-4).sum()) for k in a)
        total = sum(a[k].numel() for k in a)
        assert moved <= total // 100, f"{moved} of {total} weights differ by more than 4e-4"


def test_compiled_cpu_training_matches_eager(tmp_path, tiny_data):
    # train.py compiles on CPUs too: the compiled graphs (GELU as x * sigmoid(2u), fused elementwise work)
    # around the eager fused head must train the same model as eager, to bf16 rounding (in the precision
    # train.py picks on this CPU)
    common = [f"--dataset={tiny_data}", "--max_iters=4", "--eval_interval=4", f"--dtype={CPU_TRAINING_DTYPE}"]
    eager = run_train(tmp_path / "eager", *common)
    compiled = run_train(tmp_path / "compiled", *common, "--compile=True", timeout=600)
    can_compile, why = hardware.compile_pays_off("cpu")
    if not can_compile:  # a machine without a C++ compiler trains eager and says why
        assert f"not compiling: {why}" in compiled.stdout
        pytest.skip(why)
    assert "compiling the model on CPU" in compiled.stdout
    a, b = same_losses_then_weights(tmp_path, {"eager": eager, "compiled": compiled}, iters=4, tolerance=2e-3)
    assert a.keys() == b.keys()  # the plain module's names, not the compiled wrapper's
    # Adam steps every weight by about the learning rate (3e-3), whatever its gradient's size, so the
    # weights are compared on average: tiny gradients can differ in sign between the two
    assert all((a[k] - b[k]).abs().mean() < 1e-3 for k in a), max((a[k] - b[k]).abs().mean() for k in a)


def test_pretrained_extended_fp16_scaler_activation_checkpointing(tmp_path, tiny_data, tiny_hf_dir):
    # one run for three paths: a local transformers dir with 64 positions extended to 128, fp16 autocast with
    # a GradScaler (runnable on CPU too), and per-block activation checkpointing
    run_train(tmp_path, f"--dataset={tiny_data}", f"--init_from={tiny_hf_dir}", "--block_size=128",
              "--max_iters=2", "--eval_interval=2", "--dtype=float16", "--gradient_checkpointing=True")
    ckpt = load_checkpoint(checkpoint_path(str(tmp_path)))
    assert ckpt["model_args"]["block_size"] == 128 and ckpt["model_args"]["vocab_size"] == 50257
    assert ckpt["model"]["transformer.wpe.weight"].shape == (128, 32)
    assert ckpt["scaler"]["scale"] > 0 and ckpt["scaler"]["_growth_tracker"] == 2  # two finite fp16 steps


def test_sigterm_saves_a_checkpoint_that_resumes(tmp_path, tiny_data):
    out = train_until_sigterm(tmp_path, f"--dataset={tiny_data}", "--eval_interval=100000")
    assert "stopped at iteration" in out
    stopped_at = load_checkpoint(checkpoint_path(str(tmp_path)))["iter_num"]
    assert stopped_at >= 3
    resumed = run_train(tmp_path, f"--dataset={tiny_data}", "--init_from=resume", f"--max_iters={stopped_at + 1}",
                        "--eval_interval=100000")
    assert list(iteration_losses(resumed.stdout)) == [stopped_at + 1]


def test_resume_in_float16_from_a_float32_checkpoint(tmp_path, tiny_data):
    # a checkpoint without loss scale (bf16 or fp32) continued where fp16 is chosen, say an A100 run on a T4
    run_train(tmp_path, f"--dataset={tiny_data}", "--max_iters=2", "--eval_interval=2")
    resumed = run_train(tmp_path, f"--dataset={tiny_data}", "--max_iters=4", "--eval_interval=2",
                        "--init_from=resume", "--dtype=float16")
    assert "the checkpoint was not trained in float16: its loss scale starts afresh" in resumed.stdout
    ckpt = load_checkpoint(checkpoint_path(str(tmp_path)))
    assert ckpt["iter_num"] == 4 and ckpt["scaler"]["_growth_tracker"] == 2  # two finite fp16 steps


def test_ddp_builds_missing_mini_data_once(tmp_path):
    # torchrun on a fresh clone: one process per machine builds data/mini while the others wait for it
    repo = tmp_path / "clone"
    shutil.copytree(ROOT, repo, ignore=shutil.ignore_patterns(".*", "__pycache__", "tests", "out*", "hf-*", "wandb",
                                                               "mini", "phi", "custom"))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
               f"--out_dir={tmp_path / 'out'}", *TINY, "--gradient_accumulation_steps=2", "--max_iters=1",
               "--eval_interval=1", "--eval_iters=1"]
    result = subprocess.run(command, cwd=repo, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("data/mini is missing: building it now") == 1
    assert load_checkpoint(checkpoint_path(str(tmp_path / "out")))["iter_num"] == 1


def test_checkpoint_killed_mid_write_keeps_the_previous_one(tmp_path):
    path = str(tmp_path / "ckpt.pt")
    script = f"""
import os, signal, torch
from checkpoint import save_checkpoint
save_checkpoint({{"model": {{"w": torch.ones(3)}}, "model_args": {{}}, "iter_num": 1}}, {path!r})
real_save = torch.save
def dying_save(obj, f):
    f.write(b"half a checkpoint")
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = dying_save
save_checkpoint({{"model": {{"w": torch.zeros(3)}}, "model_args": {{}}, "iter_num": 2}}, {path!r})
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == -signal.SIGKILL
    ckpt = load_checkpoint(path)
    assert ckpt["iter_num"] == 1 and torch.equal(ckpt["model"]["w"], torch.ones(3))


def assert_user_error(result, *phrases):
    assert result.returncode == 1, result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    for phrase in phrases:
        assert phrase in last, last


def test_missing_data_names_the_prepare_command(tmp_path):
    assert_user_error(run_train(tmp_path, "--dataset=phi_missing_here", check=False),
                      "not found", "python data/prepare.py")


def test_unknown_init_from(tmp_path, tiny_data):
    assert_user_error(run_train(tmp_path, f"--dataset={tiny_data}", "--init_from=gpt3", check=False),
                      "unknown init_from 'gpt3'", "scratch, resume, gpt2")


def test_unreachable_weights(tmp_path, tiny_data):
    # conftest sets HF_HUB_OFFLINE=1 and the subprocess inherits it: nothing is cached, nothing downloads
    assert_user_error(run_train(tmp_path, f"--dataset={tiny_data}", "--init_from=gpt2-xl", check=False),
                      "could not load GPT-2 weights 'gpt2-xl'")


def test_resume_without_checkpoint(tmp_path, tiny_data):
    assert_user_error(run_train(tmp_path, f"--dataset={tiny_data}", "--init_from=resume", check=False),
                      "no checkpoint at")


def test_out_of_memory_suggests_smaller_batch(tmp_path, tiny_data):
    # 20,000 x 32 x 50,304 fp32 logits are 129 GB. Whether a machine would refuse them depends on its RAM and
    # on overcommit (Linux may grant the memory and kill the process later), so the run gets an address-space
    # limit far below the request and far above what the tiny run needs: the request is refused everywhere.
    import resource
    limit = 48 << 30

    def limit_address_space():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    command = [sys.executable, "train.py", f"--out_dir={tmp_path}", *TINY, f"--dataset={tiny_data}",
               "--batch_size=20000", "--n_layer=1", "--eval_iters=1", "--eval_interval=100"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                            preexec_fn=limit_address_space)
    assert_user_error(result, "out of memory", "--batch_size", "--gradient_checkpointing")


@pytest.mark.parametrize("block_size, phrase", [(0, "block_size must be at least 1"),
                                                (100000, "too long")])
def test_impossible_block_size(tmp_path, tiny_data, block_size, phrase):
    assert_user_error(run_train(tmp_path, f"--dataset={tiny_data}", f"--block_size={block_size}", check=False),
                      phrase)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, tiny_data):
    common = [f"--dataset={tiny_data}", "--eval_interval=2", "--decay_lr=False", "--grad_clip=0"]
    run_train(tmp_path, *common, "--max_iters=2")
    result = run_train(tmp_path, *common, "--max_iters=50", "--init_from=resume", "--learning_rate=1e12",
                       check=False)
    assert_user_error(result, "loss became", "keeps the last good state")
    ckpt = load_checkpoint(checkpoint_path(str(tmp_path)))
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values())


def test_overflowing_gradient_stops_and_keeps_last_good_checkpoint(tmp_path, tiny_data):
    # a finite loss whose gradient overflows: without fp16's scaler to skip it, the step would write inf or NaN
    # into the weights. Crafted from a real checkpoint: ln_f's bias puts every final feature near 10, and an
    # unused (padding) token's head row of 1e33s gives it a logit near 3e35, still finite; the gradient of
    # ln_f's bias is then about 1e33 per entry, and its squared norm overflows.
    common = [f"--dataset={tiny_data}", "--eval_interval=2", "--decay_lr=False", "--always_save_checkpoint=False"]
    run_train(tmp_path, *common, "--max_iters=2")
    path = checkpoint_path(str(tmp_path))
    ckpt = load_checkpoint(path)
    ckpt["model"]["transformer.ln_f.bias"].fill_(10.0)
    for name in ("lm_head.weight", "transformer.wte.weight"):  # tied: the same tensor under both names
        ckpt["model"][name][-1] = 1e33
    save_checkpoint(ckpt, path)
    result = run_train(tmp_path, *common, "--max_iters=4", "--init_from=resume", check=False)
    assert_user_error(result, "gradient norm became inf", "keeps the last good state")
    assert load_checkpoint(path)["iter_num"] == 2


def test_signal_keeps_the_best_weights_apart_from_the_latest(tmp_path, tiny_data):
    # save-on-best (the recipe's setting) stopped between evals: ckpt.pt holds the latest state to resume,
    # best.pt the weights of the best eval, and ckpt.pt's best_val_loss is theirs
    out = train_until_sigterm(tmp_path, f"--dataset={tiny_data}", "--eval_interval=2",
                              "--always_save_checkpoint=False", "--checkpoint_interval=100000")
    assert out.count("saved checkpoint") == 1  # evals every 2 iterations, one write: on the signal
    latest, best = load_checkpoint(checkpoint_path(str(tmp_path))), load_checkpoint(best_path(str(tmp_path)))
    assert best["iter_num"] < latest["iter_num"] and best["iter_num"] % 2 == 0
    assert best["best_val_loss"] == latest["best_val_loss"]
    assert set(best) == {"model", "model_args", "iter_num", "best_val_loss", "config"}  # weights only: small

    import train
    from checkpoint import model_from_checkpoint
    from dataloader import EvalBatches, TaggedData
    data = TaggedData(tiny_data, 32)
    batches = EvalBatches(data, 32, 4, 2, "cpu").batches
    n = len(data.tags)
    assert model_checkpoint_path(str(tmp_path)) == best_path(str(tmp_path))  # what sample.py and export.py read
    best_val = train.evaluate(model_from_checkpoint(best), batches, contextlib.nullcontext(), n)[-1]
    latest_val = train.evaluate(model_from_checkpoint(latest), batches, contextlib.nullcontext(), n)[-1]
    assert best_val == pytest.approx(latest["best_val_loss"], abs=1e-5)  # the best loss is these weights'
    assert latest_val != pytest.approx(latest["best_val_loss"], abs=1e-5)  # not the latest weights'
    sampled = load_model("resume", str(tmp_path))[0]
    assert torch.equal(sampled.transformer.wte.weight, best["model"]["transformer.wte.weight"])


def test_full_state_writes_follow_checkpoint_interval(tmp_path, tiny_data):
    common = [f"--dataset={tiny_data}", "--always_save_checkpoint=False", "--eval_interval=1", "--max_iters=3"]
    rarely = run_train(tmp_path / "rarely", *common, "--checkpoint_interval=100000")
    assert [line for line in rarely.stdout.splitlines() if "saved checkpoint" in line] == [
        f"saved checkpoint at iteration 3 to {checkpoint_path(str(tmp_path / 'rarely'))} (end of run; best.pt is "
        "iteration 3's)"]
    often = run_train(tmp_path / "often", *common, "--checkpoint_interval=0")
    assert re.findall(r"saved checkpoint at iteration (\d+)", often.stdout) == ["1", "2", "3"]


def test_fp16_run_whose_every_step_overflows_stops(tmp_path, tiny_data):
    # a loss scale far too large for any gradient (crafted in a real checkpoint): every scaled gradient is inf
    # in fp16, so the GradScaler would skip every step forever, halving its scale; the run stops instead. The
    # head shortlisted: CPUs without fp16 instructions multiply a 50k-row head slowly, and the scaler is the point
    common = [f"--dataset={tiny_data}", "--dtype=float16", "--eval_interval=1000", "--decay_lr=False",
              "--shortlist_head=True"]
    run_train(tmp_path, *common, "--max_iters=1")
    path = checkpoint_path(str(tmp_path))
    ckpt = load_checkpoint(path)
    ckpt["scaler"]["scale"] = 1e30
    save_checkpoint(ckpt, path)
    result = run_train(tmp_path, *common, "--max_iters=1000", "--init_from=resume", check=False)
    assert_user_error(result, "overflowed 20 steps in a row", "--dtype=bfloat16", "keeps the last good state")
    assert iteration_losses(result.stdout) and max(iteration_losses(result.stdout)) == 20


@pytest.mark.parametrize("args, phrases", [
    (["--eval_iters=0"], ["eval_iters=0 must be at least 1"]),
    (["--offset_heads=1,two"], ["offset_heads must be comma-separated token counts"]),
    (["--offset_heads=1,9999"], ["offset_heads [1, 9999]: at most", "each between 1 and"]),
    (["--induction_head=True", "--offset_heads=2"], ["induction_head needs an offset head looking 1 back"]),
    (["--induction_head=True", "--offset_heads=1"], ["induction_head needs at least 2 layers", "n_embd=32"]),
    (["--number_embeddings=True"], ["number_embeddings needs at least 16 token dims", "raise n_embd"]),
    (["--init_from=/a/path/that/does/not/exist"], ["init_from=/a/path/that/does/not/exist: no such directory"])])
def test_settings_that_cannot_run_are_one_line(tmp_path, tiny_data, args, phrases):
    result = run_train(tmp_path, f"--dataset={tiny_data}", *args, check=False)
    assert_user_error(result, *phrases)
    assert len(result.stderr) < 300


def test_inference_reads_the_same_init_from_dispatch(tmp_path):
    from errors import UserError
    with pytest.raises(UserError, match="no such directory"):
        load_model("./no/such/dir", str(tmp_path))
    with pytest.raises(UserError, match="scratch has no weights"):
        load_model("scratch", str(tmp_path))


def test_induction_head_and_number_embeddings_train_and_resume(tmp_path, tiny_data):
    common = [f"--dataset={tiny_data}", "--n_head=4", "--n_embd=64", "--offset_heads=1,2", "--induction_head=True",
              "--number_embeddings=True", "--eval_interval=2"]
    first = run_train(tmp_path, *common, "--max_iters=2")
    assert "an induction head in layer 1, number tokens built from their digits and value" in first.stdout
    resumed = run_train(tmp_path, *common, "--max_iters=4", "--init_from=resume")  # keeps its trained weights
    assert "resuming from" in resumed.stdout
    losses = iteration_losses(first.stdout) | iteration_losses(resumed.stdout)
    assert sorted(losses) == [1, 2, 3, 4] and all(0 < v < 20 for v in losses.values())
