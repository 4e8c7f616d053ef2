"""model.py: equality with transformers' GPT-2, KV-cache generation, context resizing, MFU."""

from dataclasses import asdict

import pytest
import torch
from transformers import GPT2LMHeadModel

import hardware
import memory
from errors import UserError
from hardware import PeakFlops, device_peak_flops, measure_peak_flops
from kernels import cpu_kernels_pay_off, explicit_causal_attention, fused_head_loss, gelu_tanh_as_sigmoid
from model import GPT, GPTConfig


@pytest.fixture(scope="module")
def pair(tiny_hf_dir):
    """Our model and transformers' loaded from the same tiny checkpoint directory."""
    ours = GPT.from_pretrained(tiny_hf_dir).eval()
    theirs = GPT2LMHeadModel.from_pretrained(tiny_hf_dir).eval()
    return ours, theirs


def prompt(length: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 50257, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_logits_and_loss_match_transformers(pair):
    ours, theirs = pair
    idx = prompt(40, batch=3)
    with torch.no_grad():
        reference = theirs(idx, labels=idx)
        logits, _ = ours(idx, all_logits=True)
        # transformers shifts labels inside; ours takes next-token targets, -1 ignored
        targets = torch.cat([idx[:, 1:], torch.full((3, 1), -1)], dim=1)
        _, loss = ours(idx, targets)
    assert (logits - reference.logits).abs().max().item() <= 1e-4
    assert abs(loss.item() - reference.loss.item()) <= 1e-4


def test_last_position_logits_by_default(pair):
    ours, _ = pair
    idx = prompt(10)
    with torch.no_grad():
        last, loss = ours(idx)
        full, _ = ours(idx, all_logits=True)
    assert loss is None and last.shape == (1, 1, 50257)
    assert torch.allclose(last[:, 0], full[:, -1], atol=1e-5)


def test_per_token_loss(pair):
    ours, _ = pair
    idx = prompt(12, batch=2)
    with torch.no_grad():
        _, per_token = ours(idx[:, :-1], idx[:, 1:], reduction="none")
        _, mean = ours(idx[:, :-1], idx[:, 1:])
    assert per_token.shape == (2, 11)
    assert torch.allclose(per_token.mean(), mean)


def test_tied_embeddings_and_parameter_names(pair):
    ours, theirs = pair
    assert ours.lm_head.weight is ours.transformer.wte.weight
    ours_names = set(ours.state_dict())
    theirs_names = {n for n in theirs.state_dict() if not n.endswith((".attn.bias", ".attn.masked_bias"))}
    assert ours_names == theirs_names


def test_greedy_cached_equals_recompute_and_transformers(pair):
    ours, theirs = pair
    idx = prompt(7)
    cached = ours.generate(idx, 40, temperature=0)
    recomputed = ours.generate(idx, 40, temperature=0, use_cache=False)
    assert torch.equal(cached, recomputed)
    reference = theirs.generate(idx, max_new_tokens=40, do_sample=False, pad_token_id=0,
                                attention_mask=torch.ones_like(idx))
    assert torch.equal(cached, reference)


def test_top_k_1_is_greedy_and_seeded_sampling_reproducible(pair):
    ours, _ = pair
    idx = prompt(5)
    greedy = ours.generate(idx, 20, temperature=0)
    assert torch.equal(ours.generate(idx, 20, temperature=0.8, top_k=1, seed=3), greedy)
    a = ours.generate(idx, 20, temperature=1.0, top_k=50, top_p=0.9, repetition_penalty=1.2, seed=7)
    b = ours.generate(idx, 20, temperature=1.0, top_k=50, top_p=0.9, repetition_penalty=1.2, seed=7)
    c = ours.generate(idx, 20, temperature=1.0, top_k=50, top_p=0.9, repetition_penalty=1.2, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_batched_cached_generation_matches_rows(pair):
    ours, _ = pair
    idx = prompt(6, batch=2)
    together = ours.generate(idx, 15, temperature=0)
    for row in range(2):
        assert torch.equal(together[row:row + 1], ours.generate(idx[row:row + 1], 15, temperature=0))


def test_generation_past_block_size(pair):
    ours, _ = pair
    block = ours.config.block_size
    out = ours.generate(prompt(block - 3), 2 * block, temperature=0.9, top_k=20, seed=0)
    assert out.shape == (1, 3 * block - 3)
    long_prompt = ours.generate(prompt(block + 10), 5, temperature=0)  # prompt longer than the window
    assert long_prompt.shape == (1, block + 15)


def test_stop_token_ends_generation(pair):
    ours, _ = pair
    idx = prompt(5)
    free = ours.generate(idx, 30, temperature=0)
    stop = free[0, 5 + 3].item()  # the 4th generated token becomes the stop token
    first = (free[0, 5:] == stop).nonzero()[0].item()
    stopped = ours.generate(idx, 30, temperature=0, stop_token=stop)
    assert stopped.shape[1] == 5 + first + 1 and stopped[0, -1].item() == stop


def test_stream_yields_same_tokens_as_generate(pair):
    ours, _ = pair
    idx = prompt(5)
    streamed = torch.stack(list(ours.generate_stream(idx, 12, temperature=0)), dim=1)
    assert torch.equal(torch.cat([idx, streamed], dim=1), ours.generate(idx, 12, temperature=0))


def test_bad_sampling_settings_are_user_errors(pair):
    ours, _ = pair
    for kwargs in (dict(temperature=-1), dict(top_k=0), dict(top_p=1.5), dict(repetition_penalty=0)):
        with pytest.raises(UserError):
            ours.generate(prompt(3), 2, **kwargs)


def small_model(block_size: int = 32) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=block_size, vocab_size=97, n_layer=2, n_head=2, n_embd=16)).eval()


def test_extend_block_size_interpolates_positions():
    model = small_model(32)
    old = model.transformer.wpe.weight.detach().clone()
    model.extend_block_size(128)
    new = model.transformer.wpe.weight.detach()
    assert new.shape == (128, 16) and model.config.block_size == 128
    assert torch.equal(new[::4], old)  # original positions sit on the grid, unchanged
    assert torch.allclose(new[2], (old[0] + old[1]) / 2)  # between them, linear interpolation
    logits, loss = model(torch.randint(0, 97, (2, 128)), torch.randint(0, 97, (2, 128)))
    assert logits is None and torch.isfinite(loss)  # with targets only the loss comes back
    assert model(torch.randint(0, 97, (2, 128)), all_logits=True)[0].shape == (2, 128, 97)
    assert model.generate(torch.zeros(1, 100, dtype=torch.long), 40, temperature=0).shape == (1, 140)


def test_crop_block_size_keeps_first_positions():
    model = small_model(32)
    old = model.transformer.wpe.weight.detach().clone()
    model.crop_block_size(8)
    assert torch.equal(model.transformer.wpe.weight, old[:8]) and model.config.block_size == 8
    assert model(torch.zeros(1, 8, dtype=torch.long))[0].shape == (1, 1, 97)
    with pytest.raises(ValueError):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(UserError):
        model.crop_block_size(16)


def test_set_block_size_chooses_crop_or_extend():
    model = small_model(32)
    model.set_block_size(64)
    assert model.config.block_size == 64
    model.set_block_size(16)
    assert model.config.block_size == 16


def test_gradient_checkpointing_gives_same_gradients():
    grads = []
    for checkpointed in (False, True):
        model = small_model().train()
        model.gradient_checkpointing = checkpointed
        idx = torch.randint(0, 97, (2, 32), generator=torch.Generator().manual_seed(1))
        _, loss = model(idx, idx)
        loss.backward()
        grads.append(model.transformer.h[0].attn.c_attn.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def head_loss_and_grads(fused: bool, x, weight, targets, autocast: bool):
    x, weight = x.clone().requires_grad_(), weight.clone().requires_grad_()
    with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
        if fused:
            loss = fused_head_loss(x, weight, targets)
        else:
            loss = torch.nn.functional.cross_entropy((x @ weight.t()).float(), targets, ignore_index=-1)
    (3 * loss).backward()  # a grad_output other than 1
    return loss.detach(), x.grad, weight.grad


@pytest.mark.parametrize("autocast", [False, True])
def test_fused_head_loss_matches_cross_entropy(autocast):
    gen = torch.Generator().manual_seed(0)
    x, weight = torch.randn(40, 24, generator=gen), torch.randn(97, 24, generator=gen)
    targets = torch.randint(0, 97, (40,), generator=gen)
    targets[[3, 17, 39]] = -1  # ignored
    x[5] *= 100  # a row whose target's probability underflows: the loss there comes from logsumexp
    plain = head_loss_and_grads(False, x, weight, targets, autocast)
    fused = head_loss_and_grads(True, x, weight, targets, autocast)
    tol = dict(rtol=2e-2, atol=2e-2) if autocast else dict(rtol=1e-5, atol=1e-5)
    assert torch.isfinite(fused[0])
    for ours, reference in zip(fused, plain):
        assert torch.allclose(ours, reference, **tol)


def test_fused_head_loss_keeps_the_gradient_of_confident_predictions():
    # p(target) = 0.999 rounds to 1.0 in bf16; the gradient (p - 1) must not round to 0 with it
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 24, generator=gen, dtype=torch.float64)
    weight = torch.randn(97, 24, generator=gen, dtype=torch.float64)
    targets = torch.randint(0, 97, (8,), generator=gen)
    direction = weight[targets[0]] / weight[targets[0]].norm()
    low, high = 0.0, 100.0
    for _ in range(60):  # scale x[0] along its target's row until p(target) = 0.999
        x[0] = (low + high) / 2 * direction
        p = (x[0] @ weight.t()).softmax(-1)[targets[0]]
        low, high = (x[0].norm().item(), high) if p < 0.999 else (low, x[0].norm().item())
    _, reference_grad_x, reference_grad_w = head_loss_and_grads(False, x, weight, targets, autocast=False)
    _, grad_x, grad_w = head_loss_and_grads(True, x.float(), weight.float(), targets, autocast=True)
    relative = (grad_x[0].double() - reference_grad_x[0]).norm() / reference_grad_x[0].norm()
    assert relative < 0.05
    target_row = targets[0]
    error_w = (grad_w[target_row].double() - reference_grad_w[target_row]).norm()
    relative_w = error_w / reference_grad_w[target_row].norm()
    assert relative_w < 0.05


def test_gelu_as_sigmoid_is_gpt2_tanh_gelu():
    # the form compiled models use: the same function as GPT-2's tanh GELU, value and gradient
    x = torch.linspace(-12, 12, 4001, dtype=torch.float64, requires_grad=True)
    ref = torch.nn.functional.gelu(x, approximate="tanh")
    ours = gelu_tanh_as_sigmoid(x)
    assert torch.allclose(ours, ref, atol=1e-12, rtol=0)
    (grad_ref,), (grad_ours,) = torch.autograd.grad(ref.sum(), x), torch.autograd.grad(ours.sum(), x)
    assert torch.allclose(grad_ours, grad_ref, atol=1e-12, rtol=0)


@pytest.mark.slow  # compiles
def test_compiled_cpu_training_graph_has_sigmoid_gelu_and_no_fused_head():
    # what torch.compile is handed (recorded, not built: no C++ compiler needed): GELU in its sigmoid form,
    # and the hand-fused head left out of every graph, to run eager between them
    graphs = []

    def record(graph_module, example_inputs):
        graphs.append(graph_module.code)
        return graph_module.forward

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=64, n_layer=1, n_head=2, n_embd=16))
    idx = torch.randint(0, 64, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        eager_loss = model(idx, idx, cpu_kernels=True)[1]
        compiled_loss = torch.compile(model, backend=record)(idx, idx, cpu_kernels=True)[1]
    torch._dynamo.reset()
    code = "\n".join(graphs)
    assert "sigmoid" in code and "gelu" not in code
    assert "grad_logits" not in code and "log1p" not in code  # no piece of FusedHeadLoss was traced
    assert torch.allclose(compiled_loss, eager_loss, atol=1e-2)


def test_explicit_attention_matches_flash_attention_with_gradients():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 20, 8, generator=gen, requires_grad=True) for _ in range(3))
    ours = explicit_causal_attention(q, k, v, dropout=0.0)
    reference = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(ours, reference, atol=1e-5)
    grads = torch.autograd.grad(ours.square().sum(), (q, k, v))
    reference_grads = torch.autograd.grad(reference.square().sum(), (q, k, v))
    for g, r in zip(grads, reference_grads):
        assert torch.allclose(g, r, atol=1e-4)


def test_cpu_kernels_training_step_matches_the_plain_path():
    model = small_model().train()
    idx = torch.randint(0, 97, (2, 32), generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", torch.bfloat16):
        logits, loss = model(idx, idx, cpu_kernels=True)  # fused head + explicit attention (kernels.py)
        assert logits is None
        assert model(idx, idx, reduction="none", cpu_kernels=True)[1].shape == (2, 32)  # per-token: plain head
        with torch.no_grad():
            _, reference = model(idx, idx)
    assert torch.allclose(loss, reference, atol=1e-2)


def test_fp32_cpu_training_takes_the_fused_head_and_flash_attention_with_the_plain_paths_gradients():
    # CPUs without bf16 train in fp32: the fused head pays there too, explicit attention does not (kernels.py)
    assert cpu_kernels_pay_off("cpu")
    assert not cpu_kernels_pay_off("cuda")
    assert memory.attention_path("cpu", "float32", 256) == "flash"
    assert memory.attention_path("cpu", "bfloat16", 256) == "explicit"
    assert memory.attention_path("cpu", "bfloat16", 1024) == "flash"
    idx = torch.randint(0, 97, (2, 32), generator=torch.Generator().manual_seed(1))
    results = []
    for cpu_kernels in (True, False):
        model = small_model().train()
        _, loss = model(idx, idx, cpu_kernels=cpu_kernels)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (fused_loss, fused_grads), (plain_loss, plain_grads) = results
    assert torch.allclose(fused_loss, plain_loss, atol=1e-5)
    for ours, reference in zip(fused_grads, plain_grads):
        assert torch.allclose(ours, reference, atol=1e-5)


def test_configure_optimizers_decays_only_matrices():
    model = small_model()
    optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    decay, no_decay = optimizer.param_groups
    assert all(p.dim() >= 2 for p in decay["params"]) and decay["weight_decay"] == 0.1
    assert all(p.dim() < 2 for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0
    n = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    assert n == sum(p.numel() for p in model.parameters())


def test_mfu_uses_the_given_or_known_peak():
    model = small_model()
    flops = model.flops_per_token() * model.config.block_size * 4
    assert model.estimate_mfu(4, dt=1.0, peak_flops=flops * 2) == pytest.approx(0.5)
    assert device_peak_flops("cpu", torch.bfloat16) is None
    assert model.estimate_mfu(4, dt=1.0, device="cpu") is None
    assert measure_peak_flops("cpu", torch.float32, n=128, repeats=2, min_seconds=0) > 0
    # loss_on='response' on the CPU runs the LM head on the trained positions only: MFU counts what ran
    cfg = model.config
    head = 6 * cfg.vocab_size * cfg.n_embd
    assert model.flops_per_token(0.25) == pytest.approx(model.flops_per_token() - 0.75 * head)
    assert model.estimate_mfu(4, 1.0, peak_flops=flops, head_fraction=0.25) < 1.0


@pytest.mark.parametrize("seconds_per_product, side", [(0.002, 2048), (0.2, 512)])
def test_peak_products_shrink_for_a_dtype_this_cpu_multiplies_slowly(monkeypatch, seconds_per_product, side):
    # bf16 on an AVX2 CPU: 1-2 GFLOP/s, so a 2048^3 product would take about 11 s, each time MFU re-measures
    clock = iter(range(10 ** 6))
    monkeypatch.setattr(hardware.time, "perf_counter", lambda: next(clock) * seconds_per_product)
    assert hardware.cpu_product_size(torch.float32, torch.Generator().manual_seed(0)) == side


def test_measured_peak_keeps_the_best_burst_and_leaves_the_rng_alone():
    torch.manual_seed(0)
    rng = torch.get_rng_state()
    peak = PeakFlops("cpu", torch.float32)
    assert peak.describe() == "measured fp32 matmul"
    peak.sample(min_interval=3600)  # too soon: nothing measured
    assert len(peak.bursts) == 1
    peak.sample()
    assert torch.equal(torch.get_rng_state(), rng)  # train.py samples mid-run: dropout and resume unchanged
    assert peak.datasheet is None and len(peak.bursts) == 2 and peak.flops == max(peak.bursts) > 0
    assert peak.describe().startswith("measured fp32 matmul, best of 2 bursts; lowest ")


def test_from_pretrained_errors_are_one_line(tmp_path):
    with pytest.raises(UserError, match="no such directory") as err:
        GPT.from_pretrained(str(tmp_path / "no-such-model"))
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="dropout"):
        GPT.from_pretrained("gpt2", override_args={"n_layer": 3})


def test_config_round_trips_through_dict():
    model = small_model()
    assert GPT(GPTConfig(**asdict(model.config))).config == model.config


@pytest.mark.parametrize("offsets", [[1, 2, 3, 4], [1, 5]])
def test_offset_heads_attend_their_offset_back(offsets):
    """A fresh model's layer-0 heads, once init_offset_heads has set them, put nearly all attention d tokens
    back at every position that has one; plain GPT-2 weights otherwise (same state-dict keys and shapes)."""
    torch.manual_seed(0)
    config = GPTConfig(block_size=64, vocab_size=512, n_layer=2, n_head=4, n_embd=128, dropout=0.0)
    model = GPT(config)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    model.init_offset_heads(offsets)
    assert {k: v.shape for k, v in model.state_dict().items()} == shapes
    idx = prompt(64, batch=2) % 512
    with torch.no_grad():
        x = model.transformer.h[0].ln_1(model.transformer.wte(idx) + model.transformer.wpe(torch.arange(64)))
        q, k, _ = model.transformer.h[0].attn.c_attn(x).split(128, dim=2)
        hd = 32
        for h, d in enumerate(offsets):
            scores = q[..., h * hd:(h + 1) * hd] @ k[..., h * hd:(h + 1) * hd].transpose(1, 2) / hd ** 0.5
            scores = scores.masked_fill(torch.ones(64, 64).triu(1).bool(), float("-inf"))
            probs = scores.softmax(-1)[:, d:]  # positions with a token d back
            back = probs.gather(-1, (torch.arange(d, 64) - d).expand(2, -1)[..., None]).squeeze(-1)
            assert back.min() > 0.9, (d, back.min())
    with pytest.raises(UserError, match="at most 4 offsets"):
        model.init_offset_heads([1, 2, 3, 4, 5])
    with pytest.raises(UserError, match="between 1 and 63"):
        model.init_offset_heads([0])
