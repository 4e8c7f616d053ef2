"""data/prepare.py: the mini mixture at a tiny scale, the user-file path, atomic writes and one-line errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from data.binwriter import doc_hash, split_of, write_dataset
from data.index import load_doc_index, load_meta, tag_ids_at
from data.mini_sources import mini_documents
from data.prepare import prepare_dataset
from errors import UserError
from tags import TAGS, tag_of
from tokenizer import EOT_ID, VOCAB_SIZE, get_encoding

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCALE, SEED = 0.02, 1234


def build_mini(out_dir, **kw) -> str:
    return prepare_dataset("mini", str(out_dir), scale=SCALE, seed=kw.pop("seed", SEED), progress=False, **kw)


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> str:
    return build_mini(tmp_path_factory.mktemp("mini"))


def tokens(d, split):
    return np.memmap(os.path.join(d, f"{split}.bin"), dtype=np.uint16, mode="r")


def decoded_docs(d, split) -> list[str]:
    enc, toks, index = get_encoding(), tokens(d, split), load_doc_index(d, split)
    return [enc.decode(toks[r["start"]:r["start"] + r["length"]].tolist()) for r in index]


def expected_docs(seed, val_fraction=0.03) -> dict[str, list[str]]:
    """What prepare should write: the generated documents, first copy of each, in order, split by hash."""
    out, seen = {"train": [], "val": []}, set()
    for _, text in mini_documents(seed, SCALE):
        h = doc_hash(text, seed)
        if h not in seen:
            seen.add(h)
            out[split_of(h, val_fraction)].append(text)
    return out


def test_every_tag_present_and_counts_match(mini):
    meta = load_meta(mini)
    assert meta["tags"] == list(TAGS) and meta["eot_id"] == EOT_ID and meta["vocab_size"] == VOCAB_SIZE
    for tag in TAGS:
        assert meta["per_tag"]["train"][tag]["docs"] > 0, tag
    for split in ("train", "val"):
        toks, index = tokens(mini, split), load_doc_index(mini, split)
        assert len(toks) == meta["splits"][split]["tokens"] == sum(v["tokens"] for v in meta["per_tag"][split].values())
        assert len(index) == meta["splits"][split]["docs"] > 0
        counts = np.bincount(index["tag_id"], minlength=len(TAGS))
        assert counts.tolist() == [meta["per_tag"][split][t]["docs"] for t in TAGS]


def test_ids_and_separators(mini):
    for split in ("train", "val"):
        toks, index = np.asarray(tokens(mini, split)), load_doc_index(mini, split)
        assert toks.max() < VOCAB_SIZE
        assert toks[-1] == EOT_ID and (toks == EOT_ID).sum() == len(index)
        assert (toks[index["start"] + index["length"]] == EOT_ID).all()  # each document ends in end-of-text
        assert index["start"][0] == 0 and (index["start"][1:] == (index["start"] + index["length"] + 1)[:-1]).all()


def test_decode_reproduces_documents_and_tags(mini):
    expected = expected_docs(SEED)
    for split in ("train", "val"):
        docs = decoded_docs(mini, split)
        assert docs == expected[split]
        index = load_doc_index(mini, split)
        assert [TAGS[i] for i in index["tag_id"]] == [tag_of(d) for d in docs]
        assert (tag_ids_at(index, index["start"] + index["length"]) == index["tag_id"]).all()
    assert not set(expected["train"]) & set(expected["val"])


def test_same_seed_same_bytes_other_seed_other_split(mini, tmp_path):
    again = build_mini(tmp_path / "again")
    for name in ("train.bin", "val.bin", "train_index.npy", "val_index.npy"):
        with open(os.path.join(mini, name), "rb") as a, open(os.path.join(again, name), "rb") as b:
            assert a.read() == b.read(), name
    other = build_mini(tmp_path / "other", seed=SEED + 1)
    assert decoded_docs(other, "val") != decoded_docs(mini, "val")


def test_complete_dataset_reused_unless_force(tmp_path):
    d = build_mini(tmp_path / "d")
    stamp = os.path.getmtime(os.path.join(d, "train.bin"))
    os.utime(os.path.join(d, "train.bin"), (stamp - 100, stamp - 100))
    build_mini(d)
    assert os.path.getmtime(os.path.join(d, "train.bin")) == stamp - 100
    build_mini(d, force=True)
    assert os.path.getmtime(os.path.join(d, "train.bin")) > stamp - 100


def test_interrupted_build_leaves_nothing_complete(tmp_path):
    def docs():
        yield from list(mini_documents(SEED, SCALE))[:300]
        raise KeyboardInterrupt

    d = build_mini(tmp_path / "d")
    with pytest.raises(KeyboardInterrupt):
        write_dataset(docs(), d, batch_docs=64, progress=False)
    assert not os.path.exists(os.path.join(d, "meta.json"))
    assert not [f for f in os.listdir(d) if "tmp" in f]


def test_user_files_jsonl_and_labelled_text(tmp_path):
    rows = [{"tag": "math", "text": f"{i}+{i}={2 * i}"} for i in range(40)]
    rows += [{"tag": "[QA]", "prompt": f"What is {i} squared?", "response": str(i * i)} for i in range(40)]
    rows += [{"tag": "Excerpt", "prompt": f"Text {i}.\nQuestion: which number?", "response": str(i)} for i in range(40)]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    labelled = [f"[Logic] Premises: All a{i} are b. All b are c.\nConclusion: All a{i} are c." for i in range(40)]
    (tmp_path / "b.txt").write_text("<eot>".join(labelled[:20]) + "<|endoftext|>\n" + "\n<eot>\n".join(labelled[20:]))
    d = prepare_dataset(input=str(tmp_path / "*.*"), out_dir=str(tmp_path / "out"), val_fraction=0.2, progress=False)
    docs = decoded_docs(d, "train") + decoded_docs(d, "val")
    assert len(docs) == 160
    assert "[Math] 3+3=6" in docs and "[QA] **Question:** What is 3 squared?\n**Answer:** 9" in docs
    assert "[Excerpt] Text 3.\nQuestion: which number? [Response] 3" in docs
    assert set(labelled) <= set(docs)
    assert load_meta(d)["mixture"] == "custom"


def run_prepare(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "data", "prepare.py"), *args],
                          capture_output=True, text=True, timeout=60)


def bad_inputs(tmp_path):
    (tmp_path / "tag.jsonl").write_text('{"tag": "Math", "text": "1+1=2"}\n{"tag": "Poetry", "text": "roses"}\n')
    (tmp_path / "broken.jsonl").write_text('{"tag": "Math", "text": "1+1=2"}\n{"tag": "Math", "text": \n')
    (tmp_path / "keys.jsonl").write_text('{"tag": "Math", "body": "1+1=2"}\n')
    (tmp_path / "empty.jsonl").write_text("\n\n")
    (tmp_path / "bytes.txt").write_bytes(b"[Math] 1+1=2<eot>[Math] caf\xe9 \xff\n")
    (tmp_path / "untagged.txt").write_text("[Math] 1+1=2<eot>no tag here\n")
    (tmp_path / "file").write_text("not a dir")
    return {
        "unknown mixture": (["--mixture=nope"], "unknown mixture 'nope'"),
        "unknown tag": ([f"--input={tmp_path / 'tag.jsonl'}"], "tag.jsonl:2: unknown tag 'Poetry'"),
        "malformed jsonl": ([f"--input={tmp_path / 'broken.jsonl'}"], "broken.jsonl:2: malformed JSON"),
        "wrong keys": ([f"--input={tmp_path / 'keys.jsonl'}"], "keys.jsonl:1: has keys body, tag"),
        "empty result": ([f"--input={tmp_path / 'empty.jsonl'}"], "split is empty (0 unique documents"),
        "no files": ([f"--input={tmp_path / 'none*.jsonl'}"], "matches no files"),
        "undecodable bytes": ([f"--input={tmp_path / 'bytes.txt'}"], "bytes.txt:1: byte 28 is not UTF-8"),
        "untagged text": ([f"--input={tmp_path / 'untagged.txt'}"], "untagged.txt:1: document does not start with a tag"),
        "unwritable out_dir": (["--scale=0.01", f"--out_dir={tmp_path / 'file' / 'out'}"], "cannot write to output dir"),
    }


@pytest.mark.slow  # nine runs of prepare.py, each a fresh Python
def test_bad_inputs_are_one_line_errors(tmp_path):
    for name, (args, message) in bad_inputs(tmp_path).items():
        out = tmp_path / "out" / name.replace(" ", "_")
        if not any(a.startswith("--out_dir") for a in args):
            args = [*args, f"--out_dir={out}"]
        r = run_prepare(*args)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), (name, r.stderr)
        assert message in lines[0], (name, lines[0])
        assert not os.path.exists(out) or not os.listdir(out), (name, os.listdir(out))  # nothing half-written


def test_settings_errors_raise_user_error(tmp_path):
    with pytest.raises(UserError, match="either --input"):
        prepare_dataset("phi", input="x.jsonl")
    with pytest.raises(UserError, match="val_fraction"):
        build_mini(tmp_path, val_fraction=1.5)
