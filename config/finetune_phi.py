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

always_save_checkpoint = False  # keep the best val loss: with eval every 5 iterations that costs nothing
