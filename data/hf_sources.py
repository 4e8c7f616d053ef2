"""The `phi` mixtures: NanoPhi's Hugging Face sources, declared in one table and streamed with `datasets`.

`phi` labels the raw sources with our own layouts (tags.py); `tinytext` takes NanoPhi's labelled release
(VatsaDev/TinyText, train.jsonl) as is. Column names come from the dataset cards; a dataset whose rows lack
a column the table expects stops the build with an error listing the columns it does have.
Tests (and offline users) point a source at local files instead of the hub: local_files={name: path or glob},
loaded through datasets' own json/parquet/csv/text loaders, so the same code path runs.
"""

import itertools
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from errors import UserError
from data.user_files import SEPARATOR
from tags import format_doc, format_excerpt, format_prompt_response, format_textbook, tag_of

Doc = tuple[str, str]


@dataclass(frozen=True)
class Source:
    name: str  # short name, the key for max_docs reporting and local_files overrides
    path: str  # Hugging Face dataset id
    config: str | None
    split: str
    tag: str | None  # None: the rows are already labelled
    columns: tuple[str, ...]  # columns `fmt` reads
    fmt: Callable[[dict], str]  # row -> document text (with its tag)
    data_files: str | None = None


def pippa(row: dict) -> str:
    """A PIPPA chat in the metharme layout: the bot's description, then alternating user/model turns."""
    turns = "".join(("<|user|>" if m["is_human"] else "<|model|>") + m["message"].strip() for m in row["conversation"])
    return format_doc("Roleplay", f"<|system|>{row['bot_name']}: {row['bot_description'].strip()}{turns}")


PHI = (
    Source("metamath", "meta-math/MetaMathQA", None, "train", "Math", ("query", "response"),
           lambda r: format_prompt_response("Math", r["query"], r["response"])),
    Source("mathinstruct", "TIGER-Lab/MathInstruct", None, "train", "Math", ("instruction", "output"),
           lambda r: format_prompt_response("Math", r["instruction"], r["output"])),
    Source("codesearchnet", "code-search-net/code_search_net", "python", "train", "Code",
           ("func_documentation_string", "func_code_string"),
           lambda r: format_doc("Code", r["func_documentation_string"].strip() + "\n\n" + r["func_code_string"])),
    Source("platypus", "garage-bAInd/Open-Platypus", None, "train", "Logic", ("instruction", "output"),
           lambda r: format_prompt_response("Logic", r["instruction"], r["output"])),
    Source("pippa", "PygmalionAI/PIPPA", None, "train", "Roleplay", ("bot_name", "bot_description", "conversation"),
           pippa, data_files="pippa_deduped.jsonl"),
    Source("roleplayio", "AlekseyKorshuk/roleplay-io", None, "train", "Roleplay", ("input_text", "output_text"),
           lambda r: format_prompt_response("Roleplay", r["input_text"], r["output_text"])),
    Source("tinytextbooks", "nampdn-ai/tiny-textbooks", None, "train", "Textbook", ("textbook",),
           lambda r: format_doc("Textbook", r["textbook"])),
    Source("sciphi", "SciPhi/textbooks-are-all-you-need-lite", None, "train", "Textbook", ("title", "completion"),
           lambda r: format_textbook(r["title"], r["completion"])),
    Source("orcatextbooks", "nampdn-ai/tiny-orca-textbooks", None, "train", "Excerpt", ("textbook", "question", "response"),
           lambda r: format_excerpt(r["textbook"].strip() + "\n\n" + r["question"].strip(), r["response"])),
    Source("webtext", "nampdn-ai/tiny-webtext", None, "train", "QA", ("human", "bot"),
           lambda r: format_prompt_response("QA", r["human"], r["bot"])),
)
TINYTEXT = (
    Source("tinytext", "VatsaDev/TinyText", None, "train", None, ("text",), lambda r: r["text"].strip(),
           data_files="train.jsonl"),
)
MIXTURES = {"phi": PHI, "tinytext": TINYTEXT}
LOCAL_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text"}


def describe(sources: Iterable[Source], local_files: dict[str, str]) -> list[str]:
    return [f"{s.name}: {local_files.get(s.name) or s.path + (f' ({s.config})' if s.config else '')} -> {s.tag or 'as labelled'}"
            for s in sources]


def open_rows(src: Source, local: str | None) -> Iterable[dict]:
    """The source's rows, streamed: from the hub, or from local files through datasets' generic loaders."""
    import datasets  # imported here: the mini mixture and user files do not need it

    datasets.disable_progress_bars()
    try:
        if local:
            builder = next((b for ext, b in LOCAL_BUILDERS.items() if local.endswith(ext)), "json")
            return datasets.load_dataset(builder, data_files=local, split="train", streaming=True)
        return datasets.load_dataset(src.path, src.config, data_files=src.data_files, split=src.split, streaming=True)
    except Exception as e:  # the hub raises many kinds (offline, gated, renamed): all mean "cannot load"
        raise UserError(f"cannot load dataset {local or src.path} for source {src.name}: "
                        f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e


def source_documents(src: Source, max_docs: int, local: str | None) -> Iterator[Doc]:
    rows = iter(open_rows(src, local))
    for i in itertools.count():
        if max_docs and i >= max_docs:
            return
        try:
            row = next(rows)
        except StopIteration:
            return
        except Exception as e:  # a dropped connection or a corrupt file surfaces here, mid-stream
            raise UserError(f"reading dataset {local or src.path} (source {src.name}) failed at row {i}: "
                            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
        missing = [c for c in src.columns if c not in row]
        if missing:
            raise UserError(f"dataset {local or src.path} (source {src.name}) has columns {', '.join(sorted(row))} "
                            f"but the table in data/hf_sources.py expects {', '.join(missing)}")
        text = src.fmt(row)
        if src.tag is not None:
            yield src.tag, text
            continue
        for doc in SEPARATOR.split(text):  # a labelled row may hold several <eot>-separated documents
            if doc.strip():
                tag = tag_of(doc)
                if tag is None:
                    raise UserError(f"dataset {local or src.path} row {i}: text does not start with a tag like [Math]")
                yield tag, doc.strip()


def hf_documents(mixture: str, max_docs: int = 0, local_files: dict[str, str] | None = None) -> Iterator[Doc]:
    """All documents of a Hugging Face mixture, source after source, at most max_docs per source (0: all)."""
    local_files = local_files or {}
    sources = MIXTURES[mixture]
    unknown = set(local_files) - {s.name for s in sources}
    if unknown:
        raise UserError(f"local_files names unknown sources {', '.join(sorted(unknown))}: "
                        f"the {mixture} mixture has {', '.join(s.name for s in sources)}")
    for src in sources:
        yield from source_documents(src, max_docs, local_files.get(src.name))
