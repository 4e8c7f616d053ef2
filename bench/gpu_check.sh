#!/usr/bin/env bash
# The prepared GPU check (docs/gpu.md): the CUDA path as users run it, on a machine without internet, in
# under 8 minutes. It runs
#   1. the tests that use CUDA (tests/test_gpu_cuda.py, tests/test_gpu_path.py),
#   2. train.py itself with config/finetune_phi.py's settings on gpt2-medium's shape from random weights, a
#      few iterations each: dtype auto (bf16 from compute capability 8.0, fp16 + GradScaler below), forced
#      fp16 + GradScaler (the T4 path), torchrun --nproc_per_node=2 when there are two GPUs, and
#      config/finetune_phi_long.py's block 4096,
#   3. decoding at batch 1 and 16 (python -m bench --mode=sample),
# then prints tokens/s, MFU (against the data-sheet peak where the GPU is known) and peak memory per run.
#
#   bash bench/gpu_check.sh                  # on a CUDA machine
#   bash bench/gpu_check.sh --device=cpu     # dry run: the same steps at a tiny shape on the CPU (CI runs it)
#
# Data: a small data/mini mixture built offline into a temporary directory (GPU_CHECK_DIR to keep it).
set -uo pipefail
cd "$(dirname "$0")/.."

DEVICE=cuda
for arg in "$@"; do
    case "$arg" in
        --device=*) DEVICE="${arg#--device=}" ;;
        *) echo "usage: bash bench/gpu_check.sh [--device=cpu]" >&2; exit 2 ;;
    esac
done
WORK="${GPU_CHECK_DIR:-$(mktemp -d)}"
mkdir -p "$WORK"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline
PY="${PYTHON:-python}"

if [ "$DEVICE" = cpu ]; then
    GPUS=0
    SCALE=0.01
    SHAPE=(--n_layer=2 --n_head=2 --n_embd=64 --block_size=64 --batch_size=2 --compile=False)
    LONG=(--n_layer=2 --n_head=2 --n_embd=64 --block_size=256 --compile=False)
    STEPS=(--max_iters=2 --gradient_accumulation_steps=2)
    DECODE=(--n_layer=2 --n_head=2 --n_embd=64 --block_size=64 --prompt_tokens=8 --new_tokens=8 --repeats=1
            --ttft_prompt_tokens=32 --recompute_segments=1 --recompute_tokens=1)
else
    if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        echo "no CUDA GPU visible to torch: run with --device=cpu for the dry run" >&2
        exit 1
    fi
    GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
    SCALE=0.1
    SHAPE=(--n_layer=24 --n_head=16 --n_embd=1024)  # gpt2-medium; block 1024 and batch 4 from the recipe
    LONG=(--n_layer=24 --n_head=16 --n_embd=1024)
    STEPS=(--max_iters=6 --gradient_accumulation_steps=8)
    DECODE=(--new_tokens=128 --repeats=2)
fi
COMMON=(--init_from=scratch --dataset="$WORK/data" --eval_interval=1000 --eval_iters=2 --log_interval=1
        --warmup_iters=2 --lr_decay_iters=6 --device="$DEVICE")
FAILED=()
SUMMARY=()

step() {  # step NAME TIMEOUT COMMAND...: run it, keep its log, note a failure and go on
    local name="$1" limit="$2"
    shift 2
    echo
    echo "==== $name: $*"
    if timeout "$limit" "$@" 2>&1 | tee "$WORK/$name.log"; then
        return 0
    fi
    echo "==== $name FAILED (or ran past ${limit} s)"
    FAILED+=("$name")
    return 1
}

summarize() {  # summarize NAME: tokens/s and MFU (medians after the first 2 iterations, which compile), memory
    SUMMARY+=("$("$PY" - "$1" "$WORK/$1.log" <<'EOF'
import re, statistics, sys
name, path = sys.argv[1], sys.argv[2]
text = open(path).read()
rows = re.findall(r"^iter (\d+): .*?([\d,]+) tok/s, MFU ([\d.]+)%.*?(?:peak memory ([\d.]+) GiB)?$", text, re.M)
peak = re.search(r"MFU is measured against a peak of ([\d.]+) TFLOP/s \(([^)]*)\)", text)
steady = rows[2:] or rows
if not steady:
    print(f"{name:12} no iterations logged")
else:
    tok = statistics.median(float(r[1].replace(",", "")) for r in steady)
    mfu = statistics.median(float(r[2]) for r in steady)
    memory = f"{steady[-1][3]} GiB" if steady[-1][3] else "-"
    print(f"{name:12} {tok:12,.0f} tok/s  MFU {mfu:5.1f}%  peak memory {memory:>9}  "
          f"(peak {peak.group(1) if peak else '?'} TFLOP/s, {peak.group(2) if peak else '?'})")
EOF
)")
}

step data 300 "$PY" data/prepare.py --mixture=mini --scale="$SCALE" --val_fraction=0.1 --out_dir="$WORK/data" \
    --force=True

if [ "$DEVICE" != cpu ]; then
    step tests 240 "$PY" -m pytest -q -rs -s tests/test_gpu_cuda.py tests/test_gpu_path.py
fi

run_train() {  # run_train NAME CONFIG ARGS...
    local name="$1" config="$2"
    shift 2
    step "$name" 240 "$PY" train.py "$config" "${COMMON[@]}" "${STEPS[@]}" --out_dir="$WORK/out-$name" "$@" \
        && summarize "$name"
    rm -rf "$WORK/out-$name"  # 5.6 GB each at gpt2-medium's size
}
run_train auto config/finetune_phi.py "${SHAPE[@]}"
run_train fp16 config/finetune_phi.py "${SHAPE[@]}" --dtype=float16
if [ "$GPUS" -ge 2 ]; then
    step ddp2 240 "$PY" -m torch.distributed.run --standalone --nproc_per_node=2 train.py config/finetune_phi.py \
        "${COMMON[@]}" "${STEPS[@]}" --out_dir="$WORK/out-ddp2" "${SHAPE[@]}" --device=auto && summarize ddp2
    rm -rf "$WORK/out-ddp2"
else
    echo
    echo "==== ddp2: skipped, $GPUS GPU(s) here"
fi
run_train long4096 config/finetune_phi_long.py "${LONG[@]}"

for batch in 1 16; do
    step "decode-b$batch" 180 "$PY" -m bench --mode=sample --device="$DEVICE" --batch_size="$batch" "${DECODE[@]}" \
        && SUMMARY+=("$(tail -n 1 "$WORK/decode-b$batch.log" | "$PY" -c "
import json, sys
r = json.loads(sys.stdin.read())
ours = {k: v for k, v in r['tokens_per_s'].items() if k.startswith('ours')}
print(f'decode-b$batch  ' + ', '.join(f'{k}: {v:,.0f} tok/s' for k, v in ours.items()))")")
done

echo
echo "==== summary ($DEVICE, logs in $WORK)"
printf '%s\n' "${SUMMARY[@]}"
if [ "${#FAILED[@]}" -gt 0 ]; then
    echo "FAILED: ${FAILED[*]}"
    exit 1
fi
echo "all steps passed"
