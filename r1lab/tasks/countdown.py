"""Countdown: combine the given numbers with + − × ÷ (each exactly once) to hit a target.

Idea: the TinyZero task (Jiayi Pan et al., 2025) used to reproduce R1-Zero's "aha" behaviour on small models; rules
as in TinyZero (notes/r1_training.md): the answer is an expression inside <answer></answer> that uses exactly the
given multiset of numbers, only digits, + - * / ( ) and spaces, and evaluates to the target within 1e-5;
reward 1.0 correct, 0.1 well-formed but wrong, 0.0 no answer.

Generator: the target is built by combining the numbers in a random order (every intermediate result a positive
integer), so every problem is solvable by construction. Difficulty d: d + 2 numbers in 1..15d, targets up to
100d; division joins at d ≥ 2.

Worked solutions. At d = 1 (three numbers) the solution is a search the model can carry out, not the construction
replayed (`search_solution`): it works back from the target, trying each number last in the order given — what the
other two must make (T − x, T + x, x − T, T / x), then what they do make (sum, difference, product) until one is
needed — so every line follows from the lines before it. Every three-number expression is (pair) op x or x − (pair),
so the search always ends, and the gold answer is the expression it finds. Replaying the construction ("7 * 3 = 21.
21 + 12 = 33.") asks the model to guess the right first step, and bases trained on it solved 0-2 % of level-1
problems (docs/benchmarks.md). At d ≥ 2 the solution lists the construction's steps; 30% (seeded) first show a
failed attempt. 30% of solutions verify the final expression.
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


def _needs(target: int, x: int) -> list[tuple[int, str, str]]:
    """What the other two numbers must make when ``x`` comes last: (value, the sentence that computes it, how the pair
    and x combine: "+" for pair + x, "-" for pair - x, "r-" for x - pair, "*" for pair * x).

    >>> [(v, s) for v, s, _ in _needs(12, 4)]
    [(8, '12 - 4 = 8'), (16, '12 + 4 = 16'), (3, '12 / 4 = 3')]
    >>> [(v, s) for v, s, _ in _needs(5, 9)]
    [(14, '5 + 9 = 14'), (4, '9 - 5 = 4')]
    """
    out = []
    if target > x:
        out.append((target - x, f"{target} - {x} = {target - x}", "+"))
    out.append((target + x, f"{target} + {x} = {target + x}", "-"))
    if x > target:
        out.append((x - target, f"{x} - {target} = {x - target}", "r-"))
    if target % x == 0:
        out.append((target // x, f"{target} / {x} = {target // x}", "*"))
    return out


def search_solution(numbers: list[int], target: int) -> tuple[str, list[str]]:
    """Work back from the target over three numbers: the expression found and the solution's sentences.

    >>> expr, lines = search_solution([3, 15, 10], 8)
    >>> expr, " ".join(lines)
    ('15 - 10 + 3', 'Try 3 last: 8 - 3 = 5, 8 + 3 = 11. 15 + 10 = 25, 15 - 10 = 5. Yes, 5 works.')
    >>> expr, lines = search_solution([4, 11, 5], 9)
    >>> expr, lines[1], lines[-1]
    ('5 * 4 - 11', '11 + 5 = 16, 11 - 5 = 6, 11 * 5 = 55. No.', '5 + 4 = 9, 5 - 4 = 1, 5 * 4 = 20. Yes, 20 works.')
    """
    if len(numbers) != 3:
        raise ValueError(f"search_solution takes three numbers, got {numbers}")
    lines: list[str] = []
    for i, x in enumerate(numbers):
        p, q = sorted((n for j, n in enumerate(numbers) if j != i), reverse=True)
        needs = _needs(target, x)
        lines.append(f"Try {x} last: " + ", ".join(s for _, s, _ in needs) + ".")
        wanted = {v: how for v, _, how in needs}
        made = []
        for op in "+-*":
            term = combine((p, str(p), ATOM), op, (q, str(q), ATOM))
            if term is None:
                continue
            made.append(f"{p} {op} {q} = {term[0]}")
            if term[0] in wanted:
                how = wanted[term[0]]
                xt = (x, str(x), ATOM)
                final = combine(xt, "-", term) if how == "r-" else combine(term, how, xt)
                assert final is not None and final[0] == target, (numbers, target, final)
                lines.append(", ".join(made) + f". Yes, {term[0]} works.")
                return final[1], lines
        lines.append(", ".join(made) + ". No.")
    raise ValueError(f"no expression of {numbers} makes {target}")  # unreachable for generated problems


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
        if rng.random() < 0.3:  # a failed first attempt, as in search-style reasoning (drawn at every level, so
            miss = random_build(rng, numbers, "+-*", 2 * target_max)  # that the problem stream stays the same)
            if miss is not None and miss[0][0] != target and count != 3:
                lines.append(f"Try {miss[0][1]} = {miss[0][0]}. That is not {target}.")
        if count == 3:
            expr, steps = search_solution(numbers, target)
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
