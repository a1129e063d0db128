"""Multi-digit + − × with digit-by-digit worked solutions (carries and borrows written out).

Idea: the long-form column arithmetic a child writes down, as the chain of thought a tiny model can imitate and
that a rule checker verifies (R1-Zero accuracy reward, arXiv 2501.12948 §2.2.2). Phrases come from a table so
`arithmetic_zh` reuses the same engine in Chinese.

Difficulty d: + and − use (d+1)-digit numbers (d ≥ 3 also allows negative differences); × is (d+1)-digit by
1-digit up to d = 2, then d-digit by (d−1)-digit through partial products. Missing digits are written as 0 so
every column reads the same way (very regular text for tiny models).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from r1lab.tasks.base import (
    Family,
    Problem,
    answer_sentence,
    check_difficulty,
    join_steps,
    maybe_verify,
)


@dataclass(frozen=True)
class Phrases:
    """Language table for the column-arithmetic solutions (format fields are named in each template)."""

    places: tuple[str, ...]
    question: str  # {expr}
    add_intro: str  # {a} {b}
    sub_intro: str
    mul_intro: str
    negate: str  # {big} {small}
    write: str  # {lead}: {calc} = {s}, write {d}
    write_carry: str  # ... write {d} carry {c}
    borrow: str  # {lead}: {x} < {y}, borrow 1: {calc} = {r}, write {r}
    split: str  # {b} {parts}
    conclude: str  # {expr} = {r}
    place_fallback: str  # {n}: name of column n when `places` runs out
    stop: str  # sentence end
    space: str  # between sentences ("" in Chinese)


EN = Phrases(
    places=("Ones", "Tens", "Hundreds", "Thousands", "Ten thousands", "Hundred thousands", "Millions"),
    question="What is {expr}?",
    add_intro="Add {a} + {b} digit by digit.",
    sub_intro="Subtract {a} - {b} digit by digit.",
    mul_intro="Multiply {a} * {b} digit by digit.",
    negate="{small} is less than {big}, so compute {big} - {small} and make it negative.",
    write="{lead}: {calc} = {s}, write {d}.",
    write_carry="{lead}: {calc} = {s}, write {d} carry {c}.",
    borrow="{lead}: {x} < {y}, borrow 1: {calc} = {r}, write {r}.",
    split="Split {b} = {parts}.",
    conclude="So {expr} = {r}.",
    place_fallback="Digit {n}",
    stop=".",
    space=" ",
)


def place_name(i: int, ph: Phrases) -> str:
    """Name of the i-th column from the right (0 = ones)."""
    return ph.places[i] if i < len(ph.places) else ph.place_fallback.format(n=i + 1)


def digits_rev(n: int, width: int) -> list[int]:
    """Digits of n from the right, padded with zeros to `width`.

    >>> digits_rev(47, 3)
    [7, 4, 0]
    """
    return [int(c) for c in str(n).zfill(width)[::-1]]


def add_steps(a: int, b: int, ph: Phrases) -> list[str]:
    """Column addition of non-negative a + b, one sentence per column.

    >>> add_steps(47, 38, EN)[1:]
    ['Ones: 7 + 8 = 15, write 5 carry 1.', 'Tens: 4 + 3 + 1 = 8, write 8.']
    """
    width = max(len(str(a)), len(str(b)))
    da, db = digits_rev(a, width), digits_rev(b, width)
    steps, carry = [ph.add_intro.format(a=a, b=b)], 0
    for i in range(width):
        calc = f"{da[i]} + {db[i]}" + (f" + {carry}" if carry else "")
        s = da[i] + db[i] + carry
        last = i == width - 1
        if s >= 10 and not last:
            steps.append(ph.write_carry.format(lead=place_name(i, ph), calc=calc, s=s, d=s % 10, c=s // 10))
        else:
            steps.append(ph.write.format(lead=place_name(i, ph), calc=calc, s=s, d=s if last else s % 10))
        carry = s // 10
    return steps


def sub_steps(a: int, b: int, ph: Phrases) -> list[str]:
    """Column subtraction a − b for a ≥ b ≥ 0 with borrows.

    >>> sub_steps(85, 48, EN)[1:]
    ['Ones: 5 < 8, borrow 1: 15 - 8 = 7, write 7.', 'Tens: 8 - 1 - 4 = 3, write 3.']
    """
    width = len(str(a))
    da, db = digits_rev(a, width), digits_rev(b, width)
    steps, borrow = [ph.sub_intro.format(a=a, b=b)], 0
    for i in range(width):
        x = da[i] - borrow
        lead = place_name(i, ph)
        if x < db[i]:
            left = f"{da[i]} - 1 = {x}" if borrow else f"{da[i]}"
            calc = f"{x + 10} - {db[i]}"
            steps.append(ph.borrow.format(lead=lead, x=left, y=db[i], calc=calc, r=x + 10 - db[i]))
            borrow = 1
        else:
            calc = f"{da[i]}" + (" - 1" if borrow else "") + f" - {db[i]}"
            steps.append(ph.write.format(lead=lead, calc=calc, s=x - db[i], d=x - db[i]))
            borrow = 0
    return steps


def mul1_steps(a: int, b: int, ph: Phrases) -> list[str]:
    """Column multiplication of a by a single digit b.

    >>> mul1_steps(47, 6, EN)[1:]
    ['Ones: 7 * 6 = 42, write 2 carry 4.', 'Tens: 4 * 6 + 4 = 28, write 28.']
    """
    width = len(str(a))
    da = digits_rev(a, width)
    steps, carry = [ph.mul_intro.format(a=a, b=b)], 0
    for i in range(width):
        calc = f"{da[i]} * {b}" + (f" + {carry}" if carry else "")
        s = da[i] * b + carry
        last = i == width - 1
        if s >= 10 and not last:
            steps.append(ph.write_carry.format(lead=place_name(i, ph), calc=calc, s=s, d=s % 10, c=s // 10))
        else:
            steps.append(ph.write.format(lead=place_name(i, ph), calc=calc, s=s, d=s if last else s % 10))
        carry = s // 10 if not last else 0
    return steps


def mul_steps(a: int, b: int, ph: Phrases) -> list[str]:
    """a × b: column method for a one-digit b, partial products (b split by place value) otherwise.

    >>> mul_steps(47, 36, EN)
    ['Split 36 = 30 + 6.', '47 * 6 = 282.', '47 * 30 = 1410.', '282 + 1410 = 1692.']
    """
    if b < 10:
        return mul1_steps(a, b, ph)
    parts = [int(c) * 10**i for i, c in enumerate(str(b)[::-1]) if c != "0"]
    steps = [ph.split.format(b=b, parts=" + ".join(str(p) for p in reversed(parts)))]
    products = [a * p for p in parts]
    steps += [f"{a} * {p} = {a * p}{ph.stop}" for p in parts]
    if len(products) > 1:
        steps.append(" + ".join(map(str, products)) + f" = {sum(products)}{ph.stop}")
    return steps


def worked_calc(a: int, op: str, b: int, ph: Phrases) -> str:
    """One calculation inside a longer solution (word problems, equations), without its final full stop.

    An addition or subtraction of non-negative numbers with a non-negative result is worked in columns, as in this
    family, then concluded; anything else (a negative number, an exact quotient) stays one line. Why: with
    one-line sums a tiny model gets the structure of a word problem right and the sums wrong ("17 + 2 = 22"); with
    column steps the speedrun base's worked-solution exact-match went 0.30 → 0.60, R1-Zero's gain +0.14 → +0.31
    (docs/benchmarks.md, thirteenth and fourteenth sessions).

    >>> worked_calc(17, "+", 2, EN)
    '17 + 2. Add 17 + 2 digit by digit. Ones: 7 + 2 = 9, write 9. Tens: 1 + 0 = 1, write 1. So 17 + 2 = 19'
    >>> worked_calc(-7, "-", 5, EN), worked_calc(12, "/", 3, EN)
    ('-7 - 5 = -12', '12 / 3 = 4')
    """
    if op not in ("+", "-", "/") or (op == "/" and (b == 0 or a % b)):
        raise ValueError(f"worked_calc: {a} {op} {b} is not a sum, difference or exact quotient")
    r = a + b if op == "+" else a - b if op == "-" else a // b
    if op not in "+-" or min(a, b, r) < 0:
        return f"{a} {op} {b} = {r}"
    steps = add_steps(a, b, ph) if op == "+" else sub_steps(a, b, ph)
    conclude = ph.conclude.format(expr=f"{a} {op} {b}", r=r).removesuffix(ph.stop)
    return ph.space.join([f"{a} {op} {b}{ph.stop}", *steps, conclude])


def sample_operands(rng: random.Random, difficulty: int) -> tuple[int, str, int]:
    """Draw (a, op, b) at a difficulty level (see module docstring)."""
    d = check_difficulty(difficulty)
    op = rng.choice("+-*")
    if op == "*":
        da, db = (d + 1, 1) if d <= 2 else (d, d - 1)
        a = rng.randint(10 ** (da - 1), 10**da - 1)
        b = rng.randint(2, 9) if db == 1 else rng.randint(10 ** (db - 1), 10**db - 1)
        return a, op, b
    a = rng.randint(10**d, 10 ** (d + 1) - 1)
    b = rng.randint(1, 10 ** (d + 1) - 1)
    if op == "-" and a < b and d <= 2:
        a, b = b, a
    if op == "+" and rng.random() < 0.5:
        a, b = b, a
    return a, op, b


def solve(a: int, op: str, b: int, ph: Phrases, rng: random.Random, lang: str) -> tuple[int, str]:
    """Result and worked solution text for a op b."""
    expr = f"{a} {op} {b}"
    if op == "+":
        r = a + b
        steps = add_steps(a, b, ph)
        check = f"{r} - {b} = {a}"
    elif op == "-":
        r = a - b
        steps = sub_steps(a, b, ph) if a >= b else [ph.negate.format(big=b, small=a), *sub_steps(b, a, ph)]
        check = f"{r} + {b} = {a}"
    else:
        r = a * b
        steps = mul_steps(a, b, ph)
        check = f"{r} / {b} = {a}"
    steps.append(ph.conclude.format(expr=expr, r=r))
    steps.append(maybe_verify(rng, check, lang))
    steps.append(answer_sentence(str(r), lang))
    return r, join_steps(steps, lang)


class ArithmeticFamily(Family):
    """English column arithmetic: "What is 47 + 38?" → 85."""

    name = "arithmetic"
    lang = "en"
    phrases = EN

    def generate(self, rng: random.Random, difficulty: int) -> Problem:
        a, op, b = sample_operands(rng, difficulty)
        r, solution = solve(a, op, b, self.phrases, rng, self.lang)
        prompt = self.phrases.question.format(expr=f"{a} {op} {b}")
        return self.make(f"{a}{op}{b}", prompt, str(r), solution, difficulty, {"a": a, "op": op, "b": b})
