"""The NanoPhi recipe (config/finetune_phi.py) at 4096 tokens of context: gpt2-medium's 1024 positions extended 4x.

    python train.py config/finetune_phi_long.py

model.extend_block_size interpolates the position embeddings (new position 4i holds old position i), so the
model starts from familiar positions and fine-tuning teaches it the finer steps. Attention memory grows with
the context, so every block's activations are recomputed in backward (activation checkpointing): about 30%
more compute for several times less activation memory, which lets a 4096-token micro-batch fit on a 24-40 GB
GPU. Same 327,680 tokens per iteration as finetune_phi.py: 1 x 80 x 4096. Everything else, learning rate
and schedule included, is finetune_phi.py's (see its comments for why).
"""

from config.finetune_phi import *  # noqa: F401,F403 (the base recipe; only the differences follow)

out_dir = "out-phi-long"
block_size = 4096
batch_size = 1
gradient_checkpointing = True
