#!/usr/bin/env bash
# Runs the GPU benchmarks of docs/benchmarks.md in one go, each under its own time limit, so that one failure or hang
# does not lose the others. Every command's output goes to $LOG_DIR/suite.log (with a header per part) and every JSON
# line the benchmarks print to $LOG_DIR/results.jsonl.
#
#   bash benchmarks/gpu_suite.sh [PART ...]      # parts: env tests train train_compile generate generate_compile
#                                                #        generate_qwen fp8 fp8_curve grpo grpo_qwen balance pretrain
#                                                #        profile mismatch generate_dense shared_prefix
#                                                #        mtp_spec (after pretrain: MTP
#                                                #        speculative decoding on the gpu-small model it trained)
#                                                #        speedrun (`r1lab speedrun --preset gpu --stop-after 5.5`:
#                                                #        ~20 min in all, so run the part in 2-3 calls back to back;
#                                                #        each continues the run; not in "all")
#                                                #        (default: all)
#   LOG_DIR=/some/dir bash benchmarks/gpu_suite.sh train generate
#
# Parts run in the order given; each is limited by `timeout` (seconds in LIMIT_<part>, defaults below).
set -u
LOG_DIR=${LOG_DIR:-runs/gpu_suite}
mkdir -p "$LOG_DIR"
LOG="$LOG_DIR/suite.log"
RESULTS="$LOG_DIR/results.jsonl"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}

run() {  # run NAME LIMIT CMD...
    local name=$1 limit=$2; shift 2
    echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*" | tee -a "$LOG"
    local t0=$SECONDS
    timeout "$limit" "$@" > "$LOG_DIR/$name.out" 2>&1
    local rc=$?
    cat "$LOG_DIR/$name.out" >> "$LOG"
    grep '^{' "$LOG_DIR/$name.out" >> "$RESULTS"
    rm -f "$LOG_DIR/$name.out"
    echo "=== $name rc=$rc in $((SECONDS - t0)) s" | tee -a "$LOG"
}

part() {
    case $1 in
        env) run env 60 bash -c "nvidia-smi; $PY -c 'import torch, transformers; print(torch.__version__, \
transformers.__version__, torch.cuda.get_device_name(0))'" ;;
        tests) run tests "${LIMIT_tests:-420}" $PY -m pytest -m gpu -q -p no:cacheprovider tests ;;
        train) run train "${LIMIT_train:-150}" $PY benchmarks/train_step.py ;;
        train_compile) run train_compile "${LIMIT_train_compile:-240}" $PY benchmarks/train_step.py --compile ;;
        generate) run generate "${LIMIT_generate:-200}" $PY benchmarks/generate.py ;;
        generate_compile) run generate_compile "${LIMIT_generate_compile:-240}" $PY benchmarks/generate.py --compile ;;
        generate_dense) run generate_dense "${LIMIT_generate_dense:-200}" $PY benchmarks/generate.py --compile \
            --batch-sizes 32 --dense-experts-max 64 ;;
        generate_qwen) run generate_qwen "${LIMIT_generate_qwen:-200}" $PY benchmarks/generate.py --preset qwen2 \
            --compile --batch-sizes 1,32 ;;
        fp8) run fp8 "${LIMIT_fp8:-120}" $PY benchmarks/fp8.py ;;
        fp8_curve) run fp8_curve "${LIMIT_fp8_curve:-300}" $PY benchmarks/fp8.py --skip-linear --skip-experts \
            --loss-curve 300 ;;
        grpo) run grpo "${LIMIT_grpo:-240}" $PY benchmarks/grpo_step.py --arch deepseek --steps "${GRPO_STEPS:-6}" ;;
        profile) run profile "${LIMIT_profile:-300}" $PY benchmarks/profile_gpu.py ;;
        shared_prefix) run shared_prefix "${LIMIT_shared_prefix:-120}" bash -c "$PY benchmarks/shared_prefix.py \
--device cuda --dtype amp --preset gpu-small --prompts 8 --group-size 16 --max-new-tokens 512" ;;
        mismatch) run mismatch "${LIMIT_mismatch:-150}" bash -c "$PY benchmarks/logprob_mismatch.py --device cuda && \
$PY benchmarks/logprob_mismatch.py --device cuda --compile" ;;
        grpo_qwen) run grpo_qwen "${LIMIT_grpo_qwen:-240}" $PY benchmarks/grpo_step.py --arch qwen2 ;;
        balance) run balance "${LIMIT_balance:-240}" $PY benchmarks/balance.py --preset gpu-small --device cuda \
            --steps 300 --seq-len 512 --micro-batch 16 --gamma 0.001 --out "$LOG_DIR/balance" ;;
        pretrain) run pretrain "${LIMIT_pretrain:-240}" $PY -m r1lab pretrain --preset gpu-small --device cuda --steps 300 --eval-every 0 --ckpt-every 0 \
            --lr 1e-3 --micro-batch 32 --seq-len 512 --exact-match 0 --out-dir "$LOG_DIR/pretrain" ;;
        mtp_spec) run mtp_spec "${LIMIT_mtp_spec:-200}" $PY benchmarks/mtp_speculative.py \
            --model "${MTP_MODEL:-$LOG_DIR/pretrain/model}" --compile --n-prompts 4 --max-tokens 128 ;;
        speedrun) run speedrun "${LIMIT_speedrun:-585}" bash -c "$PY -m r1lab speedrun --preset gpu \
--out ${SPEEDRUN_DIR:-runs/gpu_speedrun} --stop-after ${SPEEDRUN_STOP_AFTER:-5.5}; rc=\$?; cp -r ${SPEEDRUN_DIR:-runs/gpu_speedrun}/report $LOG_DIR/ 2>/dev/null; \
du -sh ${SPEEDRUN_DIR:-runs/gpu_speedrun}; exit \$rc" ;;
        *) echo "unknown part $1" | tee -a "$LOG" ;;
    esac
}

PARTS=("$@")
[ ${#PARTS[@]} -eq 0 ] && PARTS=(env tests train generate fp8 grpo grpo_qwen train_compile generate_compile fp8_curve balance pretrain mtp_spec profile mismatch generate_qwen generate_dense shared_prefix)
for p in "${PARTS[@]}"; do part "$p"; done
