"""Documents from the user's own files: `python data/prepare.py --input=PATH_OR_GLOB`.

- *.jsonl / *.json (one object a line): {"tag", "text"} (text laid out by the user, the tag is put in front)
  or {"tag", "prompt", "response"} (laid out by tags.format_prompt_response).
- any other file: text that is already labelled, each document starting with its tag, documents separated
  by `<eot>` or `<|endoftext|>` (the layout of NanoPhi's released text files).
Files are read line by line, so their size does not matter. Bad input is a UserError naming file:line.
"""

import glob
import json
import os
import re
from typing import Iterator

from errors import UserError
from tags import check_tag, format_doc, format_prompt_response, tag_of
from tokenizer import EOT_MARKER, EOT_TOKEN

Doc = tuple[str, str]
SEPARATOR = re.compile(re.escape(EOT_MARKER) + "|" + re.escape(EOT_TOKEN))


def input_files(pattern: str) -> list[str]:
    paths = sorted(p for p in glob.glob(os.path.expanduser(pattern), recursive=True) if os.path.isfile(p))
    if not paths:
        raise UserError(f"--input={pattern} matches no files: give a file path or a glob like 'mydata/*.jsonl'")
    return paths


def user_documents(pattern: str) -> Iterator[Doc]:
    for path in input_files(pattern):
        reader = jsonl_documents if path.endswith((".jsonl", ".json")) else text_documents
        yield from reader(path)


def lines_of(path: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 file; decoded a line at a time so a bad byte is reported at file:line."""
    try:
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    yield lineno, raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise UserError(f"{path}:{lineno}: byte {e.start + 1} is not UTF-8 ({e.reason}): "
                                    "re-save the file as UTF-8") from e
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from e


def jsonl_documents(path: str) -> Iterator[Doc]:
    for lineno, line in lines_of(path):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{where}: malformed JSON ({e.msg} at column {e.colno}): one JSON object per line") from e
        if not isinstance(row, dict) or "tag" not in row:
            raise UserError(f"{where}: expected an object with keys tag and text, or tag, prompt and response")
        tag = check_tag(row["tag"], where)
        if isinstance(row.get("text"), str):
            yield tag, format_doc(tag, row["text"])
        elif isinstance(row.get("prompt"), str) and isinstance(row.get("response"), str):
            yield tag, format_prompt_response(tag, row["prompt"], row["response"])
        else:
            raise UserError(f"{where}: has keys {', '.join(sorted(row))}; expected text, or prompt and response (strings)")


def text_documents(path: str) -> Iterator[Doc]:
    """Labelled text split on <eot>/<|endoftext|>; markers never span lines, so a line at a time suffices."""
    buf: list[str] = []
    start = 1  # line where the current document starts, for error messages

    def flush() -> Iterator[Doc]:
        text = "".join(buf).strip()
        buf.clear()
        if text:
            tag = tag_of(text)
            if tag is None:
                raise UserError(f"{path}:{start}: document does not start with a tag like [Math]; "
                                "label it or use JSONL with a tag field")
            yield tag, text

    for lineno, line in lines_of(path):
        parts = SEPARATOR.split(line)
        for part in parts[:-1]:
            buf.append(part)
            yield from flush()
            start = lineno
        buf.append(parts[-1])
    yield from flush()
