"""Format adherence for [QA] and [Roleplay]: the answer has the tag's layout and ends at end-of-text.

QA questions ask about made-up functions and modules (names no stdlib file has); Roleplay uses characters,
places and names outside data/mini_sources.py's CHARACTERS and NAMES. What is right here is the layout, not
the content: these tasks check what a user of the tag relies on.
"""

import re

from data.eval_tasks import Item, Task

SYLLABLES = ["blor", "quix", "zan", "frob", "mel", "trav", "gund", "pex", "wil", "dro", "skel", "vim"]
NAMES = ["Alma", "Bruno", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana", "Ivo", "Juno", "Kofi", "Lena"]
CHARACTERS = [("a lighthouse keeper", "the cliffs of Morrow", "gruff but kind"),
              ("a tea merchant", "the river market of Sel", "shrewd and cheerful"),
              ("a clockmaker", "a workshop full of gears", "fussy and precise"),
              ("a mountain guide", "the pass of Kel Varn", "steady and brave")]
ASKS = ["What is your name?", "Where are we?", "What do you do here?", "Can you help me?"]
MARKERS = ("<|system|>", "<|user|>", "<|model|>")


def qa(rng) -> Item:
    fn = "_".join(rng.sample(SYLLABLES, 2))
    module = rng.choice(SYLLABLES) + rng.choice(SYLLABLES)
    question = rng.choice([f"What does `{fn}()` in `{module}` do?", f"What is the Python module `{module}` for?"])
    return Item(f"[QA] **Question:** {question}\n**Answer:**", "one answer paragraph, then end-of-text")


def score_qa(item: Item, output: str, stopped: bool) -> dict[str, bool]:
    answer = output.strip()
    layout = bool(answer) and "**Question:**" not in answer and "**Answer:**" not in answer \
        and not re.search(r"^\[(Textbook|QA|Code|Math|Logic|Roleplay|Excerpt)\]", answer, re.M)
    return {"format": layout and stopped}


def roleplay(rng) -> Item:
    role, place, trait = rng.choice(CHARACTERS)
    name, user = rng.sample(NAMES, 2)
    ask = rng.choice(ASKS)
    if rng.random() < 0.5:
        return Item(f"[Roleplay] <|system|>Enter roleplay mode. You are {name}, {role} in {place}. You are {trait}."
                    f"<|user|>{ask}<|model|>", "a reply, then <|user|>/<|model|> turns or end-of-text",
                    entry="metharme")
    return Item(f"[Roleplay] {user} meets {name}, {role}, in {place}.\n{user}: Hello!\n{name}:",
                f"a reply, then '{user}: ...' / '{name}: ...' lines or end-of-text", entry=f"{user}|{name}")


def score_roleplay(item: Item, output: str, stopped: bool) -> dict[str, bool]:
    """The reply is non-empty, and whatever follows it keeps the dialogue's layout."""
    if item.entry == "metharme":
        parts = re.split(r"(<\|user\|>|<\|model\|>|<\|system\|>)", output)
        reply, rest = parts[0], parts[1:]
        turns_ok = all(rest[i] == ("<|user|>" if i % 4 == 0 else "<|model|>") and rest[i + 1].strip()
                       for i in range(0, len(rest) - 1, 2)) and len(rest) % 2 == 0
    else:
        user, name = item.entry.split("|")
        reply, *rest = output.split("\n")
        turns_ok = all(re.match(rf"({re.escape(user)}|{re.escape(name)}): \S", line) for line in rest if line.strip())
    return {"format": bool(reply.strip()) and not any(m in reply for m in MARKERS) and turns_ok and stopped}


TASKS = [Task("qa_format", "QA", "answer is one **Answer:** text and ends at end-of-text", qa, score_qa, 96, n=30,
              literal=False),
         Task("roleplay_format", "Roleplay", "reply keeps the dialogue layout and ends at end-of-text",
              roleplay, score_roleplay, 96, n=30, literal=False)]
