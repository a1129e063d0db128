"""Rejection sampling (DeepSeek-R1 §2.3.3): k samples per prompt from a model, keep the correct ones (task rule
checkers), drop mixed-language, over-long and repetitive ones, dedupe, and write an SFT JSONL {prompt, response, ...}.
Prints the statistics (kept / dropped by reason).

Example:
  r1lab sample --model runs/speedrun/r1-reasoning-rl/final --out data/rs.jsonl --k 8 --n-per-family 100
"""

from __future__ import annotations

NAME = "sample"
HELP = "rejection sampling: k samples per prompt, keep correct/readable ones, write SFT JSONL"


def add_arguments(p) -> None:
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--out", required=True, help="output JSONL (written atomically)")
    p.add_argument("--tasks", default=None, help="JSONL task file (default: built-in train split)")
    p.add_argument("--n-per-family", type=int, default=50)
    p.add_argument("--families", nargs="*", default=None)
    p.add_argument("--difficulty", type=int, default=1)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--max-response-tokens", type=int, default=None, help="drop longer responses (default max-tokens)")
    p.add_argument("--max-repetition", type=float, default=0.5, help="drop at this 4-gram repetition ratio or above")
    p.add_argument("--max-per-prompt", type=int, default=None)
    p.add_argument("--template", default="r1", choices=["r1", "r1-zero", "plain"])
    p.add_argument("--no-format-check", action="store_true")
    p.add_argument("--judge", default=None, help="'pkg.module:fn' called as fn(response, problem) -> bool, replacing "
                   "the rule checkers (e.g. a model judge that reads problem.answer)")
    p.add_argument("--sampler", default="auto", choices=["auto", "engine", "naive"])
    p.add_argument("--seed", type=int, default=0)


def main(args) -> int:
    from r1lab.pipeline.generation import load_generator
    from r1lab.pipeline.sample import rejection_sample
    from r1lab.tasks import load_tasks_jsonl, make_split

    if args.tasks:
        problems = load_tasks_jsonl(args.tasks)
    else:
        problems = make_split("train", args.n_per_family, args.difficulty, args.families, args.seed, strict=False)
    judge = None
    if args.judge:
        from r1lab.rl.rollout import load_user_reward

        judge = load_user_reward(args.judge)
    generate = load_generator(args.model, sampler=args.sampler)
    rejection_sample(generate, problems, args.out, k=args.k, temperature=args.temperature, top_p=args.top_p,
                     max_tokens=args.max_tokens, style=args.template, tokenizer=generate.tokenizer,
                     max_response_tokens=args.max_response_tokens, max_repetition=args.max_repetition,
                     require_format=not args.no_format_check, judge=judge, max_per_prompt=args.max_per_prompt, seed=args.seed)
    print(f"wrote {args.out}")
    return 0
