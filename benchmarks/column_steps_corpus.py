"""Experiment: rewrite a built-in corpus so that word problems and equations compute with column steps.

Why (docs/benchmarks.md, thirteenth session): after R1-Zero, word-problem and equation solutions of cpu-demo have
the right structure and numbers but wrong one-line arithmetic ("17 + 2 = 22"), while the arithmetic family, whose
solutions expand every operation into column steps, is right most of the time. This script rewrites each one-line
addition or subtraction with a non-negative result in the word, Chinese word and equation documents of a
``corpus.jsonl`` (pretraining text, R1-Zero-format documents included) into the arithmetic family's own column steps:

    "She buys 2: 17 + 2 = 19."  →  "She buys 2: 17 + 2. Add 17 + 2 digit by digit. Ones: 7 + 2 = 9,
                                    write 9. Tens: 1 + 0 = 1, write 1. So 17 + 2 = 19."

Arithmetic, drill, countdown and code documents are left as they are. Then pretrain on the result with the
speedrun's settings and compare bases (commands in docs/benchmarks.md):

    python benchmarks/column_steps_corpus.py IN/corpus.jsonl OUT/corpus.jsonl
"""

from __future__ import annotations

import argparse
import json
import re

from r1lab.tasks.arithmetic import EN, add_steps, sub_steps
from r1lab.tasks.arithmetic_zh import ZH

OP = re.compile(r"(?<![\d*/.])(\d+) ([+-]) (\d+) = (\d+)(?=[.。])")
WORD_EN = "starts with"
WORD_ZH = "一开始有"
EQUATION = "Solve for x"
CJK = re.compile(r"[\u4e00-\u9fff]")


def expand(text: str) -> str:
    """Column steps for every one-line ``a ± b = r`` (r ≥ 0, correct) in a word or equation document.

    >>> expand("Tom starts with 17 pens. He buys 2: 17 + 2 = 19. The answer is 19.")
    'Tom starts with 17 pens. He buys 2: 17 + 2. Add 17 + 2 digit by digit. Ones: 7 + 2 = 9, write 9. Tens: 1 + 0 = 1, write 1. So 17 + 2 = 19. The answer is 19.'
    >>> expand("What is 7 + 2? 7 + 2 = 9.")  # not a word or equation document
    'What is 7 + 2? 7 + 2 = 9.'
    """
    if not (WORD_EN in text or WORD_ZH in text or EQUATION in text):
        return text
    zh = bool(CJK.search(text))
    ph = ZH if zh else EN
    sep = "" if zh else " "

    def one(m: re.Match) -> str:
        a, op, b, r = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
        if (a + b if op == "+" else a - b) != r:
            return m.group(0)
        steps = add_steps(a, b, ph) if op == "+" else sub_steps(a, b, ph)
        conclude = ph.conclude.format(expr=f"{a} {op} {b}", r=r)
        return f"{a} {op} {b}{ph.stop}" + sep + sep.join(steps) + sep + conclude.rstrip(".。")

    return OP.sub(one, text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    a = ap.parse_args()
    changed = total = 0
    with open(a.src, encoding="utf-8") as f, open(a.dst, "w", encoding="utf-8") as g:
        for line in f:
            doc = json.loads(line)
            new = expand(doc["text"])
            changed += new != doc["text"]
            total += 1
            g.write(json.dumps({**doc, "text": new}, ensure_ascii=False) + "\n")
    print(json.dumps({"bench": "column_steps_corpus", "documents": total, "rewritten": changed}))


if __name__ == "__main__":
    main()
