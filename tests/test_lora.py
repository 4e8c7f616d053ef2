"""LoRA (lora.py) through train.py, sample.py and export.py as users run them, on a tiny GPT-2 base.

LoRA training lowers the loss and changes only the adapters; resume is exact; the adapters exported with
--adapters_only load with peft on transformers' GPT-2 and give our merged model's greedy tokens; a changed
base is refused in one line; 8-bit AdamW off CUDA is one clear error; and the memory planner's advice.
"""

import os
import shutil

import pytest
import torch

import hardware
import lora
import memory
import optimizers
from checkpoint import checkpoint_path, load_checkpoint, model_from_checkpoint
from helpers import CPU_TRAINING_DTYPE, run_script as _run_script, save_tiny_transformers_gpt2
from errors import UserError
from model import GPT, GPTConfig
from test_train import iteration_losses, run_train as _run_train

SLOW_START = 600  # seconds: a fresh Python importing peft (and bitsandbytes) can take minutes on a busy machine


def run_train(*args, **kwargs):
    return _run_train(*args, timeout=SLOW_START, **kwargs)


def run_script(*args):
    return _run_script(*args, timeout=SLOW_START)

BASE = dict(n_positions=32, initializer_range=0.3)
LORA = ["--lora_rank=4", "--lora_alpha=8", "--learning_rate=1e-2", "--min_lr=1e-3", "--eval_interval=4"]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> str:
    """A tiny random transformers GPT-2 of its own (a test below overwrites one). Its weights are drawn wider
    than GPT-2's init (std 0.3, not 0.02): at 32 wide, a default-init frozen LM head spans logits too narrow
    for any adapter to move the loss much, as the head of a pretrained model does not."""
    return save_tiny_transformers_gpt2(str(tmp_path_factory.mktemp("lora-base")), **BASE)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_data, base_dir):  # noqa: F811
    out = tmp_path_factory.mktemp("lora-run")
    result = run_train(out, f"--dataset={tiny_data}", f"--init_from={base_dir}", *LORA, "--max_iters=16",
                       "--lora_dropout=0.1")
    return str(out), result


@pytest.mark.slow
def test_lora_lowers_the_loss_and_trains_only_the_adapters(lora_run, base_dir):
    out, result = lora_run
    assert "LoRA r=4 alpha=8.0 on c_attn,c_proj,c_fc" in result.stdout and "memory plan: ~" in result.stdout
    losses = iteration_losses(result.stdout)
    assert sum(list(losses.values())[-4:]) / 4 < sum(list(losses.values())[:4]) / 4 - 0.5, losses
    ckpt = load_checkpoint(checkpoint_path(out))
    assert ckpt["model"] and all(".lora_A." in k or ".lora_B." in k for k in ckpt["model"]), list(ckpt["model"])
    assert ckpt["lora"]["base"]["path"] == os.path.abspath(base_dir)
    # the base inside the trained model is the untouched base: rebuild it with live adapters and compare
    trained = model_from_checkpoint(ckpt, merged=False)
    base = GPT.from_pretrained(base_dir)
    base.set_block_size(32)
    base_weights = base.state_dict()
    for name, tensor in trained.state_dict().items():
        if "lora_" not in name:
            assert torch.equal(tensor, base_weights[name.replace(".base_layer", "")]), name
    assert any(t.abs().sum() > 0 for k, t in ckpt["model"].items() if ".lora_B." in k)  # B starts at zero
    # what decoding loads: base and adapters merged into plain Linear layers, the same function
    merged = model_from_checkpoint(ckpt).eval()
    trained.eval()
    assert not any("lora_" in k for k in merged.state_dict())
    idx = torch.randint(0, 50257, (2, 16))
    with torch.no_grad():
        assert torch.allclose(merged(idx, all_logits=True)[0], trained(idx, all_logits=True)[0], atol=1e-4)


@pytest.mark.slow
def test_lora_resume_continues_exactly(tmp_path, tiny_data, base_dir):  # noqa: F811
    schedule = [f"--dataset={tiny_data}", f"--init_from={base_dir}", *LORA, "--lr_decay_iters=8",
                "--eval_interval=3", "--lora_dropout=0.1", f"--dtype={CPU_TRAINING_DTYPE}"]
    whole = run_train(tmp_path / "whole", *schedule, "--max_iters=8")
    run_train(tmp_path / "parts", *schedule, "--max_iters=5")
    resumed = run_train(tmp_path / "parts", *schedule, "--max_iters=8", "--init_from=resume")
    assert "at iteration 5" in resumed.stdout and "LoRA r=4" in resumed.stdout
    expected = {i: v for i, v in iteration_losses(whole.stdout).items() if i > 5}
    assert iteration_losses(resumed.stdout) == expected and len(expected) == 3
    a = load_checkpoint(checkpoint_path(str(tmp_path / "whole")))
    b = load_checkpoint(checkpoint_path(str(tmp_path / "parts")))
    assert a["model"].keys() == b["model"].keys()
    for name, tensor in a["model"].items():  # lora dropout on: the RNG state was restored too
        assert torch.equal(tensor, b["model"][name]), name


@pytest.mark.slow
def test_adapters_export_loads_in_peft_and_decodes_as_ours(lora_run, base_dir, tmp_path):
    from peft import PeftModel
    from transformers import GPT2LMHeadModel
    out, _ = lora_run
    adapters = str(tmp_path / "adapters")
    r = run_script("export.py", f"--out_dir={out}", f"--hf_dir={adapters}", "--adapters_only=True")
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(adapters)) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    hf = PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(base_dir), adapters).eval()
    ours = model_from_checkpoint(load_checkpoint(checkpoint_path(out))).eval()
    prompt = torch.tensor([[50256, 464, 3290, 318]])
    theirs = hf.generate(prompt, do_sample=False, max_new_tokens=12, min_new_tokens=12, pad_token_id=50256)
    assert ours.generate(prompt, 12, temperature=0).tolist() == theirs.tolist()
    # and a full fine-tune's checkpoint has no adapters to export: one line
    with pytest.raises(UserError, match="needs a LoRA run"):
        lora.export_adapters({"model": {}, "model_args": {}}, str(tmp_path / "none"))


@pytest.mark.slow
def test_a_changed_base_is_refused_in_one_line(tmp_path, tiny_data):  # noqa: F811
    base = save_tiny_transformers_gpt2(str(tmp_path / "base"), **BASE)
    run_train(tmp_path / "run", f"--dataset={tiny_data}", f"--init_from={base}", *LORA, "--max_iters=2")
    save_tiny_transformers_gpt2(base, seed=1, **BASE)  # another model under the same path
    r = run_script("sample.py", f"--out_dir={tmp_path / 'run'}", "--start=hi", "--max_new_tokens=2")
    errors = [line for line in r.stderr.splitlines() if "error" in line.lower()]  # (transformers' load bar aside)
    assert r.returncode == 1 and len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    assert errors[0].startswith("error: base mismatch:") and "give them the base they were trained on" in errors[0]
    r = run_train(tmp_path / "run", f"--dataset={tiny_data}", "--max_iters=4", "--init_from=resume", check=False)
    assert r.returncode == 1 and "error: base mismatch:" in r.stderr
    shutil.rmtree(base)
    r = run_script("sample.py", f"--out_dir={tmp_path / 'run'}", "--start=hi", "--max_new_tokens=2")
    assert r.returncode == 1 and "base" in r.stderr and "is gone" in r.stderr, r.stderr


@pytest.mark.slow
def test_init_from_a_run_keeps_weights_and_starts_a_fresh_schedule(tmp_path, tiny_data):  # noqa: F811
    run_train(tmp_path / "first", f"--dataset={tiny_data}", "--max_iters=6", "--eval_interval=6")
    second = run_train(tmp_path / "second", f"--dataset={tiny_data}", f"--init_from={tmp_path / 'first'}",
                       "--max_iters=2", "--eval_interval=2")
    first_ckpt = load_checkpoint(checkpoint_path(str(tmp_path / "first")))
    rows = [line for line in second.stdout.splitlines() if line.strip().startswith("0 |")]
    assert rows and "iter 1:" in second.stdout  # iteration numbers start again
    assert f"{first_ckpt['best_val_loss']:7.4f}" in rows[0]  # the first eval sees the first run's weights


def test_adamw8bit_off_cuda_is_one_clear_error():
    model = GPT(GPTConfig(block_size=8, vocab_size=64, n_layer=1, n_head=1, n_embd=8))
    with pytest.raises(UserError, match=r"optimizer='adamw8bit' needs a CUDA GPU .* use --optimizer=adamw"):
        optimizers.build(model, "adamw8bit", 0.1, 1e-3, (0.9, 0.95), "cpu")
    with pytest.raises(UserError, match="use adamw or adamw8bit"):
        optimizers.build(model, "sgd", 0.1, 1e-3, (0.9, 0.95), "cpu")


def test_adapters_hold_a_half_precision_base_and_fp32_adapters():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=8, vocab_size=64, n_layer=1, n_head=2, n_embd=16))
    settings = dict(rank=2, alpha=4.0, dropout=0.0, targets="c_attn,c_fc")
    model, info = lora.prepare(model, "scratch", None, settings, torch.bfloat16)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert set(trainable) == {f"transformer.h.0.{m}.lora_{ab}.default.weight" for m in ("attn.c_attn", "mlp.c_fc")
                              for ab in "AB"}
    assert all(p.dtype == torch.float32 for p in trainable.values())
    assert model.transformer.h[0].attn.c_attn.base_layer.weight.dtype == torch.bfloat16
    assert model.lm_head.weight.dtype == torch.bfloat16 and model.transformer.wpe.weight.dtype == torch.float32
    assert info["settings"]["targets"] == ["c_attn", "c_fc"] and len(info["base"]["sha256"]) == 64
    with pytest.raises(UserError, match="name no layer"):
        lora.add_adapters(GPT(GPTConfig(block_size=8, vocab_size=64, n_layer=1, n_head=1, n_embd=8)),
                          dict(settings, targets="q_proj"))


def test_planner_fits_gpt2_xl_lora_in_16gb_and_advises_on_out_of_memory():
    xl = memory.Shape.gpt2("gpt2-xl")
    plan = memory.Plan(xl, 4, 1024, lora_rank=16, gradient_checkpointing=True, dtype="float16")
    assert plan.fits(16e9)
    full = memory.Plan(xl, 4, 1024, dtype="float16", device="cuda", capacity=16e9)
    assert not full.fits(16e9)
    advice = full.advice()
    assert "--lora_rank=16 --gradient_checkpointing=True" in advice and "40.0" not in advice
    with pytest.raises(UserError, match="out of memory with batch_size=4 .* the planner estimates"):
        with hardware.explain_out_of_memory(4, 1024, advice):
            raise torch.OutOfMemoryError("CUDA out of memory")
