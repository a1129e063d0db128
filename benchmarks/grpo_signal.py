"""How hard does GRPO's accuracy reward push a base toward step-by-step answers? Per task family, on train problems
under the exact R1-Zero template: the share of samples that reason ("worked": more than 8 words of thinking), the
accuracy of worked and of short samples, and the mode signal — the expected group-normalised advantage times the
centred worked indicator, Σᵢ Aᵢ (wᵢ − w̄) / G per group (0 for zero-variance groups), i.e. the policy-gradient push on
"reason rather than answer at once". It is compared with the same quantity for a reward of 1 for every worked sample
(the "long think" reward that moved the policy from 25 % to 92 % worked in 30 steps, docs/benchmarks.md). Prints one
JSON line; the ratio ``signal / long_think_signal`` says how many times more steps the accuracy reward needs.

    python benchmarks/grpo_signal.py --model runs/speedrun/pretrain/model --n-per-family 40
"""

from __future__ import annotations

import argparse
import json
import statistics

from answer_modes import is_worked  # benchmarks/ is on sys.path when a script here runs
FAMILIES = ["arithmetic", "countdown", "equations", "word", "arithmetic_zh", "word_zh", "code"]


def mode_signal(rewards: list[float], worked: list[float]) -> float:
    """Σ A·(w − w̄) / G with A = (r − r̄) / std(r); 0 when every reward is equal.

    >>> mode_signal([1, 0, 1, 0], [1, 0, 1, 0])
    0.5
    >>> mode_signal([1, 1], [1, 0])
    0.0
    """
    g, sd = len(rewards), statistics.pstdev(rewards)
    if sd == 0:
        return 0.0
    mu, wbar = sum(rewards) / g, sum(worked) / g
    return sum((r - mu) / sd * (w - wbar) for r, w in zip(rewards, worked)) / g


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--n-per-family", type=int, default=40)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--families", nargs="*", default=FAMILIES)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    import torch

    from r1lab.pipeline.generation import Sampling, build_prompt, load_generator
    from r1lab.tasks import make_split, task_reward

    if a.threads:
        torch.set_num_threads(a.threads)
    gen = load_generator(a.model)
    problems = make_split("train", a.n_per_family, difficulty=1, families=a.families)
    outs = gen([build_prompt(p.prompt, "r1-zero", gen.tokenizer) for p in problems],
               Sampling(n=a.group_size, max_tokens=128, seed=3, temperature=1.0))
    per: dict[str, dict[str, list[float]]] = {}
    for p, samples in zip(problems, outs):
        worked, rewards = [], []
        for c in samples:
            worked.append(1.0 if is_worked(c.text) else 0.0)
            rewards.append(1.0 if task_reward(c.text, p) >= 0.999 else 0.0)
        d = per.setdefault(p.family, {"w": [], "r": [], "sig": [], "long": []})
        d["w"] += worked
        d["r"] += rewards
        d["sig"].append(mode_signal(rewards, worked))
        d["long"].append(mode_signal(worked, worked))
    out: dict = {"bench": "grpo_signal", "model": a.model, "group_size": a.group_size, "n_per_family": a.n_per_family}
    for fam, d in per.items():
        nw = sum(d["w"])
        out[fam] = {"worked_share": round(nw / len(d["w"]), 3),
                    "acc_worked": round(sum(r for r, w in zip(d["r"], d["w"]) if w) / max(nw, 1), 3),
                    "acc_short": round(sum(r for r, w in zip(d["r"], d["w"]) if not w) / max(len(d["w"]) - nw, 1), 3),
                    "signal": round(statistics.mean(d["sig"]), 4), "long_think_signal": round(statistics.mean(d["long"]), 4)}
    sig = statistics.mean(v["signal"] for k, v in out.items() if k in per)
    long_sig = statistics.mean(v["long_think_signal"] for k, v in out.items() if k in per)
    out["ALL"] = {"signal": round(sig, 4), "long_think_signal": round(long_sig, 4),
                  "ratio": round(sig / long_sig, 3) if long_sig else None}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
