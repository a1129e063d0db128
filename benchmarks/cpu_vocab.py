"""CPU pretraining step with the model's vocabulary fitted to the tokenizer vs the preset's vocabulary.

The speedrun's byte-level BPE asks for 2,048 entries but stops at ~1,100 (every word of the templated corpus is one
token by then; no pair is left to merge), while the cpu-demo preset's head and embedding had 2,048 rows: ~45 % of
the head's matmuls and of the cross-entropy's softmax went to ids the tokenizer never emits. ``r1lab pretrain`` now
fits a fresh model's ``vocab_size`` to the tokenizer (rounded up to 64; ``fit_vocab``). The peer is the preset's
vocabulary, i.e. what the speedrun trained before the nineteenth session.

Two measurements, arms alternated round by round in one process (this sandbox's speed drifts by 10-20 % within
minutes), one JSON line per (model, arm) with the median seconds per step and the ratio to the peer:
- ``teacher``: the cpu-demo preset (4 layers, MoE, MTP), a whole pretraining step (forward + backward + clip +
  AdamW, 16 × 256 packed tokens);
- ``student``: the speedrun's student (2 dense layers, no MTP), same step.
Token ids are drawn below the fitted size in both arms, so both see the same data.
With ``--corpus FILE.jsonl`` (e.g. a speedrun's ``tokenizer/corpus.jsonl``) it first trains the byte-level BPE at
each of ``--sizes`` on that corpus and prints, per size asked, the ids the tokenizer has, the tokens of the encoded
corpus and how many distinct ids occur in it (``cpu_vocab_tokenizer`` lines).

Usage:  python benchmarks/cpu_vocab.py [--fitted 1152] [--rounds 6] [--corpus RUN/tokenizer/corpus.jsonl]
Smoke:  python benchmarks/cpu_vocab.py --preset tiny --fitted 192 --rounds 1 --steps 1 --micro-batch 2 --seq-len 64
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from cpu_attention import packed_batch  # noqa: E402
from cpu_cross_entropy import alternate  # noqa: E402
from r1lab.model import DeepSeekV3Config, DeepSeekV3ForCausalLM  # noqa: E402

STUDENT = {"n_routed_experts": 0, "num_nextn_predict_layers": 0, "num_hidden_layers": 2}  # the speedrun's student


def make_step(cfg: DeepSeekV3Config, batch: dict[str, torch.Tensor]):
    torch.manual_seed(0)
    model = DeepSeekV3ForCausalLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def train_step():
        o = model(**batch, return_logits=False)
        o.total_loss(0.3, 1e-4).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return train_step


def compare(name: str, cfg: DeepSeekV3Config, fitted: int, b: int, t: int, rounds: int, steps: int) -> None:
    batch = packed_batch(b, t, fitted, torch.Generator().manual_seed(t))
    peer = f"preset vocabulary {cfg.vocab_size} (peer)"
    arms = {peer: make_step(cfg, batch), f"fitted vocabulary {fitted}": make_step(cfg.replace(vocab_size=fitted), batch)}
    times = alternate(arms, rounds, steps)
    base = statistics.median(times[peer])
    for arm, ts in times.items():
        med = statistics.median(ts)
        print(json.dumps({"bench": "cpu_vocab_step", "model": name, "arm": arm, "micro_batch": b, "seq_len": t,
                          "threads": torch.get_num_threads(), "s_median": round(med, 5), "s": [round(x, 5) for x in ts],
                          "tok_s": round(b * t / med), "ratio_speed_vs_peer": round(base / med, 3)}), flush=True)


def tokenizer_sizes(corpus: str, sizes: list[int]) -> None:
    import tempfile

    from r1lab.data.tokenizer import load_tokenizer, train_tokenizer

    with open(corpus, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f if line.strip()]
    for asked in sizes:
        with tempfile.TemporaryDirectory() as d:
            train_tokenizer(texts, asked, d)
            tok = load_tokenizer(d)
            ids = tok.encode_batch(texts)
            print(json.dumps({"bench": "cpu_vocab_tokenizer", "corpus": corpus, "documents": len(texts),
                              "asked": asked, "ids": tok.vocab_size, "corpus_tokens": sum(map(len, ids)),
                              "ids_used": len({i for row in ids for i in row})}), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu-demo")
    ap.add_argument("--fitted", type=int, default=1152, help="fitted vocabulary (the speedrun's tokenizer: 1,108 → 1,152)")
    ap.add_argument("--micro-batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per arm per round")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--corpus", default=None, help="JSONL corpus ({\"text\": ...} rows) to train tokenizers on first")
    ap.add_argument("--sizes", type=int, nargs="+", default=[2048, 1536, 1024, 768], help="tokenizer sizes asked")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.corpus:
        tokenizer_sizes(args.corpus, args.sizes)
    cfg = DeepSeekV3Config.from_preset(args.preset).replace(max_position_embeddings=max(args.seq_len, 512))
    if args.fitted > cfg.vocab_size:
        ap.error(f"--fitted {args.fitted} is larger than the preset's vocabulary {cfg.vocab_size}")
    compare("teacher", cfg, args.fitted, args.micro_batch, args.seq_len, args.rounds, args.steps)
    compare("student", cfg.replace(**STUDENT), args.fitted, args.micro_batch, args.seq_len, args.rounds, args.steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
