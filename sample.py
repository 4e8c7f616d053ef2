"""Sample from a trained NanoPhi model (or GPT-2), streaming each continuation to the terminal.

    python sample.py --out_dir=out-phi-mini --start="[Math] 1+1=2 2+2=4 3+3="
    python sample.py --init_from=gpt2 --start=FILE:prompt.txt --num_samples=3

The tag a prompt starts with ([Textbook], [Math], [Code], ...) selects the skill. A sample ends at
end-of-text (the marker itself is not printed) or after max_new_tokens; samples are separated by a line
of dashes. A prompt longer than the model's context keeps its last block_size tokens.
"""

import sys

import torch

import engine
import hardware
from configurator import configure
from errors import run_main

# -----------------------------------------------------------------------------
init_from = "resume"  # 'resume' (out_dir/best.pt, else ckpt.pt), 'gpt2' ... 'gpt2-xl', or a local transformers directory
out_dir = ""  # the run to read; empty = the newest out*/ckpt.pt here (the run just trained)
start = "[Textbook] Python"  # the prompt, or FILE:path to read it from a file
num_samples = 3
max_new_tokens = 200
temperature = 0.85  # 0 = greedy; NanoPhi is at its best a little below 1
top_k = 8  # sample from the 8 likeliest tokens; 0 or None = all
top_p = 1.0  # nucleus sampling; 1.0 = off
repetition_penalty = 1.0  # > 1 discourages repeating tokens already in the text; 1.0 = off
seed = 1337
device = "auto"  # 'auto' (cuda if present, else cpu), 'cpu', 'cuda', 'cuda:1', 'mps'
dtype = "auto"  # 'auto' (bf16 where fast), 'float32', 'bfloat16', 'float16', 'int8' (CPU opt-in, less precise)
compile = False  # torch.compile the model: slow start, faster decoding on GPUs
# -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    configure(globals(), argv)
    torch.manual_seed(seed)  # one seed for the run: samples differ from each other but repeat run to run
    hardware.set_cpu_threads(idle_only=True)
    model = engine.load_for_inference(init_from, engine.newest_out_dir(init_from, out_dir), device, dtype,
                                     compile)
    ids, dropped = engine.keep_last(engine.encode(engine.read_start(start), model), model.config.block_size)
    if dropped:
        print(f"note: the prompt is longer than the model's context; keeping its last "
              f"{model.config.block_size} tokens ({dropped} dropped)", file=sys.stderr)
    prompt_text = engine.decode(ids)
    sampling = engine.Sampling(temperature, top_k, top_p, repetition_penalty)
    for _ in range(num_samples):
        print(prompt_text, end="", flush=True)
        for _, piece in engine.stream(model, ids, max_new_tokens, sampling):
            print(piece, end="", flush=True)
        print("\n---------------", flush=True)


if __name__ == "__main__":
    run_main(main)
