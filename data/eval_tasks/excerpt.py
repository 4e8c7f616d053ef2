"""[Excerpt] tasks: a fact stated in a short text (a year or a count; a place), answered after [Response].

Training's excerpts (data/mini_generators.py) draw every name, place, year and count at random, and never
use the names, cities and jobs listed here (held_out_words); this text also has a wording of its own
("and worked there as a ..."). The answer can only be read from the text.
"""

from data.eval_tasks import Item, Task, first_line

NAMES = ["Alma", "Bruno", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana", "Ivo", "Juno", "Kofi", "Lena"]
CITIES = ["Tampere", "Cusco", "Hobart", "Tbilisi", "Malmo", "Arequipa", "Gdansk", "Leeds", "Porto", "Accra"]
JOBS = ["glazier", "plumber", "cobbler", "dentist", "sailor", "potter", "welder", "florist"]


def excerpt(rng) -> tuple[str, str, str, int, int]:
    name, city, job = rng.choice(NAMES), rng.choice(CITIES), rng.choice(JOBS)
    year, pets = rng.randint(1900, 1949), rng.randint(7, 12)
    text = (f"{name} moved to {city} in {year} and worked there as a {job}. "
            f"{name} lived with {pets} cats in a small house near the river.")
    return text, name, city, year, pets


def fact(rng) -> Item:
    """A year or a count: one token of the text, found by what the question names (issue 15's target)."""
    text, name, city, year, pets = excerpt(rng)
    question, answer = rng.choice([(f"In which year did {name} move to {city}?", str(year)),
                                   (f"How many cats did {name} have?", str(pets))])
    return Item(f"[Excerpt] {text}\nQuestion: {question} [Response]", answer)


def place(rng) -> Item:
    """The place, asked in a wording training does not use (`Where did X move?`)."""
    text, name, city, year, pets = excerpt(rng)
    return Item(f"[Excerpt] {text}\nQuestion: Where did {name} move? [Response]", city)


def score(item: Item, output: str, stopped: bool) -> dict[str, bool]:
    return {"exact": first_line(output).rstrip(".") == item.expected}


TASKS = [Task("excerpt_fact", "Excerpt", "a year or a count stated in the excerpt", fact, score, 8),
         Task("excerpt_place", "Excerpt", "the place someone moved to, in a wording of its own", place, score, 8)]
