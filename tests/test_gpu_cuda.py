"""The CUDA path on a real GPU (skipped without one; bench/gpu_check.sh runs these first on a GPU machine).

Each checks on the device what tests/test_gpu_path.py can only check on a CPU: set_device with the
device string train.py uses, autocast's CUDA op lists (not the CPU's) and the LM head's saved tensors, the
eval's float64 sums, the compile and peak decisions for this GPU, and the memory plan against a real step.
"""

import contextlib

import pytest
import torch

import hardware
from model import GPT, GPTConfig
from train import evaluate

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_train_pys_device_string_sets_the_device():
    for requested in ("auto", "cuda"):
        dev = hardware.pick_device(requested)
        torch.cuda.set_device(dev)  # the call that crashed every single-GPU run with a bare "cuda"
        assert torch.cuda.current_device() == torch.device(dev).index


def test_this_gpus_decisions_are_stated():
    dev = hardware.pick_device("auto")
    name, capability = torch.cuda.get_device_name(dev), torch.cuda.get_device_capability(dev)
    dtype, why = hardware.pick_dtype(dev, "auto")
    use_compile, why_compile = hardware.compile_pays_off(dev)
    peak = hardware.PeakFlops(dev, hardware.DTYPES[dtype])
    print(f"{name}, capability {capability}: {dtype} ({why}); compile {use_compile} ({why_compile}); "
          f"peak {peak.flops / 1e12:.0f} TFLOP/s ({peak.describe()})")
    assert use_compile == (capability >= (7, 0))
    if peak.datasheet:  # a data-sheet peak is an upper bound of what a matmul reaches
        measured = hardware.measure_peak_flops(dev, hardware.DTYPES[dtype], min_seconds=0.2)
        print(f"measured {measured / 1e12:.0f} TFLOP/s = {measured / peak.datasheet:.0%} of the data sheet")
        assert measured < 1.05 * peak.datasheet


def test_lm_head_under_cuda_autocast_saves_no_fp32_logits():
    dev = hardware.pick_device("auto")
    dtype = hardware.DTYPES[hardware.pick_dtype(dev, "auto")[0]]
    B, T, V = 4, 256, 50304
    model = GPT(GPTConfig(block_size=T, vocab_size=V, n_layer=2, n_head=4, n_embd=128)).to(dev)
    x, y = torch.randint(0, 50257, (B, T), device=dev), torch.randint(0, 50257, (B, T), device=dev)
    saved = []

    def pack(t):
        saved.append((t.dtype, t.numel()))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cuda", dtype=dtype):
            _, loss = model(x, y)
    assert not [s for s in saved if s[0] == torch.float32 and s[1] >= B * T * V], saved
    loss.backward()
    _, reference = model(x, y)
    assert loss.item() == pytest.approx(reference.item(), abs=0.02)


def test_eval_sums_in_float64_on_the_gpu():
    dev = hardware.pick_device("auto")
    model = GPT(GPTConfig(block_size=32, vocab_size=512, n_layer=1, n_head=2, n_embd=32)).to(dev)
    x = torch.randint(0, 512, (2, 32), device=dev)
    tags = torch.zeros_like(x)
    batches = {"train": [(x, x, tags)], "val": [(x, x, tags)], "tags": [(x, x, tags)]}
    means = evaluate(model, batches, contextlib.nullcontext(), 1)
    assert means[0] == pytest.approx(means[1]) == pytest.approx(means[2])


def test_memory_plan_against_a_real_step():
    # gpt2-medium's shape, one 4096-token micro-batch, a full AdamW step: the plan that decides activation
    # checkpointing should be the right size (printed either way, for docs/gpu.md)
    dev = hardware.pick_device("auto")
    dtype = hardware.pick_dtype(dev, "auto")[0]
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(dev)
    model = GPT(GPTConfig(block_size=4096, vocab_size=50304, n_layer=24, n_head=16, n_embd=1024)).to(dev)
    optimizer = model.configure_optimizers(0.1, 1e-4, (0.9, 0.95), "cuda")
    x = torch.randint(0, 50257, (1, 4096), device=dev)
    for _ in range(2):  # the second step has AdamW's state allocated
        with hardware.autocast(dev, dtype):
            _, loss = model(x, x)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    measured = torch.cuda.max_memory_allocated(dev)
    planned = hardware.training_memory_bytes(model.get_num_params(non_embedding=False), 24, 1024, 50304, 4096,
                                             dtype, checkpointing=False)
    print(f"1 x 4096 gpt2-medium step ({dtype}, eager): measured {measured / 2**30:.1f} GiB, "
          f"planned {planned / 2**30:.1f} GiB")
    assert 0.5 * planned < measured < 1.5 * planned
