"""Generation as sample.py runs it: cache vs recompute vs transformers, seeds, and the packed bf16 path."""

import pytest
import torch

import engine
import hardware
from errors import UserError
from helpers import NATIVE_BF16
from model import GPT


def test_greedy_cached_equals_recompute_equals_transformers(tiny_model, tiny_hf_dir):
    from transformers import GPT2LMHeadModel
    idx = torch.tensor([engine.encode("[Math] 1+1=2 2+2=4 3+3=")])
    cached = tiny_model.generate(idx, 20, temperature=0)
    recomputed = tiny_model.generate(idx, 20, temperature=0, use_cache=False)
    with torch.inference_mode():
        hf = GPT2LMHeadModel.from_pretrained(tiny_hf_dir).eval()
        theirs = hf.generate(idx, attention_mask=torch.ones_like(idx), do_sample=False, max_new_tokens=20,
                             min_new_tokens=20, pad_token_id=0)
    assert torch.equal(cached, recomputed) and torch.equal(cached, theirs)


def test_seeded_sampling_repeats(tiny_model):
    idx = torch.tensor([engine.encode("[Textbook] Python")])
    a = tiny_model.generate(idx, 30, temperature=0.85, top_k=8, seed=3)
    b = tiny_model.generate(idx, 30, temperature=0.85, top_k=8, seed=3)
    c = tiny_model.generate(idx, 30, temperature=0.85, top_k=8, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_decoding_past_the_context_slides_the_window(tiny_model):
    idx = torch.tensor([engine.encode("[Code] x")])
    out = tiny_model.generate(idx, 100, temperature=0.85, top_k=8, seed=0)  # 64-position model
    assert out.shape == (1, idx.size(1) + 100)


@pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no native bf16")
def test_packed_bf16_matches_plain_bf16(tiny_hf_dir):
    plain = GPT.from_pretrained(tiny_hf_dir).eval().to(torch.bfloat16)
    packed = engine.load_for_inference(tiny_hf_dir, "", "cpu", "auto")
    assert engine.can_pack(packed) and isinstance(packed.lm_head, engine.PackedLinear)
    assert packed.lm_head.weight is packed.transformer.wte.weight  # tying survives packing
    assert packed.state_dict().keys() == plain.state_dict().keys()
    idx = torch.tensor([engine.encode("[Math] 12+30=42 7+8=")])
    with torch.inference_mode():
        reference = GPT.from_pretrained(tiny_hf_dir).eval()(idx, all_logits=True)[0].log_softmax(-1)
        for model in (plain, packed):
            logprobs = model(idx, all_logits=True)[0].float().log_softmax(-1)
            assert (logprobs - reference).abs().max() < 0.05  # bf16 rounding, far below sampling noise
    # the cache, prefill and one-token steps agree with a full forward in the packed model too
    cached = packed.generate(idx, 10, temperature=0)
    assert torch.equal(cached, packed.generate(idx, 10, temperature=0, use_cache=False))


def test_training_mode_or_fp32_is_left_alone(tiny_hf_dir):
    model = GPT.from_pretrained(tiny_hf_dir).eval()
    assert not engine.can_pack(engine.pack_for_decoding(model))
    assert type(model.lm_head) is torch.nn.Linear


@pytest.mark.skipif(not engine.can_quantize("cpu"), reason="this torch build has no oneDNN int8 linear")
def test_int8_linear_is_the_integer_product_of_its_quantized_rows():
    # what the kernel computes must be exact integer arithmetic on this CPU, whatever its int8 instructions:
    # without VNNI/AMX, 8-bit weights clip in the kernel's int16 pair sums (kernels.Int8Linear)
    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 512)
    x = torch.randn(6, 256)
    levels = 127 if hardware.cpu_int8_dot_is_exact() else 63
    w = linear.weight.detach()
    w_scale = w.abs().amax(dim=1) / levels
    x_scale = x.abs().amax(dim=1, keepdim=True) / 127
    exact = ((x / x_scale).round() @ (w / w_scale.unsqueeze(1)).round().t()) * w_scale * x_scale + linear.bias
    with torch.inference_mode():
        ours = engine.Int8Linear(linear)(x)
    assert (ours - exact).abs().max() < 1e-3
    assert (ours - linear(x)).abs().max() < 0.1


def test_int8_dot_is_exact_with_vnni_or_amx_or_off_x86(monkeypatch):
    monkeypatch.setattr(hardware.platform, "machine", lambda: "x86_64")
    for flags, exact in [({"avx2", "fma"}, False), ({"avx2", "avx512_vnni"}, True), ({"avx_vnni"}, True),
                         ({"amx_int8"}, True), (set(), False)]:
        monkeypatch.setattr(hardware, "cpu_flags", lambda flags=flags: flags)
        assert hardware.cpu_int8_dot_is_exact() == exact
    monkeypatch.setattr(hardware.platform, "machine", lambda: "aarch64")
    assert hardware.cpu_int8_dot_is_exact()


@pytest.mark.skipif(not engine.can_quantize("cpu"), reason="this torch build has no oneDNN int8 linear")
def test_int8_decoding_stays_close_to_fp32(tiny_hf_dir):
    int8 = engine.load_for_inference(tiny_hf_dir, "", "cpu", "int8")
    assert isinstance(int8.lm_head, engine.Int8Linear) and int8.lm_head.weight is int8.transformer.wte.weight
    idx = torch.tensor([engine.encode("[Math] 12+30=42 7+8=")])
    with torch.inference_mode():
        reference = GPT.from_pretrained(tiny_hf_dir).eval()(idx, all_logits=True)[0].log_softmax(-1)
        logprobs = int8(idx, all_logits=True)[0].log_softmax(-1)
    assert (logprobs - reference).abs().max() < 0.1  # int8 rounding: coarser than bf16, still small
    # each token is quantized on its own, so prefill + cached steps agree with full forwards
    assert torch.equal(int8.generate(idx, 10, temperature=0), int8.generate(idx, 10, temperature=0, use_cache=False))


@pytest.mark.skipif(not engine.can_quantize("cpu"), reason="this torch build has no oneDNN int8 linear")
@pytest.mark.parametrize("bias", [True, False])
def test_int8_linear_rows_do_not_affect_each_other(bias):
    linear = torch.nn.Linear(32, 48, bias=bias)
    quantized = engine.Int8Linear(linear)
    x = torch.randn(3, 32, generator=torch.Generator().manual_seed(0))
    x[1] *= 50  # a row with outliers must not coarsen its neighbours' quantization
    with torch.inference_mode():
        together, alone = quantized(x.unsqueeze(0)), quantized(x[[0]])
        exact = linear(x)
    assert torch.equal(together[0, 0], alone[0])
    assert ((together[0] - exact).abs().amax(1) / exact.abs().amax(1)).max() < 0.05


def test_int8_where_it_cannot_run_is_refused(tiny_hf_dir, monkeypatch):
    with pytest.raises(UserError, match="dtype=int8"):
        engine.load_for_inference(tiny_hf_dir, "", "cpu", "int8", compile=True)
    monkeypatch.setattr(engine, "can_quantize", lambda device: False)  # a GPU, or a torch without oneDNN
    with pytest.raises(UserError, match="dtype=int8"):
        engine.load_for_inference(tiny_hf_dir, "", "cpu", "int8")
