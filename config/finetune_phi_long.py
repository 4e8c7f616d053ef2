"""The NanoPhi recipe (config/finetune_phi.py) at 4096 tokens of context: gpt2-medium's 1024 positions extended 4x.

    python train.py config/finetune_phi_long.py

model.extend_block_size interpolates the position embeddings (new position 4i holds old position i), so the
model starts from familiar positions and fine-tuning teaches it the finer steps. Attention memory grows with
the context, so every block's activations are recomputed in backward (activation checkpointing): about 30%
more compute for several times less activation memory, which lets a 4096-token micro-batch fit on a 24-40 GB
GPU. Same 327,680 tokens per iteration as finetune_phi.py: 1 x 80 x 4096. Learning rate and schedule as
there (see its comments for why).
"""

out_dir = "out-phi-long"
dataset = "phi"
init_from = "gpt2-medium"

block_size = 4096
batch_size = 1
gradient_accumulation_steps = 80
gradient_checkpointing = True
max_iters = 200
eval_interval = 5
eval_iters = 10
log_interval = 1

learning_rate = 6e-5
decay_lr = True
warmup_iters = 10
lr_decay_iters = 200
min_lr = 6e-6
weight_decay = 0.1
grad_clip = 1.0
dropout = 0.0

always_save_checkpoint = False
