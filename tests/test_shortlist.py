"""The shortlisted LM head (shortlist.py): the same loss, gradients and training as the full head, when the
rows it leaves out are equal; train.py uses it only then."""

import copy

import numpy as np
import pytest
import torch

import engine
import memory
import shortlist as shortlist_module
from model import GPT, GPTConfig
from shortlist import HeadShortlist, used_tokens
from tokenizer import EOT_ID
from test_train import iteration_losses, run_train
from checkpoint import checkpoint_path, load_checkpoint, model_from_checkpoint

V = 96


def tiny_pair(seed: int = 0):
    """A tiny GPT, the same GPT with a shortlist of about half its tokens (rows of the rest tied), and data
    drawn from the used tokens with some targets ignored."""
    torch.manual_seed(seed)
    full = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=V, dropout=0.0, bias=True))
    used = torch.randperm(V)[:45]
    short = HeadShortlist(used, V)
    short.tie(full.lm_head.weight)
    shortened = copy.deepcopy(full)
    shortened.head_shortlist = short
    x, y = used[torch.randint(0, len(used), (4, 16))], used[torch.randint(0, len(used), (4, 16))]
    y[0, :6] = -1
    return full, shortened, short, x, y


def loss_and_grads(model, x, y, short=None, **kwargs):
    model.zero_grad()
    _, loss = model(x, y, **kwargs)
    loss.backward()
    if short:
        short.share_grad(model.lm_head.weight)
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_used_tokens_counts_every_split_a_chunk_at_a_time(monkeypatch):
    monkeypatch.setattr(shortlist_module, "CHUNK", 3)
    splits = [np.array([5, 1, 5, 9, 2], dtype=np.uint16), np.array([70, 1], dtype=np.uint16)]
    assert used_tokens(splits, V).tolist() == [1, 2, 5, 9, 70]


@pytest.mark.parametrize("cpu_kernels", [False, True])  # the plain head + cross-entropy, and kernels.FusedHeadLoss
def test_shortlisted_head_gives_the_full_heads_loss_and_gradients(cpu_kernels):
    full, shortened, short, x, y = tiny_pair()
    loss_full, grads_full = loss_and_grads(full, x, y, cpu_kernels=cpu_kernels)
    loss_short, grads_short = loss_and_grads(shortened, x, y, short, cpu_kernels=cpu_kernels)
    assert loss_short == pytest.approx(loss_full, abs=1e-5)
    for name, grad in grads_full.items():
        torch.testing.assert_close(grads_short[name], grad, atol=1e-6, rtol=1e-4)
    # per-token losses, as train.py's evals take them, too
    _, per_token_full = full(x, y, reduction="none")
    _, per_token_short = shortened(x, y, reduction="none")
    torch.testing.assert_close(per_token_short, per_token_full, atol=1e-5, rtol=1e-5)
    # without targets (sampling) the model is the whole GPT-2: every row's logit
    assert shortened(x)[0].shape[-1] == V


def test_shortlisted_head_in_bfloat16_stays_within_its_rounding():
    full, shortened, short, x, y = tiny_pair(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss_full, _ = loss_and_grads(full, x, y, cpu_kernels=True)
        loss_short, grads = loss_and_grads(shortened, x, y, short, cpu_kernels=True)
    # bf16 keeps 8 bits: the rest's logit, log(51) + h.u, rounds to within 1/64 (the tiny model's loss ~4.6)
    assert loss_short == pytest.approx(loss_full, abs=0.02)
    assert all(torch.isfinite(g).all() for g in grads.values())


@pytest.mark.parametrize("make_optimizer", [
    lambda params: torch.optim.SGD(params, lr=0.5, momentum=0.9, weight_decay=0.1),
    # AdamW divides by the gradient's running size, so float noise in gradients that should be zero (the
    # attention's key biases) becomes full-size steps in either model: here the check is that the rest stays
    # tied and the training matches where gradients are real
    lambda params: torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)], ids=["sgd", "adamw"])
def test_training_steps_keep_the_rest_tied_and_match_the_full_head(make_optimizer):
    full, shortened, short, x, y = tiny_pair(2)
    optimizers = [make_optimizer(m.parameters()) for m in (full, shortened)]
    losses = []
    for _ in range(5):
        for model, optimizer, s in ((full, optimizers[0], None), (shortened, optimizers[1], short)):
            losses.append(loss_and_grads(model, x, y, s)[0])
            norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])
            torch.nn.utils.clip_grads_with_norm_(model.parameters(), 0.5, norm)
            optimizer.step()
    assert short.tied(shortened.lm_head.weight)
    assert losses[-1] < losses[0] - 0.1
    assert losses[-1] == pytest.approx(losses[-2], abs=1e-4)
    torch.testing.assert_close(shortened.lm_head.weight, full.lm_head.weight, atol=1e-4, rtol=1e-3)


def test_a_model_whose_rows_differ_is_not_tied():
    full, _, short, _, _ = tiny_pair()
    assert short.tied(full.lm_head.weight)
    with torch.no_grad():
        full.lm_head.weight[short.rest[-1], 0] += 1e-3
    assert not short.tied(full.lm_head.weight)
    with pytest.raises(ValueError, match="every token"):
        HeadShortlist(torch.arange(V), V)


def test_untrained_tokens_are_the_largest_group_of_equal_rows_and_none_when_rows_differ(tiny_model):
    _, shortened, short, _, _ = tiny_pair()
    assert shortlist_module.untrained_tokens(shortened.lm_head.weight) == set(short.rest.tolist())
    assert shortlist_module.untrained_tokens(shortened.lm_head.weight.bfloat16()) == set(short.rest.tolist())
    assert shortlist_module.untrained_tokens(GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32)).lm_head.weight) == set()
    assert shortlist_module.untrained_tokens(tiny_model.transformer.wte.weight) == set()
    assert engine.respeller(tiny_model).names == frozenset()


def test_memory_plan_counts_the_logits_of_the_shortlisted_head_only():
    full, shortened, short, _, _ = tiny_pair()
    plans = [memory.plan_for(m, 4, 16, 1, "adamw", None, False, "bfloat16", "cpu") for m in (full, shortened)]
    assert plans[0].parts["logits"] == 4 * 16 * V * 2  # the CPU's fused head: 2 bytes a logit
    assert plans[1].parts["logits"] == 4 * 16 * len(short.rows) * 2
    assert plans[1].parts["weights"] == plans[0].parts["weights"]  # the model keeps every row


@pytest.mark.slow
def test_train_shortlists_scratch_runs_and_resumes_and_keeps_pretrained_heads_whole(tmp_path, tiny_data,
                                                                                     tiny_hf_dir):
    common = [f"--dataset={tiny_data}", "--eval_interval=4", "--shortlist_head=True"]
    first = run_train(tmp_path / "scratch", *common, "--max_iters=4")
    assert "LM head over the " in first.stdout and "kept equal; exact" in first.stdout
    resumed = run_train(tmp_path / "scratch", *common, "--max_iters=8", "--init_from=resume")
    assert "LM head over the " in resumed.stdout and len(iteration_losses(resumed.stdout)) == 4
    weight = load_checkpoint(checkpoint_path(str(tmp_path / "scratch")))["model"]["lm_head.weight"]
    data = np.concatenate([np.memmap(f"{tiny_data}/{s}.bin", dtype=np.uint16, mode="r") for s in ("train", "val")])
    unused = np.setdiff1d(np.arange(weight.size(0)), data)
    assert len(unused) > 40_000 and (weight[unused] == weight[unused[0]]).all()  # trained, still equal
    assert not torch.equal(weight[unused[0]], weight[int(data[0])])
    # ... which is how the trained model's prompts find the tokens it never saw, to write them in ones it knows
    assert shortlist_module.untrained_tokens(weight) == set(unused.tolist())
    model = model_from_checkpoint(load_checkpoint(checkpoint_path(str(tmp_path / "scratch"))))
    # tokens tiny_data's few words and numbers spell
    respell = engine.respeller(model)
    spellable = (t for t in unused[::-1].tolist() if t in respell.names and len(respell.spell(t)) > 1)
    text = "Bob: hello" + "".join(engine.decode([next(spellable)]) for _ in range(5))
    ids = engine.encode(text, model)
    assert engine.decode(ids) == text and len(ids) > len(engine.encode(text))
    assert not set(ids) & set(unused.tolist())
    pretrained = run_train(tmp_path / "pretrained", *common, "--max_iters=1", f"--init_from={tiny_hf_dir}",
                           "--block_size=32")
    assert "full LM head: the rows of tokens the data does not use differ" in pretrained.stdout
