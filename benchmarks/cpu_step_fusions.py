"""CPU pretraining step with two candidate CPU paths on and off: the MoE combine by ``index_add_`` (adopted in the
twentieth session: ``r1lab/model/moe.py``, ``CPU_INDEX_ADD``) and RMSNorm on ATen's fused kernel
(``aten::_fused_rms_norm``, tried and not adopted: within noise of the written-out norm; defined here only).

The peer is the step as it ran before (every RMSNorm written out as transformers does, ~5 elementwise ops each way;
the routed experts' outputs unsorted by a permutation scatter, then weighted and summed over K). Both candidates are
bitwise equal to the old paths at the cpu-demo preset's shapes, so the arms train the same numbers; each JSON line also
carries ``same_as_peer``: whether the arm's first-step loss and every gradient equal the peer's bit for bit.

Models: ``teacher`` (the cpu-demo preset: 4 layers, MoE, MTP) and ``student`` (the speedrun's 2 dense layers; no MoE,
so only the norm arm differs), a whole step (forward + backward + clip + AdamW) on 16 × 256 packed tokens, the
vocabulary fitted as the speedrun's (1,152). Arms alternate round by round in one process (this sandbox's speed drifts
10-20 % within minutes); one JSON line per (model, arm): median seconds per step and the speed ratio to the peer.

``--profile`` also prints, per model, torch.profiler's self-CPU share of the largest ops over 3 steps of the current
code's arm (the breakdown quoted in docs/benchmarks.md, twentieth session).

Usage:  python benchmarks/cpu_step_fusions.py [--rounds 6] [--steps 3] [--profile]
Smoke:  python benchmarks/cpu_step_fusions.py --preset tiny --vocab 192 --rounds 1 --steps 1 --micro-batch 2 --seq-len 64
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from cpu_attention import op_shares, packed_batch  # noqa: E402
from cpu_cross_entropy import alternate  # noqa: E402
from cpu_vocab import STUDENT, make_step  # noqa: E402
from r1lab.model import DeepSeekV3Config, DeepSeekV3ForCausalLM, moe, norm  # noqa: E402

PEER = "written-out RMSNorm, permutation combine (peer)"
ARMS = {PEER: (False, False), "index_add combine (r1lab now)": (False, True), "fused RMSNorm (not adopted)": (True, False),
        "both": (True, True)}


FUSED = hasattr(torch.ops.aten, "_fused_rms_norm")  # a private ATen op (torch ≥ 2.8)


def fused_rms_norm(self: norm.RMSNorm, x: torch.Tensor) -> torch.Tensor:
    """The candidate: ATen's one-pass kernel (fp32 on the CPU it equals the written-out norm bit for bit)."""
    return torch.ops.aten._fused_rms_norm(x, [x.shape[-1]], self.weight, self.eps)[0]


@contextlib.contextmanager
def paths(fused_norm: bool, index_add: bool):
    """Switch the two CPU paths for the duration of the block (restored after)."""
    saved = norm.RMSNorm.forward, moe.CPU_INDEX_ADD
    if fused_norm and FUSED:
        norm.RMSNorm.forward = fused_rms_norm
    moe.CPU_INDEX_ADD = index_add
    try:
        yield
    finally:
        norm.RMSNorm.forward, moe.CPU_INDEX_ADD = saved


def first_step(cfg: DeepSeekV3Config, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Loss and every gradient of one forward/backward from the fixed initial weights (make_step's seed)."""
    torch.manual_seed(0)
    model = DeepSeekV3ForCausalLM(cfg)
    out = model(**batch, return_logits=False)
    loss = out.total_loss(0.3, 1e-4)
    loss.backward()
    return [loss.detach()] + [p.grad for p in model.parameters() if p.grad is not None]


def compare(name: str, cfg: DeepSeekV3Config, b: int, t: int, rounds: int, steps: int, profile: bool = False) -> None:
    batch = packed_batch(b, t, cfg.vocab_size, torch.Generator().manual_seed(t))
    # no experts: the combine arms would time the same code as the others, so they are not built
    arms = {arm: make_step(cfg, batch) for arm, (_, combine) in ARMS.items() if cfg.n_routed_experts or not combine}

    def switched(arm):
        def run():
            with paths(*ARMS[arm]):
                arms[arm]()
        return run

    reference = None
    same: dict[str, bool] = {}
    for arm in arms:
        with paths(*ARMS[arm]):
            grads = first_step(cfg, batch)
        reference = grads if reference is None else reference
        same[arm] = len(grads) == len(reference) and all(torch.equal(a, r) for a, r in zip(grads, reference))
    times = alternate({arm: switched(arm) for arm in arms}, rounds, steps)
    base = statistics.median(times[PEER])
    for arm, ts in times.items():
        med = statistics.median(ts)
        print(json.dumps({"bench": "cpu_step_fusions", "model": name, "arm": arm, "micro_batch": b, "seq_len": t,
                          "vocab": cfg.vocab_size, "threads": torch.get_num_threads(), "s_median": round(med, 5),
                          "s": [round(x, 5) for x in ts], "tok_s": round(b * t / med),
                          "ratio_speed_vs_peer": round(base / med, 3), "same_as_peer": same[arm]}), flush=True)
    if profile:
        now = next(arm for arm in arms if "r1lab now" in arm) if cfg.n_routed_experts else PEER
        print(json.dumps({"bench": "cpu_step_fusions_profile", "model": name, "arm": now,
                          "self_cpu_share": op_shares(switched(now), 3, 12)}), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu-demo")
    ap.add_argument("--vocab", type=int, default=1152, help="vocabulary (the speedrun's fitted one: 1,152)")
    ap.add_argument("--micro-batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per arm per round")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--profile", action="store_true", help="also print the largest ops' share of a step")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not FUSED:
        print(json.dumps({"bench": "cpu_step_fusions", "note": "this torch has no aten::_fused_rms_norm; the norm "
                          "arms run the written-out path"}), flush=True)
    cfg = DeepSeekV3Config.from_preset(args.preset).replace(vocab_size=args.vocab,
                                                             max_position_embeddings=max(args.seq_len, 512))
    compare("teacher", cfg, args.micro_batch, args.seq_len, args.rounds, args.steps, args.profile)
    compare("student", cfg.replace(**STUDENT), args.micro_batch, args.seq_len, args.rounds, args.steps, args.profile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
