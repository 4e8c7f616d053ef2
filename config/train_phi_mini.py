"""The embedded default: a small GPT-2 trained from scratch on data/mini, in about 10 minutes on 2 CPU cores.

    python train.py config/train_phi_mini.py          # builds data/mini first if it is missing
    python sample.py --out_dir=out-phi-mini           # then sample it, e.g. with a "[Math]" prompt

Sized for the clock, not for quality: 4 layers x 256 wide (16M parameters, 13M of them the token embedding
that GPT-2's 50k vocabulary needs), 256 tokens of context, 3,072 tokens per step, 1,200 steps: about 3.7M
tokens, three quarters of a pass over data/mini. The number of steps matters more than their size here: 1,200
steps of 3,072 tokens learn the tasks 1,200 of 4,096 did (val loss 0.07 higher) in three quarters of the
time; 1,000 steps of 4,096 do not.
The LM head multiplies only the ~20k tokens data/mini uses (shortlist_head: exact, about half the
step time), which is what buys 1,200 steps instead of 800. Layer 0's four heads start out looking 1, 2, 3 and
4 tokens back (offset_heads): `3+4=` needs the operands 1 and 3 back, `... 23+1=24 24+1=` the last answer 4
back, and a fresh model otherwise spends most of these steps on a loss plateau before it finds them. With
them it gets single-digit sums and few-shot lines right. Copying from the prompt (a word problem's operands,
a year from the excerpt, a constant into code) needs an induction head, which a fresh model does not build in
this budget: induction_head starts layer 1 with one (word problems 12 -> 48-70 %, excerpt facts 0 -> 36-70 %;
docs/capability.md has every lever measured).
bf16 autocast on CPUs with bf16 instructions (hardware.py); fp32 elsewhere, the same recipe and skills, slower
(24-37 minutes on a 2-core AVX2 EPYC: docs/performance.md).
"""

out_dir = "out-phi-mini"
dataset = "mini"
init_from = "scratch"

n_layer = 4
n_head = 4
n_embd = 256
dropout = 0.0  # well under one epoch: nothing to regularize
offset_heads = "1,2,3,4"  # layer 0's heads start attending 1, 2, 3, 4 tokens back (model.init_offset_heads)
induction_head = True  # layer 1's first head starts out predicting what followed the current token before
# Number tokens start as sums of their digits' vectors plus their value's Fourier features
# (model.init_number_embeddings): GPT-2 writes ` 47` as one token unrelated to ` 46`, so a two-digit sum
# training never showed could not be worked out (0-6 %); digits and data/mini's two-digit drills gave 31-37 % of
# held-out sums (n = 150), with the Fourier features 61-68 % (docs/capability.md, E104, E105), with the tens
# digit's vectors twice as long (init_number_embeddings' tens_scale) 66-78 % (E118-E121)
number_embeddings = True
shortlist_head = True  # the LM head over only the tokens data/mini uses, exactly (shortlist.py)
block_size = 256
batch_size = 12  # 16 learned no more and took 541 s against 425 (docs/capability.md, E34-E37)
gradient_accumulation_steps = 1

# A small model trained briefly tolerates, and needs, a high learning rate: 2e-3 with a short warmup, cosine
# to a tenth of it so the last steps consolidate instead of bouncing.
learning_rate = 2e-3
max_iters = 1200  # few-shot 54-64 % at 600 steps, 90-96 % at 800, 96-100 % at 1,200 (docs/capability.md)
lr_decay_iters = 1200
warmup_iters = 30
min_lr = 2e-4
beta2 = 0.99  # few tokens per step: a longer second-moment average smooths the noisier gradients
weight_decay = 0.1
grad_clip = 1.0

eval_interval = 400  # each eval is about 10 s of the 10 minutes
eval_iters = 10
log_interval = 20
always_save_checkpoint = True

device = "auto"
dtype = "auto"
