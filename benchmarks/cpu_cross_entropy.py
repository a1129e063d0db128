"""CPU head + cross-entropy: the fused chunked path (``r1lab.model.loss.linear_cross_entropy``, gradients formed in
the forward while each chunk of logits is in the cache) vs the peer: ``F.cross_entropy(hidden @ weightᵀ)``, what our
model did before the eighteenth session and what transformers' models do.

Two measurements, arms alternated round by round in one process (this sandbox's speed drifts by 10-20 % within
minutes), one JSON line per (measurement, arm) with the median seconds, the ratio to the peer and the largest
difference of the loss and gradients between the arms:
- ``head``: hidden [N, D] → logits [N, V] → mean CE, forward + backward, at the speedrun's pretraining shape
  (16 × 256 tokens, cpu-demo's hidden 128, vocabulary 2,048) and SFT shape (8 × 384);
- ``step``: a whole cpu-demo pretraining step (forward + backward + clip + AdamW, 16 × 256 packed tokens, MTP on)
  with ``return_logits=False`` (the fused path, what pretraining and SFT call) vs ``return_logits=True`` (logits
  materialised, the reference loss over them).

Usage:  python benchmarks/cpu_cross_entropy.py [--preset cpu-demo] [--rounds 6]
Smoke:  python benchmarks/cpu_cross_entropy.py --preset tiny --rounds 1 --steps 1 --micro-batch 2 --seq-len 64
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from cpu_attention import packed_batch  # noqa: E402
from r1lab.model import DeepSeekV3Config, DeepSeekV3ForCausalLM  # noqa: E402
from r1lab.model.loss import linear_cross_entropy  # noqa: E402

PEER, FUSED = "F.cross_entropy on logits (peer)", "fused chunked"


def alternate(arms: dict, rounds: int, steps: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in arms}
    for fn in arms.values():  # warm-up
        fn()
    for _ in range(rounds):
        for name, fn in arms.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            times[name].append((time.perf_counter() - t0) / steps)
    return times


def emit(bench: str, times: dict[str, list[float]], extra: dict) -> None:
    peer = statistics.median(times[PEER])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(json.dumps({"bench": bench, "arm": name, **extra, "threads": torch.get_num_threads(),
                          "s_median": round(med, 5), "s": [round(x, 5) for x in ts],
                          "ratio_speed_vs_peer": round(peer / med, 3)}), flush=True)


def head(n: int, d: int, v: int, rounds: int, steps: int) -> None:
    gen = torch.Generator().manual_seed(n)
    h0, w0 = torch.randn(n, d, generator=gen), torch.randn(v, d, generator=gen) * 0.05
    target = torch.randint(0, v, (n,), generator=gen)
    target[::9] = -100  # some pairs do not count (document ends, prompts)
    h, w = h0.clone().requires_grad_(), w0.clone().requires_grad_()

    def run(loss_fn):
        h.grad = w.grad = None
        loss = loss_fn()
        loss.backward()
        return loss.detach(), h.grad, w.grad

    arms = {PEER: lambda: run(lambda: F.cross_entropy(h @ w.t(), target, ignore_index=-100)),
            FUSED: lambda: run(lambda: linear_cross_entropy(h, w, target))}
    (l0, gh0, gw0), (l1, gh1, gw1) = arms[PEER](), arms[FUSED]()
    diff = max(float((l0 - l1).abs()), float((gh0 - gh1).abs().max()), float((gw0 - gw1).abs().max()))
    emit("cpu_cross_entropy_head", alternate(arms, rounds, steps),
         {"rows": n, "hidden": d, "vocab": v, "max_abs_diff": diff})


def step(preset: str, b: int, t: int, rounds: int, steps: int) -> None:
    cfg = DeepSeekV3Config.from_preset(preset).replace(max_position_embeddings=max(t, 512))
    torch.manual_seed(0)
    model = DeepSeekV3ForCausalLM(cfg)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    batch = packed_batch(b, t, cfg.vocab_size, torch.Generator().manual_seed(t))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def train_step(return_logits: bool, update: bool = True):
        o = model(**batch, return_logits=return_logits)
        o.total_loss(0.3, 1e-4).backward()
        if not update:
            return float(o.total_loss(0.3, 1e-4).detach())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return None

    first = {}
    for name, flag in ((PEER, True), (FUSED, False)):  # the arms' agreement, before any update
        model.load_state_dict(init)
        model.zero_grad(set_to_none=True)
        loss = train_step(flag, update=False)
        first[name] = (loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    model.zero_grad(set_to_none=True)
    (l0, g0), (l1, g1) = first.values()
    grad_diff = max(float((g0[n] - g1[n]).abs().max()) for n in g0)
    arms = {PEER: lambda: train_step(True), FUSED: lambda: train_step(False)}
    emit("cpu_cross_entropy_step", alternate(arms, rounds, steps),
         {"preset": preset, "micro_batch": b, "seq_len": t, "tok_per_step": b * t,
          "first_loss_diff": abs(l0 - l1), "first_grad_max_diff": grad_diff})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu-demo")
    ap.add_argument("--micro-batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=4, help="timed calls per arm per round")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = DeepSeekV3Config.from_preset(args.preset)
    for n in (args.micro_batch * args.seq_len, args.micro_batch // 2 * args.seq_len * 3 // 2):  # pretraining, SFT
        head(n, cfg.hidden_size, cfg.vocab_size, args.rounds, args.steps)
    step(args.preset, args.micro_batch, args.seq_len, args.rounds, args.steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
