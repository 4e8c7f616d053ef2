"""The phi and tinytext mixtures: the same table-driven code, pointed at local fixture files via datasets' loaders."""

import json
import os

import numpy as np
import pytest

from data.hf_sources import PHI
from data.index import load_doc_index, load_meta
from data.prepare import prepare_dataset
from errors import UserError
from tags import TAGS, tag_of
from tokenizer import get_encoding

ROWS = 6


def fixture_row(source, i: int) -> dict:
    """A row with the columns the table expects for `source` (PIPPA's conversation is a list of turns)."""
    if source.name == "pippa":
        return {"bot_name": f"Bot{i}", "bot_description": "A friendly guide.", "categories": ["x"],
                "conversation": [{"message": f"Hi {i}", "is_human": True}, {"message": "Hello!", "is_human": False}]}
    return {c: f"{source.name} {c} {i}" for c in source.columns} | {"unused": "ignored"}


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def phi_files(tmp_path) -> dict[str, str]:
    files = {s.name: write_jsonl(tmp_path / f"{s.name}.jsonl", [fixture_row(s, i) for i in range(ROWS)]) for s in PHI}
    import datasets
    parquet = str(tmp_path / "sciphi.parquet")  # one source through the parquet loader
    sciphi = next(s for s in PHI if s.name == "sciphi")
    datasets.Dataset.from_list([fixture_row(sciphi, i) for i in range(ROWS)]).to_parquet(parquet)
    files["sciphi"] = parquet
    return files


def all_docs(d) -> list[str]:
    enc, out = get_encoding(), []
    for split in ("train", "val"):
        toks = np.fromfile(os.path.join(d, f"{split}.bin"), dtype=np.uint16)
        out += [enc.decode(toks[r["start"]:r["start"] + r["length"]].tolist()) for r in load_doc_index(d, split)]
    return out


def test_phi_mixture_from_local_fixtures(tmp_path, phi_files):
    d = prepare_dataset("phi", str(tmp_path / "phi"), local_files=phi_files, max_docs=4, val_fraction=0.25,
                        progress=False)
    meta = load_meta(d)
    per_tag = {t: meta["per_tag"]["train"][t]["docs"] + meta["per_tag"]["val"][t]["docs"] for t in TAGS}
    expected = {t: 4 * sum(s.tag == t for s in PHI) for t in TAGS}
    assert per_tag == expected  # max_docs per source, every source labelled with its tag
    docs = all_docs(d)
    assert "[Math] metamath query 1\nmetamath response 1" in docs
    assert "[Textbook] sciphi title 2\n\nsciphi completion 2" in docs
    assert "[Excerpt] orcatextbooks textbook 0\n\norcatextbooks question 0 [Response] orcatextbooks response 0" in docs
    assert "[Roleplay] <|system|>Bot3: A friendly guide.<|user|>Hi 3<|model|>Hello!" in docs
    assert all(tag_of(x) for x in docs)
    assert any("metamath" in s for s in meta["sources"])


def test_tinytext_release_as_labelled(tmp_path):
    texts = [f"[Math] {i}+{i}={2 * i}" for i in range(10)] + [f"[Code] def f{i}(): pass" for i in range(10)]
    rows = [{"text": t} for t in texts[2:]] + [{"text": f"{texts[0]}<eot>{texts[1]}<eot>"}]  # several in one row
    local = write_jsonl(tmp_path / "train.jsonl", rows)
    d = prepare_dataset("tinytext", str(tmp_path / "tt"), local_files={"tinytext": local}, val_fraction=0.3,
                        progress=False)
    assert sorted(all_docs(d)) == sorted(texts)


def test_wrong_columns_name_the_ones_present(tmp_path, phi_files):
    phi_files["metamath"] = write_jsonl(tmp_path / "bad.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(UserError, match="has columns answer, question but .* expects query, response"):
        prepare_dataset("phi", str(tmp_path / "out"), local_files=phi_files, progress=False)
    assert not (tmp_path / "out" / "meta.json").exists()


def test_untagged_release_row_and_unknown_source(tmp_path):
    local = write_jsonl(tmp_path / "train.jsonl", [{"text": "no tag"}])
    with pytest.raises(UserError, match="row 0: text does not start with a tag"):
        prepare_dataset("tinytext", str(tmp_path / "a"), local_files={"tinytext": local}, progress=False)
    with pytest.raises(UserError, match="unknown sources nope"):
        prepare_dataset("phi", str(tmp_path / "b"), local_files={"nope": local}, progress=False)


def test_unreachable_hub_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(UserError, match="cannot load dataset meta-math/MetaMathQA") as e:
        prepare_dataset("phi", str(tmp_path / "c"), max_docs=1, progress=False)
    assert "\n" not in str(e.value)
