"""NanoPhi's task tags: the one list that data preparation, training, sampling and chat all read.

A document starts with its tag, so at inference time the same prefix selects the skill.
"""

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
