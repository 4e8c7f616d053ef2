"""Export a NanoPhi checkpoint as a Hugging Face transformers directory, ready to load or push to the Hub.

    python export.py --out_dir=out-phi-mini --hf_dir=hf-phi

writes hf_dir/ with config.json and model.safetensors (a GPT2LMHeadModel), the GPT-2 tokenizer built from
the same offline BPE files the rest of NanoPhi uses (tokenizer.json, plus vocab.json/merges.txt for older
tools), generation_config.json with NanoPhi's sampling defaults, and a short model card. Then

    transformers.pipeline("text-generation", model="hf-phi")
    GPT.from_pretrained("hf-phi")

both load it offline, and its greedy continuations are sample.py's (with --dtype=float32). A LoRA run exports
merged (base + adapters) this way; with --adapters_only it writes just the adapters, as a peft directory
for transformers' GPT-2 of the same base (lora.py, docs/lora.md):

    python export.py --out_dir=out-lora --hf_dir=hf-lora-adapters --adapters_only=True
"""

import json
import os
import shutil

import torch

import lora
from checkpoint import load_checkpoint, load_model, model_checkpoint_path
from configurator import configure
from engine import newest_out_dir
from errors import UserError, run_main
from hf_gpt2 import TRANSFORMERS_BUFFERS, state_dict_to_transformers
from model import GPT
from tags import TAGS
from tokenizer import EOT_ID, EOT_TOKEN, VOCAB_SIZE, bpe_files, default_bpe_dir

# -----------------------------------------------------------------------------
init_from = "resume"  # 'resume' (out_dir/best.pt, else ckpt.pt), or a GPT-2 name / transformers directory to re-export
out_dir = ""  # the run to read; empty = the newest out*/ckpt.pt here (the run just trained)
hf_dir = "hf-phi"  # where to write the transformers directory
adapters_only = False  # a LoRA run: write only its adapters, as a peft adapter directory
temperature = 0.85  # sampling defaults written to generation_config.json
top_k = 8
max_new_tokens = 200
# -----------------------------------------------------------------------------


def transformers_model(model: GPT):
    """A GPT2LMHeadModel holding our weights (GPT-2 without biases gets zero biases: the same function).

    It has exactly the tokenizer's 50257 rows: a model trained from scratch pads its vocabulary to 50304 for
    speed, and the padding rows (never a target in training) are dropped, so the export cannot emit an id
    its tokenizer cannot decode. Dropout is the run's, not transformers' default of 0.1."""
    from transformers import GPT2Config, GPT2LMHeadModel
    cfg = model.config
    if cfg.vocab_size < VOCAB_SIZE:
        raise UserError(f"cannot export: the model has {cfg.vocab_size} tokens, GPT-2's tokenizer {VOCAB_SIZE}")
    config = GPT2Config(vocab_size=VOCAB_SIZE, n_positions=cfg.block_size, n_embd=cfg.n_embd,
                        n_layer=cfg.n_layer, n_head=cfg.n_head, activation_function="gelu_new",
                        resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
                        bos_token_id=EOT_ID, eos_token_id=EOT_ID, tie_word_embeddings=True)
    hf_model = GPT2LMHeadModel(config)
    target = hf_model.state_dict()
    weights = {k: v.float() for k, v in state_dict_to_transformers(model.state_dict()).items()}
    for name in ("transformer.wte.weight", "lm_head.weight"):  # tied: the same rows
        if name in weights:
            weights[name] = weights[name][:VOCAB_SIZE]
    for name, tensor in target.items():
        if name not in weights and name.endswith("bias"):
            weights[name] = torch.zeros_like(tensor)
    hf_model.load_state_dict(weights, strict=False)  # only the causal-mask buffers some versions keep are left out
    missing = [k for k in target if k not in weights and not k.endswith(TRANSFORMERS_BUFFERS)]
    if missing:
        raise UserError(f"cannot export: transformers' GPT-2 has weights NanoPhi does not: {missing[:3]}")
    return hf_model.eval()


def gpt2_tokenizer(block_size: int):
    """GPT-2's tokenizer as transformers wants it, built from the local vocab.bpe / encoder.json.
    encoder.json is what transformers calls vocab.json, vocab.bpe its merges.txt (same '#version' header)."""
    from transformers import GPT2Tokenizer
    paths = bpe_files(default_bpe_dir())
    with open(paths["encoder.json"], encoding="utf-8") as f:
        vocab = json.load(f)
    with open(paths["vocab.bpe"], encoding="utf-8") as f:
        merges = [tuple(line.split(" ")) for line in f.read().split("\n")[1:] if line]
    tokenizer = GPT2Tokenizer(vocab=vocab, merges=merges, model_max_length=block_size)
    return tokenizer, paths


MODEL_CARD = """---
library_name: transformers
pipeline_tag: text-generation
tags: [gpt2, nanophi]
---
# NanoPhi

A GPT-2 ({n_layer} layers, {n_embd} wide, {block_size}-token context) fine-tuned with NanoPhi on tagged
multitask data. Start a prompt with a tag to pick the skill: {tags}.

```python
from transformers import pipeline
generate = pipeline("text-generation", model="path/or/hub-id")
print(generate("[Math] 1+1=2 2+2=4 3+3=")[0]["generated_text"])
```

Generation stops at `{eot}`; sampling defaults (temperature {temperature}, top_k {top_k}) are in
generation_config.json.
"""


def export(model: GPT, directory: str) -> None:
    """Write model, tokenizer, generation config and model card to directory."""
    from transformers import GenerationConfig
    from transformers.utils import logging
    logging.disable_progress_bar()  # one line of output, not a progress bar per file
    cfg = model.config
    os.makedirs(directory, exist_ok=True)
    transformers_model(model).save_pretrained(directory)  # config.json + model.safetensors
    tokenizer, paths = gpt2_tokenizer(cfg.block_size)
    tokenizer.save_pretrained(directory)
    shutil.copyfile(paths["encoder.json"], os.path.join(directory, "vocab.json"))
    shutil.copyfile(paths["vocab.bpe"], os.path.join(directory, "merges.txt"))
    GenerationConfig(do_sample=True, temperature=temperature, top_k=top_k, max_new_tokens=max_new_tokens,
                     bos_token_id=EOT_ID, eos_token_id=EOT_ID, pad_token_id=EOT_ID).save_pretrained(directory)
    with open(os.path.join(directory, "README.md"), "w", encoding="utf-8") as f:
        f.write(MODEL_CARD.format(n_layer=cfg.n_layer, n_embd=cfg.n_embd, block_size=cfg.block_size,
                                  tags=", ".join(f"[{t}]" for t in TAGS), eot=EOT_TOKEN,
                                  temperature=temperature, top_k=top_k))


def main(argv: list[str] | None = None) -> None:
    configure(globals(), argv)
    run_dir = newest_out_dir(init_from, out_dir)
    if adapters_only:
        lora.export_adapters(load_checkpoint(model_checkpoint_path(run_dir)), hf_dir)
        print(f"wrote {hf_dir}: load it with peft.PeftModel.from_pretrained(<transformers GPT-2 of its base>, "
              f"'{hf_dir}')")
        return
    model, _ = load_model(init_from, run_dir, "cpu")
    export(model, hf_dir)
    print(f"wrote {hf_dir}: load it with transformers.pipeline('text-generation', model='{hf_dir}')")


if __name__ == "__main__":
    run_main(main)
