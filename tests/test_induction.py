"""The induction head set at init (model.init_induction_head): the embedded default's copying from the prompt
builds on it."""
import random
from dataclasses import asdict

import pytest
import torch

from errors import UserError
from model import GPT, GPTConfig


def repeat_accuracy(model: GPT, vocab: int, lists: int = 32) -> float:
    """Greedy next-token accuracy on the second copy of random token lists (after its first token)."""
    rng, hit, total = random.Random(1), 0, 0
    model.eval()
    with torch.no_grad():
        for _ in range(lists):
            k = rng.randint(8, 20)
            said = [rng.randrange(vocab) for _ in range(k)]
            logits, _ = model(torch.tensor([said + said[:-1]]), all_logits=True)
            hit += int((logits[0, k:].argmax(-1) == torch.tensor(said[1:])).sum())
            total += k - 1
    return hit / total


def test_induction_head_copies_repeated_tokens_from_the_start():
    torch.manual_seed(0)
    config = GPTConfig(block_size=64, vocab_size=512, n_layer=2, n_head=4, n_embd=128, dropout=0.0)
    model = GPT(config)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    model.init_offset_heads([1, 2, 3, 4])
    assert repeat_accuracy(model, 512) < 0.1  # offset heads alone do not copy
    model.init_induction_head(prev_head=0)
    assert repeat_accuracy(model, 512) > 0.8
    assert {k: v.shape for k, v in model.state_dict().items()} == shapes  # plain GPT-2 weights
    assert GPT(GPTConfig(**asdict(config))).config == model.config


@pytest.mark.parametrize("shape", [dict(n_layer=1, n_head=4, n_embd=128), dict(n_layer=2, n_head=2, n_embd=32)])
def test_induction_head_needs_a_second_layer_and_room(shape):
    model = GPT(GPTConfig(block_size=32, vocab_size=128, dropout=0.0, **shape))
    model.init_offset_heads([1])
    with pytest.raises(UserError, match="induction_head needs at least 2 layers"):
        model.init_induction_head(prev_head=0)


def test_number_tokens_are_gpt2s_whole_numbers_up_to_three_digits():
    from tokenizer import get_encoding, number_tokens
    numbers, enc = number_tokens(), get_encoding()
    texts = set(numbers.values())
    assert {str(k) for k in range(361)} <= texts and {f" {k}" for k in range(361)} <= texts
    assert all(enc.decode([tok]) == text for tok, text in numbers.items())
    assert not texts & {" 1957", "1957", "a1", " -3", "3.5"}


def test_number_embeddings_are_built_from_digits():
    from tokenizer import get_encoding, number_tokens
    enc = get_encoding()
    model = GPT(GPTConfig(block_size=32, vocab_size=50304, n_layer=2, n_head=4, n_embd=128, dropout=0.0))
    model.init_offset_heads([1, 2, 3, 4])
    model.init_induction_head(prev_head=0)
    word = model.transformer.wte.weight[enc.encode(" river")[0]].clone()
    model.init_number_embeddings(number_tokens())
    wte = model.transformer.wte.weight
    e = {text: wte[enc.encode(text)[0]] for text in [" 47", " 46", " 17", " 16", "47", " 12", "12", " 147", " 3"]}
    cos = torch.nn.functional.cosine_similarity
    # one digit changed moves every number the same way; so does the leading space
    assert cos(e[" 47"] - e[" 46"], e[" 17"] - e[" 16"], dim=0) > 0.6
    assert cos(e[" 47"] - e["47"], e[" 12"] - e["12"], dim=0) > 0.6
    assert cos(e[" 147"] - e[" 47"], e[" 3"] - e[" 17"], dim=0) < 0.5  # a hundreds digit is not a tens digit
    assert torch.equal(wte[enc.encode(" river")[0]], word)  # other tokens untouched
    with pytest.raises(ValueError, match="not a number"):
        model.init_number_embeddings({enc.encode(" river")[0]: " river"})


def test_number_embeddings_set_the_tens_digit_apart():
    """The ones digit has the value's Fourier features beside its digit vector, the tens digit only its vector:
    tens_scale makes that one longer, so numbers ten apart (` 47`, ` 37`: the same ones digit, the same Fourier
    features) are as far apart as the ones digit keeps numbers one apart."""
    from tokenizer import number_tokens
    numbers = number_tokens()
    ids = {text: tok for tok, text in numbers.items()}
    wtes = []
    for kwargs in ({"tens_scale": 1.0}, {}):  # the digits as they are, then the default's
        torch.manual_seed(0)
        model = GPT(GPTConfig(block_size=32, vocab_size=50304, n_layer=2, n_head=4, n_embd=128, dropout=0.0))
        model.init_offset_heads([1, 2, 3, 4])
        model.init_induction_head(prev_head=0)
        model.init_number_embeddings(numbers, **kwargs)
        wtes.append(model.transformer.wte.weight.detach().clone())
    plain, scaled = ({t: w[i] for t, i in ids.items()} for w in wtes)
    change = {t: scaled[t] - plain[t] for t in ids}
    # only the tens digit's vector changed: the same change wherever the tens digit is the same
    assert torch.allclose(change[" 47"], change[" 41"]) and torch.allclose(change[" 47"], change["147"])
    assert not torch.allclose(change[" 47"], change[" 37"], atol=1e-3)
    assert torch.allclose(change[" 3"], change[" 7"])  # no tens digit: the blank's vector, for all of them
    ten_apart = [(f" {n}", f" {n - 10}") for n in range(20, 100)]
    ratio = torch.stack([(scaled[a] - scaled[b]).norm() / (plain[a] - plain[b]).norm() for a, b in ten_apart])
    assert ratio.median() > 1.5


def test_number_embeddings_hold_their_values_fourier_features():
    """Beside the digits, each number carries cos/sin of 2 pi n / T: adding k turns those features by the same
    rotation for every n, so one linear map takes n's features to n + k's, for any n (with or without carries)."""
    from tokenizer import number_tokens
    numbers = number_tokens()
    wtes = []
    for kwargs in ({"periods": ()}, {}):  # without the Fourier features, then with the default's
        model = GPT(GPTConfig(block_size=32, vocab_size=50304, n_layer=2, n_head=4, n_embd=128, dropout=0.0))
        model.init_offset_heads([1, 2, 3, 4])
        model.init_induction_head(prev_head=0)
        model.init_number_embeddings(numbers, **kwargs)
        wtes.append(model.transformer.wte.weight.detach().clone())
    fourier = wtes[1] - wtes[0]  # the digits' part is the same draw either way
    ids = {text: tok for tok, text in numbers.items()}
    for k in (1, 7, 38):
        x = torch.stack([fourier[ids[f" {n}"]] for n in range(10, 300)])
        y = torch.stack([fourier[ids[f" {n + k}"]] for n in range(10, 300)])
        shift = torch.linalg.lstsq(x, y).solution
        assert torch.allclose(x @ shift, y, atol=1e-4), k
        # the digits alone have no such map: ` 19` -> ` 20` is not ` 11` -> ` 12`
        xd = torch.stack([wtes[0][ids[f" {n}"]] for n in range(10, 300)])
        yd = torch.stack([wtes[0][ids[f" {n + k}"]] for n in range(10, 300)])
        assert (xd @ torch.linalg.lstsq(xd, yd).solution - yd).norm() > 0.3 * yd.norm()
    assert fourier[ids[" 47"]].norm() > 0.5 * wtes[0][ids[" 47"]].norm()  # as strong as the digits'
