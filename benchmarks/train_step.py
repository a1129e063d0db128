"""Training-step throughput: r1lab's DeepSeekV3ForCausalLM vs transformers' DeepseekV3ForCausalLM, same config and
same weights (ours saved with save_pretrained, loaded by transformers), forward + backward + AdamW, in one run.

Default config = the notes' "Peer baseline" (hidden 1024, 12 layers, 16 heads, q_lora 384, kv_lora 256, 64 routed
experts top-6, 8 groups / 4 kept, 1 shared, moe_inter 512, first layer dense, vocab 32000; head dims 64/32/64 and a
2048-wide dense FFN, which give the quoted 1.23B parameters), batch 8 × 1024, bf16 weights + AdamW. MTP is disabled
for the comparison (transformers has none); our step includes the balance loss. MFU counts active parameters
(``model_stats``) against the device's dense bf16 peak (``r1lab.train.metrics.PEAK_TFLOPS``, or ``--peak-tflops``).

One JSON line per measurement, plus a final line with the ratio ours / transformers.

GPU:        python3 benchmarks/train_step.py [--compile]
CPU smoke:  python3 benchmarks/train_step.py --device cpu --preset tiny
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

PEER = {"vocab_size": 32000, "hidden_size": 1024, "num_hidden_layers": 12, "num_attention_heads": 16, "q_lora_rank": 384,
            "kv_lora_rank": 256, "qk_nope_head_dim": 64, "qk_rope_head_dim": 32, "v_head_dim": 64, "intermediate_size": 2048,
            "n_routed_experts": 64, "num_experts_per_tok": 6, "n_group": 8, "topk_group": 4, "n_shared_experts": 1,
            "moe_intermediate_size": 512, "first_k_dense_replace": 1, "routed_scaling_factor": 2.5,
            "max_position_embeddings": 4096, "rope_parameters": {"rope_type": "default"}}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(name: str, step, device: torch.device, tokens: int, warmup: int, steps: int) -> dict:
    for _ in range(warmup):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    _sync(device)
    dt = time.perf_counter() - t0
    row = {"impl": name, "tokens_per_s": tokens * steps / dt, "step_s": dt / steps, "loss": float(loss)}
    if device.type == "cuda":
        row["peak_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--preset", default="peer", help="'peer' (the notes' baseline) or an r1lab preset name")
    ap.add_argument("--batch", type=int, default=None, help="default 8 (GPU) / 2 (CPU)")
    ap.add_argument("--seq", type=int, default=None, help="default 1024 (GPU) / 64 (CPU)")
    ap.add_argument("--dtype", default=None, choices=["bf16", "fp32"], help="default bf16 (GPU) / fp32 (CPU)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="torch.compile both models")
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--skip-hf", action="store_true")
    args = ap.parse_args()

    from r1lab.model import DeepSeekV3Config, DeepSeekV3ForCausalLM, model_stats
    from r1lab.train.metrics import mfu, peak_flops

    device = torch.device(args.device)
    cpu = device.type == "cpu"
    if cpu and args.preset == "peer":
        args.preset = "tiny"
    args.batch = args.batch or (2 if cpu else 8)
    args.seq = args.seq or (64 if cpu else 1024)
    args.dtype = args.dtype or ("fp32" if cpu else "bf16")
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    config = DeepSeekV3Config(**PEER) if args.preset == "peer" else DeepSeekV3Config.from_preset(args.preset)
    config = config.replace(num_nextn_predict_layers=0)
    stats = model_stats(config, seq_len=args.seq)
    peak = peak_flops(device, "bf16", args.peak_tflops)
    tokens = args.batch * args.seq
    torch.manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (args.batch, args.seq), device=device)

    ours = DeepSeekV3ForCausalLM(config).to(device=device, dtype=dtype)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        ours.save_pretrained(tmp)
        hf = None
        if not args.skip_hf:
            from transformers import AutoModelForCausalLM

            hf = AutoModelForCausalLM.from_pretrained(tmp, dtype=dtype).to(device)
    models = [("r1lab", ours)] + ([("transformers", hf)] if hf is not None else [])
    for name, model in models:
        model.train()
        fwd = torch.compile(model) if args.compile else model
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1,
                                **({"fused": True} if device.type == "cuda" else {}))

        def step(fwd=fwd, opt=opt, name=name, model=model):
            out = fwd(ids, labels=ids)
            loss = out.total_loss(0.0, config.aux_loss_alpha) if name == "r1lab" else out.loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if name == "r1lab":
                model.update_expert_bias(0.001)
            return loss.detach()

        row = measure(name, step, device, tokens, args.warmup, args.steps)
        row.update({"bench": "train_step", "device": torch.cuda.get_device_name(device) if device.type == "cuda"
                    else "cpu", "preset": args.preset, "batch": args.batch, "seq": args.seq, "dtype": args.dtype,
                    "compile": args.compile, "active_params": stats.active_params,
                    "mfu": mfu(row["tokens_per_s"], stats.flops_per_token_train, peak), "peak_tflops": peak / 1e12})
        results.append(row)
        print(json.dumps(row), flush=True)
        del opt
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if len(results) == 2:
        print(json.dumps({"bench": "train_step", "ratio_r1lab_over_transformers":
                          results[0]["tokens_per_s"] / results[1]["tokens_per_s"],
                          "r1lab_tokens_per_s": results[0]["tokens_per_s"],
                          "transformers_tokens_per_s": results[1]["tokens_per_s"]}))


if __name__ == "__main__":
    main()
