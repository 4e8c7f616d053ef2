"""The CUDA path's decisions, tested on a CPU: the device string every CUDA setup step gets, the eval that
every DDP rank must agree on, the LM head's memory, the memory plan, compile's capability floor, data-sheet
peaks by exact GPU name, the benchmark's out-of-memory line. Where torch without a GPU cannot answer
(is_available, device_count, capability), those are set; everything else is torch's own logic.
"""

import contextlib
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch._utils import _get_device_index

import hardware
from configurator import read_config_file
from dataloader import EvalBatches, TaggedData
from data.binwriter import write_dataset
from errors import UserError
from model import GPT, GPTConfig
from helpers import tiny_documents
from train import evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- defect 1: torch.cuda.set_device needs an index ---------------------------------------------------------

@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_torch_cuda_set_device_refuses_a_device_without_index():
    # torch.cuda.set_device(d) is `_get_device_index(d)` (optional=False), then the driver call: a bare "cuda"
    # fails before any GPU is touched, which is why pick_device must never return one
    with pytest.raises(ValueError, match="specified index"):
        _get_device_index("cuda")


@pytest.mark.parametrize("device, local_rank, expected", [
    ("auto", 0, "cuda:0"), ("auto", 1, "cuda:1"),  # one GPU run; torchrun's second process
    ("cuda", 0, "cuda:0"), ("cuda", 1, "cuda:1"), ("cuda:1", 0, "cuda:1")])
def test_pick_device_gives_every_cuda_step_an_index(two_gpus, device, local_rank, expected):
    dev = hardware.pick_device(device, local_rank)
    assert dev == expected
    assert _get_device_index(dev) == int(expected[-1])  # what torch.cuda.set_device(dev) will use
    assert torch.device(dev).index == int(expected[-1])  # what DDP's device_ids gets


def test_pick_device_refuses_a_gpu_that_is_not_there(two_gpus):
    with pytest.raises(UserError, match="asks for GPU 2 but torch sees 2"):
        hardware.pick_device("cuda:2")
    assert hardware.pick_device("cpu", 1) == "cpu"


# ---- defect 2: one eval for all ranks -------------------------------------------------------------------------

def eval_rank(rank: int, init_file: str, data_dir: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.manual_seed(rank)  # each rank a different model: their own evals would certainly differ
    model = GPT(GPTConfig(block_size=16, vocab_size=50304, n_layer=1, n_head=2, n_embd=16))
    data = TaggedData(data_dir, 16)
    batches = EvalBatches(data, 16, batch_size=2, eval_iters=3, device="cpu").batches
    reduced = evaluate(model, batches, contextlib.nullcontext(), len(data.tags), rank, 2)
    torch.save({"reduced": reduced}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.slow
def test_ranks_share_the_eval_and_agree_on_its_result(tmp_path):
    data_dir = str(tmp_path / "data")
    write_dataset(tiny_documents(), data_dir, val_fraction=0.2, num_threads=1, progress=False)
    mp.spawn(eval_rank, args=(str(tmp_path / "init"), data_dir, str(tmp_path)), nprocs=2)
    one, two = (torch.load(tmp_path / f"rank{r}.pt")["reduced"] for r in range(2))
    assert one == two  # the same bits on both ranks: one "new best" decision

    # and it is the float64 sums and counts of each rank's share, each under its own model
    data = TaggedData(data_dir, 16)
    batches = EvalBatches(data, 16, batch_size=2, eval_iters=3, device="cpu").batches
    n = len(data.tags)
    sums, counts = torch.zeros(n + 2, dtype=torch.float64), torch.zeros(n + 2, dtype=torch.float64)
    own = []
    for rank in range(2):
        torch.manual_seed(rank)
        model = GPT(GPTConfig(block_size=16, vocab_size=50304, n_layer=1, n_head=2, n_embd=16)).eval()
        own.append(evaluate(model, batches, contextlib.nullcontext(), n))
        with torch.no_grad():
            for name, slot in (("train", n), ("val", n + 1), ("tags", None)):
                for x, y, tag_ids in batches[name][rank::2]:
                    loss = model(x, y, reduction="none")[1].flatten().double()
                    where = tag_ids.flatten() if slot is None else torch.full_like(y.flatten(), slot)
                    sums.index_add_(0, where, loss)
                    counts.index_add_(0, where, torch.ones_like(loss))
    assert own[0][-1] != own[1][-1]  # alone, the ranks would have seen different val losses
    assert one == pytest.approx((sums / counts).tolist(), rel=1e-12)


def test_eval_settings_that_make_no_sense_are_refused(monkeypatch):
    import train
    for key, value, phrase in (("eval_iters", 0, "reports a val loss of 0"), ("eval_interval", 0, "at least 1"),
                               ("log_interval", -1, "at least 1"), ("checkpoint_interval", -5, "negative")):
        with monkeypatch.context() as m:
            m.setattr(train, key, value)
            with pytest.raises(UserError, match=phrase):
                train.check_settings()
    train.check_settings()  # the defaults are fine


# ---- defect 4: the LM head keeps no fp32 copy of the logits ----------------------------------------------------

def test_loss_under_autocast_saves_no_fp32_logits():
    torch.manual_seed(0)
    B, T, V = 2, 16, 1024
    model = GPT(GPTConfig(block_size=T, vocab_size=V, n_layer=1, n_head=2, n_embd=32))
    x, y = torch.randint(0, V, (B, T)), torch.randint(0, V, (B, T))
    saved = []

    def pack(t):
        saved.append((t.dtype, t.numel()))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, loss = model(x, y)
    assert not [s for s in saved if s[0] == torch.float32 and s[1] >= B * T * V], saved
    assert loss.dtype == torch.float32
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    _, reference = model(x, y)  # fp32 throughout
    assert loss.item() == pytest.approx(reference.item(), abs=0.02)


# ---- defect 5: activation checkpointing from the card's memory --------------------------------------------------

def test_long_context_recipe_checkpoints_activations_only_where_memory_needs_it():
    settings = read_config_file(os.path.join(ROOT, "config", "finetune_phi_long.py"))
    assert settings["gradient_checkpointing"] is None and settings["block_size"] == 4096
    medium = dict(n_params=354_823_168, n_layer=24, n_embd=1024, vocab_size=50257, tokens=4096)
    assert not hardware.pick_activation_checkpointing(None, **medium, dtype="bfloat16", total_memory=80 * 2**30)[0]
    assert not hardware.pick_activation_checkpointing(None, **medium, dtype="float16", total_memory=15 * 2**30)[0]
    on, why = hardware.pick_activation_checkpointing(None, **medium, dtype="float16", total_memory=8 * 2**30)
    assert on and "GiB" in why
    # recomputing really is the smaller plan, and 1 x 4096 plans like 4 x 1024 (no T x T scores kept)
    assert (hardware.training_memory_bytes(**{**medium, "tokens": 4096}, dtype="bfloat16", checkpointing=True)
            < hardware.training_memory_bytes(**medium, dtype="bfloat16", checkpointing=False))
    assert hardware.pick_activation_checkpointing("True", **medium, dtype="bfloat16", total_memory=80 * 2**30)[0]
    with pytest.raises(UserError, match="use True, False"):
        hardware.pick_activation_checkpointing("sometimes", **medium, dtype="bfloat16", total_memory=1)


# ---- defect 7: Triton needs compute capability 7.0 --------------------------------------------------------------

@pytest.mark.parametrize("capability, compiles", [((6, 1), False), ((7, 0), True), ((7, 5), True), ((9, 0), True)])
def test_compile_only_where_triton_runs(monkeypatch, capability, compiles):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    use, why = hardware.compile_pays_off("cuda:0")
    assert use == compiles
    if not compiles:
        assert "below the 7.0" in why


# ---- defect 8: data-sheet peaks by exact name, measured bursts otherwise ---------------------------------------

@pytest.mark.parametrize("name, dtype, peak", [
    ("NVIDIA L4", torch.bfloat16, 121e12), ("NVIDIA L40", torch.bfloat16, 181e12),
    ("NVIDIA L40S", torch.bfloat16, 362e12), ("NVIDIA H100 80GB HBM3", torch.bfloat16, 989e12),
    ("NVIDIA H100 PCIe", torch.bfloat16, 756e12), ("NVIDIA H100 NVL", torch.bfloat16, 835e12),
    ("NVIDIA A100-SXM4-80GB", torch.bfloat16, 312e12), ("NVIDIA A100 80GB PCIe", torch.float32, 156e12),
    ("NVIDIA A10G", torch.float16, 70e12), ("NVIDIA A10", torch.float16, 125e12),
    ("Tesla T4", torch.float16, 65e12), ("Tesla T4", torch.bfloat16, None),  # emulated bf16: no tensor-core peak
    ("Tesla V100-SXM2-16GB", torch.float16, 125e12), ("Tesla V100-PCIE-32GB", torch.float16, 112e12),
    ("NVIDIA GeForce RTX 4090", torch.bfloat16, 165e12),
    ("NVIDIA A100-SXM4-40GB MIG 1g.5gb", torch.bfloat16, None),  # a slice: measured, not the whole card's
    ("NVIDIA B200", torch.bfloat16, None), ("NVIDIA H100 XYZ", torch.bfloat16, None)])
def test_datasheet_peak_matches_names_exactly(name, dtype, peak):
    assert hardware.datasheet_peak_flops(name, dtype) == peak


def test_measured_peak_runs_several_products_per_sync():
    flops = hardware.measure_peak_flops("cpu", torch.float32, n=128, repeats=2, min_seconds=0.0, per_sync=3)
    assert 1e6 < flops < 1e15


# ---- defect 9: the benchmark's baseline out of memory is a line, not a crash ------------------------------------

def test_bench_leaves_out_what_does_not_fit(capsys):
    from bench.training import unless_out_of_memory
    assert unless_out_of_memory("fp32 eager (baseline)", lambda: torch.empty(2 ** 62, dtype=torch.uint8), "cpu") is None
    out = capsys.readouterr().out.strip()
    assert out.startswith("fp32 eager (baseline): out of memory on cpu") and "\n" not in out
    assert unless_out_of_memory("x", lambda: 42, "cpu") == 42
    with pytest.raises(RuntimeError, match="inconsistent tensor size"):
        unless_out_of_memory("x", lambda: torch.ones(2) @ torch.ones(3), "cpu")
