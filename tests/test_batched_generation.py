"""Batched generation on per-row KV cache lengths (kv_cache.KVCache, engine.generate_batch), and what generation
produces at and past the context window."""

import torch

import engine
from kv_cache import KVCache
from model import GPT, GPTConfig


def random_prompts(lengths: list[int], vocab: int, seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (n,), generator=g).tolist() for n in lengths]


def one_at_a_time(model: GPT, prompt: list[int], n: int, stop: int) -> list[int]:
    out = model.generate(torch.tensor([prompt]), n, temperature=0, stop_token=stop)[0, len(prompt):].tolist()
    return out[:out.index(stop)] if stop in out else out


def test_greedy_batched_equals_one_at_a_time(tiny_model):
    prompts = random_prompts([3, 17, 1, 9, 30, 5, 12, 2, 40, 8, 21], 50257)
    # a stop token that some rows produce early and others never: rows must stop on their own
    free = [one_at_a_time(tiny_model, p, 16, stop=-1) for p in prompts]
    stop = free[1][3]
    expected = [one_at_a_time(tiny_model, p, 16, stop) for p in prompts]
    assert any(len(e) < 16 for e in expected) and any(len(e) == 16 for e in expected)
    for batch_size in (4, 32):  # several batches, and one batch in which rows stop and get compacted away
        assert engine.generate_batch(tiny_model, prompts, 16, stop_token=stop, batch_size=batch_size) == expected


def test_batched_rows_stop_at_the_window():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=97, n_layer=2, n_head=2, n_embd=16)).eval()
    prompts = random_prompts([14, 16, 30, 2], 97)
    got = engine.generate_batch(model, prompts, 8, stop_token=None)
    # a row generates until its window is full (the token made at position 16 is its last), from its last 16 tokens
    assert [len(g) for g in got] == [3, 1, 1, 8]
    for prompt, tokens in zip(prompts, got):
        assert tokens == one_at_a_time(model, prompt[-16:], len(tokens), stop=-1)


def test_seeded_batched_sampling_repeats_and_stops_at_end_of_text(tiny_model, eot_out_dir):
    prompts = random_prompts([4, 9, 2], 50257)
    sampling = engine.Sampling(temperature=1.0, top_k=20, repetition_penalty=1.3)
    a = engine.generate_batch(tiny_model, prompts, 10, sampling, seed=3)
    assert a == engine.generate_batch(tiny_model, prompts, 10, sampling, seed=3)
    assert a != engine.generate_batch(tiny_model, prompts, 10, sampling, seed=4)
    eot_model = engine.load_for_inference("resume", eot_out_dir, "cpu", "float32")
    assert engine.generate_batch(eot_model, prompts, 10, sampling, seed=3) == [[], [], []]  # end-of-text at once


def test_a_row_refilled_mid_batch_decodes_as_if_alone(tiny_model):
    """The continuous-batching mechanism: while row 0 keeps decoding, row 1 is reset and given a new prompt,
    once prefilled alone and copied in, once prefilled in place (valid=0 for row 0)."""
    cfg = tiny_model.config
    a, b, c = random_prompts([6, 11, 4], 50257)
    with torch.inference_mode():
        for in_place in (False, True):
            cache = KVCache(cfg, 2, cfg.block_size, "cpu", torch.float32)
            logits, _ = tiny_model(torch.tensor([a, b[:6]]), kv_cache=cache)
            seq = [list(a), list(b[:6])]
            for _ in range(3):
                nxt = logits[:, -1].argmax(-1)
                seq[0].append(int(nxt[0]))
                logits, _ = tiny_model(nxt.unsqueeze(1), kv_cache=cache)
            pending = int(logits[0, -1].argmax())  # row 0's next token, fed in the step after the refill
            cache.reset_row(1)
            if in_place:
                padded = torch.tensor([[0] * 4, c])
                logits, _ = tiny_model(padded, kv_cache=cache, valid=torch.tensor([0, 4]))
                first = [int(logits[1, -1].argmax())]
            else:
                single = KVCache(cfg, 1, cfg.block_size, "cpu", torch.float32)
                first = [int(tiny_model(torch.tensor([c]), kv_cache=single)[0][0, -1].argmax())]
                cache.copy_row_from(single, 1)
            assert cache.lengths.tolist() == [len(seq[0]), 4]
            seq[0].append(pending)
            nxt = torch.tensor([pending, first[0]])
            seq[1] = list(c) + first
            for _ in range(8):
                logits, _ = tiny_model(nxt.unsqueeze(1), kv_cache=cache, valid=torch.tensor([1, 1]))
                nxt = logits[:, -1].argmax(-1)
                seq[0].append(int(nxt[0]))
                seq[1].append(int(nxt[1]))
            assert seq[1] == tiny_model.generate(torch.tensor([c]), 9, temperature=0)[0].tolist()
            assert seq[0] == tiny_model.generate(torch.tensor([a]), len(seq[0]) - len(a), temperature=0)[0].tolist()


def test_block_size_one_generates():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=1, vocab_size=97, n_layer=2, n_head=2, n_embd=16)).eval()
    out = model.generate(torch.tensor([[5, 7, 11]]), 6, temperature=0)[0].tolist()
    with torch.inference_mode():  # a 1-position model sees only the last token
        for i in range(3, 9):
            assert out[i] == int(model(torch.tensor([[out[i - 1]]]))[0][0, -1].argmax())
    assert out == model.generate(torch.tensor([[5, 7, 11]]), 6, temperature=0, use_cache=False)[0].tolist()


def test_sliding_window_past_block_size_conditions_on_the_kept_context():
    """Past block_size the cache keeps the last 3/4 window and refills: each new token is the greedy choice
    given exactly the tokens since the window's start (never fewer than 3/4 of the window)."""
    torch.manual_seed(0)
    block, keep = 16, 12
    model = GPT(GPTConfig(block_size=block, vocab_size=97, n_layer=2, n_head=2, n_embd=16)).eval()
    prompt = random_prompts([5], 97)[0]
    out = model.generate(torch.tensor([prompt]), 40, temperature=0)[0].tolist()
    start, cached = 0, len(prompt)  # where the window starts, positions in the cache
    with torch.inference_mode():
        for i in range(len(prompt), len(out)):
            if cached > block:  # the step that would need position block: refill from the last `keep` tokens
                start, cached = i - keep, keep
            assert out[i] == int(model(torch.tensor([out[start:i]]))[0][0, -1].argmax()), i
            assert start == 0 or keep <= i - start <= block
            cached += 1
    # and up to the first slide, it is plain greedy decoding over the whole sequence
    assert out[:block + 1] == model.generate(torch.tensor([prompt]), block + 1 - 5, temperature=0,
                                             use_cache=False)[0].tolist()
