"""Evaluate a model as DeepSeek-R1 does: pass@1 averaged over k samples (temperature 0.6, top-p 0.95), cons@k
(majority vote), pass@k (some sample correct), greedy accuracy, per task family, mean response tokens and
language-mixing rate — on the built-in held-out test split and/or local JSONL benchmarks (GSM8K "answer":
"… #### 72", MATH "solution" with \\boxed{}).

Is one model better than another beyond noise? Write per-problem records with ``--records``, then evaluate the
other model on the same problems with ``--baseline`` those records: the paired gap Δ ± standard error of pass@1,
cons@k and the mixing rate is printed (``r1lab.pipeline.significance``; a speedrun's eval stages keep theirs in
``runs/speedrun/eval-*/records.jsonl``).

Examples:
  r1lab eval --model runs/speedrun/r1/final --template r1
  r1lab eval --model runs/speedrun/pretrain/model --benchmark gsm8k_test.jsonl --format gsm8k --limit 200
  r1lab eval --model my/checkpoint --template r1 --baseline runs/speedrun/eval-r1/records.jsonl
"""

from __future__ import annotations

from pathlib import Path

NAME = "eval"
HELP = "pass@1 / cons@k / pass@k / greedy accuracy of a model on the held-out split or a GSM8K/MATH JSONL file"


def add_arguments(p) -> None:
    p.add_argument("--model", required=True, help="model directory (ours or a local HF causal LM)")
    p.add_argument("--tokenizer", default=None, help="tokenizer directory (default: the model directory)")
    p.add_argument("--benchmark", default=None, help="local JSONL benchmark instead of the built-in test split")
    p.add_argument("--format", default="gsm8k", choices=["gsm8k", "math"], help="benchmark row format")
    p.add_argument("--limit", type=int, default=None, help="first N benchmark rows")
    p.add_argument("--n-per-family", type=int, default=12, help="built-in test problems per family (default 12)")
    p.add_argument("--families", nargs="*", default=None, help="task families (default: all)")
    p.add_argument("--difficulty", type=int, default=1)
    p.add_argument("--k", type=int, default=4, help="samples per problem (default 4)")
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--template", default="r1-zero", choices=["r1-zero", "r1", "plain"], help="prompt style")
    p.add_argument("--no-greedy", action="store_true", help="skip the greedy pass")
    p.add_argument("--sampler", default="auto", choices=["auto", "engine", "naive"])
    p.add_argument("--device", default="auto", help="auto (cuda if available) | cpu | cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the summary JSON here")
    p.add_argument("--records", default=None, help="write the per-problem records (JSONL) here")
    p.add_argument("--baseline", default=None,
                   help="records JSONL of another evaluation on the same problems: print the paired gap Δ ± SE")


def main(args) -> int:
    import dataclasses

    from r1lab.data.stream import write_jsonl_atomic
    from r1lab.pipeline.evaluate import evaluate, load_benchmark
    from r1lab.pipeline.generation import load_generator
    from r1lab.pipeline.rundir import write_json_atomic
    from r1lab.pipeline.significance import compare, describe, read_records
    from r1lab.tasks import make_split

    baseline = read_records(args.baseline, required=True) if args.baseline else None  # bad file: fail before work
    if args.benchmark:
        problems = load_benchmark(args.benchmark, args.format, args.limit)
    else:
        problems = make_split("test", args.n_per_family, args.difficulty, args.families, args.seed, strict=False)
    generate = load_generator(args.model, args.tokenizer, args.device, args.sampler)
    res = evaluate(generate, problems, k=args.k, temperature=args.temperature, top_p=args.top_p,
                   max_tokens=args.max_tokens, template=args.template, greedy=not args.no_greedy,
                   tokenizer=generate.tokenizer, seed=args.seed)
    print(res.table())
    records = [dataclasses.asdict(r) for r in res.records]
    if args.out:  # outputs first: a baseline that does not match loses nothing
        write_json_atomic(Path(args.out), res.summary())
        print(f"wrote {args.out}")
    if args.records:
        write_jsonl_atomic(records, args.records)
        print(f"wrote {args.records}")
    if baseline is not None:
        gaps = compare(records, baseline)
        if gaps["pass@1"][2] == 0:
            print(f"error: {args.baseline} shares no problem with this evaluation (other split, seed, families or "
                  f"benchmark?)")
            return 2
        print(f"vs baseline {args.baseline}:")
        for metric, (d, se, n) in gaps.items():
            print(f"  {metric:<8} {describe(d, se, n)}")
    return 0
