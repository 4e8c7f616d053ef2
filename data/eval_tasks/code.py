"""[Code] task: write a function's body from its docstring and signature.

The layout is training's `[Code] DOCSTRING\n\nCODE` (stdlib functions, data/mini_sources.py); the prompt gives
the docstring and the `def` line, the model writes the rest. Scored twice: `parses` (the function, from the
`def` line to the first unindented line, is valid Python by `ast`) and `correct` (it returns the right value
on every test input, run in data/eval_tasks/sandbox.py's limited subprocess). Function names carry a constant
(times_37, add_53), so no stdlib function of the training set has the same signature.
"""

import ast

from data.eval_tasks import Item, Task
from data.eval_tasks.sandbox import run_function

FAMILIES = [
    ("Return x multiplied by {k}.", "times_{k}", "x", lambda k: lambda x: x * k, [[0], [1], [7], [-3]]),
    ("Return x plus {k}.", "add_{k}", "x", lambda k: lambda x: x + k, [[0], [5], [-2], [100]]),
    ("Return True if n is divisible by {k}, else False.", "divisible_by_{k}", "n",
     lambda k: lambda n: n % k == 0, [[0], [1], [None]]),
    ("Return the string s repeated {k} times.", "repeat_{k}", "s", lambda k: lambda s: s * k, [["a"], ["xy"], [""]]),
    ("Return the largest of the numbers in the list values, or {k} if it is empty.", "largest_or_{k}", "values",
     lambda k: lambda v: max(v) if v else k, [[[3, 9, 2]], [[]], [[-5, -1]]]),
    ("Return how many times the character c occurs in the string s, plus {k}.", "count_plus_{k}", "s, c",
     lambda k: lambda s, c: s.count(c) + k, [["banana", "a"], ["", "x"], ["aaa", "b"]]),
]


def function(rng) -> Item:
    doc, name, args, reference, inputs = rng.choice(FAMILIES)
    k = rng.randint(13, 99)
    fn = reference(k)
    inputs = [[k * 3 if a is None else a for a in x] for x in inputs]  # divisible_by: one multiple of k
    tests = [(x, repr(fn(*x))) for x in inputs]
    name = name.format(k=k)
    return Item(f"[Code] {doc.format(k=k)}\n\ndef {name}({args}):\n", f"def {name}({args}): ...",
                tests=tests, entry=name)


def extract(item: Item, output: str) -> str:
    """The function's source: the def line and the output up to its first unindented non-empty line."""
    lines = []
    for line in output.split("\n"):
        if line.strip() and not line[0].isspace():
            break
        lines.append(line)
    return item.prompt.split("\n\n", 1)[1] + "\n".join(lines)


def score(item: Item, output: str, stopped: bool) -> dict[str, bool]:
    source = extract(item, output)
    try:
        tree = ast.parse(source)
        parses = isinstance(tree.body[0], ast.FunctionDef) and len(tree.body[0].body) > 0
    except SyntaxError:
        parses = False
    if not parses:
        return {"correct": False, "parses": False}
    results = run_function(source, item.entry, [x for x, _ in item.tests])
    correct = all(r == ("ok", want) for r, (_, want) in zip(results, item.tests))
    return {"correct": correct, "parses": True}


TASKS = [Task("code_function", "Code", "function body from docstring + signature: correct on tests, parses",
              function, score, 96, n=30, literal=False)]
