"""Tiny code-writing tasks checked by running assert tests: "Write a Python function f(x) that returns x * 3 + 1."

Idea: R1-Zero's code reward (arXiv 2501.12948 §2.2.2) — "a compiler can be used to evaluate the responses against
predefined test cases". Here the answer is a Python function and `meta["tests"]` holds assert cases
([{"assert": "f(2) == 7"}, ...]) run by the shared sandboxed runner `r1lab.rewards.code.code_reward`.

Difficulty d: 1 = one-argument arithmetic; 2 = two-argument arithmetic; 3 = a branch (parity or threshold);
>= 4 = a filter / map / max over a list, thresholds and list lengths growing with d. Each problem has 4 tests
(distinct inputs drawn from the same rng); the prompt shows the first one as an example.
"""

from __future__ import annotations

import random
import re

from r1lab.tasks.base import Family, Problem, check_difficulty, join_steps, maybe_verify

ANSWER_LEAD = "The answer is:"  # code solutions end with this line, a newline and the fenced code (= the answer)
ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def fence(code: str) -> str:
    """Code as a fenced Python block, the form of a code family's gold answer.

    >>> fence("def f(x):\\n    return x")
    '```python\\ndef f(x):\\n    return x\\n```'
    """
    return f"```python\n{code}\n```"


def distinct(draw, n: int = 4) -> list[tuple]:
    """n distinct argument tuples from a zero-argument sampler (gives up after 100 draws)."""
    seen: list[tuple] = []
    for _ in range(100):
        args = draw()
        if args not in seen:
            seen.append(args)
        if len(seen) == n:
            break
    return seen


def spec(rng: random.Random, d: int) -> tuple[str, str, str, list[tuple]]:
    """(signature, English description, function body, test argument tuples) for difficulty d."""
    a, b = rng.randint(2, 12), rng.randint(1, 50)
    if d == 1:
        forms = [f"x * {a} + {b}", f"x * {a} - {b}", f"(x + {b}) * {a}", f"(x - {b}) * {a}", f"x * x + {b}",
                 f"x + {a + b}", f"{a + b} - x", f"x * {a}"]
        expr = rng.choice(forms)
        return "f(x)", f"returns {expr}", f"    return {expr}", distinct(lambda: (rng.randint(0, 12),))
    if d == 2:
        c = rng.randint(2, 9)
        forms = [f"x * {a} + y * {c}", f"x * y + {b}", f"(x + y) * {a}", f"x * x + y * {a}", f"(x - y) * {a} + {b}",
                 f"x * {a} - y * {c}", f"x * y - {b}", f"(x + y + {b}) * {c}", f"x * {a} + y * {c} + {b}"]
        expr = rng.choice(forms)
        args = distinct(lambda: (rng.randint(0, 12), rng.randint(0, 12)))
        return "f(x, y)", f"returns {expr}", f"    return {expr}", args
    if d == 3:
        k = rng.randint(0, 20)
        if rng.random() < 0.5:
            desc = f"returns x * {a} if x is even, otherwise x + {b}"
            body = f"    if x % 2 == 0:\n        return x * {a}\n    return x + {b}"
            xs = [(rng.randrange(0, 20, 2),), (rng.randrange(1, 20, 2),)]
        else:
            desc = f"returns x * {a} if x is greater than {k}, otherwise x - {b}"
            body = f"    if x > {k}:\n        return x * {a}\n    return x - {b}"
            xs = [(k + rng.randint(1, 9),), (k - rng.randint(0, 9),)]
        xs += [x for x in distinct(lambda: (rng.randint(0, 30),), 6) if x not in xs][:2]
        return "f(x)", desc, body, xs
    k = rng.randint(0, 10 * d)
    desc, expr = rng.choice([
        (f"the sum of the numbers in the list xs that are greater than {k}", f"sum(v for v in xs if v > {k})"),
        (f"the sum of the numbers in the list xs that are less than {k}", f"sum(v for v in xs if v < {k})"),
        (f"how many numbers in the list xs are greater than {k}", f"sum(1 for v in xs if v > {k})"),
        (f"how many numbers in the list xs are less than {k}", f"sum(1 for v in xs if v < {k})"),
        (f"the sum of v * {a} for the numbers v in the list xs greater than {k}",
         f"sum(v * {a} for v in xs if v > {k})"),
        (f"a list of the numbers in the list xs that are greater than {k}", f"[v for v in xs if v > {k}]"),
        (f"the list xs with {b} added to every number", f"[v + {b} for v in xs]"),
        (f"the largest number in the list xs plus {b}", f"max(xs) + {b}"),
    ])
    lists = distinct(lambda: ([rng.randint(0, 10 * d) for _ in range(rng.randint(1, d + 2))],))
    return "f(xs)", f"returns {desc}", f"    return {expr}", lists


def call_text(args: tuple) -> str:
    """Call of f on the argument tuple.

    >>> call_text((2,)), call_text((1, 2)), call_text(([3, 4],))
    ('f(2)', 'f(1, 2)', 'f([3, 4])')
    """
    return "f(" + ", ".join(repr(x) for x in args) + ")"


def run_reference(code: str, args: tuple) -> int:
    """Value of the reference solution on args (trusted code generated here, run in-process)."""
    scope: dict = {}
    exec(code, scope)  # noqa: S102 - our own generated reference, never model output
    return scope["f"](*args)


class CodeFamily(Family):
    """Write a one-function Python program that passes assert tests."""

    name = "code"
    lang = "en"

    def generate(self, rng: random.Random, difficulty: int) -> Problem:
        d = check_difficulty(difficulty)
        sig, desc, body, arg_sets = spec(rng, d)
        code = f"def {sig}:\n{body}"
        outs = [run_reference(code, args) for args in arg_sets]
        calls = [f"{call_text(x)} == {y!r}" for x, y in zip(arg_sets, outs)]
        tests = [{"assert": f"assert {c}"} for c in calls]
        prompt = f"Write a Python function {sig} that {desc}. For example, {calls[0]}."
        lines = [f"The function {sig} {desc}."]
        lines.append(f"For {call_text(arg_sets[0])} it gives {outs[0]}.")
        if "even" in desc:
            lines.append("Use x % 2 == 0 to test if x is even.")
        check = " and ".join(f"{call_text(x)} = {y}" for x, y in zip(arg_sets[1:3], outs[1:3]))
        lines.append(maybe_verify(rng, check, self.lang))
        answer = fence(code)
        solution = join_steps(lines, self.lang) + f" {ANSWER_LEAD}\n{answer}"
        return self.make(code, prompt, answer, solution, d, {"tests": tests, "entry_point": "f"})

    def check(self, answer: str | None, problem: Problem) -> bool:
        """The extracted answer (fenced or bare code) passes every test."""
        if not answer or not answer.strip():
            return False
        from r1lab.rewards.code import code_reward

        # all asserts in one program: one sandbox run instead of one per test, same all-or-nothing verdict
        merged = [{"assert": "\n".join(t["assert"] for t in problem.meta["tests"])}]
        return code_reward(answer, merged, timeout=5.0) == 1.0

    def answer(self, completion: str) -> str | None:
        """The program: the last <answer>...</answer> when present (fenced or bare code), else the completion's last
        fenced block after </think> (the shared `extract_program` convention); None when empty."""
        from r1lab.rewards.code import extract_program

        found = ANSWER_RE.findall(completion)
        program = found[-1] if found else extract_program(completion)
        return program if program.strip() else None
