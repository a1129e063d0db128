"""Where the time goes: torch.profiler tables of (1) one training step of the peer-baseline model (eager, bf16,
8 × 1024) and (2) 32 compiled decode steps at batch 32 — the two places the GPU benchmarks are furthest from their
targets. Prints the top kernels by device time and the top CPU-side ops, then one JSON summary line.

    python benchmarks/profile_gpu.py [--what train decode] [--rows 25]
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

# benchmarks/ is on sys.path when this file runs as a script
from generate import build_config
from torch.profiler import ProfilerActivity, profile
from train_step import PEER


def table(prof, key: str, rows: int) -> str:
    return prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=70)


def profile_train(rows: int) -> dict:
    from r1lab.model import DeepSeekV3Config, DeepSeekV3ForCausalLM

    cfg = DeepSeekV3Config(**PEER).replace(num_nextn_predict_layers=0)
    model = DeepSeekV3ForCausalLM(cfg).cuda().to(torch.bfloat16).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    ids = torch.randint(0, cfg.vocab_size, (8, 1024), device="cuda")

    def step():
        out = model(ids, labels=ids)
        out.total_loss(0.0, cfg.aux_loss_alpha).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        model.update_expert_bias(0.001)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    print("### train step: top device time\n" + table(prof, "cuda_time_total", rows))
    print("### train step: top CPU self time\n" + table(prof, "self_cpu_time_total", rows))
    ev = prof.key_averages()
    return {"part": "train", "device_ms": sum(e.self_device_time_total for e in ev) / 1e3,
            "cpu_ms": sum(e.self_cpu_time_total for e in ev) / 1e3,
            "kernels": sum(e.count for e in ev if e.device_type == torch.autograd.DeviceType.CUDA)}


def profile_decode(rows: int) -> dict:
    from r1lab.engine import LLM, SamplingParams
    from r1lab.model import DeepSeekV3ForCausalLM

    cfg = build_config("peer")
    model = DeepSeekV3ForCausalLM(cfg).cuda().to(torch.bfloat16).eval()
    llm = LLM(model, max_batch_size=32, max_model_len=200, device="cuda", compile=True, seed=0)
    prompts = torch.randint(2, cfg.vocab_size, (32, 128)).tolist()
    sp = SamplingParams(temperature=1.0, max_tokens=32, stop_token_ids=[], seed=None)
    llm.generate(prompt_token_ids=prompts, sampling_params=sp)  # record the CUDA graphs
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        llm.generate(prompt_token_ids=prompts, sampling_params=sp)
        torch.cuda.synchronize()
    print("### decode b32 (compiled): top device time\n" + table(prof, "cuda_time_total", rows))
    print("### decode b32 (compiled): top CPU self time\n" + table(prof, "self_cpu_time_total", rows))
    ev = prof.key_averages()
    return {"part": "decode", "device_ms": sum(e.self_device_time_total for e in ev) / 1e3,
            "cpu_ms": sum(e.self_cpu_time_total for e in ev) / 1e3, "seconds": llm.stats.seconds}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--what", nargs="+", default=["train", "decode"], choices=["train", "decode"])
    ap.add_argument("--rows", type=int, default=25)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print(json.dumps({"bench": "profile_gpu", "skipped": "needs CUDA"}))
        return 0
    for what in a.what:
        res = profile_train(a.rows) if what == "train" else profile_decode(a.rows)
        print(json.dumps({"bench": "profile_gpu", **res}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
