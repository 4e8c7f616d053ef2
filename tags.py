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

A document made from a prompt and a response (format_qa, format_excerpt, format_prompt_response) is a
PromptResponse: a str that also records where its response begins, so data/prepare.py can store the split
and train.py can put the loss on the response only (loss_on='response').
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


class PromptResponse(str):
    """A formatted document that remembers where its response begins: text[:response_start] is the prompt
    (it ends just before the whitespace that leads into the response, so that GPT-2's tokenizer splits there
    too: the prompt's tokens followed by the response's are exactly the document's tokens)."""

    response_start: int

    def __new__(cls, prompt: str, response: str) -> "PromptResponse":
        doc = super().__new__(cls, prompt + response)
        doc.response_start = len(prompt)
        return doc

    def __reduce__(self):  # pickled as (prompt, response): documents travel between worker processes
        return PromptResponse, (str(self[:self.response_start]), str(self[self.response_start:]))


def response_start(text: str) -> int | None:
    """Where the response of a formatted document begins (a character offset), or None if it has no split."""
    return getattr(text, "response_start", None)


def format_doc(tag: str, text: str) -> str:
    """A document whose text is already laid out: '[Tag] text'."""
    return f"{tag_prefix(tag)} {text.strip()}"


def format_textbook(title: str, body: str) -> str:
    return f"{tag_prefix('Textbook')} {title.strip()}\n\n{body.strip()}"


def format_qa(question: str, answer: str) -> PromptResponse:
    return PromptResponse(f"{tag_prefix('QA')} **Question:** {question.strip()}\n**Answer:**", f" {answer.strip()}")


def format_excerpt(text: str, response: str) -> PromptResponse:
    return PromptResponse(f"{tag_prefix('Excerpt')} {text.strip()} {RESPONSE_MARKER}", f" {response.strip()}")


def format_prompt_response(tag: str, prompt: str, response: str) -> str:
    """A prompt/response pair in the layout of its tag (QA and Excerpt have their own markers); a
    PromptResponse except for Textbook, where TITLE and BODY are one text to learn."""
    if tag == "QA":
        return format_qa(prompt, response)
    if tag == "Excerpt":
        return format_excerpt(prompt, response)
    if tag == "Textbook":
        return format_textbook(prompt, response)
    return PromptResponse(f"{tag_prefix(tag)} {prompt.strip()}", f"\n{response.strip()}")
