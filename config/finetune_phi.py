"""The NanoPhi recipe: fine-tune OpenAI's gpt2-medium (355M) on the tagged phi mixture, on one GPU.

    python data/prepare.py --mixture=phi
    python train.py config/finetune_phi.py
    torchrun --standalone --nproc_per_node=8 train.py config/finetune_phi.py   # same global batch on 8 GPUs

4 x 80 x 1024 = 327,680 tokens per iteration, 200 iterations: about 65M tokens, roughly one pass over the
mixture. An A100/H100 runs it in bf16; a T4 in fp16 with a GradScaler (dtype=auto picks).
"""

out_dir = "out-phi"
dataset = "phi"
init_from = "gpt2-medium"

batch_size = 4
gradient_accumulation_steps = 80  # 327,680 tokens per iteration; divided among the processes under torchrun
block_size = 1024
max_iters = 200
eval_interval = 5
eval_iters = 10
log_interval = 1

# Learning rate: a pretrained model needs ~10x less than pretraining (3e-4 at this size) or it forgets
# English before it learns the tags; at a 327k-token batch, 6e-5 peak is the fine-tuning range GPT-2 papers
# and nanoGPT's finetune configs use (3e-5 constant there, with 16x smaller batches). With only 200 steps
# every step counts: 10 warmup steps protect the pretrained weights from Adam's first noisy updates (its
# second-moment estimate is still empty), and a cosine to 6e-6 settles the model at the end so the last
# checkpoint is the best, not a noisy one.
learning_rate = 6e-5
decay_lr = True
warmup_iters = 10
lr_decay_iters = 200
min_lr = 6e-6
weight_decay = 0.1
grad_clip = 1.0
dropout = 0.0  # 65M tokens for 355M parameters is less than one epoch: nothing to regularize yet

# Evaluate often (every 5 iterations), write the full state rarely: ckpt.pt (weights, AdamW state: 4.2 GB at
# this size) at most every 10 minutes, at the end and on Ctrl-C/SIGTERM, instead of at each of up to 40 new
# bests, which would take longer than training itself on a fast GPU. The best eval's weights are copied to
# host memory when it happens and go to best.pt with the next write (what sample.py and export.py read).
always_save_checkpoint = False
checkpoint_interval = 600
