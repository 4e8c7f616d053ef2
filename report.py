"""A run's report: loss curves, the eval table, throughput, settings and samples, as Markdown with PNG figures.

    python report.py --out_dir=out-phi-mini                  # writes out-phi-mini/report.md + report_*.png
    python report.py --compare out-a out-b [--out_dir=DIR]   # the runs overlaid: DIR/compare.md + compare_*.png

Reads out_dir/metrics.jsonl (train.py writes it), out_dir/eval.json (eval.py) and out_dir/ckpt.pt (settings,
and one greedy sample per tag). A part whose input is missing is left out with a line saying which command
makes it (runs trained before metrics.jsonl existed have no curves). Figures use matplotlib's Agg backend:
no display needed.
"""

import math
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from configurator import configure  # noqa: E402
from data.eval_tasks import untrained_notes  # noqa: E402
from errors import UserError, run_main  # noqa: E402
from tags import TAGS  # noqa: E402

# -----------------------------------------------------------------------------
out_dir = "out-phi-mini"  # the run to report on (with --compare: where compare.md goes; default the first run)
samples = True  # one greedy sample per tag from the checkpoint
sample_tokens = 48
# -----------------------------------------------------------------------------

SAMPLE_PROMPTS = {
    "Textbook": "[Textbook] Python lists",
    "QA": "[QA] **Question:** What does `sorted()` do?\n**Answer:**",
    "Code": "[Code] Return the sum of a and b.\n\ndef add(a, b):\n",
    "Math": "[Math] 1+1=2 2+2=4 3+3=6 4+4=",
    "Logic": "[Logic] Premises: All wugs are daxes. All daxes are feps.\n",
    "Roleplay": "[Roleplay] <|system|>Enter roleplay mode. You are Ada, a wizard in the Tower of Stars."
                "<|user|>Hello!<|model|>",
    "Excerpt": "[Excerpt] Ben moved to Oslo in 1990 and worked there as a chef.\n"
               "Question: Where did Ben move? [Response]",
}
TAG_COLORS = dict(zip(TAGS, plt.get_cmap("tab10").colors))
TAG_MARKERS = dict(zip(TAGS, "osD^v<>"))
RUN_COLORS = plt.get_cmap("tab10").colors


class Run:
    """What report.py knows about one out_dir."""

    def __init__(self, path: str):
        import json

        from logger import read_metrics
        if not os.path.isdir(path):
            raise UserError(f"no such run directory: {path}")
        self.path, self.name = path, os.path.basename(os.path.normpath(path))
        metrics = os.path.join(path, "metrics.jsonl")
        rows = read_metrics(metrics) if os.path.exists(metrics) else []
        self.starts = [r for r in rows if r.get("event") == "start"]
        self.train = sorted((r for r in rows if "train/loss_iter" in r), key=lambda r: r["iter"])
        self.evals = sorted((r for r in rows if "val/loss" in r), key=lambda r: r["iter"])
        eval_path = os.path.join(path, "eval.json")
        self.eval = json.load(open(eval_path)) if os.path.exists(eval_path) else None
        self.checkpoint = None
        if os.path.exists(os.path.join(path, "ckpt.pt")):
            from checkpoint import checkpoint_path, load_checkpoint
            self.checkpoint = load_checkpoint(checkpoint_path(path))
        self.config = (self.checkpoint or {}).get("config", {})

    @property
    def tokens_per_iter(self) -> int | None:
        c = self.config
        if not c:
            return None
        return c.get("gradient_accumulation_steps", 1) * c.get("batch_size", 0) * c.get("block_size", 0)


def plot_series(ax, rows: list[dict], key: str, x: str, tokens_per_iter: int | None, **style) -> bool:
    points = [(r["iter"], r[key]) for r in rows if r.get(key) is not None]
    if not points:
        return False
    xs = [i * (tokens_per_iter or 0) / 1e6 if x == "tokens" else i for i, _ in points]
    ax.plot(xs, [v for _, v in points], **style)
    return True



def finish(fig, path: str, title: str | None = None) -> bool:
    """Title, lay out and write a figure, then free it; True: a figure was drawn."""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True

def loss_figure(runs: list[Run], path: str) -> bool:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    drawn = False
    for k, run in enumerate(runs):
        color = RUN_COLORS[k % 10]
        label = f"{run.name}: " if len(runs) > 1 else ""
        for ax, x in zip(axes, ("iter", "tokens")):
            if x == "tokens" and not run.tokens_per_iter:
                continue
            drawn |= plot_series(ax, run.train, "train/loss_iter", x, run.tokens_per_iter, color=color, alpha=0.35,
                                 linewidth=1, label=f"{label}train (per iteration)")
            plot_series(ax, run.evals, "val/loss", x, run.tokens_per_iter, color=color, marker="o", linewidth=2,
                        label=f"{label}val")
            plot_series(ax, run.evals, "train/loss", x, run.tokens_per_iter, color=color, marker="s",
                        linestyle="--", linewidth=1.5, label=f"{label}train (eval windows)")
    if not drawn:
        plt.close(fig)
        return False
    axes[0].set_xlabel("iteration")
    axes[1].set_xlabel("tokens seen (millions)")
    for ax in axes:
        ax.set_ylabel("loss (nats per token)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return finish(fig, path, "Training and validation loss")


def tag_figure(runs: list[Run], path: str) -> bool:
    tags = [t for t in TAGS if any(r.get(f"val/loss_{t}") is not None for run in runs for r in run.evals)]
    if not tags:
        return False
    if len(runs) == 1:  # one run: every tag on one set of axes, by colour and marker
        fig, ax = plt.subplots(figsize=(8, 4.8))
        for tag in tags:
            plot_series(ax, runs[0].evals, f"val/loss_{tag}", "iter", None, color=TAG_COLORS[tag],
                        marker=TAG_MARKERS[tag], label=tag)
        ax.set_xlabel("iteration")
        ax.set_ylabel("val loss (nats per token)")
        ax.grid(alpha=0.3)
        ax.legend(title="tag", fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
    else:  # several runs: one small panel per tag, runs by colour
        cols = 4
        fig, axes = plt.subplots(math.ceil(len(tags) / cols), cols, figsize=(13, 3.2 * math.ceil(len(tags) / cols)),
                                 squeeze=False)
        for ax, tag in zip(axes.flat, tags):
            for k, run in enumerate(runs):
                plot_series(ax, run.evals, f"val/loss_{tag}", "iter", None, color=RUN_COLORS[k % 10], marker="o",
                            markersize=3, label=run.name)
            ax.set_title(tag)
            ax.set_xlabel("iteration")
            ax.set_ylabel("val loss")
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(tags):]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=8)
    return finish(fig, path, "Validation loss per tag")


def throughput_figure(runs: list[Run], path: str) -> bool:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    drawn = False
    for k, run in enumerate(runs):
        style = dict(color=RUN_COLORS[k % 10], linewidth=1.2, label=run.name)
        drawn |= plot_series(axes[0], run.train, "tokens_per_s", "iter", None, **style)
        mfu = [dict(iter=r["iter"], mfu=100 * r["mfu"]) for r in run.train if r.get("mfu") is not None]
        plot_series(axes[1], mfu, "mfu", "iter", None, **style)
    if not drawn:
        plt.close(fig)
        return False
    axes[0].set_ylabel("training tokens/s")
    axes[1].set_ylabel("MFU (% of peak FLOP/s)")
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    if len(runs) > 1:
        axes[0].legend(fontsize=8)
    return finish(fig, path, "Throughput")


def eval_figure(runs: list[Run], path: str) -> bool:
    rows = []  # (task/metric label, tag)
    for run in runs:
        for name, task in (run.eval or {}).get("tasks", {}).items():
            for metric in task["metrics"]:
                if (f"{name} ({metric})", task["tag"]) not in rows:
                    rows.append((f"{name} ({metric})", task["tag"]))
    if not rows:
        return False
    with_eval = [run for run in runs if run.eval]
    height = 0.8 / len(with_eval)
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) * max(1, len(with_eval) ** 0.5) + 1.2))
    for k, run in enumerate(with_eval):
        values, errors, colors = [], [[], []], []
        for label, tag in rows:
            name, metric = label.rsplit(" (", 1)
            m = run.eval["tasks"].get(name, {}).get("metrics", {}).get(metric.rstrip(")"))
            v, (lo, hi) = (m["value"], m["interval"]) if m else (0.0, (0.0, 0.0))
            values.append(v)
            errors[0].append(v - lo)
            errors[1].append(hi - v)
            colors.append(TAG_COLORS[tag] if len(with_eval) == 1 else RUN_COLORS[k % 10])
        ys = [i + (k - (len(with_eval) - 1) / 2) * height for i in range(len(rows))]
        ax.barh(ys, values, height=height * 0.9, xerr=errors, color=colors, capsize=3,
                label=run.name if len(with_eval) > 1 else None, error_kw=dict(elinewidth=1, alpha=0.8))
        for y, v, up in zip(ys, values, errors[1]):  # the value in figures, right of its interval
            ax.text(min(v + up + 0.01, 0.93), y, f"{v:.2f}", va="center", fontsize=7)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"[{tag}] {label}" for label, tag in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("score (fraction of items), bars: 95% interval")
    ax.grid(axis="x", alpha=0.3)
    if len(with_eval) > 1:
        ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Task suite (eval.py)")
    return finish(fig, path)


def eval_table(run: Run) -> list[str]:
    if not run.eval:
        return [f"No eval.json: run `python eval.py --out_dir={run.path}`.", ""]
    e = run.eval
    lines = [f"Checkpoint {e['checkpoint']} at iteration {e['iter_num']}; {e['seconds']} s "
             f"({e['settings']['threads']} threads).", "",
             "| task | tag | metric | value | 95% interval | n |", "|---|---|---|---:|---|---:|"]
    for name, task in e["tasks"].items():
        for metric, m in task["metrics"].items():
            lo, hi = m["interval"]
            lines.append(f"| {name} | {task['tag']} | {metric} | {m['value']:.3f} | [{lo:.3f}, {hi:.3f}] "
                         f"| {task['n']} |")
    notes = untrained_notes(e["tasks"])
    if notes:
        lines += [""] + [f"- Note: {note}." for note in notes]  # a list: one line each in markdown
    if e.get("loss"):
        lines += ["", "| val loss | loss | perplexity |", "|---|---:|---:|"]
        lines += [f"| {k} | {v['loss']:.3f} | {v['perplexity']:.2f} |" for k, v in e["loss"].items()]
    for task, metrics in (e.get("lm_eval") or {}).items():
        lines.append("")
        lines.append(f"lm-eval {task}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return lines + [""]


def settings(run: Run) -> list[str]:
    if not run.checkpoint:
        return [f"No checkpoint in {run.path}.", ""]
    c, args = run.config, run.checkpoint["model_args"]
    # as GPT.get_num_params counts: position table left out, the tied head (the token embedding) counted once
    n_params = sum(v.numel() for k, v in run.checkpoint["model"].items()
                   if not k.endswith(("wpe.weight", "lm_head.weight")))
    env = run.starts[-1] if run.starts else {}
    where = f", {env['device']}, {env['cpu_cores']} cores, torch {env['torch']}" if env else ""
    lines = ["| setting | value |", "|---|---|",
             f"| model | {args['n_layer']} layers x {args['n_embd']} wide, {args['n_head']} heads, block "
             f"{args['block_size']}, {n_params / 1e6:.1f}M parameters |",
             f"| data | {c.get('dataset')} |",
             f"| iterations | {run.checkpoint.get('iter_num')} of {c.get('max_iters')}, best val loss "
             f"{run.checkpoint.get('best_val_loss', float('nan')):.4f} |",
             f"| tokens per iteration | {run.tokens_per_iter:,} |" if run.tokens_per_iter else "",
             f"| optimizer | lr {c.get('learning_rate')} -> {c.get('min_lr')}, warmup {c.get('warmup_iters')}, "
             f"weight decay {c.get('weight_decay')}, init_from {c.get('init_from')} |",
             f"| precision | {env.get('dtype', c.get('dtype'))} |",
             f"| hardware | {env.get('hardware', 'not recorded (run predates metrics.jsonl)')}"
             f"{where} |"]
    return [line for line in lines if line] + [""]


def sample_lines(run: Run) -> list[str]:
    if not run.checkpoint:
        return []
    import engine
    import hardware
    from checkpoint import load_checkpoint, model_checkpoint_path, model_from_checkpoint
    from tokenizer import EOT_ID
    hardware.set_cpu_threads(idle_only=True)
    weights = load_checkpoint(model_checkpoint_path(run.path))  # best.pt, else ckpt.pt: what sample.py reads
    model = engine.for_decoding(model_from_checkpoint(weights).eval(), "cpu")
    prompts = list(SAMPLE_PROMPTS.values())
    outs = engine.generate_batch(model, [engine.encode(p, model) for p in prompts], sample_tokens)
    lines = [f"Greedy, up to {sample_tokens} tokens, ending at end-of-text:", ""]
    for tag, prompt, out in zip(SAMPLE_PROMPTS, prompts, outs):
        text = engine.decode([t for t in out if t < EOT_ID])
        lines += [f"**{tag}**", "", "```", (prompt + text).rstrip().replace("```", "'''"), "```", ""]
    return lines


def figures(runs: list[Run], directory: str, prefix: str) -> list[tuple[str, str]]:
    made = []
    for name, title, make in (("loss", "Loss", loss_figure), ("val_per_tag", "Validation loss per tag", tag_figure),
                              ("throughput", "Throughput", throughput_figure), ("eval", "Task suite", eval_figure)):
        path = os.path.join(directory, f"{prefix}_{name}.png")
        if make(runs, path):
            made.append((title, os.path.basename(path)))
    return made


def write(path: str, lines: list[str]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    compare = []
    if "--compare" in argv:  # `--compare out-a out-b ...`: the names up to the next --option
        i = argv.index("--compare")
        j = i + 1
        while j < len(argv) and not argv[j].startswith("--"):
            j += 1
        compare, argv = argv[i + 1:j], argv[:i] + argv[j:]
        if len(compare) < 2:
            raise UserError("--compare needs two or more run directories: --compare out-a out-b")
    explicit_out = any(a.startswith("--out_dir=") for a in argv)
    configure(globals(), argv)
    runs = [Run(p) for p in (compare or [out_dir])]
    directory = out_dir if (explicit_out or not compare) else compare[0]
    if not os.path.isdir(directory):
        raise UserError(f"no such run directory: {directory}")
    prefix = "compare" if compare else "report"
    lines = [f"# {'Comparison: ' + ', '.join(r.name for r in runs) if compare else 'Run report: ' + runs[0].name}", ""]
    missing = [r.name for r in runs if not r.train and not r.evals]
    if missing:
        lines += [f"No metrics.jsonl in {', '.join(missing)} (train.py writes it; runs trained before it existed "
                  f"have none), so no curves for {'them' if len(missing) > 1 else 'it'}.", ""]
    for title, png in figures(runs, directory, prefix):
        lines += [f"## {title}", "", f"![{title}]({png})", ""]
    for run in runs:
        head = f" ({run.name})" if compare else ""
        lines += [f"## Evaluation{head}", ""] + eval_table(run)
        lines += [f"## Settings{head}", ""] + settings(run)
        if samples and not compare:
            lines += [f"## One sample per tag{head}", ""] + sample_lines(run)
    path = os.path.join(directory, f"{prefix}.md")
    write(path, lines)
    print(f"wrote {path}")


if __name__ == "__main__":
    run_main(main)
