"""Linear equations in one unknown with an integer solution: "Solve for x: 3x + 5 = 20." → 5.

Idea: the simplest algebra word-free task with a unique, rule-checkable answer (R1-Zero accuracy reward,
arXiv 2501.12948 §2.2.2), solved by the balance method (do the same to both sides), one sentence per move; the
moves' additions and subtractions of non-negative numbers are worked in columns (`arithmetic.worked_calc`).

Difficulty d: d = 1 is ax + b = c with positive a, b, x; d = 2 allows negative b and x; d ≥ 3 puts x on both
sides (ax + b = cx + e), coefficients and solutions growing with d. The solution is picked first, so it is
always an integer.
"""

from __future__ import annotations

import random

from r1lab.tasks.arithmetic import EN, worked_calc
from r1lab.tasks.base import (
    Family,
    Problem,
    answer_sentence,
    check_difficulty,
    join_steps,
    maybe_verify,
)


def term(a: int, var: str = "x") -> str:
    """Coefficient times variable as written by hand.

    >>> [term(3), term(1), term(-1), term(-4)]
    ['3x', 'x', '-x', '-4x']
    """
    return var if a == 1 else "-" + var if a == -1 else f"{a}{var}"


def side(a: int, b: int) -> str:
    """Text of ax + b (a or b may be 0).

    >>> [side(3, 5), side(3, -5), side(0, 7), side(-2, 0)]
    ['3x + 5', '3x - 5', '7', '-2x']
    """
    if a == 0:
        return str(b)
    if b == 0:
        return term(a)
    return f"{term(a)} {'+' if b > 0 else '-'} {abs(b)}"


def paren(n: int) -> str:
    """A number ready to follow an operator: negatives in parentheses.

    >>> paren(5), paren(-5)
    ('5', '(-5)')
    """
    return f"({n})" if n < 0 else str(n)


def sample(rng: random.Random, difficulty: int) -> tuple[int, int, int, int, int]:
    """(a, b, c, e, x) with ax + b = cx + e, a != c, and integer solution x."""
    d = check_difficulty(difficulty)
    if d == 1:
        a, x, b = rng.randint(2, 9), rng.randint(1, 15), rng.randint(1, 30)
        return a, b, 0, a * x + b, x
    if d == 2:
        a, x = rng.randint(2, 12), rng.choice([v for v in range(-15, 16) if v])
        b = rng.choice([v for v in range(-30, 31) if v])
        return a, b, 0, a * x + b, x
    m = 3 * d
    while True:
        a, c = rng.randint(-m, m), rng.randint(-m, m)
        if a != c and a and c:
            break
    x, b = rng.randint(-5 * d, 5 * d), rng.randint(-10 * d, 10 * d)
    return a, b, c, a * x + b - c * x, x


class EquationsFamily(Family):
    """Linear equations ax + b = cx + e with an integer answer."""

    name = "equations"
    lang = "en"

    def generate(self, rng: random.Random, difficulty: int) -> Problem:
        a, b, c, e, x = sample(rng, difficulty)
        eq = f"{side(a, b)} = {side(c, e)}"
        lines = []
        k = a
        if c:
            k = a - c
            move = f"Subtract {term(c)} from" if c > 0 else f"Add {term(-c)} to"
            lines.append(f"{move} both sides: {side(k, b)} = {e}.")
        rhs = e - b
        if b:
            move = f"Subtract {b} from" if b > 0 else f"Add {-b} to"
            sign = "-" if b > 0 else "+"
            lines.append(f"{move} both sides: {term(k)} = {worked_calc(e, sign, abs(b), EN)}.")
        if k != 1:
            lines.append(f"Divide both sides by {k}: x = {rhs} / {paren(k)} = {x}.")
        check = f"{a} * {paren(x)} + {paren(b)} = {a * x + b}"
        if c:
            check += f" and {c} * {paren(x)} + {paren(e)} = {c * x + e}"
        lines.append(maybe_verify(rng, check, self.lang))
        lines.append(answer_sentence(str(x), self.lang))
        return self.make(f"{a},{b},{c},{e}", f"Solve for x: {eq}.", str(x), join_steps(lines, self.lang),
                         difficulty, {"a": a, "b": b, "c": c, "e": e})
