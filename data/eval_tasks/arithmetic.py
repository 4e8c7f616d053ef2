"""[Math] tasks: single-digit addition, multi-digit addition, few-shot sequences, word problems.

Training (data/mini_sources.py) uses: drills `a op b = c` with a, b in 0..99 (* in 0..12); few-shot lines
starting at k in 1..60 with 6..12 terms (so i+i terms up to 71) and constants c in 1..20; word problems with
a in 2..60, b in 2..40, c in 2..9 and the names/items lists there. These tasks use 100..999 for multi-digit
addition, i+i from 100, c in 21..49, word-problem a in 61..99, b in 41..80, c in 11..19, and other names and
items. Single-digit addition cannot avoid the training range (there are 100 sums in all): those items are
kept only if their exact text is not in the training split (eval.py's overlap check).
"""

import re

from data.eval_tasks import Item, Task

NAMES = ["Alma", "Bruno", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana", "Ivo", "Juno", "Kofi", "Lena",
         "Milo", "Nadia", "Otto", "Pia", "Raul", "Sofia", "Theo", "Vera"]
ITEMS = ["buttons", "erasers", "feathers", "ribbons", "tokens", "pebbles", "beads", "postcards", "crayons", "keys"]


def first_int(output: str) -> str | None:
    m = re.match(r"\s*(-?\d+)", output)
    return m.group(1) if m else None


def score_number(item: Item, output: str, stopped: bool) -> dict[str, bool]:
    return {"exact": first_int(output) == item.expected}


def add_1digit(rng) -> Item:
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    return Item(f"[Math] {a} + {b} =", str(a + b))


def add_multidigit(rng) -> Item:
    a, b = rng.randint(100, 999), rng.randint(100, 999)
    return Item(f"[Math] {a} + {b} =", str(a + b))


def fewshot(rng) -> Item:
    n, kind = rng.randint(4, 6), rng.randrange(3)
    k, c = rng.randint(100, 300), rng.randint(21, 49)
    if kind == 0:
        terms = [(f"{i}+{i}=", 2 * i) for i in range(k, k + n + 1)]
    elif kind == 1:
        terms = [(f"{c}*{i}=", c * i) for i in range(1, n + 2)]
    else:
        terms = [(f"{i}+{c}=", i + c) for i in range(k, k + n + 1)]
    shown = " ".join(f"{q}{a}" for q, a in terms[:-1])
    return Item(f"[Math] {shown} {terms[-1][0]}", str(terms[-1][1]))


def word_problem(rng) -> Item:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b, c = rng.randint(61, 99), rng.randint(41, 80), rng.randint(11, 19)
    kind = rng.randrange(4)
    if kind == 0:
        q, ans = f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?", a + b
    elif kind == 1:
        q, ans = f"{name} has {a} {item} and gives away {b}. How many {item} are left?", a - b
    elif kind == 2:
        q, ans = f"There are {c} boxes with {b} {item} in each box. How many {item} are there in all?", c * b
    else:
        q, ans = f"{name} shares {c * b} {item} equally among {c} friends. How many {item} does each friend get?", b
    return Item(f"[Math] Question: {q}\n", str(ans))


def score_word(item: Item, output: str, stopped: bool) -> dict[str, bool]:
    """Training answers end `The answer is N.`: that N is the answer."""
    m = re.search(r"The answer is (-?\d+)", output)
    return {"exact": bool(m) and m.group(1) == item.expected}


TASKS = [
    Task("math_add_1digit", "Math", "a + b with single digits", add_1digit, score_number, 4, n=50, finite=100),
    Task("math_add_multidigit", "Math", "a + b with three-digit numbers", add_multidigit, score_number, 6),
    Task("math_fewshot", "Math", "next term of a few-shot sequence (i+i, c*i, i+c)", fewshot, score_number, 6),
    Task("math_word", "Math", "word problem, answer after 'The answer is'", word_problem, score_word, 48),
]
