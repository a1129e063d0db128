"""Model demo: build the cpu-demo preset, train it briefly on a synthetic copy task with MTP and aux-loss-free
balancing, save it in HF format, reload it in r1lab and in transformers, and compare logits.

This is the quick check that the model is healthy on this machine; the full pipeline is ``r1lab speedrun``.
"""

from __future__ import annotations

NAME = "demo"
HELP = "model demo: train cpu-demo briefly, save, reload, compare with transformers"

import time
from pathlib import Path

import torch

from ..model import DeepSeekV3Config, DeepSeekV3ForCausalLM, format_stats, model_stats


def add_arguments(p) -> None:
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--steps", type=int, default=60, help="training steps (default 60)")
    p.add_argument("--seed", type=int, default=0)


def main(args) -> int:
    torch.manual_seed(args.seed)
    config = DeepSeekV3Config.from_preset("cpu-demo")
    print(format_stats(model_stats(config, seq_len=128), 128))
    model = DeepSeekV3ForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    for step in range(1, args.steps + 1):
        half = torch.randint(3, 64, (8, 32), generator=gen)
        ids = torch.cat([half, half], dim=1)  # second half copies the first: learnable with attention
        out = model(ids, labels=ids)
        loss = out.total_loss(config.mtp_loss_weight, config.aux_loss_alpha)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        load = model.update_expert_bias(1e-3)
        if step == 1 or step % 10 == 0:
            print(f"step {step:4d} | loss {out.loss.item():.4f} | mtp {out.mtp_loss.item():.4f} | "
                  f"balance {out.balance_loss.item():.4f} | load max/mean {load['load_max_over_mean']:.2f} | "
                  f"{(time.time() - t0):.1f}s")
    out_dir = Path(args.out) / "model"
    model.save_pretrained(out_dir)
    print(f"saved {out_dir}")
    model.eval()
    again = DeepSeekV3ForCausalLM.from_pretrained(out_dir).eval()
    ids = torch.randint(3, 64, (2, 48), generator=gen)
    with torch.no_grad():
        ours, reloaded = model(ids).logits, again(ids).logits
        print(f"reload max |Δlogits| = {(ours - reloaded).abs().max().item():.2e}")
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # transformers lists our MTP tensors as "unexpected": it drops MTP by design
        hf = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32).eval()
        diff = (hf(ids).logits - ours).abs().max().item()
    print(f"transformers AutoModelForCausalLM max |Δlogits| = {diff:.2e} ({'OK' if diff < 1e-4 else 'MISMATCH'})")
    return 0 if diff < 1e-4 else 1
