"""Generate completions for a JSONL file of prompts with the inference engine (``r1lab.engine.LLM``).

Input rows: {"prompt": "..."} (other fields are passed through). Output rows: the input row plus "prompt_text" (after
the template), "completions" (n texts), "finish_reasons", "num_tokens"; written to a temporary file and renamed.
Templates: r1-zero (the R1-Zero training template, R1 paper Table 1), r1 (the tokenizer's chat template with the
forced "<think>\\n" opening), none (the prompt as is).

Examples:
  r1lab generate --model runs/demo/model --prompts prompts.jsonl --out out.jsonl -n 4 --temperature 0.7
  r1lab generate --model runs/demo/model --prompts p.jsonl --out o.jsonl --template none --max-tokens 64 --mtp
"""

from __future__ import annotations

NAME = "generate"
HELP = "sample completions for a JSONL file of prompts (vLLM-like engine)"

import sys
from pathlib import Path

from ..data.stream import CorpusError, iter_json_objects, write_jsonl_atomic
from ..data.templates import r1_chat_prompt, r1_zero_prompt


def add_arguments(p) -> None:
    p.add_argument("--model", required=True, help="model directory (ours, or any local transformers causal LM)")
    p.add_argument("--tokenizer", help="tokenizer directory (default: the model directory)")
    p.add_argument("--prompts", required=True, help="JSONL file with one {\"prompt\": ...} object per line")
    p.add_argument("--out", required=True, help="output JSONL file (written atomically)")
    p.add_argument("-n", type=int, default=1, help="completions per prompt (default 1)")
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy (default 1.0)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1.0 = off)")
    p.add_argument("--top-k", type=int, default=0, help="top-k sampling (default 0 = off)")
    p.add_argument("--max-tokens", type=int, default=256, help="new tokens per completion (default 256)")
    p.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default: random)")
    p.add_argument("--template", choices=["r1-zero", "r1", "none"], default="r1-zero",
                   help="prompt template (default r1-zero)")
    p.add_argument("--max-batch-size", type=int, default=64, help="sequences decoded together (default 64)")
    p.add_argument("--max-model-len", type=int, default=None,
                   help="context length (default: the model's, ≤ 8192; more than the model's is an error)")
    p.add_argument("--mtp", action="store_true", help="MTP speculative decoding (DeepSeek-V3 models with MTP)")
    p.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    p.add_argument("--compile", action="store_true", help="torch.compile the decode step (CUDA graphs; CUDA only)")


def read_prompts(path: str | Path) -> list[dict]:
    """Rows of a JSONL prompt file; errors name file:line."""
    rows = []
    for row, lineno in iter_json_objects(path):
        if not isinstance(row.get("prompt"), str):
            raise CorpusError(path, lineno, 'expected an object with a string field "prompt"')
        rows.append(row)
    if not rows:
        raise CorpusError(path, 0, "no prompts")
    return rows


def apply_template(name: str, question: str, tokenizer) -> str:
    if name == "r1-zero":
        return r1_zero_prompt(question)
    if name == "r1":
        return r1_chat_prompt(question, tokenizer)
    return question


def main(args) -> int:
    from ..engine import LLM, ContextLengthError, SamplingParams

    try:
        rows = read_prompts(args.prompts)
        params = SamplingParams(n=args.n, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                                max_tokens=args.max_tokens, stop=args.stop, seed=args.seed)
    except (CorpusError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        llm = LLM(args.model, tokenizer=args.tokenizer, speculative_mtp=args.mtp, max_batch_size=args.max_batch_size,
                  max_model_len=args.max_model_len, device=args.device, compile=args.compile)
    except ContextLengthError as err:  # --max-model-len beyond the model's context
        print(f"error: --max-model-len: {err}", file=sys.stderr)
        return 2
    if llm.tokenizer is None:
        print(f"error: {args.model} has no tokenizer files; pass --tokenizer DIR", file=sys.stderr)
        return 2
    texts = [apply_template(args.template, r["prompt"], llm.tokenizer) for r in rows]
    try:
        outs = llm.generate(texts, params, use_tqdm=True)
    except ValueError as err:
        print(f"error: {args.prompts}: {err}", file=sys.stderr)
        return 2
    result = [{**row, "prompt_text": text, "completions": [c.text for c in out.outputs],
               "finish_reasons": [c.finish_reason for c in out.outputs],
               "num_tokens": [len(c.token_ids) for c in out.outputs]}
              for row, text, out in zip(rows, texts, outs)]
    write_jsonl_atomic(result, args.out)
    s = llm.stats
    extra = f", acceptance {s.acceptance_rate:.2f}, mean accepted length {s.mean_accepted_length:.2f}" \
        if s.acceptance_rate is not None else ""
    print(f"wrote {len(result)} rows to {args.out}: {s.tokens_generated} tokens in {s.seconds:.2f} s "
          f"({s.tokens_per_second:.1f} tokens/s{extra})")
    return 0
