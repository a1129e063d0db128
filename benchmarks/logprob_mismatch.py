"""Engine vs trainer log-probs of the same sampled tokens: mean |log p_engine − log p_trainer| per token.

The engine decodes with the absorbed MLA path over the latent cache (``r1lab.engine``, compiled into CUDA graphs on a
GPU with ``--compile``); the trainer scores the finished sequences with the model's naive full forward
(``r1lab.rl.logprobs.completion_logprobs``). In fp32 the two agree to ~1e-6; in bf16 they differ by rounding, which
grows with depth. GRPO logs the same number as ``logprob_mismatch`` (and uses the trainer's log-probs for π_old by
default). A compiled GPU run whose mismatch equals the eager bf16 one is evidence that the CUDA-graph decode is right.

    python benchmarks/logprob_mismatch.py --layers 12 --dtype bf16            # CPU
    python benchmarks/logprob_mismatch.py --device cuda --compile             # GPU, CUDA graphs
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

# benchmarks/ is on sys.path when this file runs as a script
from train_step import PEER


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=12, help="layers of the train_step peer shape (vocab 2,000)")
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=40)
    ap.add_argument("--new-tokens", type=int, default=48)
    a = ap.parse_args(argv)

    from r1lab.engine import LLM, SamplingParams
    from r1lab.model import DeepSeekV3Config, DeepSeekV3ForCausalLM
    from r1lab.rl.logprobs import completion_logprobs

    torch.manual_seed(0)
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    cfg = DeepSeekV3Config(**{**PEER, "vocab_size": 2000, "num_hidden_layers": a.layers})
    model = DeepSeekV3ForCausalLM(cfg).to(device=a.device, dtype=dtype).eval()
    llm = LLM(model, max_batch_size=a.rows, max_model_len=a.prompt_len + a.new_tokens + 8, device=a.device,
              compile=a.compile, seed=0)
    prompts = torch.randint(2, cfg.vocab_size, (a.rows, a.prompt_len)).tolist()
    outs = llm.generate(prompt_token_ids=prompts,
                        sampling_params=SamplingParams(temperature=1.0, max_tokens=a.new_tokens, stop_token_ids=[]))
    ids = torch.tensor([p + list(o.outputs[0].token_ids) for p, o in zip(prompts, outs, strict=True)],
                       device=a.device)
    engine_NT = torch.tensor([list(o.outputs[0].logprobs) for o in outs], device=a.device)
    with torch.no_grad():
        trainer_NT = completion_logprobs(model, ids, torch.ones_like(ids), a.new_tokens).logp_NT
    diff = (trainer_NT - engine_NT).abs()
    print(json.dumps({"bench": "logprob_mismatch", "device": a.device, "dtype": a.dtype, "layers": a.layers,
                      "compile": a.compile, "mean_abs_diff": float(diff.mean()), "max_abs_diff": float(diff.max()),
                      "mean_logp": float(engine_NT.mean())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
