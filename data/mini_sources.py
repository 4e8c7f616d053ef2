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

from tags import format_doc, format_excerpt, format_prompt_response, format_qa, format_textbook

Doc = tuple[str, str]

# documents per generator at scale=1.0 (about 5M tokens in all with the stdlib part)
GENERATED = {"math_drill": 12000, "math_fewshot": 12000, "math_word": 12000, "math_expr": 6000,
             "logic_syllogism": 8000, "logic_conditional": 6000, "logic_order": 10000,
             "roleplay": 5000, "excerpt": 10000}
SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "idlelib", "lib2to3"}
MAX_CODE_LINES = 60  # longer functions say little more and crowd out the rest of the mixture
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
    return [GENERATORS[name](rng) for _ in range(count)]


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


# ----------------------------------------------------------------------------- generators

NAMES = ["Ada", "Ben", "Cleo", "Dev", "Emma", "Farid", "Grace", "Hugo", "Iris", "Jonas", "Kira", "Leo",
         "Maya", "Nico", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tara", "Uma", "Victor", "Wen", "Yusuf", "Zoe"]
ITEMS = ["apples", "books", "marbles", "pencils", "stickers", "coins", "shells", "cards", "cookies", "stamps"]
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def math_drill(rng: random.Random) -> Doc:
    lines = []
    for _ in range(rng.randint(4, 8)):
        op = rng.choice("+-*/")
        if op == "/":
            b, q = rng.randint(2, 12), rng.randint(1, 12)
            lines.append(f"{b * q} / {b} = {q}")
        else:
            a, b = (rng.randint(0, 99), rng.randint(0, 99)) if op != "*" else (rng.randint(0, 12), rng.randint(0, 12))
            lines.append(f"{a} {op} {b} = {OPS[op](a, b)}")
    return "Math", format_doc("Math", "\n".join(lines))


def math_fewshot(rng: random.Random) -> Doc:
    k, n, c = rng.randint(1, 60), rng.randint(6, 12), rng.randint(1, 20)
    kind = rng.randrange(5)
    if kind == 0:
        terms = [f"{i}+{i}={2 * i}" for i in range(k, k + n)]
    elif kind == 1:
        terms = [f"{c}*{i}={c * i}" for i in range(1, n + 1)]
    elif kind == 2:
        terms = [f"{i}+{c}={i + c}" for i in range(k, k + n)]
    elif kind == 3:
        terms = [f"{i}*{i}={i * i}" for i in range(k, k + n)]
    else:
        terms = [", ".join(str(c * i) for i in range(k, k + n))]
    return "Math", format_doc("Math", " ".join(terms))


def math_word(rng: random.Random) -> Doc:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b, c = rng.randint(2, 60), rng.randint(2, 40), rng.randint(2, 9)
    kind = rng.randrange(5)
    if kind == 0:
        q = f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?"
        ans = f"{a} + {b} = {a + b}. The answer is {a + b}."
    elif kind == 1:
        a, b = max(a, b), min(a, b)
        q = f"{name} has {a} {item} and gives away {b}. How many {item} are left?"
        ans = f"{a} - {b} = {a - b}. The answer is {a - b}."
    elif kind == 2:
        q = f"There are {c} boxes with {b} {item} in each box. How many {item} are there in all?"
        ans = f"{c} * {b} = {c * b}. The answer is {c * b}."
    elif kind == 3:
        q = f"{name} shares {c * b} {item} equally among {c} friends. How many {item} does each friend get?"
        ans = f"{c * b} / {c} = {b}. The answer is {b}."
    else:
        d = rng.randint(1, a + b)
        q = f"{name} has {a} {item}, buys {b} more and then gives {d} to a friend. How many {item} are left?"
        ans = f"{a} + {b} = {a + b}, and {a + b} - {d} = {a + b - d}. The answer is {a + b - d}."
    return "Math", format_prompt_response("Math", f"Question: {q}", f"Answer: {ans}")


def math_expr(rng: random.Random) -> Doc:
    a, b, c = rng.randint(1, 30), rng.randint(1, 30), rng.randint(2, 9)
    op1, op2 = rng.choice("+-"), rng.choice("+-*")
    inner = OPS[op1](a, b)
    return "Math", format_doc("Math", f"({a} {op1} {b}) {op2} {c} = {inner} {op2} {c} = {OPS[op2](inner, c)}")


CHAINS = [["poodles", "dogs", "mammals", "animals", "living things"], ["roses", "flowers", "plants", "living things"],
          ["sparrows", "birds", "animals"], ["squares", "rectangles", "polygons", "shapes"],
          ["violins", "string instruments", "instruments"], ["trout", "fish", "animals"],
          ["oaks", "trees", "plants"], ["cars", "vehicles", "machines"], ["novels", "books", "things you can read"]]
NONSENSE = ["wugs", "blickets", "daxes", "feps", "zorbs", "glims", "toves", "snarks", "plinks", "mobs", "vexes", "quibs"]
CONDITIONALS = [("{n} studies", "{n} passes the exam", "{n} did not pass the exam", "{n} did not study"),
                ("{n} leaves before eight", "{n} catches the bus", "{n} missed the bus", "{n} did not leave before eight"),
                ("it rains in {c}", "the streets of {c} get wet", "the streets of {c} are dry", "it did not rain in {c}"),
                ("{n} waters the plants", "the plants grow", "the plants did not grow", "{n} did not water the plants"),
                ("the {c} museum is open", "{n} visits it", "{n} did not visit it", "the {c} museum is closed"),
                ("{n} has a ticket", "{n} may board the train", "{n} may not board the train", "{n} has no ticket")]
ORDERS = [("taller", "shorter", "tallest"), ("older", "younger", "oldest"), ("faster", "slower", "fastest"),
          ("heavier", "lighter", "heaviest")]


def logic_syllogism(rng: random.Random) -> Doc:
    if rng.random() < 0.2:  # true statements about real categories (few: most are dropped as duplicates)
        chain = rng.choice(CHAINS)
        i = rng.randrange(len(chain) - 2)
        a, b, c = chain[i], chain[i + 1], chain[rng.randrange(i + 2, len(chain))]
    else:  # made-up words: only the form of the argument can decide the conclusion
        a, b, c = rng.sample(NONSENSE, 3)
    if rng.random() < 0.6 or a not in NONSENSE:
        premises, conclusion = f"All {a} are {b}. All {b} are {c}.", f"All {a} are {c}."
    else:
        premises, conclusion = f"All {a} are {b}. No {b} are {c}.", f"No {a} are {c}."
    return "Logic", format_prompt_response("Logic", f"Premises: {premises}", f"Conclusion: {conclusion}")


def logic_conditional(rng: random.Random) -> Doc:
    fill = dict(n=rng.choice(NAMES), c=rng.choice(CITIES))
    p, q, not_q, not_p = (x.format(**fill) for x in rng.choice(CONDITIONALS))
    if rng.random() < 0.5:
        premises, conclusion = f"If {p}, then {q}. We know that {p}.", f"Therefore, {q}."
    else:
        premises, conclusion = f"If {p}, then {q}. We know that {not_q}.", f"Therefore, {not_p}."
    return "Logic", format_prompt_response("Logic", f"Premises: {premises}", f"Conclusion: {conclusion}")


def logic_order(rng: random.Random) -> Doc:
    more, less, most = rng.choice(ORDERS)
    people = rng.sample(NAMES, rng.randint(3, 5))  # people[0] is the most, people[-1] the least
    facts = [f"{x} is {more} than {y}." if rng.random() < 0.5 else f"{y} is {less} than {x}."
             for x, y in zip(people, people[1:])]
    rng.shuffle(facts)
    if rng.random() < 0.5:
        question, answer = f"Who is the {most}?", f"{people[0]} is the {most}."
    else:
        i, j = rng.sample(range(len(people)), 2)
        yes = i < j
        question = f"Is {people[i]} {more} than {people[j]}?"
        answer = f"{'Yes' if yes else 'No'}, {people[i]} is {more if yes else less} than {people[j]}."
    return "Logic", format_prompt_response("Logic", f"Premises: {' '.join(facts)}\nQuestion: {question}",
                                           f"Conclusion: {answer}")


CHARACTERS = [("a wizard", "the Tower of Stars", "wise and patient"), ("a pirate captain", "the ship Sea Fox", "loud and cheerful"),
              ("a knight", "the castle of Elmwood", "brave and polite"), ("a detective", "the foggy city of Greyport", "sharp and curious"),
              ("a baker", "a small village bakery", "warm and funny"), ("a space explorer", "the station Orion Seven", "calm and precise"),
              ("a dragon", "a mountain cave", "proud but kind"), ("a librarian", "the Great Library", "quiet and helpful"),
              ("a ship's robot", "the cargo ship Vega", "logical and friendly"), ("an innkeeper", "the Silver Lantern Inn", "chatty and generous")]
ASKS = [("What is your name?", "My name is {name}."), ("Where are we?", "We are in {place}."),
        ("What do you do here?", "I am {role}. This is where I live and work."),
        ("How would you describe yourself?", "People say I am {trait}."),
        ("Can you help me?", "Of course. As {role}, I will do what I can for you."),
        ("Goodbye!", "Farewell, traveler. Come back to {place} any time.")]


def roleplay(rng: random.Random) -> Doc:
    role, place, trait = rng.choice(CHARACTERS)
    name, user = rng.sample(NAMES, 2)
    turns = [("Hello!", "Greetings! I am {name}, {role}. Welcome to {place}.")] + rng.sample(ASKS, rng.randint(2, 4))
    fill = dict(name=name, role=role, place=place, trait=trait)
    if rng.random() < 0.5:
        text = f"<|system|>Enter roleplay mode. You are {name}, {role} in {place}. You are {trait}."
        text += "".join(f"<|user|>{u}<|model|>{m.format(**fill)}" for u, m in turns)
    else:
        text = f"{user} meets {name}, {role}, in {place}.\n"
        text += "\n".join(f"{user}: {u}\n{name}: {m.format(**fill)}" for u, m in turns)
    return "Roleplay", format_doc("Roleplay", text)


CITIES = ["Lisbon", "Nairobi", "Oslo", "Lima", "Hanoi", "Quebec", "Dublin", "Seoul", "Cairo", "Perth", "Bergen", "Kyoto"]
JOBS = ["teacher", "nurse", "carpenter", "chef", "pilot", "gardener", "painter", "engineer", "farmer", "tailor"]


def excerpt(rng: random.Random) -> Doc:
    name, city, job = rng.choice(NAMES), rng.choice(CITIES), rng.choice(JOBS)
    year, pets = rng.randint(1950, 2020), rng.randint(1, 6)
    text = (f"{name} moved to {city} in {year} and worked there as a {job}. "
            f"{name} lived with {pets} {'cat' if pets == 1 else 'cats'} in a small house near the river.")
    question, answer = rng.choice([(f"Where did {name} move?", city), (f"In which year did {name} move to {city}?", str(year)),
                                   (f"What was {name}'s job?", f"a {job}"), (f"How many cats did {name} have?", str(pets)),
                                   ("Who is this text about?", name),
                                   ("How many words are in the first sentence?", str(len(text.split(". ")[0].split())))])
    return "Excerpt", format_excerpt(f"{text}\nQuestion: {question}", answer)


GENERATORS = {"math_drill": math_drill, "math_fewshot": math_fewshot, "math_word": math_word, "math_expr": math_expr,
              "logic_syllogism": logic_syllogism, "logic_conditional": logic_conditional, "logic_order": logic_order,
              "roleplay": roleplay, "excerpt": excerpt}
