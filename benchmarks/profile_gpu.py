"""Where the time goes: torch.profiler tables of (1) one training step of the peer-baseline model (bf16, 8 × 1024;
eager, or compiled with ``train_compile``), (2) 32 compiled decode steps at batch 32 and (3) one FP8Linear forward +
backward at the V3 expert gate/up shape (4096 × 7168 → 4096) — where the GPU benchmarks are furthest from their
targets. Prints the top kernels by device time and the top CPU-side ops, then one JSON summary line per part.

    python benchmarks/profile_gpu.py [--what train decode train_compile fp8] [--rows 25]
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


def profiled(step, warmup: int = 3):
    """Run ``step`` ``warmup`` times, then once under the profiler (CPU + CUDA, synchronised); returns the profile."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    return prof


def table(prof, key: str, rows: int) -> str:
    return prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=70)


def profile_train(rows: int, compile: bool = False) -> dict:
    from r1lab.model import DeepSeekV3Config, DeepSeekV3ForCausalLM

    cfg = DeepSeekV3Config(**PEER).replace(num_nextn_predict_layers=0)
    model = DeepSeekV3ForCausalLM(cfg).cuda().to(torch.bfloat16).train()
    fwd = torch.compile(model) if compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    ids = torch.randint(0, cfg.vocab_size, (8, 1024), device="cuda")

    def step():
        out = fwd(ids, labels=ids)
        out.total_loss(0.0, cfg.aux_loss_alpha).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        model.update_expert_bias(0.001)

    prof = profiled(step)
    name = "train step (compiled)" if compile else "train step"
    print(f"### {name}: top device time\n" + table(prof, "cuda_time_total", rows))
    print(f"### {name}: top CPU self time\n" + table(prof, "self_cpu_time_total", rows))
    ev = prof.key_averages()
    return {"part": "train_compile" if compile else "train", "device_ms": sum(e.self_device_time_total for e in ev) / 1e3,
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
    # the warm-up run records the CUDA graphs
    prof = profiled(lambda: llm.generate(prompt_token_ids=prompts, sampling_params=sp), warmup=1)
    print("### decode b32 (compiled): top device time\n" + table(prof, "cuda_time_total", rows))
    print("### decode b32 (compiled): top CPU self time\n" + table(prof, "self_cpu_time_total", rows))
    ev = prof.key_averages()
    return {"part": "decode", "device_ms": sum(e.self_device_time_total for e in ev) / 1e3,
            "cpu_ms": sum(e.self_cpu_time_total for e in ev) / 1e3, "seconds": llm.stats.seconds}


def profile_fp8(rows: int) -> dict:
    from r1lab.fp8 import FP8Linear, convert_to_fp8

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(7168, 4096, bias=False))
    convert_to_fp8(net)
    net = net.cuda()  # the GEMM path is chosen when the weights land on the GPU
    layer = net[0]
    assert isinstance(layer, FP8Linear), "FP8 conversion skipped the layer"
    x = torch.randn(4096, 7168, device="cuda", dtype=torch.bfloat16, requires_grad=True)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            net(x).float().sum().backward()

    prof = profiled(step)
    print("### FP8Linear fwd+bwd 4096x7168->4096: top device time\n" + table(prof, "cuda_time_total", rows))
    ev = prof.key_averages()
    return {"part": "fp8", "gemm": layer.gemm.name,
            "device_ms": sum(e.self_device_time_total for e in ev) / 1e3}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--what", nargs="+", default=["train", "decode", "train_compile", "fp8"],
                    choices=["train", "decode", "train_compile", "fp8"])
    ap.add_argument("--rows", type=int, default=25)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print(json.dumps({"bench": "profile_gpu", "skipped": "needs CUDA"}))
        return 0
    for what in a.what:
        fn = {"train": profile_train, "decode": profile_decode, "fp8": profile_fp8,
              "train_compile": lambda rows: profile_train(rows, compile=True)}[what]
        res = fn(a.rows)
        print(json.dumps({"bench": "profile_gpu", **res}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
