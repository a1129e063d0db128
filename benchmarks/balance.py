"""Auxiliary-loss-free load balancing (DeepSeek-V3 §2.1.2): final expert-load max/mean (averaged over MoE layers) of a
run with bias updates (γ > 0, plus the tiny sequence-wise α term) vs the same run with γ = 0 and α = 0.

Both runs: same preset, corpus, seed and steps (``run_pretrain``, γ kept on to the end: gamma_zero_frac = 0). The load
is measured from the routed-token counts of the last ``--tail`` steps (averaged). Target: ≤ 1.3 with balancing.
Prints one JSON line per run and a summary line.

CPU smoke:  python3 benchmarks/balance.py --preset tiny --steps 100
cpu-demo:   python3 benchmarks/balance.py --preset cpu-demo --steps 300
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--gamma", type=float, nargs="+", default=[0.001, 0.01])
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--tail", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="runs/balance")
    args = ap.parse_args()

    from r1lab.train.metrics import read_metrics
    from r1lab.train.pretrain import PretrainConfig, run_pretrain

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from r1lab.train.data import ensure_corpus

    corpus = ensure_corpus([], out, 200, [1], 0)
    runs = [("no-balancing", 0.0, 0.0)] + [(f"gamma={g}", g, None) for g in args.gamma]
    summary = {}
    for name, gamma, alpha in runs:
        t0 = time.time()
        cfg = PretrainConfig(preset=args.preset, corpus=corpus, tokenizer=None, seq_len=args.seq_len,
                             micro_batch=args.micro_batch, steps=args.steps, warmup_steps=10, gamma=gamma,
                             lr=1e-3, schedule="cosine",  # the recorded runs' settings (defaults before WSD)
                             gamma_zero_frac=0.0, balance_alpha=alpha, eval_every=0, ckpt_every=0, exact_match=0,
                             out_dir=str(out / name), device=args.device, progress=False, fim_rate=0.0)
        (out / name / "metrics.jsonl").unlink(missing_ok=True)
        shutil.rmtree(out / name / "checkpoints", ignore_errors=True)  # a rerun into --out starts afresh
        art = run_pretrain(cfg)
        rows = read_metrics(art["metrics"])[-args.tail:]
        load = sum(r["load"] for r in rows) / len(rows)
        worst = sum(r["load_worst"] for r in rows) / len(rows)
        summary[name] = load
        print(json.dumps({"bench": "balance", "run": name, "gamma": gamma, "alpha": alpha, "preset": args.preset,
                          "steps": args.steps, "load_max_over_mean": load, "load_worst_layer": worst,
                          "final_loss": art["final_loss"], "wall_s": round(time.time() - t0, 1)}), flush=True)
    print(json.dumps({"bench": "balance", "summary": summary, "target": 1.3}))


if __name__ == "__main__":
    main()
