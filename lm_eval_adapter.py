"""NanoPhi models inside EleutherAI's lm-evaluation-harness (the `lm-eval` package), registered as "nanophi".

    python eval.py --out_dir=out-phi-mini --lm_eval=hellaswag,arc_easy,piqa,lambada_openai

The harness asks three things of a model, all answered here with our GPT and engine:
- loglikelihood: log P(continuation | context) and whether greedy decoding would produce the continuation
  (multiple choice: hellaswag, arc, piqa; lambada's last word). Context and continuation are tokenized as
  the harness's own transformers model does it (the whole text, split where the context's tokens end), cut
  from the left to the model's block_size, and scored in right-padded batches;
- loglikelihood_rolling: the log-likelihood of a whole text in windows of block_size (perplexity tasks);
- generate_until: greedy continuations through engine.generate_batch, cut at the task's stop strings.
"""

import os

import torch
import torch.nn.functional as F
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

import engine
from model import GPT
from tokenizer import EOT_ID


@register_model("nanophi")
class NanoPhiLM(LM):

    def __init__(self, model: GPT, batch_size: int = 16, max_gen_toks: int = 256):
        super().__init__()
        self.model, self.batch_size, self.max_gen_toks = model, batch_size, max_gen_toks
        self.block_size = model.config.block_size
        self.torch_device = model.lm_head.weight.device

    # ---- log-likelihoods ------------------------------------------------------------------------------

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """As lm-eval's HFLM: trailing spaces of the context move to the continuation, the two are tokenized
        together, and the continuation is what follows the context's own tokens. An empty context is the
        end-of-text token, as GPT-2 starts documents."""
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        if not context:
            return [EOT_ID], engine.encode(continuation, self.model)
        whole, ctx = engine.encode(context + continuation, self.model), engine.encode(context, self.model)
        return whole[:len(ctx)], whole[len(ctx):]

    @torch.inference_mode()
    def score(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """(sum of log-probs of the continuation, whether each of its tokens is the argmax), per pair."""
        out = []
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start:start + self.batch_size]
            # the model reads all tokens but the last, cut from the left to block_size
            rows = [(ctx + cont)[-(self.block_size + 1):] for ctx, cont in chunk]
            width = max(len(r) - 1 for r in rows)
            x = torch.tensor([r[:-1] + [0] * (width - len(r) + 1) for r in rows], device=self.torch_device)
            logits, _ = self.model(x, all_logits=True)
            logprobs = F.log_softmax(logits.float(), dim=-1)
            for i, ((ctx, cont), row) in enumerate(zip(chunk, rows)):
                n = len(cont)
                end = len(row) - 1
                lp = logprobs[i, end - n:end]
                target = torch.tensor(row[-n:], device=self.torch_device)
                total = lp.gather(1, target.unsqueeze(1)).sum().item()
                out.append((total, bool((lp.argmax(-1) == target).all())))
        return out

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        return self.score([self.encode_pair(*req.args) for req in requests])

    def loglikelihood_rolling(self, requests) -> list[float]:
        out = []
        for req in requests:
            windows = [make_disjoint_window(w) for w in get_rolling_token_windows(
                token_list=engine.encode(req.args[0], self.model), prefix_token=EOT_ID, max_seq_len=self.block_size,
                context_len=1)]
            out.append(sum(lp for lp, _ in self.score(windows)))
        return out

    # ---- generation ---------------------------------------------------------------------------------------

    def generate_until(self, requests) -> list[str]:
        out = []
        for req in requests:  # grouped by settings below would be faster; tasks rarely mix them
            context, kwargs = req.args
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(kwargs.get("max_gen_toks", self.max_gen_toks))
            sampling = None
            if kwargs.get("do_sample") and float(kwargs.get("temperature", 1.0)) > 0:
                sampling = engine.Sampling(temperature=float(kwargs["temperature"]), top_k=None)
            prompt = engine.keep_last(engine.encode(context, self.model), self.block_size)[0] if context else [EOT_ID]
            tokens = engine.generate_batch(self.model, [prompt], max_new, sampling)[0]
            text = engine.decode([t for t in tokens if t < EOT_ID])
            for stop in until:
                text = text.split(stop, 1)[0]
            out.append(text)
        return out


def hub_reachable(timeout: float = 3.0) -> bool:
    import socket
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def go_offline() -> None:
    """Make datasets and huggingface_hub answer from the local cache at once: unreachable, they retry each
    request five times with backoff (half a minute of warnings) before the error eval.py reports."""
    os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    import datasets.config
    import huggingface_hub.constants
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if hasattr(datasets.config, name):
            setattr(datasets.config, name, True)


def run(model: GPT, tasks: list[str], include: str | None, limit: int | None, batch_size: int) -> dict:
    """Run lm-eval's tasks on model; {task: {metric: value}}. Tasks the harness cannot find or download
    are a UserError of one line."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from errors import UserError
    if not hub_reachable():
        go_offline()
    manager = TaskManager(include_path=include) if include else TaskManager()
    try:
        results = lm_eval.simple_evaluate(model=NanoPhiLM(model, batch_size), tasks=tasks, task_manager=manager,
                                          limit=limit or None, bootstrap_iters=0, log_samples=False)
    except Exception as e:  # the harness and datasets raise many kinds for a missing task or no network
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UserError(f"lm-eval could not run {','.join(tasks)}: {type(e).__name__}: {first} (online tasks need "
                        f"the Hugging Face Hub; local ones need --lm_eval_include=DIR)") from e
    return {task: {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k != "alias"}
            for task, metrics in results["results"].items()}
