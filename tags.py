"""NanoPhi's task tags: the one list that data preparation, training, sampling and chat all read.

A document starts with its tag, so at inference time the same prefix selects the skill. The helpers below
are the only place a document's layout is spelled out; data/prepare.py formats every source through them.

    [Textbook] TITLE\n\nBODY
    [QA] **Question:** QUESTION\n**Answer:** ANSWER
    [Code] DOCSTRING\n\nCODE
    [Math] PROBLEM\nANSWER            (drills and few-shot lines like `1+1=2 2+2=4` are a single text)
    [Logic] PREMISES\nCONCLUSION
    [Roleplay] DIALOGUE              (plain `Name: line` turns, or metharme `<|system|>...<|user|>...<|model|>...`)
    [Excerpt] TEXT [Response] ANSWER
"""

from errors import UserError

TAGS = ("Textbook", "QA", "Code", "Math", "Logic", "Roleplay", "Excerpt")
RESPONSE_MARKER = "[Response]"  # closes the prompt half of an [Excerpt] document


def tag_prefix(tag: str) -> str:
    """'Math' -> '[Math]'."""
    return f"[{tag}]"


def tag_of(text: str) -> str | None:
    """The tag a document or prompt starts with, or None."""
    stripped = text.lstrip()
    for tag in TAGS:
        if stripped.startswith(tag_prefix(tag)):
            return tag
    return None


def tag_id(tag: str) -> int:
    """Position of a tag in TAGS: what the document index and meta.json store."""
    return TAGS.index(tag)


def check_tag(tag: object, where: str = "") -> str:
    """Normalize a user-given tag ('math', '[Math]', 'Math' -> 'Math'); UserError if it is not one of TAGS."""
    name = str(tag).strip().strip("[]").lower()
    for known in TAGS:
        if known.lower() == name:
            return known
    place = f"{where}: " if where else ""
    raise UserError(f"{place}unknown tag {tag!r}: use one of {', '.join(TAGS)}")


def optional_tag(tag: object) -> str:
    """check_tag, except that an empty tag ('', ' ', '[]') means no tag and gives ''."""
    return check_tag(tag) if str(tag).strip().strip("[]").strip() else ""


def format_doc(tag: str, text: str) -> str:
    """A document whose text is already laid out: '[Tag] text'."""
    return f"{tag_prefix(tag)} {text.strip()}"


def format_textbook(title: str, body: str) -> str:
    return f"{tag_prefix('Textbook')} {title.strip()}\n\n{body.strip()}"


def format_qa(question: str, answer: str) -> str:
    return f"{tag_prefix('QA')} **Question:** {question.strip()}\n**Answer:** {answer.strip()}"


def format_excerpt(text: str, response: str) -> str:
    return f"{tag_prefix('Excerpt')} {text.strip()} {RESPONSE_MARKER} {response.strip()}"


def format_prompt_response(tag: str, prompt: str, response: str) -> str:
    """A prompt/response pair in the layout of its tag (QA and Excerpt have their own markers)."""
    if tag == "QA":
        return format_qa(prompt, response)
    if tag == "Excerpt":
        return format_excerpt(prompt, response)
    if tag == "Textbook":
        return format_textbook(prompt, response)
    return f"{tag_prefix(tag)} {prompt.strip()}\n{response.strip()}"
