#!/usr/bin/env bash
# The R1 recipe's final RL stage ("r1": rule + reward-model rewards, 12 GRPO steps) redone from a finished speedrun's
# r1-sft model with other settings, then evaluated like the speedrun's eval-r1 with eval-r1-sft's records as the
# paired baseline. Prints the pass@1 / cons@k / mixing gaps (Δ ± paired SE) against r1-sft (the "peer": the model
# the stage starts from), one line each, then one JSON line with the same numbers.
#
#   bash benchmarks/final_rl_variance.sh RUN_DIR NAME [extra r1lab grpo flags, e.g. --seed 1 | --lr 5e-5 | --beta 0.04]
#
# The flags default to the cpu preset's "r1" stage (r1lab/pipeline/presets.py); later flags override earlier ones.
# Outputs go to RUN_DIR/final_rl_variance/NAME{/,.grpo.log,.eval.log,.records.jsonl}. docs/benchmarks.md, twenty-first
# session.
set -euo pipefail
run=${1:?usage: final_rl_variance.sh RUN_DIR NAME [grpo flags...]}
name=${2:?usage: final_rl_variance.sh RUN_DIR NAME [grpo flags...]}
shift 2
for need in r1-sft/final reward-model/model eval-r1-sft/records.jsonl; do
  [ -e "$run/$need" ] || { echo "final_rl_variance.sh: $run/$need not found (a finished cpu speedrun is needed)" >&2; exit 2; }
done
out=$run/final_rl_variance
mkdir -p "$out"
export R1LAB_REWARD_MODEL=$run/reward-model/model
weights='{"accuracy": 1.0, "format": 0.2, "language": 0.2, "r1lab.pipeline.reward_model:model_reward": 0.2}'
python -m r1lab grpo --model "$run/r1-sft/final" --steps 12 --prompts-per-step 8 --group-size 8 --max-new-tokens 192 \
  --eval-every 0 --save-every 100 --families '["arithmetic", "word", "arithmetic_zh", "word_zh"]' \
  --n-train-per-family 300 --lr 1e-4 --log-samples 2 --reward-weights "$weights" --template r1 \
  --out-dir "$out/$name" "$@" > "$out/$name.grpo.log" 2>&1
python -m r1lab eval --model "$out/$name/final" --template r1 --n-per-family 12 --k 4 --max-tokens 192 \
  --records "$out/$name.records.jsonl" --baseline "$run/eval-r1-sft/records.jsonl" > "$out/$name.eval.log" 2>&1
echo "$name ($*):"
grep -a "Δ" "$out/$name.eval.log"
python - "$out/$name.eval.log" "$run" "$name" "$*" <<'PY'
import json, re, sys
log, run, name, flags = sys.argv[1:]
row = {"bench": "final_rl_variance", "run": run, "name": name, "flags": flags, "peer": "r1-sft"}
for metric, delta, se in re.findall(r"(pass@1|cons@k|mixing)\s+Δ ([-+]\d+\.\d+) ± (\d+\.\d+)", open(log).read()):
    row[f"{metric}_delta"], row[f"{metric}_se"] = float(delta), float(se)
print(json.dumps(row))
PY
