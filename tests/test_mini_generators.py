"""data/mini_generators.py: every answer can be read from its prompt, sums are right, code parses, and the
items eval.py holds out never appear."""

import ast
import random
import re

from data import mini_generators as g
from helpers import generated_texts
from tags import response_start
from tokenizer import get_encoding


def prompt_and_answer(text: str) -> tuple[str, str]:
    start = response_start(text)
    assert start, f"no prompt/response split: {text!r}"
    return text[:start], text[start:].strip()


def test_excerpt_answers_are_spans_of_their_text():
    for text in generated_texts("excerpt", 200):
        prompt, answer = prompt_and_answer(text)
        body = prompt.split("\nQuestion:")[0]
        assert answer.removeprefix("a ").removeprefix("in ") in body, text


def test_excerpt_years_are_often_one_token_as_in_most_text():
    """Three years in four one GPT-2 token (` 1920`), the rest anywhere in 1000-2099: a year answer must be
    copied, not begun with a century-like token (` 12`) learned from two-token years."""
    enc, rng = get_encoding(), random.Random(0)
    years = [g.year(rng) for _ in range(400)]
    one_token = sum(len(enc.encode(f" {y}")) == 1 for y in years)
    assert 0.7 * len(years) < one_token < 0.9 * len(years) and min(years) < 1900


def test_ordering_answers_name_the_right_person_from_the_premises():
    for text in generated_texts("logic_order", 150):
        prompt, answer = prompt_and_answer(text)
        facts = re.findall(r"(\w+) is (\w+) than (\w+)\.", prompt.split("\nQuestion:")[0])
        order = next(o for o in g.ORDERS if all(r in o[:2] for _, r, _ in facts))  # (more, less, most, least)
        above = {(x, y) if r == order[0] else (y, x) for x, r, y in facts}  # (higher, lower)
        people = {p for pair in above for p in pair}
        top = [p for p in people if not any(lo == p for _, lo in above)]
        bottom = [p for p in people if not any(hi == p for hi, _ in above)]
        who = re.match(r"Conclusion: (\w+) is the (\w+)\.$", answer)
        if who:  # who is the most / the least
            assert len(top) == len(bottom) == 1
            assert who.group(1) == (top[0] if who.group(2) == order[2] else bottom[0]), text
        else:
            assert re.match(r"Conclusion: (Yes|No), ", answer), text


def test_sums_and_word_problems_are_right():
    lines = [line for name in ("math_facts", "math_drill", "math_fewshot") for t in generated_texts(name, 200)
             for line in re.split(r"\n| (?=\d+[+*]\d+=)", t.removeprefix("[Math] "))]
    checked = 0
    for line in lines:
        m = re.fullmatch(r"(\d+) ?([-+*/]) ?(\d+) ?= ?(\d+)", line.strip())
        if m:
            a, op, b, c = m.groups()
            assert eval(f"{a}{op}{b}") == int(c), line
            checked += 1
    assert checked > 2000
    for text in generated_texts("math_word", 200):
        prompt, answer = prompt_and_answer(text)
        a, op, b, c = re.match(r"Answer: (\d+) ([-+]) (\d+) = (\d+)\. The answer is \4\.$", answer).groups()
        assert eval(f"{a}{op}{b}") == int(c) and a in prompt and b in prompt, text


def test_word_problems_take_their_numbers_in_order_from_many_wordings():
    """The operands are the question's numbers as they come, in wordings too many to learn one by one: with a
    dozen fixed ones the model learned where each keeps its number and copied little from others."""
    wordings = set()
    for text in generated_texts("math_word", 400):
        prompt, answer = prompt_and_answer(text)
        a, _, b = re.match(r"Answer: (\d+) ([-+]) (\d+) = ", answer).groups()
        assert re.findall(r"\d+", prompt) == [a, b], text
        wordings.add(re.sub(r"\d+|\b[A-Z]\w*|\b(%s)\b" % "|".join(g.ITEMS), "_", prompt))  # numbers, names, things out
    assert len(wordings) > 150


def test_excerpt_counts_stand_before_their_things_in_many_wordings():
    counts = set()
    for text in generated_texts("excerpt", 300):
        prompt, answer = prompt_and_answer(text)
        if m := re.search(r"Question: How many (\w+) did \w+ (\w+(?: \w+)?)\?", prompt):
            assert re.search(rf"\b{answer} {m.group(1)}\b", prompt), text  # the count stands before its things
            counts.add(m.group(2))
    assert len(counts) > 30  # verbs the count questions ask with


def test_two_digit_drills_are_mostly_sums_in_eval_layout_and_never_the_held_out_ones():
    lines = [line for t in generated_texts("math_drill", 400) for line in t.removeprefix("[Math] ").split("\n")]
    sums = [tuple(map(int, m.groups())) for line in lines if (m := re.fullmatch(r"(\d+) ?\+ ?(\d+) ?= ?\d+", line))]
    # most lines a sum (what number_embeddings needs to see many of), most spaced as `[Math] 47 + 38 =`
    assert 0.75 < len(sums) / len(lines) < 0.95 and sum(" + " in line for line in lines) > 0.55 * len(sums)
    assert sum(a >= 10 and b >= 10 for a, b in sums) > 0.5 * len(sums)
    assert not any(g.held_out_sum(a, b) for a, b in sums)


def test_every_single_digit_sum_is_drilled_and_never_opens_a_document_spaced():
    texts = generated_texts("math_facts", 600)
    sums = set(re.findall(r"\b(\d) ?\+ ?(\d) ?= ?\d+", "\n".join(texts)))
    assert len(sums) == 100
    # eval.py's `[Math] 3 + 4 =` prompts: neither the table nor the two-digit drills (which have some
    # single-digit operands) open a document with one
    assert not any(re.match(r"\[Math\] \d \+ \d =", t) for t in texts + generated_texts("math_drill", 3000))
    # sums also follow `, ` or `; ` (first operand ` 3`, as in the prompt `[Math] 3 + 4 =`), not only a newline
    after_space = set(re.findall(r"[,;] (\d) \+ (\d) = \d+", "\n".join(texts)))
    assert len(after_space) > 90


def test_generated_code_parses_is_short_and_varied_and_leaves_eval_constants_out():
    texts = generated_texts("code_small", 600)
    code_docs = [t for t in texts if t.startswith("[Code] ")]
    for text in code_docs:
        doc, code = text.removeprefix("[Code] ").split("\n\n", 1)
        tree = ast.parse(code)
        # a def line and a one-line body: a nested block needs its indentation's single spaces counted
        assert isinstance(tree.body[0], ast.FunctionDef) and doc.endswith(".") and code.count("\n") == 1
        # eval.py's code task asks for constants 13-99: training's are 2-12 or 100-999, so they are copied
        assert not [k for k in re.findall(r"\d+", text) if 13 <= int(k) <= 99], text
    assert len(set(texts)) > 0.8 * len(texts)  # the writer drops duplicates: most documents must survive


def test_generated_code_is_also_asked_about_as_qa_with_its_docstring_as_the_answer():
    texts = generated_texts("code_small", 600)
    qa, kinds = [t for t in texts if t.startswith("[QA] ")], set()
    assert 0.08 < len(qa) / len(texts) < 0.25 and len(qa) + sum(t.startswith("[Code] ") for t in texts) == len(texts)
    for text in qa:
        i = texts.index(text)
        doc = texts[i - 1].removeprefix("[Code] ").split("\n\n", 1)[0]  # the function it asks about
        fn = re.search(r"def (\w+)\(", texts[i - 1]).group(1)
        about_fn = re.fullmatch(rf"\[QA\] \*\*Question:\*\* What does `{fn}\(\)` in `[a-z]+` do\?\n"
                                rf"\*\*Answer:\*\* {re.escape(doc)}", text)
        # or about the made-up module: one sentence naming the function, then its docstring
        answer = f"A small module with `{fn}()`: {doc[0].lower()}{doc[1:]}"
        about_module = re.fullmatch(rf"\[QA\] \*\*Question:\*\* What is the Python module `[a-z]+` for\?\n"
                                    rf"\*\*Answer:\*\* {re.escape(answer)}", text)
        assert about_fn or about_module, text
        assert text[text.response_start:] == " " + (doc if about_fn else answer)
        kinds.add(bool(about_fn))
    assert kinds == {True, False}


def test_names_come_from_a_wide_pool():
    texts = generated_texts("logic_order", 200) + generated_texts("excerpt", 200)
    people = set(re.findall(r"\b[A-Z][a-z]+\b", " ".join(texts))) - {"Premises", "Question", "Conclusion", "Who",
                                                                      "Excerpt", "Response", "Logic", "Yes", "No"}
    assert len(people) > 300 and len(g.proper_nouns()) > 3000


def test_name_pool_holds_common_first_names_that_are_also_lowercase_tokens_but_not_ordinary_words():
    # ' tom' and ' john' are GPT-2 tokens too; left out, Tom and John were never trained and (shortlist_head)
    # shared one vector with every other unseen token
    pool = set(g.proper_nouns())
    assert {"Tom", "John", "Bob", "Jack", "Amy", "Alice"} <= pool
    assert not {"The", "When", "Will", "May", "If"} & pool


def test_roleplay_conversations_run_one_to_four_exchanges_and_most_end_after_one():
    exchanges, singles_opening = [], set()
    for text in generated_texts("roleplay", 300):
        body = text.removeprefix("[Roleplay] ")
        if body.startswith("<|system|>"):
            turns = re.findall(r"<\|user\|>(.+?)<\|model\|>(.+?)(?=<\|user\|>|$)", body)
        else:
            header, *lines = body.split("\n")
            user, who = re.match(r"(\w+) meets (\w+), ", header).groups()
            assert [line.split(":")[0] for line in lines] == [user, who] * (len(lines) // 2) and len(lines) % 2 == 0
            turns = lines[::2]
        assert all(reply.strip() for _, reply in turns) if body.startswith("<|system|>") else True
        exchanges.append(len(turns))
        if len(turns) == 1:
            singles_opening.add("Hello!" in body)
    assert set(exchanges) == {1, 2, 3, 4}
    # three conversations in four end after one reply, to a greeting or a question (chat.py's turns)
    assert 0.65 < exchanges.count(1) / len(exchanges) < 0.85 and singles_opening == {True, False}


def test_generated_codec_tables_are_left_out_of_the_stdlib_documents():
    import encodings.cp1252
    from data.mini_sources import stdlib_docs
    assert list(stdlib_docs("encodings.cp1252", encodings.cp1252.__file__)) == []
    import json
    assert any(tag == "QA" for tag, _ in stdlib_docs("json", json.__file__))
