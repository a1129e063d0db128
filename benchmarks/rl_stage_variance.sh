#!/usr/bin/env bash
# One GRPO stage of a finished speedrun (r1-zero, r1-reasoning-rl, r1, rl-only-student) redone from the model it
# started from, with other settings, then evaluated like the speedrun evaluated that stage, paired against the
# records of the evaluation of its starting model (the "peer": e.g. r1-sft for r1, r1-cold-sft for r1-reasoning-rl,
# the base for r1-zero). Prints the pass@1 / cons@k / mixing gaps (Δ ± paired SE) the stage made, one line each,
# then one JSON line with the same numbers.
#
#   bash benchmarks/rl_stage_variance.sh RUN_DIR STAGE NAME [extra r1lab grpo flags, e.g. --seed 1 | --lr 3e-5]
#
# Everything comes from the run directory: the stage's config and inputs (RUN_DIR/run.json; the config goes to
# `r1lab grpo --config`, the extra flags after it override), the starting model and the reward model (the inputs'
# DONE files), the evaluation settings (the config of the eval stage that reads STAGE) and the baseline records (the
# eval stage that reads the starting model). Outputs go to RUN_DIR/rl_stage_variance/STAGE/NAME{/,.grpo.log,
# .eval.log,.records.jsonl,.grpo_config.json}. docs/benchmarks.md, twenty-first and twenty-second sessions.
set -euo pipefail
usage="usage: rl_stage_variance.sh RUN_DIR STAGE NAME [grpo flags...]"
run=${1:?$usage}
stage=${2:?$usage}
name=${3:?$usage}
shift 3
[ -e "$run/run.json" ] || { echo "rl_stage_variance.sh: $run/run.json not found (a finished speedrun is needed)" >&2; exit 2; }
out=$run/rl_stage_variance/$stage
# resolve the stage: its config, starting model, reward model, eval flags and baseline records (one per line)
plan=$(python - "$run" "$stage" <<'PY'
import json, sys
from pathlib import Path
from r1lab.pipeline.rundir import read_done
run, name = Path(sys.argv[1]), sys.argv[2]
stages = {st["name"]: st for st in json.load(open(run / "run.json"))["stages"]}
def fail(msg):
    print(f"rl_stage_variance.sh: {msg}", file=sys.stderr)
    sys.exit(2)
grpo = sorted(n for n, st in stages.items() if st["kind"] == "grpo")
if stages.get(name, {}).get("kind") != "grpo":
    fail(f"{run}/run.json has no GRPO stage {name!r} (its GRPO stages: {', '.join(grpo)})")
st = stages[name]
def artifact(stage, key, what):
    done = read_done(run / stage)
    if done is None:
        fail(f"{run / stage}/DONE not found: stage {stage!r} ({what}) did not finish")
    return done["artifacts"][key]
def eval_of(model_stage):
    for n, s in stages.items():
        if s["kind"] == "eval" and s["inputs"].get("model") == model_stage:
            return n, s
    fail(f"{run}/run.json has no eval stage reading {model_stage!r}")
start = st["inputs"]["model"]
eval_name, eval_stage = eval_of(name)
base_eval, _ = eval_of(start)
records = run / base_eval / "records.jsonl"
if not records.exists():
    fail(f"{records} not found: stage {base_eval!r} did not finish")
print(json.dumps(st["config"]))
print(artifact(start, "model_dir", "the starting model"))
print(artifact(st["inputs"]["reward_model"], "model_dir", "the reward model") if "reward_model" in st["inputs"] else "")
print(records)
for key, value in eval_stage["config"].items():  # EvalStage fields as `r1lab eval` flags
    if key == "greedy":
        print("" if value else "--no-greedy")
    elif key == "benchmarks":
        if value:
            fail(f"{eval_name}'s extra benchmarks are not redone here (only the built-in test split)")
    else:
        print("--" + key.replace("_", "-"))
        print(*(value if isinstance(value, list) else [value]), sep="\n")
PY
)
mapfile -t lines <<< "$plan"
mkdir -p "$out"
printf '%s\n' "${lines[0]}" > "$out/$name.grpo_config.json"
model=${lines[1]}
[ -n "${lines[2]}" ] && export R1LAB_REWARD_MODEL=${lines[2]}
baseline=${lines[3]}
eval_flags=()
for flag in "${lines[@]:4}"; do [ -n "$flag" ] && eval_flags+=("$flag"); done
failed() { echo "rl_stage_variance.sh: $1 failed; the end of $2:" >&2; tail -n 20 "$2" >&2; exit 1; }
python -m r1lab grpo --config "$out/$name.grpo_config.json" --model "$model" --eval-every 0 \
  --save-every 100000 --out-dir "$out/$name" "$@" > "$out/$name.grpo.log" 2>&1 || failed "r1lab grpo" "$out/$name.grpo.log"
python -m r1lab eval --model "$out/$name/final" "${eval_flags[@]}" --records "$out/$name.records.jsonl" \
  --baseline "$baseline" > "$out/$name.eval.log" 2>&1 || failed "r1lab eval" "$out/$name.eval.log"
echo "$stage $name ($*):"
grep -a "Δ" "$out/$name.eval.log"
python - "$out/$name.eval.log" "$run" "$stage" "$name" "$*" "$baseline" <<'PY'
import json, re, sys
log, run, stage, name, flags, baseline = sys.argv[1:]
row = {"bench": "rl_stage_variance", "run": run, "stage": stage, "name": name, "flags": flags,
       "peer": baseline.split("/")[-2]}
for metric, delta, se in re.findall(r"(pass@1|cons@k|mixing)\s+Δ ([-+]\d+\.\d+) ± (\d+\.\d+)", open(log).read()):
    row[f"{metric}_delta"], row[f"{metric}_se"] = float(delta), float(se)
print(json.dumps(row))
PY
