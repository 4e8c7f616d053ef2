"""export.py: the transformers directory loads offline, matches sample.py's greedy tokens, and round-trips."""

import json
import os

import pytest
import torch

import engine
import export
import sample
from checkpoint import load_model
from helpers import run_as_user
from model import GPT
from tokenizer import EOT_ID, VOCAB_SIZE, get_encoding

PROMPT = "[Math] 1+1=2 2+2=4 3+3="


@pytest.fixture(scope="module")
def hf_dir(tiny_out_dir, tmp_path_factory) -> str:
    directory = str(tmp_path_factory.mktemp("export") / "hf-phi")
    export.export(load_model("resume", tiny_out_dir)[0], directory)
    return directory


def test_export_script_says_one_line(tiny_out_dir, tmp_path, capsys):
    code, out, err = run_as_user(export, [f"--out_dir={tiny_out_dir}", f"--hf_dir={tmp_path / 'hf'}"], capsys)
    assert code == 0, err
    assert out.count("\n") == 1 and os.path.isfile(tmp_path / "hf" / "model.safetensors")


def test_export_writes_a_hub_ready_directory(hf_dir):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.json",
                 "merges.txt", "generation_config.json", "README.md"):
        assert os.path.isfile(os.path.join(hf_dir, name)), name
    with open(os.path.join(hf_dir, "generation_config.json")) as f:
        generation = json.load(f)
    assert generation["temperature"] == 0.85 and generation["top_k"] == 8 and generation["eos_token_id"] == EOT_ID


def test_pipeline_loads_offline_and_greedy_matches_sample(hf_dir, tiny_out_dir, capsys):
    from transformers import pipeline
    generator = pipeline("text-generation", model=hf_dir)
    ids = generator.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    assert ids[0].tolist() == engine.encode(PROMPT)  # the exported tokenizer is tiktoken's GPT-2
    out = generator.model.generate(ids, do_sample=False, max_new_tokens=16)[0, ids.size(1):].tolist()
    if EOT_ID in out:
        out = out[:out.index(EOT_ID)]
    code, stdout, stderr = run_as_user(sample, [f"--out_dir={tiny_out_dir}", f"--start={PROMPT}", "--num_samples=1",
                                                "--max_new_tokens=16", "--temperature=0", "--dtype=float32"], capsys)
    assert code == 0, stderr
    assert stdout == PROMPT + get_encoding().decode(out) + "\n---------------\n"
    text = generator(PROMPT, max_new_tokens=4, do_sample=False)[0]["generated_text"]
    assert text.startswith(PROMPT)


def test_from_pretrained_round_trips(hf_dir, tiny_model):
    again = GPT.from_pretrained(hf_dir)
    assert again.config == tiny_model.config
    ours, theirs = tiny_model.state_dict(), again.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_export_fills_missing_biases_with_zeros(tmp_path):
    from model import GPTConfig
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, vocab_size=50304, n_layer=1, n_head=2, n_embd=16, bias=False)).eval()
    export.export(model, str(tmp_path))
    again = GPT.from_pretrained(str(tmp_path))
    idx = torch.tensor([engine.encode(PROMPT)])
    assert torch.allclose(model(idx)[0][..., :VOCAB_SIZE], again(idx)[0], atol=1e-5)


def test_export_keeps_the_runs_dropout_and_exactly_the_tokenizers_vocabulary(tmp_path):
    # a model trained from scratch pads its vocabulary to 50304 rows; the export has the tokenizer's 50257,
    # so it cannot emit an id its tokenizer cannot decode, and its dropout is the run's, not transformers' 0.1
    from safetensors.torch import load_file
    from transformers import AutoTokenizer
    from model import GPTConfig
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, vocab_size=50304, n_layer=1, n_head=2, n_embd=16, dropout=0.05)).eval()
    export.export(model, str(tmp_path))
    with open(tmp_path / "config.json") as f:
        config = json.load(f)
    assert config["vocab_size"] == VOCAB_SIZE == len(AutoTokenizer.from_pretrained(str(tmp_path)))
    assert config["resid_pdrop"] == config["embd_pdrop"] == config["attn_pdrop"] == 0.05
    weights = load_file(str(tmp_path / "model.safetensors"))
    assert weights["transformer.wte.weight"].shape == (VOCAB_SIZE, 16)
    assert torch.equal(weights["transformer.wte.weight"], model.transformer.wte.weight[:VOCAB_SIZE])
