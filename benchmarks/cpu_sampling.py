"""CPU sampling as the speedrun's evaluations do it: worker processes × cache slots, and where an evaluation's time
goes.

Part 1 (arms): one engine per "WORKERSxSLOTS" arm over the same problems (the built-in test split, R1-Zero template,
k samples at T 0.6 / top-p 0.95, seeded), arms alternated round by round in one process; one JSON line per arm with
the median seconds and the ratio to the first arm (the peer: one process, 64 slots — the engine before the sixteenth
session). Part 2 (``--eval``; ``--arms ""`` skips part 1): ``r1lab.pipeline.evaluate`` on the same problems with the
engine as the r1lab command sets it up (workers "auto" unless R1LAB_WORKERS says otherwise), split into generation
and scoring time (the rest: rule rewards, the code family's sandboxed runs).

Usage (the sixteenth session, docs/benchmarks.md):
  python benchmarks/cpu_sampling.py --model runs/speedrun/r1-zero/final --arms 1x64,1x256,1x512,2x128,2x256 --eval
  R1LAB_WORKERS=1 python benchmarks/cpu_sampling.py --model ... --arms "" --eval [--no-code-memo]   # scoring time
  python benchmarks/cpu_sampling.py --preset-tiny                  # smoke run on a random tiny model (tests)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FAMILIES = ["arithmetic", "countdown", "equations", "word", "arithmetic_zh", "word_zh", "code"]


def tiny_model_dir(out: Path) -> Path:
    """A random tiny DeepSeek-V3 model with a BPE tokenizer trained on a few task prompts (smoke runs)."""
    import torch

    from r1lab.data.tokenizer import load_tokenizer, train_tokenizer
    from r1lab.model import DeepSeekV3Config, DeepSeekV3ForCausalLM
    from r1lab.tasks import make_split

    texts = [p.prompt for p in make_split("train", 20, 1, FAMILIES, 0, strict=False)]
    train_tokenizer(texts, 400, out)
    tok = load_tokenizer(out)
    torch.manual_seed(0)
    cfg = DeepSeekV3Config.from_preset("tiny").replace(vocab_size=tok.vocab_size, max_position_embeddings=1024)
    DeepSeekV3ForCausalLM(cfg).save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model directory of ours (tokenizer inside)")
    ap.add_argument("--preset-tiny", action="store_true", help="a random tiny model instead (smoke run)")
    ap.add_argument("--arms", default="1x64,1x256,2x128",
                    help="WORKERSxSLOTS, comma-separated, the first is the peer; a trailing 'c' (e.g. 1x256c) "
                         "compiles the decode steps with inductor (torch.compile mode 'default': no CUDA graphs on a "
                         "CPU); every arm's first full call is timed apart as warmup_s (the compilation, if any)")
    ap.add_argument("--n-per-family", type=int, default=12)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=192)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--eval", action="store_true", help="also time evaluate(): generation vs scoring")
    ap.add_argument("--problems-per-call", type=int, default=None,
                    help="--eval: problems per generate call (default: the pipeline's PROBLEMS_PER_CALL)")
    ap.add_argument("--no-code-memo", action="store_true",
                    help="--eval: run every code test in the sandbox (the code reward before its memo)")
    args = ap.parse_args(argv)

    from r1lab.data.tokenizer import load_tokenizer
    from r1lab.engine import LLM, SamplingParams
    from r1lab.pipeline.generation import build_prompt, encode_prompt
    from r1lab.tasks import make_split

    tmp = tempfile.TemporaryDirectory()
    model = str(tiny_model_dir(Path(tmp.name)) if args.preset_tiny else args.model)
    tok = load_tokenizer(model)
    problems = make_split("test", args.n_per_family, 1, FAMILIES, 0, strict=False)
    ids = [encode_prompt(tok, build_prompt(p.prompt, "r1-zero")) for p in problems]
    sp = SamplingParams(n=args.k, temperature=0.6, top_p=0.95, max_tokens=args.max_tokens, seed=0)
    arms = [(int(a.split("x")[0]), int(a.split("x")[1].rstrip("c")), a.endswith("c"))
            for a in args.arms.split(",") if a]
    llms = {a: LLM(model, tokenizer=tok, device="cpu", workers=a[0], max_batch_size=a[1],
                   compile={"mode": "default"} if a[2] else False) for a in arms}
    warmup: dict = {}
    for a, llm in llms.items():  # warm: helpers started, replicas built, every shape of the timed call compiled
        t0 = time.perf_counter()
        llm.generate(prompt_token_ids=ids, sampling_params=sp)
        warmup[a] = time.perf_counter() - t0
    seconds: dict = {a: [] for a in arms}
    tokens: dict = {}
    for _ in range(args.rounds):
        for a, llm in llms.items():
            t0 = time.perf_counter()
            outs = llm.generate(prompt_token_ids=ids, sampling_params=sp)
            seconds[a].append(time.perf_counter() - t0)
            tokens[a] = [o.token_ids for r in outs for o in r.outputs]
    for a in arms:
        base = statistics.median(seconds[arms[0]])
        med = statistics.median(seconds[a])
        print(json.dumps({"bench": "cpu_sampling", "date": time.strftime("%Y-%m-%d"), "model": model,
                          "problems": len(ids), "k": args.k, "workers": llms[a].workers, "slots": a[1],
                          "compiled": llms[a]._runner.compiled, "warmup_s": round(warmup[a], 2),
                          "seconds_median": round(med, 2), "seconds": [round(x, 2) for x in seconds[a]],
                          "tokens": sum(map(len, tokens[a])), "same_tokens_as_peer": tokens[a] == tokens[arms[0]],
                          "peer": args.arms.split(",")[0],
                          "ratio": round(base / med, 2)}), flush=True)
    if args.eval:
        from r1lab.pipeline.evaluate import evaluate
        from r1lab.pipeline.generation import load_generator

        if args.no_code_memo:
            import r1lab.rewards.code as code

            code._run_test_memo = code._run_test_memo.__wrapped__
        os.environ.setdefault("R1LAB_WORKERS", "auto")  # as the r1lab command (and so the speedrun) runs it
        generate = load_generator(model, device="cpu")
        spent = []

        def timed(prompts, sampling):
            t0 = time.perf_counter()
            out = generate(prompts, sampling)
            spent.append(time.perf_counter() - t0)
            return out

        t0 = time.perf_counter()
        per_call = {"batch_size": args.problems_per_call} if args.problems_per_call else {}
        res = evaluate(timed, problems, k=args.k, max_tokens=args.max_tokens, tokenizer=tok, progress=False,
                       **per_call)
        total = time.perf_counter() - t0
        print(json.dumps({"bench": "cpu_sampling_eval", "date": time.strftime("%Y-%m-%d"), "model": model,
                          "problems": len(problems), "k": args.k, "seconds": round(total, 2),
                          "workers": os.environ["R1LAB_WORKERS"], "code_memo": not args.no_code_memo,
                          "generate_s": round(sum(spent), 2), "scoring_s": round(total - sum(spent), 2),
                          "pass@1": res.pass_at_1}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
