"""[Logic] tasks: which conclusion follows from the premises (syllogisms, conditionals, orderings).

The argument forms are training's (data/mini_generators.py), the words are not: its pools of names, places
and made-up plurals leave out every word listed here (held_out_words), so only the premises can give the answer.
"""

from data.eval_tasks import Item, Task, exact_line

NONSENSE = ["florbs", "yimps", "krells", "drabs", "wozzles", "tharns", "grommets", "spinks", "vuds", "clerps",
            "nubs", "frazes", "jisks", "morts"]
NAMES = ["Alma", "Bruno", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana", "Ivo", "Juno", "Kofi", "Lena",
         "Milo", "Nadia", "Otto", "Pia"]
CITIES = ["Tampere", "Cusco", "Hobart", "Tbilisi", "Malmo", "Arequipa", "Gdansk", "Leeds"]
CONDITIONALS = [("{n} studies", "{n} passes the exam", "{n} did not pass the exam", "{n} did not study"),
                ("it rains in {c}", "the streets of {c} get wet", "the streets of {c} are dry",
                 "it did not rain in {c}"),
                ("{n} has a ticket", "{n} may board the train", "{n} may not board the train", "{n} has no ticket"),
                ("{n} waters the plants", "the plants grow", "the plants did not grow", "{n} did not water the plants")]
ORDERS = [("taller", "shorter", "tallest", "shortest"), ("older", "younger", "oldest", "youngest"),
          ("faster", "slower", "fastest", "slowest"), ("heavier", "lighter", "heaviest", "lightest")]


def prompt(premises: str) -> str:
    return f"[Logic] Premises: {premises}\n"


def syllogism(rng) -> Item:
    a, b, c = rng.sample(NONSENSE, 3)
    if rng.random() < 0.6:
        return Item(prompt(f"All {a} are {b}. All {b} are {c}."), f"Conclusion: All {a} are {c}.")
    return Item(prompt(f"All {a} are {b}. No {b} are {c}."), f"Conclusion: No {a} are {c}.")


def conditional(rng) -> Item:
    fill = dict(n=rng.choice(NAMES), c=rng.choice(CITIES))
    p, q, not_q, not_p = (x.format(**fill) for x in rng.choice(CONDITIONALS))
    if rng.random() < 0.5:
        return Item(prompt(f"If {p}, then {q}. We know that {p}."), f"Conclusion: Therefore, {q}.")
    return Item(prompt(f"If {p}, then {q}. We know that {not_q}."), f"Conclusion: Therefore, {not_p}.")


def order(rng) -> Item:
    more, less, most, least = rng.choice(ORDERS)
    people = rng.sample(NAMES, rng.randint(3, 4))  # people[0] is the most
    facts = [f"{x} is {more} than {y}." if rng.random() < 0.5 else f"{y} is {less} than {x}."
             for x, y in zip(people, people[1:])]
    rng.shuffle(facts)
    who, what = (people[0], most) if rng.random() < 0.5 else (people[-1], least)
    return Item(f"[Logic] Premises: {' '.join(facts)}\nQuestion: Who is the {what}?\n",
                f"Conclusion: {who} is the {what}.")


TASKS = [
    Task("logic_syllogism", "Logic", "conclusion of a syllogism over made-up words", syllogism, exact_line, 20),
    Task("logic_conditional", "Logic", "modus ponens / modus tollens conclusion", conditional, exact_line, 24),
    Task("logic_order", "Logic", "who is the most or the least, from pairwise comparisons", order, exact_line, 16),
]
