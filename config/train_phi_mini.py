"""The embedded default: a small GPT-2 trained from scratch on data/mini, in about 10 minutes on 2 CPU cores.

    python train.py config/train_phi_mini.py          # builds data/mini first if it is missing
    python sample.py --out_dir=out-phi-mini           # then sample it, e.g. with a "[Math]" prompt

Sized for the clock: 4 layers x 256 wide (16M parameters, 13M of them the token embedding that GPT-2's 50k
vocabulary needs), 256 tokens of context, 4,096 tokens per step, 750 steps. It is trained to read its prompt,
not only to copy each tag's format (docs/capability.md has the measurements):
- loss_on='response': where a document is a prompt and a response (an [Excerpt] question, a [Logic]
  conclusion, a [Math] word problem's answer, a [QA] answer) only the response is trained, so the gradient
  goes to reading the prompt instead of guessing the next random name in it; drills, code, textbooks and
  dialogues still train on every token;
- the LM head (most of a step's FLOPs at this size) runs only on the trained rows, so a step costs less and
  the same 10 minutes hold 750 steps instead of 600;
- data/mini's generated tasks draw names, places, years and counts from pools too wide to memorise, and ask
  several questions about each text, so copying from the prompt is what pays.
bf16 autocast on CPUs with bf16 instructions (hardware.py), fp32 elsewhere (slower, same recipe).
"""

out_dir = "out-phi-mini"
dataset = "mini"
init_from = "scratch"

n_layer = 4
n_head = 4
n_embd = 256
dropout = 0.0  # well under one epoch: nothing to regularize
block_size = 256
batch_size = 16
loss_on = "response"
gradient_accumulation_steps = 1

# A small model trained briefly tolerates, and needs, a high learning rate: 2e-3 with a short warmup, cosine
# to a tenth of it so the last steps consolidate instead of bouncing.
learning_rate = 2e-3
max_iters = 750
lr_decay_iters = 750
warmup_iters = 30
min_lr = 2e-4
beta2 = 0.99  # few tokens per step: a longer second-moment average smooths the noisier gradients
weight_decay = 0.1
grad_clip = 1.0

eval_interval = 100
eval_iters = 10
log_interval = 20
always_save_checkpoint = True

device = "auto"
dtype = "auto"
