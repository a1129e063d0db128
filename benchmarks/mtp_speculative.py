"""MTP speculative decoding on a *trained* model: acceptance rate and speed vs plain decoding, at batch 1.

DeepSeek-V3 reports 85-90 % acceptance of the second token predicted by its MTP module and 1.8× decoding speed.
``benchmarks/generate.py`` can only show the draft + verify overhead (random weights); this script loads a model that
was pretrained with MTP (e.g. the speedrun's ``pretrain/model`` or any ``r1lab pretrain`` output) and decodes the
built-in test problems in the pretraining frame ("Question: …\\nSolution:") one prompt at a time:
- greedy: plain vs speculative (k = 1..``--max-k`` drafts): outputs must be identical (checked), so the ratio is pure
  speed; acceptance = accepted drafts / proposed drafts;
- sampling at ``--temperature``: acceptance under the speculative-sampling rule (outputs differ by design).
The peer is our own plain decoding in the same run (ratio = speculative tokens/s ÷ plain tokens/s). One JSON line
per mode. On a GPU add ``--compile`` (CUDA graphs for both paths).

Usage:  python benchmarks/mtp_speculative.py --model RUN/pretrain/model [--n-prompts 24] [--max-tokens 96]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from r1lab.engine import LLM, SamplingParams
from r1lab.tasks import make_split


def run(llm: LLM, prompts: list[list[int]], sp: SamplingParams) -> tuple[list[list[int]], float, dict]:
    """Decodes the prompts one at a time (batch 1); returns outputs, tokens/s and summed draft counts."""
    llm.generate(prompt_token_ids=[prompts[0]], sampling_params=sp)  # warm-up (graphs, allocator)
    outs, tokens, seconds, proposed, accepted = [], 0, 0.0, 0, 0
    for p in prompts:
        if llm.device.type == "cuda":
            torch.cuda.synchronize(llm.device)
        t0 = time.perf_counter()
        out = llm.generate(prompt_token_ids=[p], sampling_params=sp)[0].outputs[0].token_ids
        if llm.device.type == "cuda":
            torch.cuda.synchronize(llm.device)
        seconds += time.perf_counter() - t0
        outs.append(list(out))
        tokens += len(out)
        proposed += llm.stats.drafts_proposed
        accepted += llm.stats.drafts_accepted
    return outs, tokens / seconds, {"proposed": proposed, "accepted": accepted, "tokens": tokens}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="r1lab model directory with MTP modules and its tokenizer")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n-prompts", type=int, default=4, help="test problems per family")
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--max-k", type=int, default=2, help="largest number of MTP drafts per step to measure")
    ap.add_argument("--temperature", type=float, default=0.6)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0 = torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    plain = LLM(args.model, max_batch_size=1, device=args.device, compile=args.compile, seed=0)
    if not plain.is_deepseek or not len(getattr(plain.model.model, "mtp", ())):
        raise SystemExit(f"{args.model}: the model has no MTP module to draft with")
    tok = plain.tokenizer
    problems = make_split("test", args.n_prompts)
    prompts = [tok.encode(f"Question: {p.prompt}\nSolution:", add_bos=True) for p in problems]
    base = {"bench": "mtp_speculative", "model": args.model, "device": str(plain.device), "prompts": len(prompts),
            "max_tokens": args.max_tokens, "compile": args.compile, "threads": torch.get_num_threads()}
    modes = [("greedy", SamplingParams(temperature=0.0, max_tokens=args.max_tokens)),
             (f"T={args.temperature}", SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens,
                                                      seed=0))]
    for mode, sp in modes:
        ref_out, ref_tps, _ = run(plain, prompts, sp)
        for k in range(1, args.max_k + 1):
            spec = LLM(plain.model, tokenizer=tok, speculative_mtp=True, num_speculative_tokens=k, max_batch_size=1,
                       device=args.device, compile=args.compile, seed=0)
            out, tps, counts = run(spec, prompts, sp)
            row = {**base, "mode": mode, "k": k, "tokens_per_s": round(tps, 1), "plain_tokens_per_s": round(ref_tps, 1),
                   "ratio": round(tps / ref_tps, 3),
                   "acceptance_rate": round(counts["accepted"] / max(counts["proposed"], 1), 4),
                   "tokens": counts["tokens"], "peer": "plain decoding (same engine)"}
            if mode == "greedy":
                row["identical_to_plain"] = out == ref_out
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
