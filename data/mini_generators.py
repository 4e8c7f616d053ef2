"""The seeded generators of the `mini` mixture: the tagged skill documents a small GPT learns from.

Each generator takes a random.Random and returns one document (tag, text) or a list of them. They are built so
that the answer has to be *read from the prompt*, not recalled (issue 15: a model trained on a few names and
cities learned to answer with a name from its list, not the one in the question):
- names and places come from about 4,000 proper nouns of GPT-2's vocabulary plus made-up names of two or
  three syllables, so no name is common enough to be worth remembering;
- an excerpt mentions one or two people and several numbers, and is asked two questions (two documents);
- half the word problems and excerpt facts are worded from parts (verbs, containers, days), so that where a
  number stands in one fixed sentence is not worth learning;
- an ordering of 3-5 people is asked who is the most and who is the least;
- every single-digit sum and difference is drilled (it is a table to learn), two-digit sums are drilled except
  a fixed held-out tenth (`held_out_sum`) that eval.py uses to measure what was *not* seen.

The names eval.py asks about (data/eval_tasks) never occur here: `held_out_words()` removes them from every
pool, and tests/test_eval.py checks it.
"""

import functools
import random
import re

from tags import format_doc, format_excerpt, format_prompt_response, format_qa

Doc = tuple[str, str]


# ----------------------------------------------------------------------------- pools of words

SYLLABLES = ["ka", "lo", "mi", "ren", "dar", "vel", "tho", "sa", "bri", "nor", "zel", "qua", "fen", "ol",
             "ard", "ix", "um", "ta", "ri", "gos", "bel", "mar", "tu", "vin", "ess", "ha", "jor", "pel"]


@functools.cache
def held_out_words() -> frozenset[str]:
    """Every name, place, item and made-up word that eval.py's tasks use: training never does."""
    from data.eval_tasks import arithmetic, code, excerpt, formats, logic
    words = arithmetic.NAMES + arithmetic.ITEMS + logic.NAMES + logic.CITIES + logic.NONSENSE + excerpt.NAMES \
        + excerpt.CITIES + excerpt.JOBS + formats.NAMES + [c[0] for c in formats.CHARACTERS]
    return frozenset(words) | frozenset(w.split()[-1] for w in words)


@functools.cache
def proper_nouns() -> tuple[str, ...]:
    """GPT-2's single-token capitalized words that are names more often than words: 'Alice' (no 'alice'
    token) and 'Tom' (' Tom' was merged before ' tom', so WebText wrote it capitalized more often) qualify,
    'Will' and 'The' do not. About 4,900, sorted, so the pool is the same on every machine. A name token no
    document holds is never trained, and with shortlist_head all such tokens share one vector: the model could
    not tell Tom from Jack in a prompt, let alone copy one."""
    from tokenizer import get_encoding
    enc = get_encoding()
    rank = {enc.decode_single_token_bytes(i): i for i in range(enc.n_vocab - 1)}
    found = (b.decode()[1:] for b, i in rank.items()
             if re.fullmatch(rb" [A-Z][a-z]{2,8}", b) and rank.get(b.lower(), enc.n_vocab) > i)
    return tuple(sorted(w for w in found if w not in held_out_words()))


def made_up_name(rng: random.Random) -> str:
    while True:
        name = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
        if name not in held_out_words():
            return name


def name(rng: random.Random) -> str:
    """A person's or a place's name: a vocabulary proper noun (two in three) or a made-up one."""
    return rng.choice(proper_nouns()) if rng.random() < 0.67 else made_up_name(rng)


def names(rng: random.Random, k: int) -> list[str]:
    out: list[str] = []
    while len(out) < k:
        n = name(rng)
        if n not in out:
            out.append(n)
    return out


def made_up_plural(rng: random.Random) -> str:
    while True:
        word = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 2))) + rng.choice(["s", "es", "ps", "ks"])
        if word not in held_out_words():
            return word


ITEMS = ["apples", "books", "marbles", "pencils", "stickers", "coins", "shells", "cards", "cookies", "stamps",
         "oranges", "balloons", "candles", "cups", "toys", "plates", "shirts", "rocks", "flowers", "bottles",
         "boxes", "bags", "eggs", "leaves", "nails", "hats", "spoons", "bricks", "ducks", "chairs"]
PETS = ["cats", "dogs", "goats", "parrots", "rabbits", "horses", "hens", "fish", "sheep", "cows"]
JOBS = ["teacher", "nurse", "carpenter", "chef", "pilot", "gardener", "painter", "engineer", "farmer", "tailor",
        "doctor", "driver", "singer", "lawyer", "miner", "fisher", "writer", "clerk", "guard", "cook"]
SHOPS = ["bakery", "bookshop", "cafe", "school", "clinic", "workshop", "garage", "hotel", "market", "studio"]
BUILDINGS = [("bridge", "arches"), ("castle", "towers"), ("library", "rooms"), ("church", "bells"),
             ("station", "platforms"), ("stadium", "gates"), ("museum", "halls"), ("tower", "floors"),
             ("harbour", "piers"), ("palace", "gardens")]
TOPICS = ["birds", "ships", "music", "history", "the sea", "old maps", "trees", "the stars", "bread", "trains"]
# Verbs and things for wordings put together at random (word problems, excerpt facts): with a dozen fixed
# sentences the model learned where each one keeps its number ("has 9" -> 9) and copied little from a sentence
# it had not seen (4-13 % of word problems, 21-32 % of excerpt facts in other wordings: docs/capability.md).
# (base, past): what is gained adds to what someone has, what is lost takes away.
GAINS = [("buy", "bought"), ("find", "found"), ("get", "got"), ("make", "made"), ("catch", "caught"),
         ("bake", "baked"), ("collect", "collected"), ("win", "won"), ("receive", "received"), ("earn", "earned"),
         ("gather", "gathered"), ("build", "built"), ("paint", "painted"), ("draw", "drew"), ("grow", "grew"),
         ("plant", "planted"), ("bring", "brought"), ("order", "ordered"), ("borrow", "borrowed"), ("save", "saved"),
         ("sew", "sewed"), ("cook", "cooked"), ("print", "printed"), ("pack", "packed")]
LOSSES = [("lose", "lost"), ("give away", "gave away"), ("sell", "sold"), ("eat", "ate"), ("use", "used"),
          ("break", "broke"), ("throw away", "threw away"), ("lend", "lent"), ("give", "gave"), ("send", "sent"),
          ("return", "returned"), ("hide", "hid"), ("spend", "spent"), ("drop", "dropped")]
VERBS, COUNTED = GAINS + LOSSES, ITEMS + PETS  # what an excerpt's generated fact did, and to what
GONE = ["got lost", "broke", "were lost", "went missing", "fell off", "were sold", "were eaten", "were given away"]
CONTAINERS = ["box", "jar", "basket", "bag", "drawer", "bowl", "crate", "tin", "barrel", "bucket"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "the first day",
        "the second day", "one day", "the weekend"]
THINGS = ["a house", "a boat", "a farm", "a car", "a shop", "a piano", "a horse", "a garden", "a bicycle", "a map",
          "a ring", "a clock", "a painting", "a field", "a mill", "a violin", "a tent", "a cottage"]


# ----------------------------------------------------------------------------- [Math]

OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def held_out_sum(a: int, b: int) -> bool:
    """Two-digit sums training never shows (about 1 in 11, symmetric in a and b): eval.py's unseen items.
    Doubles stay in: the few-shot doubling lines need them."""
    return a >= 10 and b >= 10 and a != b and (a * b + 3 * (a + b)) % 11 == 5


def equation(a: int, op: str, b: int, spaced: bool) -> str:
    c = OPS[op](a, b)
    return f"{a} {op} {b} = {c}" if spaced else f"{a}{op}{b}={c}"


def math_facts(rng: random.Random) -> Doc:
    """Single-digit sums and differences, the table every other skill builds on. The spaced form
    `a + b = c` never opens a document, so eval.py's `[Math] a + b =` prompts stay unseen as written."""
    spaced = rng.random() < 0.5
    lines = []
    for _ in range(rng.randint(6, 10)):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        lines.append(equation(a, "+", b, spaced) if rng.random() < 0.75 else equation(a + b, "-", b, spaced))
    if spaced:
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        lines.insert(0, equation(a + b, "-", a, True))
    # after a newline a sum starts with `3`, after `, ` with ` 3`, as in a prompt `[Math] 3 + 4 =`: GPT-2
    # tokens differ, and a table drilled with one is not known with the other (measured: spaced prompts
    # came out one too high where the compact ones were right)
    return "Math", format_doc("Math", rng.choice(["\n", ", ", "; "]).join(lines))


def two_numbers(rng: random.Random) -> tuple[int, int]:
    while True:
        a = rng.randint(10, 99) if rng.random() < 0.8 else rng.randint(0, 9)
        b = rng.randint(10, 99) if rng.random() < 0.8 else rng.randint(0, 9)
        if not held_out_sum(a, b):
            return a, b


def math_drill(rng: random.Random) -> Doc:
    """Two-digit sums (the held-out ones never), some differences and products: 6-10 lines, most of them
    spaced as eval.py's `[Math] 47 + 38 =` is. With number tokens built from their digits (number_embeddings)
    held-out sums come right once the model has seen enough of them, about seven times the 11k sums of the
    earlier drills (4-8 lines, 60 % sums): 85 % of these lines are sums, and their tokens come out of the
    single-digit tables and few-shot lines (mini_sources.GENERATED), so Math keeps its share of the mixture."""
    spaced = rng.random() < 0.7
    lines = []
    for _ in range(rng.randint(6, 10)):
        kind = rng.random()
        if kind < 0.85:
            a, b = two_numbers(rng)
            while not lines and a < 10 and b < 10:  # as in math_facts: no `a + b =` of single digits opens it
                a, b = two_numbers(rng)
            lines.append(equation(a, "+", b, spaced))
        elif kind < 0.95:
            a, b = two_numbers(rng)
            lines.append(equation(a + b, "-", b, spaced))
        else:
            lines.append(equation(rng.randint(0, 12), "*", rng.randint(0, 12), spaced))
    return "Math", format_doc("Math", "\n".join(lines))


def fewshot_start_held_out(k: int) -> bool:
    """Few-shot lines never *start* at a multiple of 5 in training (they may pass through it): eval.py's
    few-shot prompts start there, so none of them opens a training document."""
    return k % 5 == 0


def math_fewshot(rng: random.Random) -> Doc:
    """A pattern continued term by term: doubling, +1 and +c most often (eval.py's few-shot kinds), times c and
    counting (by c) less. The separator varies with the tokens kept (`24+1=` follows ` `, `, `, `; ` or ` | `
    as the same tokens), so one table of number facts is drilled in more documents that are not duplicates.
    +c comes twice as often as doubling or +1: it is eight tables (c = 2..9), and its misses were most of them
    (the last answer again, `61+9=70 62+9=71 63+9=` -> 71). Starts reach 70, past the 65 a line can reach in
    eval.py, so the top of its range is drilled as often as the middle."""
    n, c = rng.randint(3, 10), rng.randint(2, 9)
    k = rng.randint(1, 70)
    while fewshot_start_held_out(k):
        k = rng.randint(1, 70)
    kind = rng.choices(range(6), weights=[3, 3, 6, 1, 1, 1])[0]
    if kind == 0:
        terms = [f"{i}+{i}={2 * i}" for i in range(k, k + n)]
    elif kind == 1:
        terms = [f"{i}+1={i + 1}" for i in range(k, k + n)]
    elif kind == 2:
        terms = [f"{i}+{c}={i + c}" for i in range(k, k + n)]
    elif kind == 3:
        terms = [f"{c}*{i}={c * i}" for i in range(1, n + 1)]
    elif kind == 4:
        terms = [", ".join(str(c * i) for i in range(k, k + n))]
    else:
        terms = [", ".join(str(i) for i in range(k, k + n))]
    sep = rng.choice([" ", " ", ", ", "; ", " | "])
    return "Math", format_doc("Math", sep.join(terms))


WORD = [  # (question, operator): a is what there was, b what changed
    ("{n} has {a} {x} and gets {b} more. How many {x} does {n} have now?", "+"),
    ("{n} has {a} {x} and buys {b} more. How many {x} does {n} have?", "+"),
    ("There are {a} {x} in a box. {n} puts in {b} more. How many {x} are in the box now?", "+"),
    ("{n} found {a} {x} on Monday and {b} {x} on Tuesday. How many {x} did {n} find in all?", "+"),
    ("What is {a} plus {b}?", "+"),
    ("{n} has {a} {x} and gives away {b}. How many {x} are left?", "-"),
    ("{n} had {a} {x} and lost {b} of them. How many {x} does {n} have now?", "-"),
    ("There are {a} {x} on the table. {n} takes {b}. How many {x} are still on the table?", "-"),
    ("What is {a} minus {b}?", "-"),
]


def word_problem_wording(rng: random.Random, op: str) -> str:
    """A word problem put together from parts (who or what holds the things, the verbs, the days, the
    question), with {a} the number there was and {b} the change: hundreds of wordings, so that what the model
    learns is to take the numbers in the order they come, not where one sentence keeps them."""
    gained = rng.choice(GAINS)[1]
    if rng.random() < 0.3:  # a container, not a person
        start = rng.choice(["There are {a} {x} in the {c}.", "A {c} holds {a} {x}.", "The {c} has {a} {x} in it."])
        change = rng.choice(["{n} puts in {b} more.", "{n} adds {b} more {x}.", "{n} put {b} more in the {c}."]
                            if op == "+" else ["{n} takes out {b}.", "{n} took {b} of them.", "{n} removed {b} {x}."])
        question = rng.choice(["How many {x} are in the {c} now?", "How many {x} are in the {c}?"] if op == "+"
                              else ["How many {x} are left in the {c}?", "How many {x} are in the {c} now?"])
        return " ".join((start, change, question)).replace("{c}", rng.choice(CONTAINERS))
    day, day2 = rng.sample(DAYS, 2)
    start = rng.choice(["{n} has {a} {x}", "{n} had {a} {x}", "{n} " + gained + " {a} {x}",
                        "{n} " + gained + " {a} {x} on " + day, "On " + day + ", {n} " + gained + " {a} {x}"])
    if op == "+":
        gain2 = rng.choice(GAINS)[1]
        change = rng.choice([" and " + gain2 + " {b} more.", ". Then {n} " + gain2 + " {b} more.",
                             ". {m} gave {n} {b} more.", ". On " + day2 + ", {n} " + gain2 + " {b} more."])
        question = rng.choice(["How many {x} does {n} have now?", "How many {x} does {n} have in all?",
                               "How many {x} are there in all?"])
    else:
        lost = rng.choice(LOSSES)[1]
        change = rng.choice([" and " + lost + " {b}.", ". Then {n} " + lost + " {b} of them.",
                             ". {b} of them " + rng.choice(GONE) + ".", ". {n} gave {b} to {m}."])
        question = rng.choice(["How many {x} are left?", "How many {x} does {n} have now?",
                               "How many {x} does {n} have left?"])
    return start + change + " " + question


def math_word(rng: random.Random) -> Doc:
    """One-step word problems, mostly with single digits; the answer shows the sum, then `The answer is N.`
    Half are worded from parts (word_problem_wording), half are the fixed sentences of WORD."""
    q, op = rng.choice(WORD)
    if rng.random() < 0.5:
        op = rng.choice("+-")
        q = word_problem_wording(rng, op)
    a, b = (rng.randint(1, 9), rng.randint(1, 9)) if rng.random() < 0.7 else two_numbers(rng)
    if op == "-":
        a = a + b  # never below zero
    n, m = names(rng, 2)
    text = q.format(n=n, m=m, x=rng.choice(ITEMS), a=a, b=b)
    c = OPS[op](a, b)
    prompt = f"Question: {text}" if rng.random() < 0.75 else text
    return "Math", format_prompt_response("Math", prompt, f"Answer: {a} {op} {b} = {c}. The answer is {c}.")


def math_expr(rng: random.Random) -> Doc:
    a, b, c = rng.randint(1, 30), rng.randint(1, 30), rng.randint(2, 9)
    op1, op2 = rng.choice("+-"), rng.choice("+-*")
    inner = OPS[op1](a, b)
    return "Math", format_doc("Math", f"({a} {op1} {b}) {op2} {c} = {inner} {op2} {c} = {OPS[op2](inner, c)}")


# ----------------------------------------------------------------------------- [Logic]

CHAINS = [["poodles", "dogs", "mammals", "animals", "living things"], ["roses", "flowers", "plants", "living things"],
          ["sparrows", "birds", "animals"], ["squares", "rectangles", "polygons", "shapes"],
          ["violins", "string instruments", "instruments"], ["trout", "fish", "animals"],
          ["oaks", "trees", "plants"], ["cars", "vehicles", "machines"], ["novels", "books", "things you can read"]]
CONDITIONALS = [("{n} studies", "{n} passes the exam", "{n} did not pass the exam", "{n} did not study"),
                ("{n} leaves before eight", "{n} catches the bus", "{n} missed the bus", "{n} did not leave before eight"),
                ("it rains in {c}", "the streets of {c} get wet", "the streets of {c} are dry", "it did not rain in {c}"),
                ("{n} waters the plants", "the plants grow", "the plants did not grow", "{n} did not water the plants"),
                ("the {c} museum is open", "{n} visits it", "{n} did not visit it", "the {c} museum is closed"),
                ("{n} has a ticket", "{n} may board the train", "{n} may not board the train", "{n} has no ticket")]
ORDERS = [("taller", "shorter", "tallest", "shortest"), ("older", "younger", "oldest", "youngest"),
          ("faster", "slower", "fastest", "slowest"), ("heavier", "lighter", "heaviest", "lightest"),
          ("stronger", "weaker", "strongest", "weakest"), ("richer", "poorer", "richest", "poorest"),
          ("bigger", "smaller", "biggest", "smallest")]


def logic_syllogism(rng: random.Random) -> Doc:
    if rng.random() < 0.2:  # true statements about real categories (few: most are dropped as duplicates)
        chain = rng.choice(CHAINS)
        i = rng.randrange(len(chain) - 2)
        a, b, c = chain[i], chain[i + 1], chain[rng.randrange(i + 2, len(chain))]
        real = True
    else:  # made-up words: only the form of the argument can decide the conclusion
        a, b, c = (made_up_plural(rng) for _ in range(3))
        real = False
    if rng.random() < 0.6 or real:
        premises, conclusion = f"All {a} are {b}. All {b} are {c}.", f"All {a} are {c}."
    else:
        premises, conclusion = f"All {a} are {b}. No {b} are {c}.", f"No {a} are {c}."
    return "Logic", format_prompt_response("Logic", f"Premises: {premises}", f"Conclusion: {conclusion}")


def logic_conditional(rng: random.Random) -> Doc:
    fill = dict(n=name(rng), c=name(rng))
    p, q, not_q, not_p = (x.format(**fill) for x in rng.choice(CONDITIONALS))
    if rng.random() < 0.5:
        premises, conclusion = f"If {p}, then {q}. We know that {p}.", f"Therefore, {q}."
    else:
        premises, conclusion = f"If {p}, then {q}. We know that {not_q}.", f"Therefore, {not_p}."
    return "Logic", format_prompt_response("Logic", f"Premises: {premises}", f"Conclusion: {conclusion}")


def logic_order(rng: random.Random) -> list[Doc]:
    """Pairwise comparisons of 3-5 people in random order and wording, asked who is the most and who the
    least (two documents), sometimes also whether one is more than another."""
    more, less, most, least = rng.choice(ORDERS)
    people = names(rng, rng.choice([3, 3, 4, 4, 5]))  # people[0] is the most, people[-1] the least
    facts = [f"{x} is {more} than {y}." if rng.random() < 0.5 else f"{y} is {less} than {x}."
             for x, y in zip(people, people[1:])]
    rng.shuffle(facts)
    premises = f"Premises: {' '.join(facts)}\nQuestion: "
    qa = [(f"Who is the {most}?", f"{people[0]} is the {most}."), (f"Who is the {least}?", f"{people[-1]} is the {least}.")]
    if rng.random() < 0.3:
        i, j = rng.sample(range(len(people)), 2)
        yes = i < j
        qa.append((f"Is {people[i]} {more} than {people[j]}?",
                   f"{'Yes' if yes else 'No'}, {people[i]} is {more if yes else less} than {people[j]}."))
    return [("Logic", format_prompt_response("Logic", premises + q, f"Conclusion: {a}")) for q, a in qa]


# ----------------------------------------------------------------------------- [Roleplay]

CHARACTERS = [("a wizard", "the Tower of Stars", "wise and patient"), ("a pirate captain", "the ship Sea Fox", "loud and cheerful"),
              ("a knight", "the castle of Elmwood", "brave and polite"), ("a detective", "the foggy city of Greyport", "sharp and curious"),
              ("a baker", "a small village bakery", "warm and funny"), ("a space explorer", "the station Orion Seven", "calm and precise"),
              ("a dragon", "a mountain cave", "proud but kind"), ("a librarian", "the Great Library", "quiet and helpful"),
              ("a ship's robot", "the cargo ship Vega", "logical and friendly"), ("an innkeeper", "the Silver Lantern Inn", "chatty and generous")]
HELLO = ("Hello!", "Greetings! I am {name}, {role}. Welcome to {place}.")
ASKS = [("What is your name?", "My name is {name}."), ("Where are we?", "We are in {place}."),
        ("What do you do here?", "I am {role}. This is where I live and work."),
        ("How would you describe yourself?", "People say I am {trait}."),
        ("Can you help me?", "Of course. As {role}, I will do what I can for you."),
        ("Goodbye!", "Farewell, traveler. Come back to {place} any time.")]


def roleplay(rng: random.Random) -> Doc:
    """A conversation of one to four exchanges, most opening with a greeting. Three in four are a single
    exchange, with or without the greeting: chat.py and serve.py send each turn as a document of its own and
    take the reply up to end-of-text, so a reply that ends the document is what they need. At one in two, two
    in five of eval.py's roleplay replies ran on into a next turn that broke the layout (mangled names)."""
    role, place, trait = rng.choice(CHARACTERS)
    who, user = names(rng, 2)
    exchanges = 1 if rng.random() < 0.75 else rng.randint(2, 4)
    opening = [HELLO] if rng.random() < 0.6 else []
    turns = opening + rng.sample(ASKS, exchanges - len(opening))
    fill = dict(name=who, role=role, place=place, trait=trait)
    if rng.random() < 0.5:
        text = f"<|system|>Enter roleplay mode. You are {who}, {role} in {place}. You are {trait}."
        text += "".join(f"<|user|>{u}<|model|>{m.format(**fill)}" for u, m in turns)
    else:
        text = f"{user} meets {who}, {role}, in {place}.\n"
        text += "\n".join(f"{user}: {u}\n{who}: {m.format(**fill)}" for u, m in turns)
    return "Roleplay", format_doc("Roleplay", text)


# ----------------------------------------------------------------------------- [Excerpt]

# (sentence, [(question, answer)]): {n} a person, {p} a place, {y} a year, {k} a count, the rest drawn below
FACTS = [
    ("{n} moved to {p} in {y}.", [("In which year did {n} move to {p}?", "{y}"), ("When did {n} move to {p}?", "{y}"),
                                  ("Where did {n} move in {y}?", "{p}"), ("Who moved to {p} in {y}?", "{n}")]),
    ("{n} was born in {p} in {y}.", [("In which year was {n} born?", "{y}"), ("When was {n} born?", "{y}"),
                                     ("Where was {n} born?", "{p}")]),
    ("In {y}, {n} opened a {shop} in {p}.", [("In which year did {n} open the {shop}?", "{y}"),
                                            ("Where did {n} open a {shop}?", "{p}"), ("What did {n} open in {y}?", "a {shop}")]),
    ("{n} has {k} {item}.", [("How many {item} does {n} have?", "{k}")]),
    ("{n} lived with {k} {pet} in a small house near the river.", [("How many {pet} did {n} have?", "{k}"),
                                                                  ("How many {pet} did {n} live with?", "{k}")]),
    ("{n} worked as a {job} for {k} years.", [("What was {n}'s job?", "a {job}"), ("What did {n} work as?", "a {job}"),
                                             ("For how many years did {n} work as a {job}?", "{k}")]),
    ("{n} wrote {k} books about {topic}.", [("How many books did {n} write?", "{k}"), ("What did {n} write about?", "{topic}")]),
    ("{n} visited {p} {k} times.", [("How many times did {n} visit {p}?", "{k}"), ("Which place did {n} visit?", "{p}")]),
    ("The {building} in {p} was built in {y} and has {k} {parts}.",
     [("When was the {building} built?", "{y}"), ("In which year was the {building} in {p} built?", "{y}"),
      ("How many {parts} does the {building} have?", "{k}"), ("Where is the {building}?", "in {p}")]),
]


def generated_fact(rng: random.Random) -> tuple[str, list[tuple[str, str]]]:
    """A fact put together from a verb, a count of things or one thing, and a year, in FACTS' form: the
    model has to find the number by what the question names, as no fixed sentence keeps it in one place."""
    verb, did = rng.choice(VERBS)
    noun, thing = rng.choice(COUNTED), rng.choice(THINGS)
    if rng.random() < 0.5:  # a count, with or without a year and a place
        sentence = rng.choice(["{n} %s {k} %s.", "{n} %s {k} %s in {p}.", "In {y}, {n} %s {k} %s.",
                               "{n} %s {k} %s in {y}."]) % (did, noun)
        qs = [(f"How many {noun} did {{n}} {verb}?", "{k}")]
        if "{y}" in sentence:
            qs.append((rng.choice([f"In which year did {{n}} {verb} the {noun}?", f"When did {{n}} {verb} the {noun}?"]), "{y}"))
        return sentence, qs
    sentence = rng.choice(["{n} %s %s in {y}.", "In {y}, {n} %s %s.", "{n} %s %s in {p} in {y}."]) % (did, thing)
    the = "the " + thing.split()[1]
    return sentence, [(f"In which year did {{n}} {verb} {the}?", "{y}"), (f"When did {{n}} {verb} {the}?", "{y}"),
                      (f"What did {{n}} {verb} in {{y}}?", thing)]


def year(rng: random.Random) -> int:
    """Three years in four from 1900-2022, which GPT-2 writes as one token (` 1957`), the rest from 1000-2099,
    mostly two (` 12` `34`). Drawn from 1000-2099 alone, six answers in seven began with a century-like token,
    and the model learned to start a year with one (` 12`, ` 18`) instead of copying the excerpt's ` 1920`."""
    return rng.randint(1900, 2022) if rng.random() < 0.75 else rng.randint(1000, 2099)


def excerpt(rng: random.Random) -> list[Doc]:
    """A short text of two or three facts about one or two people, with its own years and counts, asked
    two questions (two documents): the answer is a span of the text, found by what the question names."""
    people = names(rng, rng.randint(1, 2))
    chosen = [fact if rng.random() < 0.5 else generated_fact(rng) for fact in rng.sample(FACTS, rng.randint(2, 3))]
    sentences, questions = [], []
    for sentence, qs in chosen:
        building, parts = rng.choice(BUILDINGS)
        fill = dict(n=rng.choice(people), p=name(rng), y=year(rng), k=rng.randint(2, 99),
                    item=rng.choice(ITEMS), pet=rng.choice(PETS), job=rng.choice(JOBS), shop=rng.choice(SHOPS),
                    topic=rng.choice(TOPICS), building=building, parts=parts)
        sentences.append(sentence.format(**fill))
        questions += [(q.format(**fill), a.format(**fill)) for q, a in qs]
    text = " ".join(sentences)
    if len(people) == 1:
        questions.append(("Who is this text about?", people[0]))
    questions.append(("Repeat the first sentence.", sentences[0]))  # every token a copy: teaches induction
    picked = rng.sample(questions, 2)
    return [("Excerpt", format_excerpt(f"{text}\nQuestion: {q}", a)) for q, a in picked]


WORDS = ["river", "green", "seven", "window", "quiet", "stone", "market", "blue", "under", "bright", "paper",
         "garden", "slowly", "north", "silver", "bread", "open", "little", "winter", "road", "morning", "lamp"]


def excerpt_copy(rng: random.Random) -> Doc:
    """A list of unrelated names, words and numbers, repeated: every response token can only be copied from
    the text, the densest signal there is for the look-back-and-copy that every other question needs."""
    pieces = [rng.choice((name, lambda r: r.choice(WORDS), lambda r: str(r.randint(0, 2099))))(rng)
              for _ in range(rng.randint(4, 16))]
    text = " ".join(pieces)
    return "Excerpt", format_excerpt(f"{text}\nQuestion: Repeat the text.", text)


# ----------------------------------------------------------------------------- [Code]

NUM_ARGS = ["x", "n", "value", "num", "amount", "count", "size", "total", "score", "level", "width", "height",
            "price", "age", "speed", "weight", "step", "limit", "number", "y"]
STR_ARGS = ["text", "s", "word", "line", "name", "label", "title", "message", "phrase", "key"]
LIST_ARGS = ["items", "values", "numbers", "data", "xs", "scores", "prices", "counts", "sizes", "weights"]
WORD_LIST_ARGS = ["words", "names", "parts", "tags", "lines", "labels"]
# (docstring, function names, arguments, body). {a} a number argument, {s} a string, {l} a list of numbers,
# {w} a list of strings, {k} and {m} constants: 2-12 or 100-999, never eval.py's 13-99, so a constant in a
# task's prompt has to be copied, not recalled. Many families, argument names and constants keep the
# documents distinct (the writer drops duplicates) and make short, well-formed bodies the usual shape of a
# [Code] function, not the stdlib's long methods. Every body is one line: GPT-2 writes indentation as single
# spaces, so a nested line needs seven counted before its first word, which this model does not learn (a
# body opened with `if not values:` ran on in spaces until the token limit); `x if c else y` needs no count.
FUNCTIONS = [
    ("Return {a} multiplied by {k}.", ["scale_by_{k}", "multiply_by_{k}", "mul_{k}"], "{a}", "return {a} * {k}"),
    ("Return {a} plus {k}.", ["plus_{k}", "increase_by_{k}", "shift_up_{k}"], "{a}", "return {a} + {k}"),
    ("Return {a} minus {k}.", ["minus_{k}", "decrease_by_{k}", "shift_down_{k}"], "{a}", "return {a} - {k}"),
    ("Return {a} divided by {k}, rounded down.", ["floor_div_{k}", "split_{k}_ways"], "{a}", "return {a} // {k}"),
    ("Return the remainder of {a} divided by {k}.", ["mod_{k}", "remainder_{k}"], "{a}", "return {a} % {k}"),
    ("Return {a} multiplied by {k}, plus {m}.", ["linear_{k}_{m}", "affine_{k}_{m}"], "{a}", "return {a} * {k} + {m}"),
    ("Return {a} to the power of {k}.", ["power_{k}", "pow_{k}"], "{a}", "return {a} ** {k}"),
    ("Return the square of {a}.", ["square", "squared"], "{a}", "return {a} * {a}"),
    ("Return {a} doubled.", ["double", "twice"], "{a}", "return 2 * {a}"),
    ("Return half of {a}.", ["half", "halve"], "{a}", "return {a} / 2"),
    ("Return {a} with its sign flipped.", ["negate", "flip_sign"], "{a}", "return -{a}"),
    ("Return True if {a} is even, else False.", ["is_even", "even"], "{a}", "return {a} % 2 == 0"),
    ("Return True if {a} is odd, else False.", ["is_odd", "odd"], "{a}", "return {a} % 2 == 1"),
    ("Return True if {a} is greater than {k}, else False.", ["above_{k}", "more_than_{k}"], "{a}",
     "return {a} > {k}"),
    ("Return True if {a} is less than {k}, else False.", ["below_{k}", "less_than_{k}"], "{a}", "return {a} < {k}"),
    ("Return True if {a} equals {k}, else False.", ["is_{k}", "equals_{k}"], "{a}", "return {a} == {k}"),
    ("Return True if {a} is a multiple of {k}, else False.", ["multiple_of_{k}", "in_steps_of_{k}"], "{a}",
     "return {a} % {k} == 0"),
    ("Return {a}, but never more than {k}.", ["cap_{k}", "at_most_{k}"], "{a}", "return min({a}, {k})"),
    ("Return {a}, but never less than {k}.", ["floor_{k}", "at_least_{k}"], "{a}", "return max({a}, {k})"),
    ("Return the absolute value of {a}.", ["magnitude", "absolute"], "{a}",
     "return -{a} if {a} < 0 else {a}"),
    ("Return 'big' if {a} is over {k}, else 'small'.", ["size_word_{k}", "big_or_small_{k}"], "{a}",
     "return 'big' if {a} > {k} else 'small'"),
    ("Return the sum of the numbers from 1 to {a}.", ["sum_to", "triangle"], "{a}",
     "return sum(range(1, {a} + 1))"),
    ("Return the product of the numbers from 1 to {a}.", ["factorial", "product_to"], "{a}",
     "return math.prod(range(2, {a} + 1))"),
    ("Return a list of the numbers from 0 to {k}.", ["numbers_to_{k}", "range_to_{k}"], "",
     "return list(range({k} + 1))"),
    ("Return the first {k} multiples of {a}.", ["multiples_{k}", "first_{k}_multiples"], "{a}",
     "return [{a} * i for i in range(1, {k} + 1)]"),
    ("Return the larger of a and b.", ["larger", "bigger"], "a, b", "return a if a > b else b"),
    ("Return the smaller of a and b.", ["smaller", "lesser"], "a, b", "return a if a < b else b"),
    ("Return the sum of a and b.", ["add_two", "sum_of"], "a, b", "return a + b"),
    ("Return a minus b.", ["difference", "subtract"], "a, b", "return a - b"),
    ("Return the product of a and b, plus {k}.", ["product_plus_{k}", "mul_add_{k}"], "a, b", "return a * b + {k}"),
    ("Return the sum of the numbers in the list {l}.", ["total", "sum_list"], "{l}", "return sum({l})"),
    ("Return the number of items in the list {l}.", ["count_items", "length"], "{l}", "return len({l})"),
    ("Return the largest number in the list {l}.", ["biggest", "list_max"], "{l}", "return max({l})"),
    ("Return the smallest number in the list {l}, or {k} if it is empty.", ["smallest_or_{k}", "min_or_{k}"],
     "{l}", "return min({l}) if {l} else {k}"),
    ("Return the average of the numbers in the list {l}, or 0 if it is empty.", ["average", "mean"], "{l}",
     "return sum({l}) / len({l}) if {l} else 0"),
    ("Return the list {l} sorted from small to large.", ["sorted_list", "in_order"], "{l}", "return sorted({l})"),
    ("Return the list {l} in reverse order.", ["reversed_list", "flip"], "{l}", "return {l}[::-1]"),
    ("Return the list {l} with every number multiplied by {k}.", ["scaled_{k}", "each_times_{k}"], "{l}",
     "return [v * {k} for v in {l}]"),
    ("Return the list {l} with {k} added to every number.", ["each_plus_{k}", "raised_{k}"], "{l}",
     "return [v + {k} for v in {l}]"),
    ("Return the numbers in the list {l} that are greater than {k}.", ["over_{k}", "keep_above_{k}"], "{l}",
     "return [v for v in {l} if v > {k}]"),
    ("Return the even numbers in the list {l}.", ["evens", "only_even"], "{l}",
     "return [v for v in {l} if v % 2 == 0]"),
    ("Return how many numbers in the list {l} are less than {k}.", ["count_below_{k}", "how_many_under_{k}"],
     "{l}", "return sum(1 for v in {l} if v < {k})"),
    ("Return the first item of the list {l}, or None if it is empty.", ["first", "head"], "{l}",
     "return {l}[0] if {l} else None"),
    ("Return True if {k} is in the list {l}, else False.", ["has_{k}", "contains_{k}"], "{l}",
     "return {k} in {l}"),
    ("Return the string {s} in upper case.", ["shout", "upper"], "{s}", "return {s}.upper()"),
    ("Return the string {s} in lower case.", ["quiet", "lower"], "{s}", "return {s}.lower()"),
    ("Return the string {s} reversed.", ["backwards", "reverse_text"], "{s}", "return {s}[::-1]"),
    ("Return the first {k} characters of the string {s}.", ["head_{k}", "prefix_{k}"], "{s}", "return {s}[:{k}]"),
    ("Return the last {k} characters of the string {s}.", ["tail_{k}", "suffix_{k}"], "{s}", "return {s}[-{k}:]"),
    ("Return the length of the string {s}.", ["text_length", "char_count"], "{s}", "return len({s})"),
    ("Return the string {s} written {k} times in a row.", ["echo_{k}", "times_text_{k}"], "{s}",
     "return {s} * {k}"),
    ("Return how many times the character c occurs in the string {s}.", ["count_char", "occurrences"],
     "{s}, c", "return {s}.count(c)"),
    ("Return the words of the string {s} as a list.", ["words", "split_words"], "{s}", "return {s}.split()"),
    ("Return True if the string {s} starts with a capital letter, else False.", ["is_capitalized", "starts_upper"],
     "{s}", "return {s}[:1].isupper()"),
    ("Return the string {s} without spaces at either end.", ["trim", "strip_spaces"], "{s}", "return {s}.strip()"),
    ("Return a greeting for the person called {s}.", ["greet", "hello"], "{s}", "return 'Hello, ' + {s} + '!'"),
    ("Return the strings in the list {w} joined with commas.", ["join_commas", "comma_list"], "{w}",
     "return ', '.join({w})"),
    ("Return a dictionary that maps each string in the list {w} to its length.", ["lengths", "length_map"], "{w}",
     "return {{t: len(t) for t in {w}}}"),
]


def code_small(rng: random.Random) -> Doc | list[Doc]:
    """A short function from its docstring, in the `[Code] DOCSTRING\\n\\nCODE` layout of the stdlib ones; one
    in six also asked about as `[QA]` (in a made-up module), its docstring the answer."""
    doc, names, args, body = rng.choice(FUNCTIONS)
    small = rng.random() < 0.5  # half the constants small, half three-digit
    k, m = (rng.randint(2, 12) if small else rng.randint(100, 999) for _ in range(2))
    fill = dict(a=rng.choice(NUM_ARGS), s=rng.choice(STR_ARGS), l=rng.choice(LIST_ARGS),
                w=rng.choice(WORD_LIST_ARGS), k=k, m=m)
    doc, fn = doc.format(**fill), rng.choice(names).format(**fill)
    code = "Code", format_doc("Code", f"{doc}\n\ndef {fn}({args.format(**fill)}):\n    {body.format(**fill)}")
    if rng.random() >= 1 / 6:
        return code
    # The same docstring as a QA answer that ends at end-of-text: [Code] follows these sentences with the
    # function, QA with nothing, and without short QA answers like these a docstring-like answer ran on
    # (`Return a list of the number of the number of ...`) in a third of eval.py's QA prompts.
    module = made_up_name(rng).lower()
    if rng.random() < 0.5:
        return [code, ("QA", format_qa(f"What does `{fn}()` in `{module}` do?", doc))]
    # Asked about the module itself, a one-sentence answer: without these, eval's `What is the Python module
    # X for?` (a few percent of the stdlib QA) was answered by copying the question until the token limit.
    return [code, ("QA", format_qa(f"What is the Python module `{module}` for?",
                                   f"A small module with `{fn}()`: {doc[0].lower()}{doc[1:]}"))]


GENERATORS = {"math_facts": math_facts, "math_drill": math_drill, "math_fewshot": math_fewshot,
              "math_word": math_word, "math_expr": math_expr, "logic_syllogism": logic_syllogism,
              "logic_conditional": logic_conditional, "logic_order": logic_order, "roleplay": roleplay,
              "excerpt": excerpt, "excerpt_copy": excerpt_copy, "code_small": code_small}
