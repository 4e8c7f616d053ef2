"""Train or fine-tune a GPT-2 on a tagged dataset made by data/prepare.py.

    python train.py config/train_phi_mini.py              # the embedded default: small model, CPU, ~10 min
    python train.py config/finetune_phi.py                # the NanoPhi recipe: gpt2-medium on data/phi, GPU
    python train.py config/finetune_phi.py --init_from=resume   # continue exactly where a run stopped
    torchrun --standalone --nproc_per_node=8 train.py config/finetune_phi.py   # one machine, 8 GPUs (DDP)

Settings are the globals below (python train.py --help lists them); config files and --key=value override
them. Every eval prints one table row: train and val loss, and val loss per tag. out_dir/ckpt.pt holds the
latest state, everything needed to resume the run bit for bit; out_dir/best.pt the weights with the best val
loss (what sample.py, chat.py and export.py use). Both are written atomically: at every eval with
always_save_checkpoint, else at most every checkpoint_interval seconds; always at the end, and on Ctrl-C or
SIGTERM before exiting.
"""

import contextlib
import gc
import math
import os
import signal
import sys
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import hardware
import lora
import memory
import optimizers
from checkpoint import best_path, checkpoint_path, init_model, save_checkpoint
from configurator import configure
from tags import check_tag
from dataloader import Curriculum, EvalBatches, TaggedData, TrainBatches, TrainSampler, open_dataset
from errors import UserError, run_main
from logger import RunLogger
from kernels import cpu_kernels_pay_off
from model import GPT, GPTConfig
from shortlist import HeadShortlist, used_tokens
from tokenizer import VOCAB_SIZE, number_tokens

# -----------------------------------------------------------------------------
# I/O
out_dir = "out"
eval_interval = 250
log_interval = 10
eval_iters = 20  # batches per eval set (train, val, per-tag val), shared among the processes
always_save_checkpoint = True  # write ckpt.pt (and best.pt) at every eval; False: see checkpoint_interval
checkpoint_interval = 600  # with always_save_checkpoint=False: seconds between writes during the run (also at the end)
init_from = "scratch"  # scratch, resume, gpt2 ... gpt2-xl, a local transformers dir, or another run's out_dir/ckpt file
# wandb logging
wandb_log = False
wandb_project = "nanophi"
wandb_run_name = "run"
# data
dataset = "mini"  # a directory under data/ (data/mini is built automatically if missing) or a path
gradient_accumulation_steps = 1  # micro-steps per iteration, over all processes together
batch_size = 8  # micro-batch size per process
block_size = 256
loss_on = "all"  # all: every token; response: only responses where documents record a prompt/response split
curriculum_tags = ""  # e.g. "Math,Logic,Excerpt": train on these tags' documents first (each tag keeps its share)
curriculum_iters = 0  # iterations at the start that draw only from curriculum_tags
# model (scratch only; pretrained and resumed models bring their own shape)
n_layer = 6
n_head = 6
n_embd = 384
dropout = 0.0
bias = True
offset_heads = ""  # e.g. "1,2,3": layer 0's first heads start out attending 1, 2, 3 tokens back (scratch only)
induction_head = False  # True: layer 1's first head starts out as an induction head, the circuit that copying
# from the prompt builds on (model.init_induction_head; scratch runs with an offset head looking 1 back)
number_embeddings = False  # True: number tokens start from their digits' and value's features (scratch only)
shortlist_head = False  # True: the LM head computes only the rows of tokens the data uses and one for the rest,
# which start out equal and stay so: the same loss and gradients as the full head (shortlist.py; scratch runs,
# or runs resumed from one)
gradient_checkpointing = False  # recompute each block's activations in backward: less memory, ~30% slower;
# None: only where a step would not fit the device's memory without it (hardware.pick_activation_checkpointing)
# LoRA (lora.py): train low-rank adapters on a frozen base instead of every weight
lora_rank = 0  # 0: full fine-tune; e.g. 16: LoRA adapters of rank 16
lora_alpha = 32.0  # adapter scale alpha / rank
lora_dropout = 0.0
lora_targets = "c_attn,c_proj,c_fc"  # module names: attention qkv and output, MLP in and out
# AdamW
optimizer = "adamw"  # adamw, or adamw8bit (bitsandbytes, CUDA only): 2 instead of 8 bytes of state per weight
learning_rate = 1e-3
max_iters = 2000
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0  # clip the global gradient norm to this; 0 disables
# learning-rate schedule
decay_lr = True  # linear warmup, then cosine down to min_lr; False: constant learning_rate
warmup_iters = 100
lr_decay_iters = 0  # iteration where the cosine reaches min_lr; 0: max_iters
min_lr = 1e-4
# system
device = "auto"  # auto, cpu, cuda, cuda:N
dtype = "auto"  # auto (see hardware.py), float32, bfloat16, float16
compile = True  # torch.compile the model (skipped where it cannot run or is unmeasured: hardware.compile_pays_off)
backend = "auto"  # DDP backend: auto is nccl on GPUs, gloo on CPUs
seed = 1337
# -----------------------------------------------------------------------------

PEAK_SAMPLE_INTERVAL = 60  # seconds between matmul peak measurements for MFU, where no data sheet applies
MAX_SKIPPED_STEPS = 20  # fp16: consecutive overflowing steps (the loss scale halves each time) before stopping


def get_lr(it: int) -> float:
    """Linear warmup to learning_rate, then cosine decay to min_lr at lr_decay_iters (or constant)."""
    if not decay_lr:
        return learning_rate
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    decay_iters = lr_decay_iters or max_iters
    if it >= decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / max(1, decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)


def clock(seconds: float) -> str:
    """A duration as people read it: '7m 05s', '1h 02m'."""
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {seconds:02d}s"


def check_settings() -> None:
    """Settings that cannot make a meaningful run: one line each, before any work."""
    for name, value in (("eval_iters", eval_iters), ("eval_interval", eval_interval), ("log_interval", log_interval),
                        ("batch_size", batch_size), ("gradient_accumulation_steps", gradient_accumulation_steps)):
        if value < 1:
            raise UserError(f"{name}={value} must be at least 1" + (
                ": an eval of no batches reports a val loss of 0, which would stay the best forever (to "
                "evaluate less often, raise --eval_interval)" if name == "eval_iters" else ""))
    if checkpoint_interval < 0 or max_iters < 0:
        raise UserError(f"checkpoint_interval={checkpoint_interval} and max_iters={max_iters} cannot be negative")


@torch.no_grad()
def evaluate(model: GPT, batches: dict, ctx, n_tags: int, rank: int = 0, world_size: int = 1) -> list[float]:
    """Mean loss per token on the fixed eval windows: [per tag..., train, val] (NaN for a tag with no tokens).

    Each process evaluates every world_size-th batch; the float64 sums and counts are all-reduced, then
    rank 0's totals broadcast, so every rank holds the same bits and makes the same "new best" decision
    (ranks deciding from their own evals can differ in the last bits, as CUDA's index_add_ sums in no fixed
    order, and one rank then waits alone in the save's collective: a hang).
    """
    model.eval()
    device = next(model.parameters()).device
    totals = torch.zeros(2, n_tags + 2, dtype=torch.float64, device=device)  # sums, counts; slots: tags, train, val
    for name, slot in (("train", n_tags), ("val", n_tags + 1), ("tags", None)):
        for x, y, tag_ids in batches[name][rank::world_size]:
            with ctx:
                _, loss = model(x, y, reduction="none")
            where = tag_ids.flatten() if slot is None else torch.full_like(y.flatten(), slot)
            totals[0].index_add_(0, where, loss.flatten().double())
            totals[1].index_add_(0, where, torch.ones_like(loss.flatten(), dtype=torch.float64))
    model.train()
    if world_size > 1:
        dist.all_reduce(totals)
        dist.broadcast(totals, src=0)
    sums, counts = totals.tolist()
    return [s / c if c > 0 else float("nan") for s, c in zip(sums, counts)]


def main() -> None:
    config = configure(globals())
    check_settings()

    # ---- processes, device, precision ------------------------------------------------------------------
    ddp = "RANK" in os.environ and "WORLD_SIZE" in os.environ  # started by torchrun
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    master = rank == 0
    dev = hardware.pick_device(device, local_rank)  # a GPU always with its index: cuda:N
    device_type = torch.device(dev).type
    if device_type == "cuda":
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls on tensor cores (only fp32 runs use them)
        torch.backends.cudnn.allow_tf32 = True
    else:
        hardware.keep_freed_memory_on_cpu()
        hardware.set_cpu_threads(int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    if ddp:
        dist.init_process_group(backend=("nccl" if device_type == "cuda" else "gloo") if backend == "auto" else backend)
    if gradient_accumulation_steps % world_size:
        raise UserError(f"gradient_accumulation_steps={gradient_accumulation_steps} must be a multiple of the "
                        f"{world_size} processes")
    micro_steps = gradient_accumulation_steps // world_size  # per process; the global batch stays the same
    dtype_name, why = hardware.pick_dtype(dev, dtype)
    ptdtype = hardware.DTYPES[dtype_name]
    torch.manual_seed(seed + rank)  # dropout differs per rank; DDP copies rank 0's initial weights to all

    # ---- data and model -------------------------------------------------------------------------------
    try:  # layer-0 heads that start out attending this many tokens back (model.init_offset_heads)
        offsets = [int(d) for d in str(offset_heads).split(",")] if offset_heads else []
    except ValueError:
        raise UserError(f"offset_heads must be comma-separated token counts like 1,2,3, got {offset_heads!r}")
    offsets = offsets if init_from == "scratch" else []  # like the shape, it means nothing to trained weights
    scratch = GPTConfig(block_size=block_size, vocab_size=math.ceil(VOCAB_SIZE / 64) * 64,  # padded: runs faster
                        n_layer=n_layer, n_head=n_head, n_embd=n_embd, dropout=dropout, bias=bias)
    model, checkpoint = init_model(init_from, out_dir, scratch, dropout, block_size, training=True)
    run_block_size = model.config.block_size  # a resumed run keeps its checkpoint's
    if offsets:
        model.init_offset_heads(offsets)
    if induction_head and init_from == "scratch":
        if 1 not in offsets:
            raise UserError("induction_head needs an offset head looking 1 back: add 1 to offset_heads (e.g. 1,2,3,4)")
        model.init_induction_head(prev_head=offsets.index(1))
    digit_numbers = number_embeddings and init_from == "scratch"  # like the shape: trained weights keep theirs
    if digit_numbers:
        model.init_number_embeddings(number_tokens())
    if run_block_size < 1:
        raise UserError(f"block_size must be at least 1, got {run_block_size}")
    if ddp and local_rank != 0:
        dist.barrier()  # one process per machine opens the data first: it may build missing bins (data/mini)
    data = TaggedData(open_dataset(dataset), run_block_size)
    if ddp and local_rank == 0:
        dist.barrier()
    if model.config.vocab_size < data.vocab_size:
        raise UserError(f"{init_from} has {model.config.vocab_size} tokens, the dataset needs {data.vocab_size}")
    shortlist = None
    if shortlist_head:
        shortlist = HeadShortlist(used_tokens(list(data.tokens.values()), model.config.vocab_size),
                                  model.config.vocab_size)
        if init_from == "scratch":
            shortlist.tie(model.lm_head.weight)
        if shortlist.tied(model.lm_head.weight):
            why_shortlist = shortlist.describe()
        else:  # a pretrained model's rows differ: only the full head gives its gradients
            shortlist, why_shortlist = None, "full LM head: the rows of tokens the data does not use differ"
    lora_settings = dict(rank=lora_rank, alpha=lora_alpha, dropout=lora_dropout, targets=lora_targets)
    model, lora_info = lora.prepare(model, init_from, checkpoint, lora_settings, ptdtype)  # None: full fine-tune
    tokens_per_micro_batch = batch_size * run_block_size
    model.gradient_checkpointing, why_checkpointing = hardware.pick_activation_checkpointing(
        gradient_checkpointing, model.get_num_params(non_embedding=False), model.config.n_layer, model.config.n_embd,
        model.config.vocab_size, tokens_per_micro_batch, dtype_name, hardware.memory_bytes(dev))
    model.to(dev)
    raw_model = model  # the plain module: for eval, checkpoints and MFU
    raw_model.head_shortlist = shortlist.to(dev) if shortlist else None
    tokens_per_iter = gradient_accumulation_steps * batch_size * run_block_size
    if master:
        print(f"{world_size} process(es) on {dev}, precision {dtype_name} ({why})")
        print(f"model: {raw_model.get_num_params() / 1e6:.1f}M parameters, {raw_model.config.n_layer} layers, "
              f"{raw_model.config.n_embd} wide, block {run_block_size}; init_from={init_from}"
              + (f", layer-0 heads looking {offset_heads} tokens back" if offsets else "")
              + (", an induction head in layer 1" if induction_head and offsets else "")
              + (", number tokens built from their digits and value" if digit_numbers else ""))
        print(f"tokens per iteration: {tokens_per_iter:,} = {gradient_accumulation_steps} accumulation steps x "
              f"{batch_size} batch x {run_block_size} tokens; data {data.path}: "
              f"{len(data.tokens['train']):,} train tokens, {len(data.tokens['val']):,} val tokens")
        print(f"activation checkpointing {'on' if raw_model.gradient_checkpointing else 'off'} ({why_checkpointing})")
        if shortlist_head:
            print(why_shortlist)
        if lora_info:
            print(lora.describe(raw_model, lora_info))
    plan = memory.plan_for(raw_model, batch_size, run_block_size, micro_steps, config["optimizer"], lora_info,
                           raw_model.gradient_checkpointing, dtype_name, dev)
    if master:
        print(plan.describe())

    optimizer = optimizers.build(raw_model, config["optimizer"], weight_decay, learning_rate, (beta1, beta2),
                                 device_type)
    scaler = hardware.grad_scaler(dev, dtype_name)
    curriculum = None
    if curriculum_iters > 0 and curriculum_tags:
        curriculum = Curriculum(data, [check_tag(t, "curriculum_tags") for t in curriculum_tags.split(",")],
                                curriculum_iters, max_iters)
        if master:
            print(f"curriculum: iterations 0-{curriculum.iters - 1} draw only from {curriculum_tags} "
                  f"({curriculum.share:.0%} of the tokens), later ones from them with probability {curriculum.later:.2f}")
    sampler = TrainSampler(len(data.tokens["train"]), run_block_size, batch_size, gradient_accumulation_steps, seed,
                           curriculum)
    iter_num, best_val_loss = 0, float("inf")
    if checkpoint:
        optimizer.load_state_dict(checkpoint["optimizer"])
        if checkpoint["scaler"] and scaler.is_enabled():
            scaler.load_state_dict(checkpoint["scaler"])
        elif scaler.is_enabled() and master:  # a bf16/fp32 run resumed in fp16 (say, an A100 run on a T4)
            print("the checkpoint was not trained in float16: its loss scale starts afresh")
        sampler.load_state_dict(checkpoint["sampler"])
        iter_num, best_val_loss = checkpoint["iter_num"], checkpoint["best_val_loss"]
        if master:
            print(f"resuming from {checkpoint_path(out_dir)} at iteration {iter_num} (best val loss {best_val_loss:.4f})")
    rng_states = checkpoint["rng"] if checkpoint else None
    checkpoint = None  # free the memory: the model and optimizer hold their own copies now

    if compile:
        use_compile, why_compile = hardware.compile_pays_off(dev)
        if master:
            print(f"compiling the model {why_compile} (the first iterations are slow)" if use_compile else
                  f"not compiling: {why_compile}")
        if use_compile:
            model = torch.compile(model)
    if ddp:
        model = DDP(model, device_ids=[torch.device(dev).index] if device_type == "cuda" else None)
    ctx = hardware.autocast(dev, dtype_name)
    cpu_kernels = cpu_kernels_pay_off(dev)  # kernels.py: the fused head, explicit attention in bf16
    train_batches = TrainBatches(data, sampler, rank, world_size, dev, loss_on)
    eval_batches = EvalBatches(data, run_block_size, batch_size, eval_iters, dev)
    peak = hardware.PeakFlops(dev, ptdtype)
    if master:
        again = "" if peak.datasheet else f", again about every {PEAK_SAMPLE_INTERVAL} s, the best kept"
        print(f"MFU is measured against a peak of {peak.flops / 1e12:.2f} TFLOP/s "
              f"({peak.describe()} on {dev}{again})")
    logger = RunLogger(wandb_log and master, wandb_project, wandb_run_name, config,
                       os.path.join(out_dir, "metrics.jsonl") if master else None, iter_num)

    # best.pt: the weights of the best eval, copied to the CPU when it happens (into buffers kept for the run)
    # and written with the next ckpt.pt, so a fast GPU evaluating every few steps does not write each one
    best = {"model": None, "iter_num": None, "unsaved": False}  # master only
    last_save = [time.time()]

    def weights() -> dict:
        """What a checkpoint holds of the model: its state dict, or a LoRA run's adapters (not the base)."""
        return lora.checkpoint_entries(raw_model, lora_info) if lora_info else {"model": raw_model.state_dict()}

    def remember_best() -> None:
        state = weights()["model"]
        if best["model"] is None:
            by_storage = {}  # tied weights (the head is the token embedding) keep sharing one buffer
            best["model"] = {k: by_storage.setdefault(v.data_ptr(), torch.empty(
                v.shape, dtype=v.dtype, pin_memory=device_type == "cuda")) for k, v in state.items()}
        for k, v in state.items():
            best["model"][k].copy_(v.detach(), non_blocking=True)
        if device_type == "cuda":
            torch.cuda.synchronize(dev)
        best["iter_num"], best["unsaved"] = iter_num, True

    def save(reason: str) -> None:
        """Write best.pt if a better eval came since, then ckpt.pt (master), with every rank's RNG state so each
        resumes its own stream. best.pt goes first: ckpt.pt's best_val_loss always has its weights on disk."""
        rng = {"torch": [torch.get_rng_state()], "cuda": [torch.cuda.get_rng_state()] if device_type == "cuda" else []}
        if ddp:
            for key, states in rng.items():
                gathered = [None] * world_size
                dist.all_gather_object(gathered, states[0].cpu() if states else None)
                rng[key] = gathered if states else []
        if master:
            if best["unsaved"]:
                save_checkpoint({**weights(), "model": best["model"], "model_args": dict(vars(raw_model.config)),
                                 "iter_num": best["iter_num"], "best_val_loss": best_val_loss, "config": config},
                                best_path(out_dir))
                best["unsaved"] = False
            save_checkpoint({
                **weights(), "model_args": dict(vars(raw_model.config)),  # a LoRA run's: adapters, not the base
                "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "sampler": sampler.state_dict(),
                "rng": rng, "iter_num": iter_num, "best_val_loss": best_val_loss, "config": config,
            }, checkpoint_path(out_dir))
            where_best = f"; best.pt is iteration {best['iter_num']}'s" if best["iter_num"] is not None else ""
            print(f"saved checkpoint at iteration {iter_num} to {checkpoint_path(out_dir)} ({reason}{where_best})")
        last_save[0] = time.time()

    # Ctrl-C, a closed notebook or a cluster's SIGTERM: finish the iteration, save, exit. A second one kills.
    stop_signal = []

    def request_stop(signum, frame):
        stop_signal.append(signum)
        signal.signal(signum, signal.SIG_DFL)
        if master:
            print(f"\n{signal.Signals(signum).name}: saving a checkpoint after this iteration (again to quit now)")

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    def diverged(what: str, advice: str) -> UserError:
        return UserError(f"{what} at iteration {iter_num}; stopped without saving, so {checkpoint_path(out_dir)} "
                         f"keeps the last good state. {advice}")

    # ---- the training loop ----------------------------------------------------------------------------
    if rng_states:  # the RNG (dropout) last, once nothing else draws from it (building the model does)
        torch.set_rng_state(rng_states["torch"][rank % len(rng_states["torch"])])
        if device_type == "cuda" and rng_states["cuda"]:
            torch.cuda.set_rng_state(rng_states["cuda"][rank % len(rng_states["cuda"])])
    if master:
        print("evals: loss per token on fixed windows; the tag columns are val loss on each tag's documents")
        print(" | ".join(["iter".rjust(6), "train".rjust(7), "val".rjust(7)] + [t.rjust(8) for t in data.tags]))
    # (this iteration's mean loss, stop requested, grad norm, checkpoint due by rank 0's clock): reduced over ranks
    stop = torch.zeros(4, device=dev)
    skipped_steps = 0  # fp16: consecutive steps the GradScaler skipped
    t0 = run_start = time.time()
    run_start_iter = iter_num
    pace = None  # (time, iteration) at the first log line: the ETA leaves out compiling, keeps evals and saves
    with hardware.explain_out_of_memory(batch_size, run_block_size, plan.advice()):
        while True:
            if iter_num % eval_interval == 0 or iter_num >= max_iters:
                means = evaluate(raw_model, eval_batches.batches, ctx, len(data.tags), rank, world_size)
                losses = {"train": means[-2], "val": means[-1], **dict(zip(data.tags, means))}
                if master:
                    print(" | ".join([f"{iter_num:6d}", f"{losses['train']:7.4f}", f"{losses['val']:7.4f}"]
                                     + [f"{losses[t]:8.4f}" for t in data.tags]))
                logger.log({"iter": iter_num, "train/loss": losses["train"], "val/loss": losses["val"],
                            **{f"val/loss_{t}": losses[t] for t in data.tags}, "lr": get_lr(iter_num)}, step=iter_num)
                if not math.isfinite(losses["val"]):
                    raise diverged(f"val loss became {losses['val']}", "Lower --learning_rate")
                if losses["val"] < best_val_loss:  # the same on every rank: evaluate() reduced it
                    best_val_loss = losses["val"]
                    if master:
                        remember_best()
                if iter_num >= max_iters:
                    save("end of run")
                    break
                if iter_num > 0 and always_save_checkpoint:
                    save("always_save_checkpoint")
                t0 = time.time()  # ms/iter measures training only
            lr = get_lr(iter_num)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = torch.zeros((), device=dev)
            head_rows = 0  # positions the LM head ran on, for MFU: the fused CPU head skips ignored targets
            for micro_step, (x, y) in enumerate(train_batches.iteration()):
                # DDP: all-reduce gradients only once, after the last micro-step's backward
                last = micro_step == micro_steps - 1
                with model.no_sync() if ddp and not last else contextlib.nullcontext():
                    with ctx:
                        _, loss = model(x, y, cpu_kernels=cpu_kernels)
                    scaler.scale(loss / micro_steps).backward()
                loss_sum += loss.detach().float()
                head_rows += int((y >= 0).sum()) if cpu_kernels and loss_on == "response" else y.numel()
            if shortlist:  # the rows left out of the head get their share of their representative's gradient
                shortlist.share_grad(raw_model.lm_head.weight)
            scaler.unscale_(optimizer)  # fp16: back to the true gradients (a no-op otherwise)
            total_norm = torch.nn.utils.get_total_norm([p.grad for p in raw_model.parameters() if p.grad is not None])
            due = float(master and not always_save_checkpoint and time.time() - last_save[0] >= checkpoint_interval)
            stop[0], stop[1], stop[2], stop[3] = loss_sum / micro_steps, float(bool(stop_signal)), total_norm, due
            if ddp:
                dist.all_reduce(stop)
                stop[0] /= world_size
                stop[2] /= world_size  # the same on every rank: gradients are all-reduced
            loss_value, stop_votes, grad_norm, save_due = stop.tolist()
            stop_requested = stop_votes > 0
            if not math.isfinite(loss_value):
                raise diverged(f"loss became {loss_value}", "Lower --learning_rate, keep --grad_clip on, or use "
                                                            "--dtype=bfloat16/float32 instead of float16")
            if not math.isfinite(grad_norm) and not scaler.is_enabled():
                # fp16's scaler skips such a step and lowers its scale. Without one, the step would write NaN
                # into the weights, finite loss or not, and the next save would keep them.
                raise diverged(f"gradient norm became {grad_norm}", "Lower --learning_rate or raise --warmup_iters")
            skipped_steps = 0 if math.isfinite(grad_norm) else skipped_steps + 1
            if skipped_steps >= MAX_SKIPPED_STEPS:  # the scaler would go on halving its scale and skipping forever
                raise diverged(f"the float16 gradients overflowed {skipped_steps} steps in a row (loss scale now "
                               f"{scaler.get_scale():.3g})", "Use --dtype=bfloat16 (GPUs of compute capability 8.0 "
                               "and up) or --dtype=float32, or lower --learning_rate")
            if grad_clip > 0:
                torch.nn.utils.clip_grads_with_norm_(raw_model.parameters(), grad_clip, total_norm)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            iter_num += 1

            t1 = time.time()
            dt, t0 = t1 - t0, t1
            if master and iter_num % log_interval == 0:
                peak.sample(PEAK_SAMPLE_INTERVAL)  # a busy moment at the start must not inflate every later MFU
                head_fraction = head_rows / (batch_size * micro_steps * run_block_size)  # of the full head's FLOPs
                if shortlist:
                    head_fraction *= len(shortlist.rows) / raw_model.config.vocab_size
                mfu = raw_model.estimate_mfu(batch_size * micro_steps, dt, dev, ptdtype, peak_flops=peak.flops,
                                             head_fraction=head_fraction)
                now = time.time()
                if pace is None:
                    pace, eta = (now, iter_num), dt * (max_iters - iter_num)
                else:
                    eta = (now - pace[0]) / (iter_num - pace[1]) * (max_iters - iter_num)
                peak_memory = (f", peak memory {torch.cuda.max_memory_allocated(dev) / 2**30:.1f} GiB"
                               if device_type == "cuda" else "")
                print(f"iter {iter_num}: loss {loss_value:.4f}, lr {lr:.2e}, {dt * 1000:.0f} ms/iter, "
                      f"{tokens_per_iter / dt:,.0f} tok/s, MFU {mfu * 100:.1f}%, grad norm {grad_norm:.2f}, "
                      f"epoch {sampler.epochs():.3f}, eta {clock(eta)}{peak_memory}")
                logger.log({"iter": iter_num, "train/loss_iter": loss_value, "lr": lr, "ms_per_iter": dt * 1000,
                            "tokens_per_s": tokens_per_iter / dt, "mfu": mfu, "grad_norm": grad_norm,
                            "epoch": sampler.epochs()}, step=iter_num)
                t0 = time.time()  # ms/iter measures training only, not a peak sample
            if stop_requested:
                save("stopped by signal")
                if master:
                    print(f"stopped at iteration {iter_num}; continue with --init_from=resume")
                break
            if save_due > 0 and iter_num < max_iters:  # (the end of the run saves anyway)
                save(f"{checkpoint_interval} s since the last")
                t0 = time.time()
    if master:
        print(f"trained {iter_num - run_start_iter:,} iterations in {clock(time.time() - run_start)}")
    logger.finish()
    if ddp:
        # Tear down in order: wait for every rank (rank 0 may still be saving), free DDP's reducer (it holds
        # gloo work objects), then the process group. Left to interpreter exit, a CPU rank now and then
        # aborted after finishing ("terminate called without an active exception": 3 of 36 two-process
        # runs under load before this, 1 of 84 after).
        dist.barrier()
        del model
        gc.collect()
        dist.destroy_process_group()
        # Still, a compiled rank keeps helper threads (tqdm's monitor, a compile thread pool) into interpreter
        # shutdown, where CPython < 3.14 ends a thread that is inside C++ code with pthread_exit and C++ aborts
        # with that same message. Everything is saved, logged and past the barrier: leave without that shutdown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    run_main(main)
