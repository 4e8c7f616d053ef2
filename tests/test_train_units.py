"""The helpers behind train.py, one by one: precision choice, data windows and sampler state, wandb fallback,
learning-rate schedule."""

import numpy as np
import pytest
import torch

import dataloader
import hardware
from dataloader import EvalBatches, TaggedData, TrainBatches, TrainSampler, open_dataset
from errors import UserError
from logger import RunLogger, has_wandb_key
from tags import TAGS
from tokenizer import get_encoding


@pytest.fixture(scope="module")
def data(tiny_data) -> TaggedData:
    return TaggedData(tiny_data, block_size=16)


# ---- precision -------------------------------------------------------------------------------------------

def test_cpu_dtype_follows_bf16_instructions(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    assert hardware.pick_dtype("cpu", "auto")[0] == "bfloat16"
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2"})
    assert hardware.pick_dtype("cpu", "auto")[0] == "float32"
    assert hardware.pick_dtype("cpu", "float16") == ("float16", "set by dtype")


@pytest.mark.parametrize("capability, expected", [((7, 5), "float16"), ((8, 0), "bfloat16"), ((9, 0), "bfloat16")])
def test_gpu_dtype_fp16_on_t4_bf16_on_ampere_and_later(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert hardware.pick_dtype("cuda", "auto")[0] == expected


def test_scaler_only_for_fp16_and_bad_dtype_is_a_user_error():
    assert hardware.grad_scaler("cpu", "float16").is_enabled()
    assert not hardware.grad_scaler("cpu", "bfloat16").is_enabled()
    with pytest.raises(UserError, match="dtype='fp8'"):
        hardware.pick_dtype("cpu", "fp8")


def test_cpu_trains_eager_where_inductor_cannot_build_kernels(monkeypatch):
    import torch._dynamo
    import torch._inductor.config as inductor_config
    monkeypatch.setattr(inductor_config.cpp, "cxx", ("no-such-c++-compiler",))
    hardware.inductor_cpu_problem.cache_clear()
    torch._dynamo.reset()
    try:
        use, why = hardware.compile_pays_off("cpu")
    finally:
        hardware.inductor_cpu_problem.cache_clear()
        torch._dynamo.reset()
    assert not use and "no-such-c++-compiler" in why and "install a C++ compiler" in why and "\n" not in why


def test_out_of_memory_becomes_one_line_advice():
    with pytest.raises(UserError, match="smaller --batch_size"):
        with hardware.explain_out_of_memory(64, 1024):
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 TB")
    with pytest.raises(RuntimeError, match="shape mismatch"):  # other errors pass through untouched
        with hardware.explain_out_of_memory(64, 1024):
            raise RuntimeError("shape mismatch")


# ---- data -----------------------------------------------------------------------------------------------

def test_sampler_state_resumes_the_same_stream():
    a = TrainSampler(10_000, 16, 4, 2, seed=7)
    a.next_iteration()
    state = a.state_dict()
    expected = a.next_iteration()
    b = TrainSampler(10_000, 16, 4, 2, seed=99)
    b.load_state_dict(state)
    assert np.array_equal(b.next_iteration(), expected) and b.iterations == 2
    assert b.epochs() == pytest.approx(2 * 2 * 4 * 16 / 10_000)


def test_sampler_reaches_both_ends_of_the_split():
    # 20 tokens, windows of 16 + 1: offsets 0..3 fit, and offset 3's window ends at the split's last token
    sampler = TrainSampler(20, 16, batch_size=64, micro_steps=4, seed=0)
    offsets = np.concatenate([sampler.next_iteration().ravel() for _ in range(4)])
    assert set(offsets.tolist()) == {0, 1, 2, 3}
    tokens = np.arange(20)
    assert dataloader.windows(tokens, offsets, 16).max() == 19


def test_ranks_split_one_global_batch(data):
    """Two ranks see exactly the micro-batches one process sees, in two halves."""
    def micro_batches(rank, world):
        sampler = TrainSampler(len(data.tokens["train"]), 16, 4, micro_steps=4, seed=3)
        return [x for x, _ in TrainBatches(data, sampler, rank, world, "cpu").iteration()]
    one = micro_batches(0, 1)
    assert len(one) == 4
    halves = micro_batches(0, 2) + micro_batches(1, 2)
    assert all(torch.equal(a, b) for a, b in zip(one, halves))
    x, y = next(TrainBatches(data, TrainSampler(len(data.tokens["train"]), 16, 4, 1, 3), 0, 1, "cpu").iteration())
    assert x.shape == (4, 16) and torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one


def test_eval_windows_credit_each_token_to_its_documents_tag(data):
    evals = EvalBatches(data, block_size=16, batch_size=4, eval_iters=2, device="cpu")
    assert len(evals.batches["train"]) == len(evals.batches["val"]) == 2
    bracket = get_encoding().encode_ordinary("[")[0]
    seen_tags = set()
    for x, y, tag_ids in evals.batches["tags"]:
        assert (x[:, 0] == bracket).all()  # every per-tag window starts at a document, i.e. at its "[Tag]"
        seen_tags.update(tag_ids[:, 0].tolist())
    assert seen_tags == set(range(len(TAGS)))
    x, y, tag_ids = evals.batches["val"][0]
    assert tag_ids.shape == y.shape and int(tag_ids.max()) < len(TAGS)


def test_missing_dataset_names_its_prepare_command(tmp_path, monkeypatch):
    monkeypatch.setattr(dataloader, "DATA_ROOT", str(tmp_path))
    with pytest.raises(UserError, match=r"python data/prepare.py --mixture=phi"):
        open_dataset("phi")
    with pytest.raises(UserError, match="python data/prepare.py"):
        open_dataset(str(tmp_path / "nothing"))


def test_block_size_longer_than_a_split_is_refused(data):
    with pytest.raises(UserError, match="too long"):
        TaggedData(data.path, block_size=10_000_000)


# ---- wandb ------------------------------------------------------------------------------------------------

def test_wandb_without_key_logs_offline_and_never_crashes(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert not has_wandb_key()
    logger = RunLogger(True, "nanophi-test", "unit", {"lr": 1e-3})
    assert "logging offline" in capsys.readouterr().out
    logger.log({"loss": 1.0}, step=1)
    logger.finish()
    assert not RunLogger(False, "p", "r", {}).run  # disabled: nothing started


# ---- schedule ---------------------------------------------------------------------------------------------

def test_warmup_cosine_and_constant_schedule(monkeypatch):
    import train
    for key, value in dict(decay_lr=True, learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, lr_decay_iters=110,
                           max_iters=200).items():
        monkeypatch.setattr(train, key, value)
    assert train.get_lr(0) == pytest.approx(1e-3 / 11)
    assert train.get_lr(10) == pytest.approx(1e-3)
    assert train.get_lr(60) == pytest.approx(5.5e-4)  # half way down the cosine
    assert train.get_lr(110) == train.get_lr(150) == pytest.approx(1e-4)
    monkeypatch.setattr(train, "decay_lr", False)
    assert train.get_lr(0) == train.get_lr(150) == 1e-3
