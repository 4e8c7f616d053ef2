"""The NanoPhi recipe (config/finetune_phi.py) at 4096 tokens of context: gpt2-medium's 1024 positions extended 4x.

    python train.py config/finetune_phi_long.py

model.extend_block_size interpolates the position embeddings (new position 4i holds old position i), so the
model starts from familiar positions and fine-tuning teaches it the finer steps. SDPA's flash and
memory-efficient kernels keep no 4096 x 4096 scores, so a 1 x 4096 micro-batch holds about the activations
of finetune_phi.py's 4 x 1024 (about 10 GiB planned for a step in all). Activation checkpointing (about 30%
more compute) is therefore left to the memory plan: on only where a step would take more than 3/4 of the
card (hardware.pick_activation_checkpointing; the first lines of the run say which). Same 327,680 tokens
per iteration as finetune_phi.py: 1 x 80 x 4096. Everything else, learning rate and schedule included, is
finetune_phi.py's (see its comments for why).
"""

from config.finetune_phi import *  # noqa: F401,F403 (the base recipe; only the differences follow)

out_dir = "out-phi-long"
block_size = 4096
batch_size = 1
gradient_checkpointing = None  # auto: from the card's memory; True/False forces it
