"""Held-out accuracy of a pretrained model in the corpus's two frames: direct ("Question: …\\nAnswer:") vs worked
("Question: …\\nSolution:"), per task family; the worked/direct ratio is the comparison. Prints one JSON line.

    python benchmarks/answer_modes.py --model runs/speedrun/pretrain/model --n-per-family 12
    python benchmarks/answer_modes.py --model runs/speedrun/pretrain/model --preamble   # same, after the R1-Zero preamble

``--template`` instead samples under the exact R1-Zero template (7 families incl. code, T = 1.0, 160 new tokens) and
splits the samples by mode: "worked" when the think block has more than 8 words, else "short"; it prints each
mode's share and accuracy (the task's own reward = 1) — what R1-Zero's RL can gain by choosing the better mode.

``--preamble`` puts the R1-Zero template's instruction text (everything before "User:") in front of both frames: the
question then sits ~80 tokens into the context, where it sits under the R1-Zero template. The drop it shows is the
position sensitivity of a base pretrained on short documents with per-document positions (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import re

FAMILIES = ["arithmetic", "countdown", "equations", "word", "arithmetic_zh", "word_zh"]
THINK = re.compile(r"<think>(.*?)</think>", re.S)


def is_worked(text: str) -> bool:
    """A sample "reasons" when its think block (else its whole text) has more than 8 words.

    >>> is_worked("<think> The answer is 3. </think>"), is_worked("<think> " + "step " * 9 + "</think>")
    (False, True)
    """
    m = THINK.search(text)
    return len((m.group(1) if m else text).split()) > 8


ANSWER = re.compile(r"(?:The answer is|答案是)\s*(.+?)(?:\.|。)?\s*(?:</think>|$|\n)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--n-per-family", type=int, default=12)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--preamble", action="store_true", help="prefix both frames with the R1-Zero instruction text")
    ap.add_argument("--template", action="store_true", help="mode split under the R1-Zero template instead")
    a = ap.parse_args()
    import torch

    from r1lab.data.templates import R1_ZERO_TEMPLATE
    from r1lab.pipeline.generation import Sampling, load_generator
    from r1lab.tasks import make_split, task_check

    if a.threads:
        torch.set_num_threads(a.threads)
    gen = load_generator(a.model)
    if a.template:
        print(json.dumps(template_modes(gen, a.model, a.n_per_family, a.k)))
        return
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


def template_modes(gen, model: str, n_per_family: int, k: int) -> dict:
    """Share and accuracy of worked (> 8 words of thinking) vs short samples under the R1-Zero template."""
    from r1lab.pipeline.generation import Sampling, build_prompt
    from r1lab.tasks import make_split, task_reward

    problems = make_split("test", n_per_family, difficulty=1, families=[*FAMILIES, "code"])
    prompts = [build_prompt(p.prompt, "r1-zero", gen.tokenizer) for p in problems]
    outs = gen(prompts, Sampling(n=k, max_tokens=160, seed=1, temperature=1.0))
    counts: dict[str, dict[str, list[int]]] = {}  # family -> mode -> [samples, correct]
    for p, cs in zip(problems, outs):
        for c in cs:
            mode = "worked" if is_worked(c.text) else "short"
            ok = int(task_reward(c.text, p) >= 0.999)
            for key in (p.family, "ALL"):
                n_ok = counts.setdefault(key, {"worked": [0, 0], "short": [0, 0]})[mode]
                n_ok[0] += 1
                n_ok[1] += ok
    out: dict = {"bench": "answer_modes_template", "model": model, "k": k, "n_per_family": n_per_family}
    for key, c in counts.items():
        (nw, cw), (ns, cs_) = c["worked"], c["short"]
        out[key] = {"worked_share": round(nw / (nw + ns), 3), "acc_worked": round(cw / max(nw, 1), 3),
                    "acc_short": round(cs_ / max(ns, 1), 3), "n": nw + ns}
    return out


if __name__ == "__main__":
    main()
