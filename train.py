"""Train or fine-tune a GPT-2 on a tagged dataset made by data/prepare.py.

    python train.py config/train_phi_mini.py              # the embedded default: small model, CPU, ~10 min
    python train.py config/finetune_phi.py                # the NanoPhi recipe: gpt2-medium on data/phi, GPU
    python train.py config/finetune_phi.py --init_from=resume   # continue exactly where a run stopped
    torchrun --standalone --nproc_per_node=8 train.py config/finetune_phi.py   # one machine, 8 GPUs (DDP)

Settings are the globals below (python train.py --help lists them); config files and --key=value override
them. Every eval prints one table row: train and val loss, and val loss per tag. Checkpoints go to
out_dir/ckpt.pt atomically and hold everything needed to resume the run bit for bit; Ctrl-C or SIGTERM saves
one before exiting.
"""

import contextlib
import gc
import math
import os
import signal
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import hardware
import lora
import memory
import optimizers
from checkpoint import checkpoint_path, load_checkpoint, model_from_checkpoint, model_from_init, save_checkpoint
from configurator import configure
from dataloader import EvalBatches, TaggedData, TrainBatches, TrainSampler, open_dataset
from errors import UserError, run_main
from logger import RunLogger
from kernels import cpu_kernels_pay_off
from model import GPT, GPT2_SIZES, GPTConfig

# -----------------------------------------------------------------------------
# I/O
out_dir = "out"
eval_interval = 250
log_interval = 10
eval_iters = 20  # batches per eval set (train, val, per-tag val)
always_save_checkpoint = True  # False: save only when val loss reaches a new best
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
# model (scratch only; pretrained and resumed models bring their own shape)
n_layer = 6
n_head = 6
n_embd = 384
dropout = 0.0
bias = True
gradient_checkpointing = False  # recompute each block's activations in backward: less memory, ~30% slower
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


def init_model(data: TaggedData, checkpoint: dict | None) -> GPT:
    """The model init_from asks for, at block_size positions (resumed runs keep their checkpoint's shape)."""
    if init_from == "resume":
        return model_from_checkpoint(checkpoint, merged=False)  # a LoRA run's keeps its adapters live
    if init_from == "scratch":
        vocab_size = math.ceil(data.vocab_size / 64) * 64  # padded: multiples of 64 run faster
        if n_embd % n_head:
            raise UserError(f"n_embd={n_embd} must be divisible by n_head={n_head}")
        return GPT(GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=n_layer, n_head=n_head,
                             n_embd=n_embd, dropout=dropout, bias=bias))
    if init_from not in GPT2_SIZES and not os.path.exists(init_from):
        raise UserError(f"unknown init_from '{init_from}': use scratch, resume, {', '.join(GPT2_SIZES)}, "
                        "a local transformers GPT-2 directory, or another run's out_dir or checkpoint file")
    model = model_from_init(init_from, dict(dropout=dropout))  # a run's weights: fresh optimizer and schedule
    if model.config.vocab_size < data.vocab_size:
        raise UserError(f"{init_from} has {model.config.vocab_size} tokens, the dataset needs {data.vocab_size}")
    model.set_block_size(block_size)  # extend (position interpolation) or crop the checkpoint's positions
    return model


def main() -> None:
    config = configure(globals())

    # ---- processes, device, precision ------------------------------------------------------------------
    ddp = "RANK" in os.environ and "WORLD_SIZE" in os.environ  # started by torchrun
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    master = rank == 0
    dev = hardware.pick_device(device)
    if ddp and dev == "cuda":
        dev = f"cuda:{local_rank}"
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
    checkpoint = load_checkpoint(checkpoint_path(out_dir)) if init_from == "resume" else None
    run_block_size = checkpoint["model_args"]["block_size"] if checkpoint else block_size
    if run_block_size < 1:
        raise UserError(f"block_size must be at least 1, got {run_block_size}")
    if ddp and local_rank != 0:
        dist.barrier()  # one process per machine opens the data first: it may build missing bins (data/mini)
    data = TaggedData(open_dataset(dataset), run_block_size)
    if ddp and local_rank == 0:
        dist.barrier()
    model = init_model(data, checkpoint)
    lora_settings = dict(rank=lora_rank, alpha=lora_alpha, dropout=lora_dropout, targets=lora_targets)
    model, lora_info = lora.prepare(model, init_from, checkpoint, lora_settings, ptdtype)  # None: full fine-tune
    model.gradient_checkpointing = gradient_checkpointing
    model.to(dev)
    raw_model = model  # the plain module: for eval, checkpoints and MFU
    tokens_per_iter = gradient_accumulation_steps * batch_size * run_block_size
    if master:
        print(f"{world_size} process(es) on {dev}, precision {dtype_name} ({why})")
        print(f"model: {raw_model.get_num_params() / 1e6:.1f}M parameters, {raw_model.config.n_layer} layers, "
              f"{raw_model.config.n_embd} wide, block {run_block_size}; init_from={init_from}")
        print(f"tokens per iteration: {tokens_per_iter:,} = {gradient_accumulation_steps} accumulation steps x "
              f"{batch_size} batch x {run_block_size} tokens; data {data.path}: "
              f"{len(data.tokens['train']):,} train tokens, {len(data.tokens['val']):,} val tokens")
        if lora_info:
            print(lora.describe(raw_model, lora_info))
    plan = memory.plan_for(raw_model, batch_size, run_block_size, micro_steps, config["optimizer"], lora_info,
                           gradient_checkpointing, dtype_name, dev)
    if master:
        print(plan.describe())

    optimizer = optimizers.build(raw_model, config["optimizer"], weight_decay, learning_rate, (beta1, beta2),
                                 device_type)
    scaler = hardware.grad_scaler(dev, dtype_name)
    sampler = TrainSampler(len(data.tokens["train"]), run_block_size, batch_size, gradient_accumulation_steps, seed)
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

    if compile:
        use_compile, why_compile = hardware.compile_pays_off(dev)
        if master:
            print(f"compiling the model {why_compile} (the first iterations are slow)" if use_compile else
                  f"not compiling: {why_compile}")
        if use_compile:
            model = torch.compile(model)
    if ddp:
        model = DDP(model, device_ids=[local_rank] if device_type == "cuda" else None)
    ctx = hardware.autocast(dev, dtype_name)
    cpu_kernels = cpu_kernels_pay_off(dev, dtype_name)  # kernels.py's fused head and explicit attention
    train_batches = TrainBatches(data, sampler, rank, world_size, dev)
    eval_batches = EvalBatches(data, run_block_size, batch_size, eval_iters, dev)
    peak = hardware.PeakFlops(dev, ptdtype)
    if master:
        again = "" if peak.datasheet else f", again about every {PEAK_SAMPLE_INTERVAL} s, the best kept"
        print(f"MFU is measured against a peak of {peak.flops / 1e12:.2f} TFLOP/s "
              f"({peak.describe()} on {dev}{again})")
    logger = RunLogger(wandb_log and master, wandb_project, wandb_run_name, config)

    @torch.no_grad()
    def evaluate() -> dict[str, float]:
        """Mean loss per token on the fixed eval windows: train, val, and val per tag."""
        raw_model.eval()
        n_tags = len(data.tags)
        sums, counts = torch.zeros(n_tags + 2, device=dev), torch.zeros(n_tags + 2, device=dev)
        for name, slot in (("train", n_tags), ("val", n_tags + 1), ("tags", None)):  # slot: where its sums go
            for x, y, tag_ids in eval_batches.batches[name]:
                with ctx:
                    _, loss = raw_model(x, y, reduction="none")
                where = tag_ids.flatten() if slot is None else torch.full_like(y.flatten(), slot)
                sums.index_add_(0, where, loss.flatten().float())
                counts.index_add_(0, where, torch.ones_like(loss.flatten(), dtype=torch.float))
        raw_model.train()
        means = (sums / counts.clamp(min=1)).tolist()
        out = {"train": means[n_tags], "val": means[n_tags + 1]}
        out.update({tag: means[i] if counts[i] > 0 else float("nan") for i, tag in enumerate(data.tags)})
        return out

    def save(reason: str) -> None:
        """Write the checkpoint (master), with every rank's RNG state so each resumes its own stream."""
        rng = {"torch": [torch.get_rng_state()], "cuda": [torch.cuda.get_rng_state()] if device_type == "cuda" else []}
        if ddp:
            for key, states in rng.items():
                gathered = [None] * world_size
                dist.all_gather_object(gathered, states[0].cpu() if states else None)
                rng[key] = gathered if states else []
        if master:
            save_checkpoint({
                "model": raw_model.state_dict(), "model_args": dict(vars(raw_model.config)),
                **(lora.checkpoint_entries(raw_model, lora_info) if lora_info else {}),  # adapters, not the base
                "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "sampler": sampler.state_dict(),
                "rng": rng, "iter_num": iter_num, "best_val_loss": best_val_loss, "config": config,
            }, checkpoint_path(out_dir))
            print(f"saved checkpoint at iteration {iter_num} to {checkpoint_path(out_dir)} ({reason})")

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
    if checkpoint:  # the RNG (dropout) last, once nothing else draws from it (building the model does)
        rng = checkpoint["rng"]
        torch.set_rng_state(rng["torch"][rank % len(rng["torch"])])
        if device_type == "cuda" and rng["cuda"]:
            torch.cuda.set_rng_state(rng["cuda"][rank % len(rng["cuda"])])
    checkpoint = None  # free the memory
    if master:
        print("evals: loss per token on fixed windows; the tag columns are val loss on each tag's documents")
        print(" | ".join(["iter".rjust(6), "train".rjust(7), "val".rjust(7)] + [t.rjust(8) for t in data.tags]))
    stop = torch.zeros(3, device=dev)  # (this iteration's mean loss, stop requested, grad norm): reduced over ranks
    t0 = time.time()
    with hardware.explain_out_of_memory(batch_size, run_block_size, plan.advice()):
        while True:
            if iter_num % eval_interval == 0 or iter_num >= max_iters:
                losses = evaluate()
                if master:
                    print(" | ".join([f"{iter_num:6d}", f"{losses['train']:7.4f}", f"{losses['val']:7.4f}"]
                                     + [f"{losses[t]:8.4f}" for t in data.tags]))
                logger.log({"iter": iter_num, "train/loss": losses["train"], "val/loss": losses["val"],
                            **{f"val/loss_{t}": losses[t] for t in data.tags}, "lr": get_lr(iter_num)}, step=iter_num)
                if not math.isfinite(losses["val"]):
                    raise diverged(f"val loss became {losses['val']}", "Lower --learning_rate")
                new_best = losses["val"] < best_val_loss
                best_val_loss = min(best_val_loss, losses["val"])
                if iter_num > 0 and (new_best or always_save_checkpoint):
                    save("new best val loss" if new_best else "always_save_checkpoint")
                t0 = time.time()  # ms/iter measures training only
            if iter_num >= max_iters:
                break

            lr = get_lr(iter_num)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = torch.zeros((), device=dev)
            for micro_step, (x, y) in enumerate(train_batches.iteration()):
                # DDP: all-reduce gradients only once, after the last micro-step's backward
                last = micro_step == micro_steps - 1
                with model.no_sync() if ddp and not last else contextlib.nullcontext():
                    with ctx:
                        _, loss = model(x, y, cpu_kernels=cpu_kernels)
                    scaler.scale(loss / micro_steps).backward()
                loss_sum += loss.detach().float()
            scaler.unscale_(optimizer)  # fp16: back to the true gradients (a no-op otherwise)
            total_norm = torch.nn.utils.get_total_norm([p.grad for p in raw_model.parameters() if p.grad is not None])
            stop[0], stop[1], stop[2] = loss_sum / micro_steps, float(bool(stop_signal)), total_norm
            if ddp:
                dist.all_reduce(stop)
                stop[0] /= world_size
                stop[2] /= world_size  # the same on every rank: gradients are all-reduced
            loss_value, stop_votes, grad_norm = stop.tolist()
            stop_requested = stop_votes > 0
            if not math.isfinite(loss_value):
                raise diverged(f"loss became {loss_value}", "Lower --learning_rate, keep --grad_clip on, or use "
                                                            "--dtype=bfloat16/float32 instead of float16")
            if not math.isfinite(grad_norm) and not scaler.is_enabled():
                # fp16's scaler skips such a step and lowers its scale. Without one, the step would write NaN
                # into the weights, finite loss or not, and the next save would keep them.
                raise diverged(f"gradient norm became {grad_norm}", "Lower --learning_rate or raise --warmup_iters")
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
                mfu = raw_model.estimate_mfu(batch_size * micro_steps, dt, dev, ptdtype, peak_flops=peak.flops)
                print(f"iter {iter_num}: loss {loss_value:.4f}, lr {lr:.2e}, {dt * 1000:.0f} ms/iter, "
                      f"{tokens_per_iter / dt:,.0f} tok/s, MFU {mfu * 100:.1f}%, grad norm {grad_norm:.2f}, "
                      f"epoch {sampler.epochs():.3f}")
                logger.log({"iter": iter_num, "train/loss_iter": loss_value, "lr": lr, "ms_per_iter": dt * 1000,
                            "tokens_per_s": tokens_per_iter / dt, "mfu": mfu, "grad_norm": grad_norm,
                            "epoch": sampler.epochs()}, step=iter_num)
                t0 = time.time()  # ms/iter measures training only, not a peak sample
            if stop_requested:
                save("stopped by signal")
                if master:
                    print(f"stopped at iteration {iter_num}; continue with --init_from=resume")
                break
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


if __name__ == "__main__":
    run_main(main)
