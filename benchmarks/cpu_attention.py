"""CPU training step with MLA attention on the flash kernel (V zero-padded to the query width, ``mla.sdpa``) vs the
plain SDPA call that falls back to the math path (the peer: our model before the seventeenth session).

A model preset (default cpu-demo, the speedrun's) trains on random tokens packed as documents of 20-220 tokens (the
corpus's range) with the document mask, forward + backward + clip + AdamW, at the sequence lengths of the speedrun's
pretraining (256) and SFT (384) stages. The two arms alternate round by round in one process (this sandbox's speed
drifts by 10-20 % within minutes); one JSON line per (length, arm) with the median step seconds and tokens/s, the
ratio to the peer, and the largest difference of the first step's loss and gradients between the arms.

Usage:  python benchmarks/cpu_attention.py [--preset cpu-demo] [--seq-lens 256,384] [--rounds 6] [--profile]
Smoke:  python benchmarks/cpu_attention.py --preset tiny --seq-lens 64 --rounds 1 --steps 1 --micro-batch 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from r1lab.model import DeepSeekV3Config, DeepSeekV3ForCausalLM  # noqa: E402
from r1lab.model import mla  # noqa: E402

PADDED = mla.sdpa


def unpadded(q, k, v, mask, scale):
    """The SDPA call as it was: on the CPU, V narrower than Q/K sends it to the math path."""
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def packed_batch(b: int, t: int, vocab: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    doc_ids = torch.zeros(b, t, dtype=torch.long)
    for row in range(b):
        start, d = 0, 1
        while start < t:
            n = min(t - start, int(torch.randint(20, 221, (1,), generator=gen)))
            doc_ids[row, start:start + n] = d
            start, d = start + n, d + 1
    ids = torch.randint(0, vocab, (b, t), generator=gen)
    return {"input_ids": ids, "labels": ids, "doc_ids": doc_ids}


def op_shares(step, n_steps: int = 3, top: int = 12) -> dict[str, float]:
    """Share of self CPU time per aten op over ``n_steps`` calls of ``step`` (the ``top`` largest)."""
    from torch.profiler import profile

    with profile() as prof:
        for _ in range(n_steps):
            step()
    rows = [(e.key, e.self_cpu_time_total) for e in prof.key_averages()]
    total = sum(t for _, t in rows) or 1.0
    return {k: round(t / total, 3) for k, t in sorted(rows, key=lambda r: -r[1])[:top]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu-demo")
    ap.add_argument("--seq-lens", default="256,384")
    ap.add_argument("--micro-batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per arm per round")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--profile", action="store_true",
                    help="also print, per arm, torch.profiler's share of each op in 3 steps (the breakdown quoted in "
                         "docs/benchmarks.md, seventeenth session)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    arms = {"math (peer)": unpadded, "flash, V padded": PADDED}
    for t in (int(x) for x in args.seq_lens.split(",")):
        cfg = DeepSeekV3Config.from_preset(args.preset).replace(max_position_embeddings=max(t, 512))
        torch.manual_seed(0)
        model = DeepSeekV3ForCausalLM(cfg)
        init = {k: v.clone() for k, v in model.state_dict().items()}
        batch = packed_batch(args.micro_batch, t, cfg.vocab_size, torch.Generator().manual_seed(t))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def step(first: bool = False):
            o = model(**batch)
            loss = o.loss + 0.3 * (o.mtp_loss if o.mtp_loss is not None else 0) + 1e-4 * o.balance_loss
            loss.backward()
            if first:  # the arms' agreement, before any update
                return float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return None

        first = {}
        for name, fn in arms.items():
            mla.sdpa = fn
            model.load_state_dict(init)
            model.zero_grad(set_to_none=True)
            first[name] = step(first=True)
            model.zero_grad(set_to_none=True)
        (l0, g0), (l1, g1) = first.values()
        grad_diff = max(float((g0[n] - g1[n]).abs().max()) for n in g0)
        times: dict[str, list[float]] = {name: [] for name in arms}
        step()  # warm-up
        for _ in range(args.rounds):
            for name, fn in arms.items():
                mla.sdpa = fn
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    step()
                times[name].append((time.perf_counter() - t0) / args.steps)
        if args.profile:
            for name, fn in arms.items():
                mla.sdpa = fn
                print(json.dumps({"bench": "cpu_attention_profile", "seq_len": t, "arm": name,
                                  "self_cpu_share": op_shares(step)}), flush=True)
        mla.sdpa = PADDED
        peer = statistics.median(times["math (peer)"])
        for name, ts in times.items():
            med = statistics.median(ts)
            print(json.dumps({"bench": "cpu_attention", "preset": args.preset, "seq_len": t, "micro_batch": args.micro_batch,
                              "arm": name, "threads": torch.get_num_threads(), "step_s_median": round(med, 4),
                              "step_s": [round(x, 4) for x in ts], "tok_s": round(args.micro_batch * t / med),
                              "ratio_speed_vs_peer": round(peer / med, 3), "first_loss_diff": abs(l0 - l1),
                              "first_grad_max_diff": grad_diff}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
