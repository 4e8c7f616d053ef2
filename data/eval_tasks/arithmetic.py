"""[Math] tasks: single-, two- and three-digit addition, few-shot sequences, word problems.

What keeps each task's items out of training (data/mini_generators.py):
- single-digit addition is a table of 100 sums that training drills on purpose; its prompt as written here,
  `[Math] a + b =` at a document's start, never opens a training document (eval.py's overlap check);
- two-digit addition asks only the pairs `held_out_sum` keeps out of every training document;
- few-shot lines start at a multiple of 5, where no training line starts (`fewshot_start_held_out`);
- word problems use names and items training never uses, and one wording of their own;
- three-digit addition and the large word problems use ranges training never reaches (stretch tasks).
"""

import re

from data.eval_tasks import Item, Task
from data.mini_generators import fewshot_start_held_out, held_out_sum

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


def add_2digit(rng) -> Item:
    while True:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        if held_out_sum(a, b):
            return Item(f"[Math] {a} + {b} =", str(a + b))


def add_3digit(rng) -> Item:
    a, b = rng.randint(100, 999), rng.randint(100, 999)
    return Item(f"[Math] {a} + {b} =", str(a + b))


def fewshot(rng) -> Item:
    """Doubling, +1 or +c (c in 2..9), 3-5 terms shown, starting at a multiple of 5 up to 60."""
    n, kind, c = rng.randint(3, 5), rng.randrange(3), rng.randint(2, 9)
    k = rng.choice([k for k in range(5, 61) if fewshot_start_held_out(k)])
    if kind == 0:
        terms = [(f"{i}+{i}=", 2 * i) for i in range(k, k + n + 1)]
    elif kind == 1:
        terms = [(f"{i}+1=", i + 1) for i in range(k, k + n + 1)]
    else:
        terms = [(f"{i}+{c}=", i + c) for i in range(k, k + n + 1)]
    shown = " ".join(f"{q}{a}" for q, a in terms[:-1])
    return Item(f"[Math] {shown} {terms[-1][0]}", str(terms[-1][1]))


def word_problem(rng) -> Item:
    """One step with single digits: add or take away."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    kind = rng.randrange(3)
    if kind == 0:
        q, ans = f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?", a + b
    elif kind == 1:
        q, ans = f"{name} has {a + b} {item} and gives away {b}. How many {item} are left?", a
    else:  # a wording of our own, not training's
        q, ans = f"{name} picked {a} {item} in the morning and {b} in the evening. How many {item} did {name} pick?", a + b
    return Item(f"[Math] Question: {q}\n", str(ans))


def word_problem_large(rng) -> Item:
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
    Task("math_add_2digit", "Math", "a + b with two-digit pairs training never shows", add_2digit, score_number, 4),
    Task("math_fewshot", "Math", "next term of a few-shot sequence (i+i, i+1, i+c)", fewshot, score_number, 6),
    Task("math_word", "Math", "one-step word problem with single digits, after 'The answer is'", word_problem,
         score_word, 40),
    Task("math_add_3digit", "Math", "stretch: a + b with three-digit numbers", add_3digit, score_number, 6),
    Task("math_word_large", "Math", "stretch: word problem with two-digit numbers, times and shares",
         word_problem_large, score_word, 48),
]
