"""Talk to NanoPhi: a `User:` / `Bot:` loop in the terminal.

    python chat.py --out_dir=out-phi-mini
    python chat.py --out_dir=out-phi-mini --prompt="[Math] 2+2="      # answer once and exit
    echo "[Math] 2+2=" | python chat.py --out_dir=out-phi-mini         # piped: one answer per line

Start a line with a tag ([Math], [Code], ...) to pick the skill for that question, or set one for the
whole chat with /tag. Each turn goes to the model as a document of its own, ended by end-of-text, as in
training; earlier turns stay in the context while they fit (oldest dropped first). Ctrl-C stops an
answer, Ctrl-D (end of input) leaves. Type /help for the commands.
"""

import sys
from typing import Iterator

import torch

import engine
import hardware
from configurator import configure
from errors import UserError, run_main
from model import GPT
from tags import TAGS, optional_tag, tag_of, tag_prefix
from tokenizer import EOT_ID

# -----------------------------------------------------------------------------
init_from = "resume"  # 'resume' (out_dir/best.pt, else ckpt.pt), 'gpt2' ... 'gpt2-xl', or a local transformers directory
out_dir = ""  # the run to read; empty = the newest out*/ckpt.pt here (the run just trained)
prompt = ""  # answer this one prompt and exit (for scripts); empty = interactive chat
tag = ""  # a tag for every line that does not start with one, e.g. --tag=Math; empty = none
max_new_tokens = 256  # longest answer
temperature = 0.85  # 0 = greedy
top_k = 8  # 0 or None = all tokens
top_p = 1.0  # 1.0 = off
repetition_penalty = 1.0  # 1.0 = off
seed = -1  # >= 0 makes the chat reproducible; -1 = different answers every run
device = "auto"  # 'auto', 'cpu', 'cuda', 'mps'
dtype = "auto"  # 'auto', 'float32', 'bfloat16', 'float16', or 'int8' (as in sample.py)
compile = False
# -----------------------------------------------------------------------------

HELP = f"""commands:
  /tag NAME   put [NAME] before every line that has no tag of its own (/tag alone: stop); tags: {', '.join(TAGS)}
  /reset      forget the conversation so far
  /temp X     sampling temperature (0 = greedy)
  /topk N     sample from the N likeliest tokens (0 = all)
  /help       this list
Start a line with a tag, e.g. "[Math] 2+2=", to use it for that line only. Ctrl-C stops an answer, Ctrl-D leaves."""


def non_negative(value):
    if value < 0:
        raise ValueError(value)
    return value


class Chat:
    """The conversation: its turns as tokens, the sampling settings, and the tag for untagged lines."""

    def __init__(self, model: GPT, sampling: engine.Sampling, tag: str, max_new_tokens: int):
        self.model, self.sampling, self.tag, self.max_new_tokens = model, sampling, tag, max_new_tokens
        self.turns: list[list[int]] = []  # each past turn: question + answer + end-of-text
        block_size = model.config.block_size
        # Leave room for the answer inside the window, but never more than half of it to the answer.
        self.context_limit = block_size - min(max_new_tokens, block_size // 2)

    def question(self, line: str) -> str:
        """The text the model sees for a user line: the chat's tag goes first unless the line has one."""
        if self.tag and tag_of(line) is None:
            return f"{tag_prefix(self.tag)} {line}"
        return line

    def context(self, question: list[int]) -> list[int]:
        """Past turns (oldest dropped first while they do not fit) followed by the question."""
        question, _ = engine.keep_last(question, self.context_limit)
        budget = self.context_limit - len(question)
        kept: list[int] = []
        for turn in reversed(self.turns):
            if len(kept) + len(turn) > budget:
                break
            kept = turn + kept
        return kept + question

    def answer(self, line: str) -> Iterator[str]:
        """Stream the answer to a user line as text; the turn is kept even if the answer is cut short."""
        question = engine.encode(self.question(line), self.model)
        answer: list[int] = []
        try:
            for token, piece in engine.stream(self.model, self.context(question), self.max_new_tokens,
                                              self.sampling):
                answer.append(token)
                yield piece
        finally:
            self.turns.append(question + answer + [EOT_ID])

    def command(self, line: str) -> str:
        """Run a /command; return what to tell the user."""
        name, _, arg = line.partition(" ")
        arg = arg.strip()
        try:
            if name == "/help":
                return HELP
            if name == "/reset":
                self.turns = []
                return "(conversation cleared)"
            if name == "/tag":
                self.tag = optional_tag(arg)
                return f"(tag: [{self.tag}])" if self.tag else "(no tag)"
            if name == "/temp":
                self.sampling.temperature = non_negative(float(arg))
                return f"(temperature: {self.sampling.temperature})"
            if name == "/topk":
                self.sampling.top_k = non_negative(int(arg))
                return f"(top_k: {self.sampling.top_k or 'all'})"
        except ValueError:
            return f"({name} needs a number >= 0, e.g. {name} {'0.8' if name == '/temp' else '8'})"
        except UserError as e:
            return f"({e})"
        return f"(unknown command {name}: /help lists them)"


def main(argv: list[str] | None = None) -> None:
    configure(globals(), argv)
    if seed >= 0:
        torch.manual_seed(seed)
    hardware.set_cpu_threads(idle_only=True)
    model = engine.load_for_inference(init_from, engine.newest_out_dir(init_from, out_dir), device, dtype,
                                     compile)
    chat = Chat(model, engine.Sampling(temperature, top_k, top_p, repetition_penalty), optional_tag(tag),
                max_new_tokens)
    if prompt:
        for piece in chat.answer(prompt):
            print(piece, end="", flush=True)
        print()
        return
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"NanoPhi chat ({init_from if init_from != 'resume' else out_dir}). /help lists the commands.")
    while True:
        try:
            line = input("User: ").strip()
            if not interactive:  # piped input is not echoed by a terminal: show it so the transcript reads right
                print(line)
        except EOFError:
            print()
            return
        except KeyboardInterrupt:  # Ctrl-C at the prompt drops the line, like a shell
            print()
            continue
        if not line:
            continue
        if line.startswith("/"):
            print(chat.command(line))
            continue
        print("Bot: ", end="", flush=True)
        try:
            for piece in chat.answer(line):
                print(piece, end="", flush=True)
        except KeyboardInterrupt:
            print(" [stopped]", end="")
        print(flush=True)


if __name__ == "__main__":
    run_main(main)
