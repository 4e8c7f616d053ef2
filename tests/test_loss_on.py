"""Completion-only training: prompt/response splits recorded by data/prepare.py, loss_on='response' targets,
and the LM head run on trained rows only."""

import random
import re

import numpy as np
import pytest
import torch

from data import mini_sources
from data.binwriter import write_dataset
from data.index import load_doc_index, load_response_offsets
from dataloader import ResponseTargets, TaggedData, TrainBatches, TrainSampler
from errors import UserError
from kernels import FusedHeadLoss, fused_head_loss
from tags import PromptResponse, format_doc, format_excerpt, format_prompt_response, format_qa, response_start
from tokenizer import EOT_ID, get_encoding

DOCS = [("Math", format_doc("Math", "1+1=2 2+2=4 3+3=6")),
        ("Excerpt", format_excerpt("Ada moved to Hobart in 1957.\nQuestion: When did Ada move?", "1957")),
        ("QA", format_qa("What is  a list?", "A mutable sequence.")),
        ("Logic", format_prompt_response("Logic", "Premises: Bo is taller than Cy.\nQuestion: Who is the tallest?",
                                         "Conclusion: Bo is the tallest.")),
        ("Math", format_prompt_response("Math", "What is 2 + 3?", "5")),
        ("Textbook", format_prompt_response("Textbook", "Lists", "A list holds items."))]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("split-data"))
    # 40 variants of each (exact duplicates are dropped), split documents staying PromptResponse
    docs = [(t, f"{d} ({i})" if response_start(d) is None else PromptResponse(d[:response_start(d)], f"{d[response_start(d):]} ({i})"))
            for i in range(40) for t, d in DOCS]
    write_dataset(docs, out, val_fraction=0.2, num_threads=1, progress=False)
    return out


def test_prompt_response_documents_record_where_the_response_begins():
    for tag, doc in DOCS:
        start = response_start(doc)
        if tag in ("Math", "Textbook") and "?" not in doc:
            assert start is None, doc
        else:
            assert doc[start:].strip() in ("1957", "A mutable sequence.", "Conclusion: Bo is the tallest.", "5"), doc
            assert not doc[:start][-1].isspace() and doc[start].isspace()  # a tokenizer boundary


def test_response_offsets_are_the_prompt_tokens_of_each_document(dataset):
    enc = get_encoding()
    seen_split = 0
    for split in ("train", "val"):
        toks = np.memmap(f"{dataset}/{split}.bin", dtype=np.uint16, mode="r")
        index, offsets = load_doc_index(dataset, split), load_response_offsets(dataset, split)
        assert len(offsets) == len(index)
        for row, off in zip(index, offsets):
            text = enc.decode(toks[row["start"]:row["start"] + row["length"]].tolist())
            prompt = enc.decode(toks[row["start"]:row["start"] + off].tolist())
            if off:
                seen_split += 1
                assert text.startswith(prompt) and re.search(r"(\[Response\]|\*\*Answer:\*\*|\?)$", prompt), prompt
            else:
                assert text.startswith(("[Math] 1+1=2", "[Textbook]")), text
    assert seen_split > 100


def test_response_targets_train_responses_of_documents_that_start_in_the_window(dataset):
    data = TaggedData(dataset, block_size=48)
    targets = ResponseTargets(data)
    toks, index = data.tokens["train"], load_doc_index(dataset, "train")
    offsets_of_docs = load_response_offsets(dataset, "train")
    enc = get_encoding()
    offsets = np.arange(0, len(toks) - 49, 7)
    w = toks[offsets[:, None] + np.arange(49)]
    x, y = targets(w, offsets)
    assert (x == w[:, :-1]).all()
    for row in range(len(offsets)):
        for t in range(48):
            p = offsets[row] + 1 + t
            doc = np.searchsorted(index["start"], p, side="right") - 1
            start, off = index["start"][doc], offsets_of_docs[doc]
            trained = p >= start + off and (off == 0 or start >= offsets[row])
            assert (y[row, t] != -1) == trained
            if trained:
                assert y[row, t] == w[row, t + 1]
    # a window that starts at a split document trains its response and end-of-text, not its question
    doc = next(i for i, o in enumerate(offsets_of_docs) if o)
    start, length = index["start"][doc], index["length"][doc]
    w = toks[start + np.arange(49)][None, :]
    _, y = targets(w, np.array([start]))
    kept = y[0][:length][y[0][:length] != -1]
    response = enc.decode(toks[start + offsets_of_docs[doc]:start + length].tolist())
    assert enc.decode(kept[:-1].tolist()) == response and kept[-1] == EOT_ID


def test_loss_on_is_checked_and_old_datasets_say_how_to_rebuild(dataset, tmp_path):
    data = TaggedData(dataset, block_size=16)
    sampler = TrainSampler(len(data.tokens["train"]), 16, 2, 1, seed=0)
    with pytest.raises(UserError, match="loss_on='prompt'"):
        TrainBatches(data, sampler, 0, 1, "cpu", loss_on="prompt")
    x, y = next(TrainBatches(data, sampler, 0, 1, "cpu", loss_on="response").iteration())
    assert x.shape == y.shape == (2, 16) and (y == -1).any()
    import os, shutil
    old = tmp_path / "old"
    shutil.copytree(dataset, old)
    os.remove(old / "train_response.npy")
    with pytest.raises(UserError, match="rebuild it"):
        TrainBatches(TaggedData(str(old), 16), sampler, 0, 1, "cpu", loss_on="response")


def test_head_on_trained_rows_only_gives_the_same_loss_and_gradients():
    torch.manual_seed(0)
    x = torch.randn(40, 16, requires_grad=True)
    w = torch.randn(64, 16, requires_grad=True)
    targets = torch.randint(0, 64, (40,))
    targets[::3] = -1
    loss = fused_head_loss(x, w, targets)
    loss.backward()
    gx, gw = x.grad.clone(), w.grad.clone()
    x.grad = w.grad = None
    full = FusedHeadLoss.apply(x, w, targets)  # every row through the head, ignored ones zeroed
    full.backward()
    assert torch.allclose(loss, full) and torch.allclose(gx, x.grad) and torch.allclose(gw, w.grad, atol=1e-6)
