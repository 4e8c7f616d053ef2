"""The NanoPhi recipe on gpt2-xl (1.5B) with LoRA: one 16 GB GPU (a T4 or a free notebook GPU).

    python data/prepare.py --mixture=phi
    python train.py config/finetune_phi_lora.py
    python sample.py --out_dir=out-phi-xl-lora                 # base + adapters, merged for decoding
    python export.py --out_dir=out-phi-xl-lora --hf_dir=hf-phi-xl-lora --adapters_only=True   # a peft adapter

A full fine-tune of gpt2-xl needs about 42 GB at this batch (python -m bench --mode=memory). Here the base is
frozen and held in fp16 (T4) or bf16 (A100/L4/H100), only rank-16 adapters on every block matmul train
(20M parameters, 1.3 % of the model), and activation checkpointing keeps one block's activations instead of
48: the planner puts the peak at about 7.4 GB, so the same recipe also runs at micro-batch 8 on 16 GB.
The checkpoint holds the adapters and their optimizer state (about 240 MB), not the 6 GB base.

Same data and tokens per iteration as config/finetune_phi.py (4 x 80 x 1024 = 327,680). LoRA takes a
learning rate about ten times a full fine-tune's: the adapters start at zero (B = 0) and the effective
update is scaled by alpha / rank.
"""

out_dir = "out-phi-xl-lora"
dataset = "phi"
init_from = "gpt2-xl"

lora_rank = 16
lora_alpha = 32.0  # scale alpha / rank = 2
lora_dropout = 0.05  # 65M tokens for 20M adapter parameters: a little regularization
lora_targets = "c_attn,c_proj,c_fc"
gradient_checkpointing = True

batch_size = 4
gradient_accumulation_steps = 80
block_size = 1024
max_iters = 200
eval_interval = 5
eval_iters = 10
log_interval = 1

learning_rate = 6e-4
decay_lr = True
warmup_iters = 10
lr_decay_iters = 200
min_lr = 6e-5
weight_decay = 0.0  # decay would pull the adapters back to zero, i.e. towards the base
grad_clip = 1.0
dropout = 0.0

always_save_checkpoint = False
