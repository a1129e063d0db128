"""Column arithmetic posed and solved in Chinese (竖式计算), so language mixing in the data is real.

Idea: the same digit-by-digit engine as `arithmetic` with a Chinese phrase table. R1 (arXiv 2501.12948, §2.3.2)
adds a language-consistency reward because R1-Zero mixes languages in its chain of thought; a Chinese family
gives that reward (and the mixing it fixes) something to act on in the built-in data.

The split namespace is shared with `arithmetic`, so "47 + 38" lands in the same split in both languages.
"""

from __future__ import annotations

import random

from r1lab.tasks.arithmetic import EN, Phrases, sample_operands, solve
from r1lab.tasks.base import Family, Problem

ZH = Phrases(
    places=("个位", "十位", "百位", "千位", "万位", "十万位", "百万位"),
    question="{expr} 等于多少？",
    add_intro="逐位相加 {a} + {b}。",
    sub_intro="逐位相减 {a} - {b}。",
    mul_intro="逐位相乘 {a} * {b}。",
    negate="{small} 比 {big} 小，先算 {big} - {small}，结果取负数。",
    write="{lead}：{calc} = {s}，写 {d}。",
    write_carry="{lead}：{calc} = {s}，写 {d} 进 {c}。",
    borrow="{lead}：{x} 比 {y} 小，借 1：{calc} = {r}，写 {r}。",
    split="把 {b} 拆成 {parts}。",
    conclude="所以 {expr} = {r}。",
    place_fallback="第 {n} 位",
    stop="。",
    space="",
)


class ArithmeticZhFamily(Family):
    """Chinese column arithmetic: "47 + 38 等于多少？" → 85.

    >>> p = ArithmeticZhFamily().generate(random.Random(1), 1)
    >>> p.lang, p.solution.endswith("答案是 " + p.answer + "。")
    ('zh', True)
    """

    name = "arithmetic_zh"
    lang = "zh"
    namespace = "arithmetic"

    def generate(self, rng: random.Random, difficulty: int) -> Problem:
        a, op, b = sample_operands(rng, difficulty)
        r, solution = solve(a, op, b, ZH, rng, self.lang)
        prompt = ZH.question.format(expr=f"{a} {op} {b}")
        return self.make(f"{a}{op}{b}", prompt, str(r), solution, difficulty, {"a": a, "op": op, "b": b})

    def switched_solution(self, problem: Problem, rng: random.Random) -> str | None:
        """The English column solution of the same problem: a Chinese question reasoned about in English.

        >>> fam = ArithmeticZhFamily()
        >>> p = fam.generate(random.Random(1), 1)
        >>> s = fam.switched_solution(p, random.Random(0))
        >>> s.endswith("The answer is " + p.answer + "."), "位" in s
        (True, False)
        """
        m = problem.meta
        return solve(m["a"], m["op"], m["b"], EN, rng, "en")[1]
