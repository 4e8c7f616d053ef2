"""One entry point for the benchmarks; every other --key=value goes to the chosen one.

    python -m bench                  # --mode=train: train.py's step vs a plain fp32 eager loop (training.py)
    python -m bench --mode=sample    # decoding: ours vs transformers' generate (decoding.py)
    python -m bench --mode=data      # data/prepare.py's tokens/s vs raw tiktoken (dataprep.py)
    python -m bench --mode=eval      # eval.py's batched generation vs one prompt at a time (evaluation.py)
    python -m bench --mode=serve     # serve.py: 8 streaming clients vs 1, and vs sample.py (serving.py)
    python -m bench --mode=memory    # the memory planner's table, checked against measured peaks (memory.py)

Each prints a table and, last, one JSON line. Speeds are medians of several interleaved runs.
"""

import importlib
import os
import sys

if __package__ in (None, ""):  # `python bench` (the folder as a script): make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from errors import UserError, run_main  # noqa: E402

MODES = {"train": "bench.training", "sample": "bench.decoding", "data": "bench.dataprep", "eval": "bench.evaluation",
         "serve": "bench.serving", "memory": "bench.memory"}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    modes = [a.split("=", 1)[1] for a in argv if a.startswith("--mode=")]
    mode = modes[-1] if modes else "train"
    if mode not in MODES:
        raise UserError(f"--mode={mode}: use {', '.join(MODES)}")
    importlib.import_module(MODES[mode]).main([a for a in argv if not a.startswith("--mode=")])


if __name__ == "__main__":
    run_main(main)
