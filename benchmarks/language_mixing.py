"""Language mixing of base, R1-Zero and R1 on the Chinese task families, with more problems than the speedrun's
evaluation (12 per family, too few to see a rate of a few percent). From a finished speedrun directory, each
model is evaluated as its speedrun eval stage does (R1-Zero template for base and R1-Zero, the R1 chat format for
R1; k = 4 at temperature 0.6 / top-p 0.95) on `--n-per-family` held-out problems of arithmetic_zh and word_zh.
A response is mixed when under 90 % of its chain of thought is in the problem's language
(`r1lab.pipeline.evaluate.is_mixed`). Prints one JSON line per model and one comparing R1 with R1-Zero: the
paired gap Δ ± SE over the same problems (`r1lab.pipeline.significance`).

    python benchmarks/language_mixing.py --run runs/speedrun --n-per-family 100
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

MODELS = (("base", "pretrain/model", "r1-zero"), ("r1-zero", "r1-zero/final", "r1-zero"), ("r1", "r1/final", "r1"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a finished speedrun output directory")
    ap.add_argument("--n-per-family", type=int, default=100)
    ap.add_argument("--families", nargs="+", default=["arithmetic_zh", "word_zh"])
    ap.add_argument("--max-tokens", type=int, default=128, help="as the cpu preset's eval stages")
    a = ap.parse_args()
    from r1lab.pipeline.evaluate import evaluate
    from r1lab.pipeline.generation import load_generator
    from r1lab.pipeline.significance import describe, paired, per_problem
    from r1lab.tasks import make_split

    problems = make_split("test", a.n_per_family, 1, a.families, 0, strict=False)
    records = {}
    for name, rel, template in MODELS:
        model_dir = Path(a.run) / rel
        if not model_dir.is_dir():
            raise SystemExit(f"{model_dir}: not found (run the speedrun to the end first)")
        gen = load_generator(str(model_dir))
        res = evaluate(gen, problems, k=4, temperature=0.6, top_p=0.95, max_tokens=a.max_tokens, template=template,
                       greedy=False, tokenizer=gen.tokenizer, seed=0, progress=False)
        records[name] = [dataclasses.asdict(r) for r in res.records]
        print(json.dumps({"bench": "language_mixing", "model": name, "template": template,
                          "problems": res.n_problems, "samples": res.n_problems * res.k,
                          "mixing_rate": round(res.language_mixing_rate, 4), "pass@1": round(res.pass_at_1, 4),
                          "per_family_mixing": {f: round(m["language_mixing_rate"], 4)
                                                for f, m in res.per_family.items()}}), flush=True)
    d, se, n = paired(per_problem(records["r1-zero"], "mixing"), per_problem(records["r1"], "mixing"))
    print(json.dumps({"bench": "language_mixing", "compare": "r1-zero minus r1", "delta": round(d, 4),
                      "se": round(se, 4), "problems": n, "text": describe(d, se, n)}), flush=True)


if __name__ == "__main__":
    main()
