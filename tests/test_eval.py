"""eval.py and its parts: the task suite (disjoint from training, scored exactly, code sandboxed), lm-eval
through our model, metrics.jsonl across a resume, and report.py's figures."""

import json
import math
import os
import random
import re

import numpy as np
import pytest
import torch

import engine
from data import mini_generators
from data.eval_tasks import TrainingText, arithmetic, build_items, code, excerpt, formats, logic, registry
from data.eval_tasks.sandbox import run_function
from helpers import generated_texts, run_script
from logger import RunLogger, read_metrics


def test_task_vocabularies_are_disjoint_from_training():
    """No name, place, item or made-up word of a task occurs in the documents training generates, and the
    two-digit sums eval asks are never in a training drill."""
    ours = mini_generators.held_out_words()
    assert {"Alma", "Hobart", "florbs", "welder", "buttons"} <= ours
    assert not ours & set(mini_generators.proper_nouns())
    text = " ".join(t for name in mini_generators.GENERATORS for t in generated_texts(name, 300))
    assert not ours & set(re.findall(r"[A-Za-z]+", text))
    assert not {c[0] for c in formats.CHARACTERS} & {c[0] for c in mini_generators.CHARACTERS}
    sums = set(re.findall(r"(\d+) ?\+ ?(\d+) ?=", text))
    assert len(sums) > 1000 and not any(mini_generators.held_out_sum(int(a), int(b)) for a, b in sums)
    for item in build_items(registry()["math_add_2digit"], 0, 50)[0]:
        a, b = map(int, re.findall(r"\d+", item.prompt))
        assert mini_generators.held_out_sum(a, b)
    starts = re.findall(r"^\[Math\] (\d+)\+", "\n".join(generated_texts("math_fewshot", 300)), re.M)
    assert starts and not any(mini_generators.fewshot_start_held_out(int(k)) for k in starts)


def test_items_seen_in_training_are_skipped():
    task = registry()["math_add_1digit"]
    items, _ = build_items(task, 0, 10)
    # a training split that holds the first two items verbatim, inside other text and at a document start
    text = (f"<|endoftext|>{items[0].prompt} {items[0].expected}\n9 * 9 = 81"
            f"<|endoftext|>x {items[1].prompt} {items[1].expected}")
    seen = TrainingText(np.array(engine.encode(text), dtype=np.uint16))
    kept, skipped = build_items(task, 0, 10, seen.__contains__)
    assert skipped == 2 and [i.prompt for i in kept[:8]] == [i.prompt for i in items[2:]]
    assert f"{items[2].prompt} {items[2].expected}" not in seen


def test_answers_with_tokens_the_training_split_never_has_are_named():
    training = TrainingText(np.array(engine.encode("<|endoftext|>Conclusion: Tom is the tallest.\n12 + 35 = 47"),
                                     dtype=np.uint16))
    assert training.untrained("Conclusion: Tom is the tallest.") == []
    assert training.untrained("47") == []  # written after a space, as it is after `=`
    assert training.untrained("Conclusion: Alma is the tallest.") == [" Alma"]
    assert training.untrained("Conclusion: Alma is the shortest.") == [" Alma", " shortest"]


def test_eval_py_counts_answers_beyond_its_training_split(tiny_out_dir, tiny_data):
    result = run_script("eval.py", f"--out_dir={tiny_out_dir}", f"--dataset={tiny_data}", "--val_loss=False",
                        "--limit=4", "--examples=4", "--device=cpu", "--dtype=float32",
                        "--tasks=logic_order,math_add_1digit,code_function", timeout=180)
    assert result.returncode == 0, result.stderr
    report = json.load(open(os.path.join(tiny_out_dir, "eval.json")))
    known = set(np.fromfile(os.path.join(tiny_data, "train.bin"), dtype=np.uint16).tolist())
    for name in ("logic_order", "math_add_1digit"):
        task = report["tasks"][name]
        beyond = [e for e in task["examples"] if not all(
            t in known for t in engine.encode(" " + e["expected"])) and not all(
            t in known for t in engine.encode(e["expected"]))]
        assert task["answers_untrained"]["items"] == len(beyond)
        assert (f"note: {name}: {len(beyond)} of 4 answers" in result.stdout) == bool(beyond)
    assert report["tasks"]["logic_order"]["answers_untrained"]["items"] > 0  # eval.py's names: held out
    assert "answers_untrained" not in report["tasks"]["code_function"]  # its expected text is a description
    import report as rep
    table = "\n".join(rep.eval_table(rep.Run(tiny_out_dir)))  # report.md says it too
    assert f"Note: logic_order: {report['tasks']['logic_order']['answers_untrained']['items']} of 4 answers" in table


def test_scorers_accept_the_right_answer_and_reject_others():
    tasks = registry()
    rng = random.Random(1)
    item = tasks["math_word"].make(rng)
    assert tasks["math_word"].score(item, f"Answer: x. The answer is {item.expected}.", True)["exact"]
    assert not tasks["math_word"].score(item, "Answer: x. The answer is 1000.", True)["exact"]
    item = tasks["logic_order"].make(rng)
    assert tasks["logic_order"].score(item, item.expected + "\nmore", True)["exact"]
    item = tasks["excerpt_fact"].make(rng)
    assert tasks["excerpt_fact"].score(item, f" {item.expected}", True)["exact"]
    for _ in range(20):  # the target is a year or a count of the text; the place is a task of its own
        fact, where = tasks["excerpt_fact"].make(rng), tasks["excerpt_place"].make(rng)
        assert fact.expected.isdigit() and f" {fact.expected} " in fact.prompt
        assert not where.expected.isdigit() and f" {where.expected} " in where.prompt
        assert tasks["excerpt_place"].score(where, f" {where.expected}.\n", True)["exact"]
    item = formats.roleplay(random.Random(0))
    good = " Hello there.<|user|>Where are we?<|model|>In the market." if item.entry == "metharme" else \
        f" Hello there.\n{item.entry.split('|')[0]}: Where are we?"
    assert formats.score_roleplay(item, good, True)["format"]
    assert not formats.score_roleplay(item, good, False)["format"]  # ran out of tokens: no end-of-text
    qa = formats.qa(random.Random(0))
    assert formats.score_qa(qa, " It sorts things.", True)["format"]
    assert not formats.score_qa(qa, " It sorts.\n[QA] **Question:** more", True)["format"]


def test_code_is_checked_in_a_limited_subprocess(tmp_path):
    item = code.function(random.Random(3))
    body = {"times": "    return x * {k}", "add": "    return x + {k}", "divisible": "    return n % {k} == 0",
            "repeat": "    return s * {k}", "largest": "    return max(values) if values else {k}",
            "count": "    return s.count(c) + {k}"}
    k = int(item.entry.rsplit("_", 1)[1])
    right = body[item.entry.split("_")[0]].format(k=k) + "\n\nprint('next')"
    assert code.score(item, right, True) == {"correct": True, "parses": True}
    assert code.score(item, "    return None", True) == {"correct": False, "parses": True}
    assert code.score(item, "    return (", True) == {"correct": False, "parses": False}
    marker = tmp_path / "written"
    for harmful in (f"open({str(marker)!r}, 'w').write('x')",
                    "import socket; socket.create_connection(('1.1.1.1', 80))",
                    "import os; os.system('true')", "import subprocess; subprocess.run(['true'])"):
        [(status, kind)] = run_function(f"def f():\n    {harmful}\n", "f", [[]])
        assert status == "error" and kind == "PermissionError", harmful
    assert not marker.exists()
    [(status, kind)] = run_function("def f():\n    while True:\n        pass\n", "f", [[]])
    # the wall clock, or the CPU limit: SIGXCPU at the soft limit, SIGKILL at the hard one
    assert status == "error" and kind in ("Timeout", "exit -24", "exit -9")


def test_wilson_interval():
    import eval as ev
    lo, hi = ev.wilson(0, 50)
    assert lo == 0 and 0.05 < hi < 0.08
    lo, hi = ev.wilson(25, 50)
    assert lo < 0.5 < hi and math.isclose(0.5 - lo, hi - 0.5, rel_tol=1e-9)


def test_eval_py_writes_the_table_and_eval_json(tiny_out_dir):
    result = run_script("eval.py", f"--out_dir={tiny_out_dir}", "--limit=3", "--device=cpu", "--dtype=float32",
                        "--tasks=math_add_2digit,logic_order,code_function,roleplay_format", timeout=180)
    assert result.returncode == 0, result.stderr
    report = json.load(open(os.path.join(tiny_out_dir, "eval.json")))
    assert set(report["tasks"]) == {"math_add_2digit", "logic_order", "code_function", "roleplay_format"}
    for name, task in report["tasks"].items():
        assert task["n"] == 3 and task["examples"][0]["prompt"].startswith(f"[{task['tag']}]")
        for m in task["metrics"].values():
            assert m["interval"][0] <= m["value"] <= m["interval"][1]
            assert name in result.stdout
    bad = run_script("eval.py", f"--out_dir={tiny_out_dir}", "--tasks=math_nope")
    assert bad.returncode != 0 and "unknown math_nope" in bad.stderr and "Traceback" not in bad.stderr


def test_metrics_jsonl_keeps_each_iteration_once_across_a_resume(tmp_path):
    path = str(tmp_path / "metrics.jsonl")
    config = {"device": "cpu", "dtype": "float32"}
    first = RunLogger(False, "p", "r", config, path, 0)
    for it in range(0, 7):
        if it % 3 == 0:
            first.log({"iter": it, "val/loss": 5.0 - it}, step=it)
        if it:
            first.log({"iter": it, "train/loss_iter": 6.0 - it}, step=it)
    # killed after iteration 6; the checkpoint is from iteration 3's eval: resume redoes 3's eval and 4..6
    second = RunLogger(False, "p", "r", config, path, 3)
    second.log({"iter": 3, "val/loss": 1.5}, step=3)
    for it in range(4, 7):
        second.log({"iter": it, "train/loss_iter": 0.5}, step=it)
    rows = [r for r in read_metrics(path) if r.get("event") != "start"]
    assert [(r["iter"], "val/loss" in r) for r in rows] == \
        [(0, True), (1, False), (2, False), (3, False), (3, True), (4, False), (5, False), (6, False)]
    assert rows[4]["val/loss"] == 1.5 and rows[5]["train/loss_iter"] == 0.5
    starts = [r for r in read_metrics(path) if r.get("event") == "start"]
    assert [s["iter"] for s in starts] == [0, 3] and starts[0]["dtype"] == "float32"


@pytest.mark.slow
def test_train_writes_metrics_then_report_draws_them(tmp_path):
    from data.binwriter import write_dataset
    from helpers import tiny_documents
    from test_train import run_train
    data = str(tmp_path / "data")
    write_dataset(tiny_documents(), data, val_fraction=0.2, num_threads=1, progress=False)
    out = tmp_path / "run"
    run_train(out, f"--dataset={data}", "--max_iters=4", "--eval_interval=2", "--always_save_checkpoint=True")
    run_train(out, f"--dataset={data}", "--max_iters=6", "--eval_interval=2", "--init_from=resume")
    rows = read_metrics(str(out / "metrics.jsonl"))
    train_iters = [r["iter"] for r in rows if "train/loss_iter" in r]
    eval_iters = [r["iter"] for r in rows if "val/loss" in r]
    assert train_iters == [1, 2, 3, 4, 5, 6] and eval_iters == [0, 2, 4, 6]
    assert all(f"val/loss_{t}" in rows[-1] or "val/loss" not in rows[-1] for t in ("Math", "Code"))
    result = run_script("eval.py", f"--out_dir={out}", "--limit=2", "--tasks=math_fewshot,qa_format", timeout=180)
    assert result.returncode == 0, result.stderr
    assert "val loss" in result.stdout
    result = run_script("report.py", f"--out_dir={out}", "--sample_tokens=8", timeout=180)
    assert result.returncode == 0, result.stderr
    report = (out / "report.md").read_text()
    for png in ("report_loss.png", "report_val_per_tag.png", "report_throughput.png", "report_eval.png"):
        assert (out / png).stat().st_size > 10_000 and f"]({png})" in report
    assert "| math_fewshot | Math | exact |" in report and "**Code**" in report
    result = run_script("report.py", "--compare", str(out), str(out), timeout=180)
    assert result.returncode == 0, result.stderr
    assert (out / "compare.md").exists() and (out / "compare_val_per_tag.png").exists()


@pytest.mark.slow
def test_lm_eval_multiple_choice_equals_hand_computed_loglikelihoods(tmp_path, tiny_model):
    import lm_eval
    from lm_eval.tasks import TaskManager

    import lm_eval_adapter
    docs = [{"question": "The sky is", "choices": ["blue", "green", "made of cheese"], "answer": 0},
            {"question": "Two plus two is", "choices": ["four", "five"], "answer": 1},
            {"question": "[Math] 3 + 4 =", "choices": ["7", "16", "8"], "answer": 0},
            {"question": "Cats say", "choices": ["meow", "woof"], "answer": 0}]
    (tmp_path / "docs.json").write_text("\n".join(json.dumps(d) for d in docs))
    (tmp_path / "tiny_mc.yaml").write_text(f"""task: nanophi_tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {tmp_path / 'docs.json'}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
""")
    results = lm_eval.simple_evaluate(model=lm_eval_adapter.NanoPhiLM(tiny_model, batch_size=3),
                                      tasks=["nanophi_tiny_mc"],
                                      # the local task only: indexing lm-eval's thousands of built-in ones
                                      # takes 15-20 s on a 2-core CPU and tests nothing of ours
                                      task_manager=TaskManager(include_path=str(tmp_path), include_defaults=False),
                                      bootstrap_iters=0,
                                      log_samples=True)
    # by hand: a full forward of context + " " + choice, summing the choice tokens' log-probs
    hand, hits = [], 0
    with torch.inference_mode():
        for doc in docs:
            scores = []
            for choice in doc["choices"]:
                ctx, whole = engine.encode(doc["question"]), engine.encode(doc["question"] + " " + choice)
                logprobs = tiny_model(torch.tensor([whole[:-1]]), all_logits=True)[0][0].log_softmax(-1)
                scores.append(sum(logprobs[i - 1, whole[i]].item() for i in range(len(ctx), len(whole))))
            hand.append(scores)
            hits += int(np.argmax(scores) == doc["answer"])
    assert results["results"]["nanophi_tiny_mc"]["acc,none"] == hits / len(docs)
    samples = sorted(results["samples"]["nanophi_tiny_mc"], key=lambda s: s["doc_id"])
    for sample, scores in zip(samples, hand):
        harness = [r[0] for r in sample["filtered_resps"]]
        assert np.allclose(harness, scores, atol=1e-4), (harness, scores)
    # and the same through eval.py's entry point, with a task it cannot find as one line
    assert lm_eval_adapter.run(tiny_model, ["nanophi_tiny_mc"], str(tmp_path), 0, 4)["nanophi_tiny_mc"]["acc,none"] \
        == hits / len(docs)
    from errors import UserError
    with pytest.raises(UserError, match="lm-eval could not run no_such_task_x") as e:
        lm_eval_adapter.run(tiny_model, ["no_such_task_x"], str(tmp_path), 0, 4)
    assert "\n" not in str(e.value)
