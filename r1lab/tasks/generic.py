"""The generic "math" family: user-supplied problems checked by answer equivalence only.

Idea: R1-Zero's accuracy reward for math (arXiv 2501.12948 §2.2.2) needs only a prompt and a gold final answer;
rows of a user task file without a `family` get this checker (integer fast path, then the shared math-verify
based `math_equal`, gold first). It cannot generate problems.
"""

from __future__ import annotations

import random

from r1lab.tasks.base import Family, Problem


class MathFamily(Family):
    """Checks an extracted answer against a gold answer by mathematical equality; no generator.

    >>> p = Problem("math", "0" * 16, "1 + 1?", "2", "", "en", 1)
    >>> MathFamily().check("2", p), MathFamily().check("3", p), MathFamily().check(None, p)
    (True, False, False)
    """

    name = "math"
    lang = "en"
    generative = False

    def generate(self, rng: random.Random, difficulty: int) -> Problem:
        raise NotImplementedError("the 'math' family only checks user-supplied problems; it has no generator")
