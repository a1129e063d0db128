"""GRPO training forward + backward: shared-prefix rows (r1lab/rl/shared_prefix.py) vs the padded
[prompt | completion] rows every peer uses (TRL, and our reference path rl/logprobs.py), on the same model and batch.

The batch imitates a GRPO step under the R1-Zero template: B prompts of ~100 tokens, G completions each with lengths
drawn from 0.2-1.0 × max_new_tokens (the width padded rows are padded to). Prints one JSON line: seconds per update
for each layout, tokens each processes, the speed ratio, and the largest log-prob difference between the layouts.

    python benchmarks/shared_prefix.py                                   # cpu-demo preset, random weights, CPU
    python benchmarks/shared_prefix.py --model runs/speedrun/pretrain/model --device cuda --dtype amp
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="", help="checkpoint directory (default: the cpu-demo preset, random weights)")
    ap.add_argument("--preset", default="cpu-demo")
    ap.add_argument("--arch", default="deepseek", choices=["deepseek", "qwen2"],
                    help="without --model: our preset, or a transformers Qwen2 of the same width and depth")
    ap.add_argument("--prompts", type=int, default=8, help="B")
    ap.add_argument("--group-size", type=int, default=16, help="G")
    ap.add_argument("--prompt-len", type=int, default=100)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--micro-batch", type=int, default=32, help="completions per forward (both layouts; GRPO's default)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "amp"],
                    help="amp = fp32 weights + bf16 autocast (GRPO's default on CUDA)")
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    import torch

    from r1lab.model import DeepSeekV3Config, DeepSeekV3ForCausalLM
    from r1lab.rl.rollout import RolloutBatch, collate
    from r1lab.rl.sampler import Sample
    from r1lab.rl.shared_prefix import ROW_FACTOR, pack_groups
    from r1lab.rl.update import rows_logprobs

    if a.threads:
        torch.set_num_threads(a.threads)
    from r1lab.train.models import resolve_precision

    precision = resolve_precision(a.dtype, torch.device(a.device))
    dtype, amp = precision.param_dtype, precision.autocast(a.device)
    torch.manual_seed(0)
    if a.model:
        from r1lab.train.models import load_causal_lm

        model = load_causal_lm(a.model, a.device, dtype)
    elif a.arch == "qwen2":
        import transformers

        c = DeepSeekV3Config.from_preset(a.preset)
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
            vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
            num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
            num_key_value_heads=c.num_attention_heads)).to(device=a.device, dtype=dtype)
    else:
        model = DeepSeekV3ForCausalLM(DeepSeekV3Config.from_preset(a.preset)).to(device=a.device, dtype=dtype)
    model.train()
    V = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, V, (a.prompt_len - int(torch.randint(0, 10, (1,), generator=g)),), generator=g).tolist()
               for _ in range(a.prompts)]
    lo = max(1, a.max_new_tokens // 5)
    lengths = torch.randint(lo, a.max_new_tokens + 1, (a.prompts, a.group_size), generator=g).tolist()
    samples = [[Sample(torch.randint(3, V, (n,), generator=g).tolist(), [0.0] * n, "stop") for n in row]
               for row in lengths]
    t = collate(prompts, samples, pad_id=0)
    N = a.prompts * a.group_size
    batch = RolloutBatch(rewards_NK=torch.zeros(N, 1), reward_names=["accuracy"], rewards_N=torch.zeros(N),
                         group_size=a.group_size, **t)
    mask = batch.completion_mask_NT.bool().to(a.device)

    def update(shared: bool) -> torch.Tensor:
        logps = []
        for lo_ in range(0, N, a.micro_batch):
            with amp:
                lp = rows_logprobs(model, batch, lo_, min(lo_ + a.micro_batch, N), shared).logp_NT
            lp.sum().backward()
            logps.append(lp.detach())
        model.zero_grad(set_to_none=True)
        return torch.cat(logps)

    def timed(shared: bool) -> tuple[float, torch.Tensor]:
        out = update(shared)  # warm-up
        times = []
        for _ in range(a.repeats):
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            update(shared)
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        return sorted(times)[len(times) // 2], out

    padded_s, ref = timed(False)
    shared_s, got = timed(True)
    shared_tokens = sum(int((pack_groups(batch.input_ids_NS[i:i + a.micro_batch],
                                         batch.attention_mask_NS[i:i + a.micro_batch],
                                         batch.completion_mask_NT[i:i + a.micro_batch],
                                         batch.group_ids_N[i:i + a.micro_batch],
                                         max_row_len=ROW_FACTOR * batch.input_ids_NS.shape[1]).seg_RL != 0).sum())
                        for i in range(0, N, a.micro_batch))
    print(json.dumps({
        "bench": "grpo_training_forward_backward", "device": a.device, "dtype": a.dtype,
        "model": a.model or f"{a.preset} ({a.arch})", "B": a.prompts, "G": a.group_size, "micro_batch": a.micro_batch,
        "tokens_padded": int(batch.input_ids_NS.numel()),
        "tokens_shared": shared_tokens,
        "padded_s": round(padded_s, 4), "shared_prefix_s": round(shared_s, 4),
        "speedup_vs_padded": round(padded_s / shared_s, 3),
        "max_abs_logprob_diff": float((got - ref).abs()[mask].max()),
    }))


if __name__ == "__main__":
    main()
