"""Countdown: combine the given numbers with + − × ÷ (each exactly once) to hit a target.

Idea: the TinyZero task (Jiayi Pan et al., 2025) used to reproduce R1-Zero's "aha" behaviour on small models; rules
as in TinyZero (notes/r1_training.md): the answer is an expression inside <answer></answer> that uses exactly the
given multiset of numbers, only digits, + - * / ( ) and spaces, and evaluates to the target within 1e-5;
reward 1.0 correct, 0.1 well-formed but wrong, 0.0 no answer.

Generator: the target is built by combining the numbers in a random order (every intermediate result a positive
integer), so every problem is solvable by construction. Difficulty d: d + 2 numbers in 1..15d, targets up to
100d; division joins at d ≥ 2. Worked solutions list the combination steps; 30% (seeded) first show a failed
attempt, 30% verify the final expression.
"""

from __future__ import annotations

import random

from r1lab.tasks.base import (
    Family,
    Problem,
    answer_sentence,
    check_difficulty,
    join_steps,
    maybe_verify,
)

PREC = {"+": 1, "-": 1, "*": 2, "/": 2}
ATOM = 3

Term = tuple[int, str, int]  # (value, expression text, precedence of its top operator)


def combine(x: Term, op: str, y: Term) -> Term | None:
    """x op y with minimal parentheses, or None when the result is not a positive integer.

    >>> combine((7, "7", ATOM), "*", (5, "2 + 3", 1))
    (35, '7 * (2 + 3)', 2)
    >>> combine((3, "3", ATOM), "-", (5, "5", ATOM)) is None
    True
    """
    (xv, xs, xp), (yv, ys, yp) = x, y
    if op == "+":
        v = xv + yv
    elif op == "-":
        v = xv - yv
    elif op == "*":
        v = xv * yv
    else:
        if yv <= 1 or xv % yv:
            return None
        v = xv // yv
    if v <= 0:
        return None
    p = PREC[op]
    left = f"({xs})" if xp < p else xs
    right = f"({ys})" if yp < p or (yp == p and op in "-/") else ys
    return v, f"{left} {op} {right}", p


def random_build(rng: random.Random, numbers: list[int], ops: str, cap: int) -> tuple[Term, list[str]] | None:
    """Fold the numbers in random order, each step a random op whose result is a positive integer <= cap.

    Returns the final term and one sentence per step, or None when some step has no valid op.

    >>> (value, expr, _), steps = random_build(random.Random(0), [3, 7, 12], "+-*", 100)
    >>> eval(expr) == value and len(steps) == 2
    True
    """
    pool: list[Term] = [(n, str(n), ATOM) for n in numbers]
    steps: list[str] = []
    while len(pool) > 1:
        i, j = rng.sample(range(len(pool)), 2)
        x, y = pool[i], pool[j]
        if x[0] < y[0]:
            x, y = y, x  # larger first keeps '-' and '/' in range
        options = [(op, t) for op in ops if (t := combine(x, op, y)) is not None and t[0] <= cap]
        if not options:
            return None
        op, t = rng.choice(options)
        steps.append(f"{x[0]} {op} {y[0]} = {t[0]}.")
        pool = [p for k, p in enumerate(pool) if k not in (i, j)] + [t]
    return pool[0], steps


def params(difficulty: int) -> tuple[int, int, int, str]:
    """(how many numbers, largest number, largest target, allowed ops) at a difficulty level."""
    d = check_difficulty(difficulty)
    return d + 2, 15 * d, 100 * d, "+-*" if d == 1 else "+-*/"


class CountdownFamily(Family):
    """TinyZero countdown: "Using the numbers [3, 7, 12], make 33. ..." → "7 * 3 + 12"."""

    name = "countdown"
    lang = "en"

    def generate(self, rng: random.Random, difficulty: int) -> Problem:
        count, hi, target_max, ops = params(difficulty)
        while True:
            numbers = [rng.randint(1, hi) for _ in range(count)]
            built = random_build(rng, numbers, ops, target_max)
            if built is not None:
                break
        (target, expr, _), steps = built
        listed = ", ".join(map(str, numbers))
        prompt = f"Using the numbers [{listed}], make {target}. Use + - * / and each number once."
        lines = []
        if rng.random() < 0.3:  # a failed first attempt, as in search-style reasoning
            miss = random_build(rng, numbers, "+-*", 2 * target_max)
            if miss is not None and miss[0][0] != target:
                lines.append(f"Try {miss[0][1]} = {miss[0][0]}. That is not {target}.")
        lines += [*steps, f"So {expr} = {target}."]
        lines.append(maybe_verify(rng, f"{expr} = {target}, using {listed} once each", self.lang))
        lines.append(answer_sentence(expr, self.lang))
        canonical = f"{sorted(numbers)}->{target}"
        return self.make(canonical, prompt, expr, join_steps(lines, self.lang), difficulty,
                         {"numbers": numbers, "target": target})

    def check(self, answer: str | None, problem: Problem) -> bool:
        """The expression uses exactly the given numbers and evaluates to the target (TinyZero rules)."""
        if answer is None:
            return False
        from r1lab.rewards.countdown import check_countdown_expression

        return bool(check_countdown_expression(answer, problem.meta["numbers"], problem.meta["target"]))

    def vote(self, answer: str | None) -> str | None:
        """cons@k vote: the numbers an expression writes and the exact value it makes, which is all the checker reads,
        so two different solutions vote together; an expression that does not evaluate votes with its text.

        >>> fam = CountdownFamily()
        >>> fam.vote("14 + 10 - 3") == fam.vote("(10 + 14) - 3"), fam.vote("14 + 3 + 3"), fam.vote("1 +")
        (True, '3 3 14 = 20', '1 +')
        """
        if answer is None:
            return None
        from r1lab.rewards.countdown import evaluate_equation, written_numbers

        try:
            value = evaluate_equation(answer)
        except (ValueError, ZeroDivisionError, RecursionError):
            return answer
        return " ".join(map(str, written_numbers(answer))) + f" = {value}"

    def reward(self, completion: str, problem: Problem) -> float:
        """TinyZero reward of the full completion: 1.0 correct, 0.1 well-formed but wrong, 0.0 no answer."""
        from r1lab.rewards.countdown import countdown_reward

        return float(countdown_reward(completion, problem.meta["numbers"], problem.meta["target"]))
