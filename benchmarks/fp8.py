"""Benchmark: fine-grained FP8 (r1lab.fp8, DeepSeek-V3 report §3.3) vs BF16 on one GPU. One JSON line per result.

1. Linear forward+backward TFLOP/s (3 GEMMs: fprop, dgrad, wgrad = 6·M·N·K FLOPs) at DeepSeek-V3 GEMM shapes,
   M = 4096 tokens: expert gate+up (7168 -> 2·2048), expert down (2048 -> 7168), q_a (7168 -> 1536),
   kv_a (7168 -> 576), q_b (1536 -> 24576). FP8 = FP8Linear (quantisation included) vs a BF16 nn.Linear, both
   with BF16 weights; also the bare FP8 fprop GEMM on pre-quantised operands (the ceiling the quantisation overhead eats into).
2. A training step (fwd + bwd + AdamW) of a small pre-norm transformer (hidden >= 4096, FP32 master weights, BF16
   autocast), BF16 vs the same model after convert_to_fp8, with the ratio.
3. Routed experts (r1lab.fp8_moe.FP8Experts vs the BF16 grouped-GEMM Experts): forward+backward TFLOP/s of one
   DeepSeekMoE expert stack (16 experts of V3's shape, hidden 7168, expert width 2048, 4096 tokens × top-4, uniform
   routing), quantisation included.
4. --loss-curve N: N steps of FP8 and BF16 from the same init on the same synthetic Markov-chain data; reports the
   max relative loss difference over the last min(100, N) steps (the report's < 0.25% claim, at toy scale).

Without CUDA, or without the blockwise FP8 fast path, it prints one JSON line with "skipped" and exits 0.
--smoke runs every code path on CPU at toy sizes with the reference GEMMs (numbers meaningless; for CI).
Usage on the GPU machine: python3 benchmarks/fp8.py [--loss-curve 300]
Legend: B batch, T sequence length, D hidden, H heads, V vocab.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from r1lab import fp8

V3_SHAPES = {  # name: (K in-features, N out-features)
    "expert_gate_up": (7168, 2 * 2048),
    "expert_down": (2048, 7168),
    "q_a": (7168, 1536),
    "kv_a": (7168, 576),
    "q_b": (1536, 24576),
}


def emit(**fields) -> None:
    fields.setdefault("bench", "fp8")
    print(json.dumps(fields), flush=True)


def timed(fn, device: torch.device, warmup: int, iters: int) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ------------------------------------------------------------------------------------------ 1. linear layers --
def bench_linear(name: str, M: int, K: int, N: int, device: torch.device, backend: str, reps: tuple[int, int],
                 meta: dict) -> None:
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(M, K, device=device, dtype=torch.bfloat16, generator=g).requires_grad_()
    dy = torch.randn(M, N, device=device, dtype=torch.bfloat16, generator=g)
    bf16 = nn.Linear(K, N, bias=False, device=device, dtype=torch.bfloat16)
    f8 = fp8.FP8Linear.from_linear(copy.deepcopy(bf16), backend=backend)

    def step(mod):
        def run():
            x.grad = None
            mod.weight.grad = None
            mod(x).backward(dy)
        return run

    t_bf16 = timed(step(bf16), device, *reps)
    t_fp8 = timed(step(f8), device, *reps)
    xq, wq = fp8._q(x.detach(), (1, 128)), fp8._q(f8.weight.detach(), (128, 128))
    t_gemm = timed(lambda: f8.gemm.fprop(xq, wq, torch.bfloat16), device, *reps)
    t_mm = timed(lambda: x.detach() @ bf16.weight.detach().t(), device, *reps)
    flops = 6 * M * N * K
    emit(kind="linear_fwd_bwd", shape=name, M=M, K=K, N=N, bf16_tflops=round(flops / t_bf16 / 1e12, 1),
         fp8_tflops=round(flops / t_fp8 / 1e12, 1), speedup=round(t_bf16 / t_fp8, 3),
         fprop_gemm_only_bf16_tflops=round(flops / 3 / t_mm / 1e12, 1),
         fprop_gemm_only_fp8_tflops=round(flops / 3 / t_gemm / 1e12, 1), **meta)


# -------------------------------------------------------------------------------------- 3. routed experts --
def bench_experts(E: int, D: int, I: int, M: int, top_k: int, device: torch.device, backend: str,
                  reps: tuple[int, int], meta: dict) -> None:
    from r1lab.fp8_moe import FP8Experts
    from r1lab.model import DeepSeekV3Config
    from r1lab.model.moe import Experts

    cfg = DeepSeekV3Config.from_preset("tiny").replace(hidden_size=D, moe_intermediate_size=I, n_routed_experts=E,
                                                       num_experts_per_tok=top_k, n_group=1, topk_group=1)
    bf16 = Experts(cfg).to(device=device, dtype=torch.bfloat16)
    with torch.no_grad():
        bf16.gate_up_proj.normal_(std=D**-0.5)
        bf16.down_proj.normal_(std=I**-0.5)
    f8 = FP8Experts.from_experts(copy.deepcopy(bf16), backend=backend)
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(M, D, device=device, dtype=torch.bfloat16, generator=g).requires_grad_()
    idx = torch.rand(M, E, device=device, generator=g).topk(top_k, dim=-1).indices
    w = torch.rand(M, top_k, device=device, generator=g)
    dy = torch.randn(M, D, device=device, dtype=torch.bfloat16, generator=g)

    def step(mod):
        def run():
            x.grad = mod.gate_up_proj.grad = mod.down_proj.grad = None
            mod(x, w, idx).backward(dy)
        return run

    t_bf16, t_fp8 = timed(step(bf16), device, *reps), timed(step(f8), device, *reps)
    flops = 6 * M * top_k * 3 * D * I
    emit(kind="experts_fwd_bwd", experts=E, hidden=D, expert_width=I, tokens=M, top_k=top_k,
         bf16_tflops=round(flops / t_bf16 / 1e12, 1), fp8_tflops=round(flops / t_fp8 / 1e12, 1),
         speedup=round(t_bf16 / t_fp8, 3), **meta)


# ----------------------------------------------------------------------------------- 2. small transformer --
class Block(nn.Module):
    def __init__(self, D: int, H: int, ffn: int) -> None:
        super().__init__()
        self.H = H
        self.attn_norm, self.mlp_norm = nn.RMSNorm(D), nn.RMSNorm(D)
        self.qkv, self.o = nn.Linear(D, 3 * D, bias=False), nn.Linear(D, D, bias=False)
        self.gate_up, self.down = nn.Linear(D, 2 * ffn, bias=False), nn.Linear(ffn, D, bias=False)

    def forward(self, h_BTD: torch.Tensor) -> torch.Tensor:
        B, T, D = h_BTD.shape
        q, k, v = self.qkv(self.attn_norm(h_BTD)).view(B, T, 3, self.H, D // self.H).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, D)
        h_BTD = h_BTD + self.o(a)
        gate, up = self.gate_up(self.mlp_norm(h_BTD)).chunk(2, dim=-1)
        return h_BTD + self.down(F.silu(gate) * up)


class TinyLM(nn.Module):
    """Pre-norm decoder (no RoPE: the benchmark is about GEMMs); embed/head/norms stay high precision."""

    def __init__(self, V: int, D: int, H: int, ffn: int, layers: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(V, D)
        self.layers = nn.ModuleList(Block(D, H, ffn) for _ in range(layers))
        self.norm, self.lm_head = nn.RMSNorm(D), nn.Linear(D, V, bias=False)

    def forward(self, ids_BT: torch.Tensor, labels_BT: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids_BT)
        for layer in self.layers:
            h = layer(h)
        logits = self.lm_head(self.norm(h)).float()
        return F.cross_entropy(logits.flatten(0, 1), labels_BT.flatten())


def markov_batches(V: int, B: int, T: int, steps: int, device: torch.device, seed: int = 0):
    """Synthetic but learnable data: a fixed sparse random bigram chain (4 successors per token)."""
    g = torch.Generator().manual_seed(seed)
    succ = torch.randint(0, V, (V, 4), generator=g)
    for _ in range(steps):
        ids = torch.empty(B, T + 1, dtype=torch.long)
        ids[:, 0] = torch.randint(0, V, (B,), generator=g)
        for t in range(T):
            ids[:, t + 1] = succ[ids[:, t], torch.randint(0, 4, (B,), generator=g)]
        ids = ids.to(device)
        yield ids[:, :-1], ids[:, 1:]


def make_models(args, device: torch.device, backend: str) -> tuple[nn.Module, nn.Module, list[str]]:
    torch.manual_seed(0)
    ref = TinyLM(args.vocab, args.hidden, args.heads, args.ffn, args.layers).to(device)
    f8_model = copy.deepcopy(ref)
    names = fp8.convert_to_fp8(f8_model, backend=backend)
    return ref, f8_model, names


def train_steps(model: nn.Module, batches, device: torch.device, lr: float = 3e-4):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)

    def step(ids, labels) -> float:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(ids, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return [step(i, l) for i, l in batches]


def bench_train_step(args, device, backend, reps, meta) -> None:
    ref, f8_model, names = make_models(args, device, backend)
    batch = next(markov_batches(args.vocab, args.batch, args.seq, 1, device))
    results = {}
    for label, model in (("bf16", ref), ("fp8", f8_model)):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def run(model=model, opt=opt):
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = model(*batch)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        results[label] = timed(run, device, *reps)
        del opt
    tokens = args.batch * args.seq
    n_params = sum(p.numel() for p in ref.parameters())
    emit(kind="train_step", hidden=args.hidden, layers=args.layers, ffn=args.ffn, params_m=round(n_params / 1e6),
         tokens=tokens, fp8_layers=len(names), bf16_ms=round(results["bf16"] * 1e3, 2),
         fp8_ms=round(results["fp8"] * 1e3, 2), bf16_tokens_per_s=round(tokens / results["bf16"]),
         fp8_tokens_per_s=round(tokens / results["fp8"]), speedup=round(results["bf16"] / results["fp8"], 3), **meta)


def bench_loss_curve(args, device, backend, meta) -> None:
    ref, f8_model, names = make_models(args, device, backend)
    curves = {}
    for label, model in (("bf16", ref), ("fp8", f8_model)):
        batches = markov_batches(args.vocab, args.batch, args.seq, args.loss_curve, device, seed=1)
        curves[label] = [float(v) for v in train_steps(model, batches, device)]
    tail = min(100, args.loss_curve)
    rel = [abs(a - b) / b for a, b in zip(curves["fp8"][-tail:], curves["bf16"][-tail:])]
    emit(kind="loss_curve", steps=args.loss_curve, hidden=args.hidden, layers=args.layers, fp8_layers=len(names),
         last_steps=tail, max_rel_loss_diff=round(max(rel), 5), mean_rel_loss_diff=round(sum(rel) / len(rel), 5),
         bf16_first=round(curves["bf16"][0], 4), bf16_last=round(curves["bf16"][-1], 4),
         fp8_last=round(curves["fp8"][-1], 4), finite=all(math.isfinite(v) for v in curves["fp8"]), **meta)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokens", type=int, default=4096, help="M of the linear-layer GEMMs")
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--ffn", type=int, default=11008)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=32768)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--loss-curve", type=int, default=0, metavar="N", help="also train N steps FP8 vs BF16")
    p.add_argument("--skip-linear", action="store_true")
    p.add_argument("--skip-train-step", action="store_true")
    p.add_argument("--skip-experts", action="store_true")
    p.add_argument("--smoke", action="store_true", help="CPU, toy sizes, reference GEMMs: exercise the code only")
    args = p.parse_args(argv)
    meta = {"torch": torch.__version__, "date": datetime.date.today().isoformat()}
    if args.smoke:
        device, backend, reps = torch.device("cpu"), "reference", (1, 2)
        args.tokens, args.hidden, args.ffn, args.heads, args.layers = 128, 256, 512, 4, 2
        args.vocab, args.batch, args.seq = 512, 2, 64
        shapes = {"toy": (256, 384)}
        experts = {"E": 4, "D": 256, "I": 128, "M": 64, "top_k": 2}
        meta["device"] = "cpu (smoke: reference GEMMs, timings meaningless)"
    else:
        if not torch.cuda.is_available():
            emit(kind="all", skipped=True, reason="CUDA not available", **meta)
            return 0
        device, backend, reps, shapes = torch.device("cuda"), "scaled_mm", (5, 20), V3_SHAPES
        experts = {"E": 16, "D": 7168, "I": 2048, "M": 4096, "top_k": 4}
        ok, reason = fp8.fp8_kernels.blockwise_fp8_status(device)
        meta["device"] = torch.cuda.get_device_name(device)
        if not ok:
            emit(kind="all", skipped=True, reason=f"no blockwise FP8 fast path: {reason}", **meta)
            return 0
    if not args.skip_linear:
        for name, (K, N) in shapes.items():
            bench_linear(name, args.tokens, K, N, device, backend, reps, meta)
    if not args.skip_experts:
        bench_experts(**experts, device=device, backend=backend, reps=reps, meta=meta)
    if not args.skip_train_step:
        bench_train_step(args, device, backend, (reps[0], max(reps[1] // 2, 2)), meta)
    if args.loss_curve:
        bench_loss_curve(args, device, backend, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
