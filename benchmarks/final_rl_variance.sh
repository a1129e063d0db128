#!/usr/bin/env bash
# The R1 recipe's final RL stage ("r1": rule + reward-model rewards, 12 GRPO steps) redone from a finished speedrun's
# r1-sft model with other settings, then evaluated like the speedrun's eval-r1 with eval-r1-sft's records as the
# paired baseline. Prints the pass@1 / cons@k / mixing gaps (Δ ± paired SE) against r1-sft (the "peer": the model
# the stage starts from), one line each, then one JSON line with the same numbers.
#
#   bash benchmarks/final_rl_variance.sh RUN_DIR NAME [extra r1lab grpo flags, e.g. --seed 1 | --lr 5e-5 | --beta 0.04]
#
# The stage's own settings come from RUN_DIR/run.json (the "r1" stage's config, as the speedrun ran it); the extra
# flags come after them, so they override. Outputs go to RUN_DIR/final_rl_variance/NAME{/,.grpo.log,.eval.log,
# .records.jsonl,.grpo_config.json}. docs/benchmarks.md, twenty-first session.
set -euo pipefail
run=${1:?usage: final_rl_variance.sh RUN_DIR NAME [grpo flags...]}
name=${2:?usage: final_rl_variance.sh RUN_DIR NAME [grpo flags...]}
shift 2
for need in run.json r1-sft/final reward-model/model eval-r1-sft/records.jsonl; do
  [ -e "$run/$need" ] || { echo "final_rl_variance.sh: $run/$need not found (a finished cpu speedrun is needed)" >&2; exit 2; }
done
out=$run/final_rl_variance
mkdir -p "$out"
export R1LAB_REWARD_MODEL=$run/reward-model/model
# the r1 stage's config, as the run recorded it, goes to `r1lab grpo --config` (GRPOConfig fields); the eval-r1
# stage's becomes command-line flags (`r1lab eval` has no config file), one per line
python - "$run/run.json" "$out/$name.grpo_config.json" <<'PY'
import json, sys
stages = {st["name"]: st["config"] for st in json.load(open(sys.argv[1]))["stages"]}
missing = [name for name in ("r1", "eval-r1") if name not in stages]
if missing:
    sys.exit(f"final_rl_variance.sh: {sys.argv[1]} has no stage {missing[0]!r}")
json.dump(stages["r1"], open(sys.argv[2], "w"))
PY
mapfile -t eval_flags < <(python -c '
import json, sys
for key, value in next(st["config"] for st in json.load(open(sys.argv[1]))["stages"] if st["name"] == "eval-r1").items():
    print("--" + key.replace("_", "-")); print(value)' "$run/run.json")
python -m r1lab grpo --config "$out/$name.grpo_config.json" --model "$run/r1-sft/final" --eval-every 0 \
  --save-every 100000 --out-dir "$out/$name" "$@" > "$out/$name.grpo.log" 2>&1
python -m r1lab eval --model "$out/$name/final" "${eval_flags[@]}" \
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
