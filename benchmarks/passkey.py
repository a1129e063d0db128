"""Passkey retrieval before/after two-phase YaRN context extension (DeepSeek-V3 §4.3, scaled down).

1. pretrain a base model at ``--original`` tokens on the built-in corpus + passkey documents up to that length;
2. ``run_extend_context``: phases at ``--phases`` lengths with YaRN (factor = last / original);
3. greedy passkey accuracy of both models at every length. Prints the table and one JSON line.

CPU (about 12 min on 2 idle cores: base 6 min, phases 6 min):  python3 benchmarks/passkey.py --out runs/passkey
Result (2026-11-25, 2-core CPU): base 100 % / 0 % / 5 % at 128 / 256 / 512 tokens, extended 100 % / 95 % / 85 %
(docs/benchmarks.md). ``--base-model OUT/base/model`` reuses a base to try other extension settings.
GPU:  python3 benchmarks/passkey.py --device cuda --original 1024 --phases 2048 4096 --base-steps 2000
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/passkey")
    ap.add_argument("--preset", default="cpu-demo")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--original", type=int, default=128)
    ap.add_argument("--phases", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--base-steps", type=int, default=1200)
    ap.add_argument("--phase-steps", type=int, nargs="+", default=[400, 1000])
    ap.add_argument("--micro-batch", type=int, default=16)
    ap.add_argument("--n-eval", type=int, default=20)
    ap.add_argument("--passkey-docs", type=int, default=8000)
    ap.add_argument("--phase-lr", type=float, default=1e-3, help="constant learning rate of the extension phases")
    ap.add_argument("--base-model", default=None,
                    help="reuse a base made by an earlier run (OUT/base/model) instead of pretraining one")
    args = ap.parse_args()

    from r1lab.data.tokenizer import load_tokenizer
    from r1lab.train.context import (
        ExtendContextConfig,
        passkey_text,
        run_extend_context,
        write_passkey_corpus,
    )
    from r1lab.train.data import ensure_corpus, ensure_tokenizer
    from r1lab.train.pretrain import PretrainConfig, run_pretrain

    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    corpus = ensure_corpus([], out, 300, [1, 2], 0)
    sample = out / "passkey_sample.jsonl"
    import random

    rng = random.Random(0)
    sample.write_text("".join(json.dumps({"text": passkey_text(rng, 3)[0]}) + "\n" for _ in range(200)))
    tok_dir = ensure_tokenizer(None, [*corpus, str(sample)], out, 2048)
    tok = load_tokenizer(tok_dir)
    keys = write_passkey_corpus(out / "passkey_base.jsonl", tok, args.original, args.passkey_docs, 0)
    if not args.base_model:  # a rerun into --out starts afresh (pretrain refuses to mix two runs in one folder)
        shutil.rmtree(out / "base" / "checkpoints", ignore_errors=True)
        (out / "base" / "metrics.jsonl").unlink(missing_ok=True)
    shutil.rmtree(out / "extend", ignore_errors=True)
    base = {"model_dir": args.base_model} if args.base_model else run_pretrain(PretrainConfig(
        preset=args.preset, corpus=[*corpus, str(keys)], tokenizer=tok_dir, seq_len=args.original,
        micro_batch=args.micro_batch, steps=args.base_steps, warmup_steps=20, eval_every=0, ckpt_every=0,
        lr=1e-3, schedule="cosine",  # the recorded runs' settings (the defaults before WSD)
        exact_match=0, out_dir=str(out / "base"), device=args.device, progress=False, fim_rate=0.0,
        model_overrides={"max_position_embeddings": args.original}))
    micro = [max(1, args.micro_batch * args.original // length) for length in args.phases]
    report = run_extend_context(ExtendContextConfig(
        model_dir=base["model_dir"], original_len=args.original, phases=args.phases, steps=args.phase_steps,
        micro_batch=micro, corpus=corpus, passkey_docs=args.passkey_docs // 2, out_dir=str(out / "extend"),
        eval_passkey=args.n_eval, device=args.device, lr=args.phase_lr))
    print(json.dumps({"bench": "passkey", "preset": args.preset, "original": args.original,
                      "phases": args.phases, "passkey": report["passkey"], "wall_s": round(time.time() - t0, 1)}))


if __name__ == "__main__":
    main()
