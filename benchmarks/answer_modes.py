"""Held-out accuracy of a pretrained model in the corpus's two frames: direct ("Question: …\\nAnswer:") vs worked
("Question: …\\nSolution:"), per task family; the worked/direct ratio is the comparison. Prints one JSON line.

    python benchmarks/answer_modes.py --model runs/speedrun/pretrain/model --n-per-family 12
    python benchmarks/answer_modes.py --model runs/speedrun/pretrain/model --preamble   # same, after the R1-Zero preamble

``--preamble`` puts the R1-Zero template's instruction text (everything before "User:") in front of both frames: the
question then sits ~80 tokens into the context, where it sits under the R1-Zero template. The drop it shows is the
position sensitivity of a base pretrained on short documents with per-document positions (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import re

FAMILIES = ["arithmetic", "countdown", "equations", "word", "arithmetic_zh", "word_zh"]
ANSWER = re.compile(r"(?:The answer is|答案是)\s*(.+?)(?:\.|。)?\s*(?:</think>|$|\n)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--n-per-family", type=int, default=12)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--preamble", action="store_true", help="prefix both frames with the R1-Zero instruction text")
    a = ap.parse_args()
    import torch

    from r1lab.data.templates import R1_ZERO_TEMPLATE
    from r1lab.pipeline.generation import Sampling, load_generator
    from r1lab.tasks import make_split, task_check

    if a.threads:
        torch.set_num_threads(a.threads)
    gen = load_generator(a.model)
    problems = make_split("test", a.n_per_family, difficulty=1, families=FAMILIES)
    frames = {"direct": ("Question: {q}\nAnswer:", "问题：{q}\n答案："),
              "worked": ("Question: {q}\nSolution:", "问题：{q}\n解答：")}
    prefix = R1_ZERO_TEMPLATE.split("User:")[0] if a.preamble else ""
    result: dict = {"bench": "answer_modes", "model": a.model, "k": a.k, "n_per_family": a.n_per_family,
                    "preamble": a.preamble}
    for mode, (en, zh) in frames.items():
        prompts = [prefix + (zh if p.lang == "zh" else en).format(q=p.prompt) for p in problems]
        outs = gen(prompts, Sampling(n=a.k, max_tokens=128, seed=1))
        per: dict[str, list[bool]] = {}
        for p, cs in zip(problems, outs):
            for c in cs:
                text = "The answer is " + c.text.split("\n")[0].strip() + "." if mode == "direct" else c.text
                m = ANSWER.findall(text)
                ok = task_check(m[0].strip() if m else None, p)
                per.setdefault(p.family, []).append(ok)
        result[mode] = {f: round(sum(v) / len(v), 3) for f, v in per.items()}
        result[mode]["ALL"] = round(sum(sum(v) for v in per.values()) / sum(len(v) for v in per.values()), 3)
    result["worked_over_direct"] = round(result["worked"]["ALL"] / max(result["direct"]["ALL"], 1e-9), 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
