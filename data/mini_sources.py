"""The `mini` mixture: tagged documents from material every Python install has, plus seeded generators.

- [Textbook]  Python's documentation topics (pydoc_data.topics) and long module docstrings of the stdlib
- [Code]      stdlib functions with docstrings (found with `ast`): the docstring, then the function's code
- [QA]        module, class and function docstrings turned into question/answer pairs
- [Math]      arithmetic drills, few-shot sequences like `1+1=2 2+2=4 ...`, word problems: exact answers
- [Logic]     syllogisms, conditionals and transitive relations with their conclusions
- [Roleplay]  templated dialogues, plain and in the metharme `<|system|>...<|user|>...<|model|>...` format
- [Excerpt]   a short text and a question about it, answered exactly after [Response]

Generated content is regular and templated on purpose: a small GPT trained for minutes on a CPU can learn
to follow the tags. Everything is deterministic for a seed (and a given Python install); `scale` multiplies
the number of generated documents and the share of the stdlib that is read (tests use a tiny scale).
"""

import ast
import itertools
import math
import multiprocessing
import os
import random
import sysconfig
import textwrap
from collections import deque
from typing import Iterator

import pydoc_data.topics

from data.mini_generators import GENERATORS, proper_nouns
from tags import format_doc, format_qa, format_textbook

Doc = tuple[str, str]

# documents per generator at scale=1.0 (about 5M tokens in all with the stdlib part); roleplay's are mostly one
# exchange, so it takes 10,100 of them to keep the tag's share of the tokens (13 %)
GENERATED = {"math_facts": 8000, "math_drill": 11000, "math_fewshot": 5500, "math_word": 10000, "math_expr": 1000,
             "logic_syllogism": 4000, "logic_conditional": 3000, "logic_order": 4000,
             "roleplay": 10100, "excerpt": 4500, "excerpt_copy": 4000, "code_small": 40000}
SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "idlelib", "lib2to3"}
MAX_CODE_LINES = 20  # longer functions say little more and crowd out the short ones a small model can learn
TOPIC_CHUNK = 3000  # characters per [Textbook] document cut from a long documentation topic
CHUNK = 500  # generated documents per work unit
# fork: workers start in milliseconds and need no importable __main__ (tests build tiny mixtures many times);
# they only run pure-Python generators, so threads in the parent cannot leave them a held lock that matters
START_METHOD = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def mini_documents(seed: int = 1337, scale: float = 1.0, processes: int = 0) -> Iterator[Doc]:
    """All documents of the mini mixture as (tag, formatted text), deterministic for (seed, scale).

    The work is cut into units (a documentation pass, one stdlib file, a chunk of one generator with its own
    seeded stream) run by `processes` worker processes (0: all cores) and yielded in unit order, so the
    result does not depend on how many processes made it.
    """
    units = work_units(seed, scale)
    processes = processes or os.cpu_count() or 1
    proper_nouns()  # read GPT-2's vocabulary once here, not once per forked worker
    if processes == 1:
        for unit in units:
            yield from run_unit(unit)
        return
    todo = iter(units)
    with multiprocessing.get_context(START_METHOD).Pool(processes) as pool:
        # a bounded window of units in flight (Pool.imap would run ahead and queue every result in memory)
        window = deque(pool.apply_async(run_unit, (u,)) for u in itertools.islice(todo, 4 * processes))
        while window:
            docs = window.popleft().get()
            for u in itertools.islice(todo, 1):
                window.append(pool.apply_async(run_unit, (u,)))
            yield from docs


def work_units(seed: int, scale: float) -> list[tuple]:
    units: list[tuple] = [("topics", scale)]
    units += [("module", module, path) for module, path in stdlib_files(scale)]
    for name, n in GENERATED.items():
        count = max(3, round(n * scale))
        units += [("generate", name, seed, start, min(CHUNK, count - start)) for start in range(0, count, CHUNK)]
    return units


def run_unit(unit: tuple) -> list[Doc]:
    kind, *args = unit
    if kind == "topics":
        return list(topic_docs(*args))
    if kind == "module":
        return list(stdlib_docs(*args))
    name, seed, start, count = args
    rng = random.Random(f"{seed}-{name}-{start}")  # its own stream: chunks do not depend on each other
    docs = []
    for _ in range(count):
        made = GENERATORS[name](rng)  # one document, or several about the same text (an excerpt's questions)
        docs += made if isinstance(made, list) else [made]
    return docs


def describe(scale: float) -> list[str]:
    """The sources of the mini mixture, for meta.json."""
    return [f"pydoc_data.topics and stdlib of Python {sysconfig.get_python_version()} (scale {scale})"] + \
        [f"generated {name} x{max(3, round(n * scale))}" for name, n in GENERATED.items()]


# ----------------------------------------------------------------------------- Python's own documentation

def paragraphs(text: str) -> list[str]:
    return [p.strip() for p in text.split("\n\n") if p.strip()]


def topic_docs(scale: float) -> Iterator[Doc]:
    topics = sorted(pydoc_data.topics.topics.items())
    for key, text in topics[:max(1, math.ceil(len(topics) * min(scale, 1.0)))]:
        chunks, cur = [], ""
        for p in paragraphs(text):
            if cur and len(cur) + len(p) > TOPIC_CHUNK:
                chunks.append(cur)
                cur = ""
            cur = f"{cur}\n\n{p}" if cur else p
        chunks.append(cur)
        for i, chunk in enumerate(chunks):
            title = f"Python reference: {key}" + (f" (part {i + 1})" if len(chunks) > 1 else "")
            yield "Textbook", format_textbook(title, chunk)


def stdlib_files(scale: float) -> list[tuple[str, str]]:
    """(module name, path) of the stdlib's .py files, every k-th one when scale < 1."""
    root = sysconfig.get_paths()["stdlib"]
    found = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x not in SKIP_DIRS and not x.startswith("test"))
        for f in sorted(files):
            if f.endswith(".py") and not f.startswith("test_"):
                rel = os.path.relpath(os.path.join(d, f), root)[:-3].replace(os.sep, ".")
                found.append((rel.removesuffix(".__init__"), os.path.join(d, f)))
    step = max(1, round(1 / scale)) if scale < 1 else 1
    return found[::step]


def first_paragraph(doc: str) -> str:
    ps = paragraphs(doc)
    return " ".join(ps[0].split()) if ps else ""


def stdlib_docs(module: str, path: str) -> Iterator[Doc]:
    try:
        with open(path, encoding="utf-8") as f:
            source = f.read()
        tree = ast.parse(source)
    except (UnicodeDecodeError, SyntaxError, ValueError):
        return  # a few stdlib files are deliberately odd (other encodings, templates)
    if "with gencodec.py" in source[:1000]:
        return  # ~70 generated codec tables with one docstring: they were a sixth of the module questions
    yield from module_docs(module, tree, source.splitlines())


def module_docs(module: str, tree: ast.Module, lines: list[str]) -> Iterator[Doc]:
    doc = ast.get_docstring(tree)
    public = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith("_")]
    if doc and len(doc) >= 300:
        summary = [f"- {n.name}: {first_paragraph(ast.get_docstring(n))}" for n in public if ast.get_docstring(n)]
        body = doc + ("\n\nIt provides:\n" + "\n".join(summary) if summary else "")
        yield "Textbook", format_textbook(f"The {module} module", body)
    if doc and 20 <= len(first_paragraph(doc)) <= 1500:
        yield "QA", format_qa(f"What is the Python module `{module}` for?", first_paragraph(doc))
    for node in definitions(tree.body):
        if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            answer = first_paragraph(ast.get_docstring(node) or "")
            if 20 <= len(answer) <= 1500:
                yield "QA", format_qa(f"What does the class `{node.name}` in `{module}` do?", answer)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            answer = first_paragraph(ast.get_docstring(node) or "")
            if not node.name.startswith("_") and 20 <= len(answer) <= 1500:
                yield "QA", format_qa(f"What does `{node.name}()` in `{module}` do?", answer)
            code = code_doc(node, lines)
            if code:
                yield "Code", code


def definitions(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Classes and functions in a block, nested ones included. Unlike ast.walk it never descends into
    expressions, which hold most of a module's nodes and no definitions."""
    for node in body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node
        for field in ("body", "orelse", "finalbody", "handlers"):
            block = getattr(node, field, None)
            if isinstance(block, list):
                yield from definitions(block)


def code_doc(node: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> str | None:
    """'[Code] DOCSTRING\\n\\nCODE' for a function with a docstring; the code is its source minus the docstring."""
    doc = ast.get_docstring(node)
    if not doc or node.name.startswith("__") or len(node.body) < 2:
        return None
    start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
    ds = node.body[0]
    if ds.lineno == node.lineno or node.end_lineno - start > MAX_CODE_LINES:
        return None
    code = lines[start:ds.lineno - 1] + lines[ds.end_lineno:node.end_lineno]
    return format_doc("Code", doc + "\n\n" + textwrap.dedent("\n".join(code)).strip("\n"))
