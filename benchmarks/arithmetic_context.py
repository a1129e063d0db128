"""Is the base model's arithmetic bound to the context it was drilled in? Greedy one-digit sums in two contexts —
after two facts-drill sentences and as the step of a word-problem solution — and greedy worked-solution accuracy
("Question: …\\nSolution:", the corpus's worked frame; 问题/解答 for Chinese) per family on held-out problems.
Prints one JSON line. (The word_step context is the one-line step word solutions had until the fourteenth session;
they now work each sum in columns, so for a current base it probes a context the corpus no longer holds.)

    python benchmarks/arithmetic_context.py --model runs/speedrun/pretrain/model
"""

from __future__ import annotations

import argparse
import json
import random

CONTEXTS = {
    "drill": "8 * 3 = 24. 6 - 2 = 4. {a} + {b} =",
    "word_step": "Question: Tom has {a} apples. He buys {b} more. How many apples does Tom have now?\n"
                 "Solution: Tom starts with {a} apples. He buys {b}: {a} + {b} =",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a saved model directory with its tokenizer")
    ap.add_argument("--n-sums", type=int, default=100)
    ap.add_argument("--n-per-family", type=int, default=100)
    ap.add_argument("--families", nargs="+", default=["word", "word_zh", "arithmetic", "equations"])
    a = ap.parse_args()
    from r1lab.pipeline.generation import Sampling, load_generator
    from r1lab.tasks import make_split

    gen = load_generator(a.model)
    rng = random.Random(0)
    sums = [(rng.randint(0, 9), rng.randint(0, 9)) for _ in range(a.n_sums)]
    out: dict[str, object] = {"bench": "arithmetic_context", "model": a.model}
    for name, template in CONTEXTS.items():
        texts = gen([template.format(a=x, b=y) for x, y in sums], Sampling(n=1, temperature=0, max_tokens=4, seed=0))
        out[f"sum_{name}"] = sum(t[0].text.strip().split(".")[0] == str(x + y)
                                 for (x, y), t in zip(sums, texts)) / len(sums)
    for fam in a.families:
        problems = make_split("test", a.n_per_family, 1, [fam], 0, strict=False)
        zh = fam.endswith("_zh")
        prompts = [f"问题：{p.prompt}\n解答：" if zh else f"Question: {p.prompt}\nSolution:" for p in problems]
        texts = gen(prompts, Sampling(n=1, temperature=0, max_tokens=160, seed=0))
        right = 0
        for p, t in zip(problems, texts):
            line = t[0].text.split("\n")[0]
            final = line.split("答案是")[-1] if zh else line.split("The answer is")[-1]
            right += final.strip().rstrip(".。").strip() == p.answer
        out[f"worked_{fam}"] = right / len(problems)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
