"""Build a tagged multitask dataset: GPT-2 token bins, a document index per split, and meta.json.

    python data/prepare.py                          # the offline `mini` mixture -> data/mini/
    python data/prepare.py --mixture=phi            # NanoPhi's Hugging Face sources, labelled here -> data/phi/
    python data/prepare.py --mixture=tinytext       # NanoPhi's labelled release as is -> data/phi/tinytext/
    python data/prepare.py --input='my/*.jsonl'     # your own files -> data/custom/

From Python (train.py builds data/mini this way when it is missing):

    from data.prepare import prepare_dataset
    dataset_dir = prepare_dataset("mini")           # reuses a complete dataset unless force=True

File formats and the reader API are in data/index.py; the document layout per tag in tags.py.
"""

import os
import sys

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configurator import configure
from data import hf_sources, mini_sources, user_files
from data.binwriter import write_dataset
from data.index import is_complete, load_meta
from errors import UserError, run_main

# private (underscore) so configure() does not take them for settings
_DATA_DIR = os.path.dirname(os.path.abspath(__file__))
_DEFAULT_DIRS = {"mini": "mini", "phi": "phi", "tinytext": os.path.join("phi", "tinytext"), "custom": "custom"}
_MIXTURES = ("mini", *hf_sources.MIXTURES)

# -----------------------------------------------------------------------------
# settings (python data/prepare.py --help)
mixture = "mini"  # mini (offline), phi (Hugging Face sources) or tinytext (NanoPhi's labelled release)
input = ""  # path or glob of your own files (JSONL or labelled text); builds data/custom/
out_dir = ""  # default: data/<mixture>/ (data/custom/ for --input)
force = False  # rebuild even if out_dir already holds a complete dataset
seed = 1337  # decides the train/val split and the generated mini documents
val_fraction = 0.03  # share of documents held out for validation
scale = 1.0  # mini: multiplies the number of documents (1.0 is about 5M tokens)
max_docs = 0  # phi/tinytext: at most this many documents per source (0: all)
num_threads = 0  # tokenizer threads (0: all cores)
# -----------------------------------------------------------------------------


def prepare_dataset(mixture: str = "mini", out_dir: str | None = None, *, input: str | None = None,
                    force: bool = False, seed: int = 1337, val_fraction: float = 0.03, scale: float = 1.0,
                    max_docs: int = 0, num_threads: int = 0, local_files: dict[str, str] | None = None,
                    progress: bool = True) -> str:
    """Build (or reuse) a dataset and return its directory.

    mixture: "mini", "phi" or "tinytext"; input: your own files instead (then out_dir defaults to data/custom).
    local_files: {source name: local path} to read phi/tinytext sources from local files (tests, offline mirrors).
    Raises UserError for anything the user can fix; an interrupted or failed build leaves no meta.json.
    """
    name = "custom" if input else mixture
    if input and mixture != "mini":
        raise UserError(f"give either --input or --mixture={mixture}, not both")
    if name not in _DEFAULT_DIRS:
        raise UserError(f"unknown mixture {mixture!r}: use one of {', '.join(_MIXTURES)}, or --input=PATH for your own files")
    if scale <= 0 or max_docs < 0:
        raise UserError(f"scale ({scale}) must be > 0 and max_docs ({max_docs}) >= 0")
    out_dir = out_dir or os.path.join(_DATA_DIR, _DEFAULT_DIRS[name])
    settings = {"mixture": name, "input": input or None, "seed": seed, "val_fraction": val_fraction,
                "scale": scale if name == "mini" else None, "max_docs": max_docs if name in hf_sources.MIXTURES else None}
    if is_complete(out_dir) and not force:
        if load_meta(out_dir).get("settings") != settings:
            print(f"note: {out_dir} was built with other settings; reusing it (--force rebuilds)", file=sys.stderr)
        return out_dir
    if name == "mini":
        docs, sources = mini_sources.mini_documents(seed, scale), mini_sources.describe(scale)
    elif name == "custom":
        docs, sources = user_files.user_documents(input), user_files.input_files(input)
    else:
        docs = hf_sources.hf_documents(name, max_docs, local_files)
        sources = hf_sources.describe(hf_sources.MIXTURES[name], local_files or {})
    info = {"mixture": name, "sources": sources, "settings": settings}
    write_dataset(docs, out_dir, seed=seed, val_fraction=val_fraction, num_threads=num_threads, info=info,
                  progress=progress)
    return out_dir


def summary(out_dir: str) -> str:
    meta = load_meta(out_dir)
    lines = [f"{out_dir}: " + ", ".join(f"{s} {v['tokens']:,} tokens / {v['docs']:,} docs" for s, v in meta["splits"].items())
             + f", {meta['duplicates_dropped']:,} duplicates dropped, built in {meta['build_seconds']}s"]
    for tag in meta["tags"]:
        tr, va = meta["per_tag"]["train"][tag], meta["per_tag"]["val"][tag]
        lines.append(f"  [{tag}]".ljust(13) + f"train {tr['tokens']:>11,} tokens {tr['docs']:>8,} docs | "
                     f"val {va['tokens']:>9,} tokens {va['docs']:>6,} docs")
    return "\n".join(lines)


def main() -> None:
    settings = configure(globals())
    out = prepare_dataset(settings.pop("mixture"), settings.pop("out_dir") or None, **settings)
    print(summary(out))


if __name__ == "__main__":
    run_main(main)
