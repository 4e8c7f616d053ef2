"""Measure what a trained model can do, per tag: a task suite with exact scoring, val loss per tag, lm-eval.

    python eval.py --out_dir=out-phi-mini                 # the default suite + val loss per tag
    python eval.py --out_dir=out-phi-mini --tasks=math_word,logic_order --limit=20
    python eval.py --init_from=gpt2 --lm_eval=hellaswag,arc_easy,piqa,lambada_openai
    python eval.py --out_dir=out-phi-mini --lm_eval=my_task --lm_eval_include=path/to/yamls

Prints one table (task, tag, metric, value, 95% interval, n) and writes out_dir/eval.json with the settings,
every number and a few examples per task. The tasks live in data/eval_tasks/ (docs/eval.md describes them);
all prompts of a task are decoded together, greedy, by engine.generate_batch.
"""

import json
import math
import os
import sys
import time

import torch

import engine
import hardware
from checkpoint import checkpoint_path, load_model
from configurator import configure
from data.eval_tasks import TrainingText, build_items, registry, untrained_notes
from errors import UserError, run_main
from tokenizer import EOT_ID

# -----------------------------------------------------------------------------
init_from = "resume"  # 'resume' (out_dir/ckpt.pt), 'gpt2' ... 'gpt2-xl', or a local transformers directory
out_dir = "out-phi-mini"  # where the checkpoint is read and eval.json written
tasks = "all"  # comma-separated task names (see docs/eval.md), 'all', or '' for none
limit = 0  # items per task at most (0: each task's default count)
seed = 2024  # the suite's items; a different seed, different items
batch_size = 64  # prompts decoded together
dataset = ""  # the dataset for val loss and the training-overlap check; '' = the run's (its config)
val_loss = True  # per-tag val loss and perplexity, as train.py computes them
lm_eval = ""  # comma-separated lm-eval task names, e.g. hellaswag,arc_easy,piqa,lambada_openai
lm_eval_include = ""  # a directory of local lm-eval task YAMLs
lm_eval_limit = 0  # documents per lm-eval task at most (0: all)
examples = 3  # prompt/expected/got examples per task in eval.json
device = "auto"
dtype = "auto"  # decoding dtype, as sample.py: 'auto' is bf16 where the CPU/GPU has it fast
# -----------------------------------------------------------------------------


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion: sound at 0 and n successes and for small n."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def pick_tasks(names: str) -> list:
    known = registry()
    if names == "all":
        return list(known.values())
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in known]
    if unknown:
        raise UserError(f"--tasks: unknown {', '.join(unknown)}; known tasks: {', '.join(known)}")
    return [known[n] for n in chosen]


def run_task(model, task, items: list, n_examples: int) -> dict:
    """Generate every item's answer (greedy, batched) and score it."""
    prompts = [engine.encode(item.prompt, model) for item in items]
    outputs = engine.generate_batch(model, prompts, task.max_new_tokens, stop_token=None, batch_size=batch_size)
    hits: dict[str, int] = {}
    shown = []
    for item, tokens in zip(items, outputs):
        stopped = EOT_ID in tokens
        text = engine.decode([t for t in tokens[:tokens.index(EOT_ID)] if t < EOT_ID] if stopped else
                             [t for t in tokens if t < EOT_ID])
        scores = task.score(item, text, stopped)
        for metric, ok in scores.items():
            hits[metric] = hits.get(metric, 0) + int(ok)
        if len(shown) < n_examples:
            shown.append({"prompt": item.prompt, "expected": item.expected, "got": text, **scores})
    metrics = {}
    for metric, k in hits.items():
        lo, hi = wilson(k, len(items))
        metrics[metric] = {"value": k / len(items), "interval": [lo, hi], "hits": k}
    return {"tag": task.tag, "description": task.description, "n": len(items), "metrics": metrics,
            "examples": shown}


def tagged_val_loss(model, data, run: dict, dev: str) -> dict[str, float]:
    """Mean loss per token on train.py's fixed eval windows (same seed, block, batch and eval_iters), computed
    by train.py's own evaluate(): val, and val per tag, in train.py's precision."""
    from dataloader import EvalBatches
    from train import evaluate
    batches = EvalBatches(data, model.config.block_size, run.get("batch_size", 12), run.get("eval_iters", 200), dev)
    dtype_name, _ = hardware.pick_dtype(dev, run.get("dtype", "auto"))
    n_tags = len(data.tags)
    # train.py's train-split figure is left out: no windows for it
    means = evaluate(model, {**batches.batches, "train": []}, hardware.autocast(dev, dtype_name), n_tags)
    model.eval()  # evaluate() hands the model back in train mode, as training wants it
    out = {"val": means[n_tags + 1]}
    out.update({tag: means[i] for i, tag in enumerate(data.tags) if not math.isnan(means[i])})
    return out


def print_table(results: dict, losses: dict | None, harness: dict | None) -> None:
    print(f"{'task':22s} {'tag':9s} {'metric':10s} {'value':>7s} {'95% interval':>15s} {'n':>5s}")
    for name, r in results.items():
        for metric, m in r["metrics"].items():
            lo, hi = m["interval"]
            print(f"{name:22s} {r['tag']:9s} {metric:10s} {m['value']:7.3f} {f'[{lo:.3f}, {hi:.3f}]':>15s} {r['n']:5d}")
    if losses:
        for split, loss in losses.items():
            print(f"{'val loss':22s} {split if split != 'val' else 'all':9s} {'loss/ppl':10s} "
                  f"{loss:7.3f} {f'ppl {math.exp(loss):.2f}':>15s}")
    for task, metrics in (harness or {}).items():
        for metric, value in metrics.items():
            print(f"{'lm-eval ' + task:22s} {'-':9s} {metric[:10]:10s} {value:7.3f}")


def write_json(path: str, payload: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=1)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    configure(globals(), argv)
    # GPT-2 weights (init_from=gpt2...) must not overwrite the default run's eval.json unless asked to
    keep_json = init_from == "resume" or any(a.startswith("--out_dir=") for a in argv)
    started = time.time()
    hardware.set_cpu_threads(idle_only=True)
    dev = hardware.pick_device(device)
    model, checkpoint = load_model(init_from, out_dir, dev)
    run = (checkpoint or {}).get("config", {})
    iteration = (checkpoint or {}).get("iter_num")
    data = None
    data_name = dataset or run.get("dataset", "")
    if data_name:
        from dataloader import TaggedData, dataset_dir
        from data.index import is_complete
        if is_complete(dataset_dir(data_name)):
            data = TaggedData(dataset_dir(data_name), model.config.block_size)
        else:
            print(f"note: dataset {data_name} not found at {dataset_dir(data_name)}: no val loss and no check of "
                  f"the tasks against its training text (give --dataset=PATH)")
    losses = tagged_val_loss(model, data, run, dev) if data is not None and val_loss else None
    generator = engine.for_decoding(model, dev, dtype)
    training = TrainingText(data.tokens["train"]) if data is not None else None
    results = {}
    for task in pick_tasks(tasks) if tasks else []:
        n = min(limit or task.n, task.finite or 10 ** 9)
        items, skipped = build_items(task, seed, n, training.__contains__ if training else None)
        results[task.name] = run_task(generator, task, items, examples)
        results[task.name]["skipped_seen_in_training"] = skipped
        if training and task.literal:  # answers no model trained on this split has learned to write
            missing = [training.untrained(item.expected) for item in items]
            results[task.name]["answers_untrained"] = {
                "items": sum(map(bool, missing)), "tokens": sorted({t for m in missing for t in m})}
    suite_seconds = time.time() - started
    harness = None
    if lm_eval:
        import lm_eval_adapter
        harness = lm_eval_adapter.run(generator, [t.strip() for t in lm_eval.split(",") if t.strip()],
                                      lm_eval_include or None, lm_eval_limit, batch_size)
    print_table(results, losses, harness)
    for note in untrained_notes(results):
        print(f"note: {note}")
    print(f"suite: {sum(r['n'] for r in results.values())} items in {suite_seconds:.1f} s "
          f"(model loading and val loss included), {torch.get_num_threads()} threads")
    payload = {
        "checkpoint": checkpoint_path(out_dir) if init_from == "resume" else init_from, "iter_num": iteration,
        "settings": {"tasks": tasks, "limit": limit, "seed": seed, "dtype": dtype, "device": dev,
                     "dataset": data.path if data is not None else None, "threads": torch.get_num_threads()},
        "seconds": round(suite_seconds, 2), "tasks": results,
        "loss": {k: {"loss": v, "perplexity": math.exp(v)} for k, v in losses.items()} if losses else None,
        "lm_eval": harness,
    }
    if keep_json:
        os.makedirs(out_dir, exist_ok=True)
        write_json(os.path.join(out_dir, "eval.json"), payload)
        print(f"wrote {os.path.join(out_dir, 'eval.json')}")
    else:
        print("eval.json not written: give --out_dir=DIR to keep the results of these weights")
    if run.get("wandb_log"):
        from logger import RunLogger
        logger = RunLogger(True, run.get("wandb_project", "nanophi"), run.get("wandb_run_name", "run") + "-eval", run)
        flat = {f"eval/{name}/{metric}": m["value"]
                for name, r in results.items() for metric, m in r["metrics"].items()}
        logger.log(flat, step=iteration or 0)
        logger.finish()


if __name__ == "__main__":
    run_main(main)
