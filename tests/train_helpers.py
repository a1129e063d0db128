"""Shared fixtures of the tests/test_train_*.py files: a fixed synthetic corpus and a tiny pretraining config.

The corpus is generated here (seeded, independent of the task generators) so the golden losses only depend on the
model, the tokenizer trainer and the training loop.
"""

from __future__ import annotations

import json
import random
from pathlib import Path


def write_corpus(path: Path, n_docs: int = 240, seed: int = 0) -> Path:
    rng = random.Random(seed)
    rows = []
    for _ in range(n_docs):
        parts = []
        for _ in range(rng.randint(2, 6)):
            a, b = rng.randint(1, 60), rng.randint(1, 60)
            parts.append(rng.choice([f"{a} plus {b} is {a + b}.", f"The number after {a} is {a + 1}.",
                                     f"{a} times {b % 9 + 1} is {a * (b % 9 + 1)}.", f"Half of {2 * a} is {a}."]))
        rows.append({"text": " ".join(parts)})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def make_env(root: Path) -> dict[str, str]:
    """Corpus + a trained 300-token tokenizer under ``root``."""
    from r1lab.data.tokenizer import train_from_files

    root.mkdir(parents=True, exist_ok=True)
    corpus = write_corpus(root / "corpus.jsonl")
    tok = root / "tokenizer"
    if not (tok / "tokenizer.json").exists():
        train_from_files([corpus], 300, tok)
    return {"corpus": str(corpus), "tokenizer": str(tok)}


def tiny_config(env: dict[str, str], out_dir: Path, **kw):
    from r1lab.train.pretrain import PretrainConfig

    base = {"preset": "tiny", "corpus": [env["corpus"]], "tokenizer": env["tokenizer"], "seq_len": 32,
            "micro_batch": 4, "grad_accum": 1, "steps": 20, "lr": 3e-3, "warmup_steps": 4, "schedule": "cosine",
            "gamma": 0.001, "gamma_zero_frac": 0.05, "fim_rate": 0.1, "eval_every": 0, "ckpt_every": 0,
            "exact_match": 0, "progress": False, "out_dir": str(out_dir), "seed": 0, "device": "cpu",
            "eval_frac": 0.05}
    base.update(kw)
    return PretrainConfig(**base)
