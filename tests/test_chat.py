"""chat.py driven through stdin as a user would pipe it, and the Chat pieces: tags, commands, the window."""

import builtins
import os

import pytest

import chat
import engine
from errors import UserError
from helpers import run_as_user, run_in_process, run_script
from tags import optional_tag
from tokenizer import EOT_ID


@pytest.mark.slow  # a fresh Python with piped stdin: the run a user makes, end to end
def test_chat_over_stdin(tiny_out_dir):
    script = "[Math] 2+2=\n/tag code\nwrite hello world\n/reset\n/temp 0\n/topk 3\n/help\nagain\n"
    r = run_script("chat.py", f"--out_dir={tiny_out_dir}", "--max_new_tokens=8", "--seed=1", stdin=script)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.count("Bot: ") == 3
    assert "User: [Math] 2+2=\nBot: " in out  # piped lines are echoed so the transcript reads right
    for reply in ("(tag: [Code])", "(conversation cleared)", "(temperature: 0.0)", "(top_k: 3)", "/tag NAME"):
        assert reply in out
    assert out.endswith("User: \n")  # EOF: a clean exit after the last prompt


def test_chat_prompt_answers_once(eot_out_dir, tiny_out_dir, capsys):
    code, out, err = run_as_user(chat, [f"--out_dir={eot_out_dir}", "--prompt=[Math] 2+2="], capsys)
    assert code == 0, err
    assert out == "\n"  # this model ends every answer at once
    code, out, err = run_as_user(chat, [f"--out_dir={tiny_out_dir}", "--tag=Poetry", "--prompt=hi"], capsys)
    assert code == 1 and "unknown tag 'Poetry'" in err and err.count("\n") == 1


def test_chat_refuses_malicious_checkpoint(malicious_out_dir, capsys):
    out_dir, marker = malicious_out_dir
    code, out, err = run_as_user(chat, [f"--out_dir={out_dir}", "--prompt=hi"], capsys)
    assert code == 1 and "refusing to load" in err
    assert not os.path.exists(marker)


def make_chat(model, max_new_tokens=16, tag=""):
    return chat.Chat(model, engine.Sampling(temperature=0), tag, max_new_tokens)


def test_tags_apply_to_untagged_lines_only(tiny_model):
    c = make_chat(tiny_model, tag="Code")
    assert c.question("print hi") == "[Code] print hi"
    assert c.question("[Math] 1+1=") == "[Math] 1+1="
    assert optional_tag("[math]") == "Math" and optional_tag(" ") == "" and optional_tag("[]") == ""
    with pytest.raises(UserError):
        optional_tag("Poetry")
    assert "unknown tag" in c.command("/tag Poetry") and c.tag == "Code"
    assert c.command("/tag") == "(no tag)" and c.tag == ""
    assert "needs a number" in c.command("/temp -1") and c.sampling.temperature == 0
    assert "needs a number" in c.command("/topk many") and "unknown command" in c.command("/nope")


def test_turns_are_documents_and_oldest_drop_first(tiny_model):
    c = make_chat(tiny_model, max_new_tokens=16)  # block 64: 48 tokens of context
    "".join(c.answer("[Math] 2+2="))
    question = engine.encode("[Math] 2+2=")
    assert len(c.turns) == 1 and c.turns[0][:len(question)] == question and c.turns[0][-1] == EOT_ID
    c.turns = [[1] * 20, [2] * 20, [3] * 20]
    assert c.context([9] * 8) == [2] * 20 + [3] * 20 + [9] * 8  # 48 fit exactly; the oldest turn does not
    assert c.context([9] * 10) == [3] * 20 + [9] * 10
    assert c.context([9] * 100) == [9] * 48  # a question alone too long keeps its end
    c.command("/reset")
    assert c.turns == [] and c.context([9]) == [9]


def test_ctrl_c_stops_the_answer_not_the_chat(tiny_out_dir, monkeypatch, capsys):
    lines = iter(["first", "second"])

    def fake_input(prompt):
        print(prompt, end="")
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    def interrupted_stream(model, ids, max_new_tokens, sampling):
        yield 42, "partial"
        raise KeyboardInterrupt

    monkeypatch.setattr(builtins, "input", fake_input)
    monkeypatch.setattr(engine, "stream", interrupted_stream)
    out = run_in_process(chat, [f"--out_dir={tiny_out_dir}", "--dtype=float32"], capsys)
    assert out.count("Bot: partial [stopped]\n") == 2  # both questions were answered (and cut short)
