"""Built-in verifiable task families, their registry, and deterministic train/val/test splits.

Idea: R1-Zero's rule-based rewards (arXiv 2501.12948 §2.2.2) need problems with checkable answers; these seeded
families (arithmetic, countdown à la TinyZero, linear equations, word problems, tiny code tasks, and Chinese
arithmetic / word problems) supply them at any size and difficulty without downloads.

Splits are decided by the problem's content hash (`base.split_of`), not by position or seed: train/val/test are
disjoint by construction for any n, seed or difficulty. `make_split` draws problems from a seeded stream per
family, keeps those whose hash falls in the requested split, dedupes by uid, and interleaves the families
(problem 0 of each family, then problem 1, ...).
"""

from __future__ import annotations

import random

from r1lab.tasks.arithmetic import ArithmeticFamily
from r1lab.tasks.arithmetic_zh import ArithmeticZhFamily
from r1lab.tasks.base import SPLITS, Family, Problem, reference_completion, split_of
from r1lab.tasks.code import CodeFamily
from r1lab.tasks.countdown import CountdownFamily
from r1lab.tasks.equations import EquationsFamily
from r1lab.tasks.generic import MathFamily
from r1lab.tasks.jsonl import (
    load_tasks_jsonl,
    problem_from_dict,
    problem_to_dict,
    save_problems_jsonl,
)
from r1lab.tasks.word import WordFamily
from r1lab.tasks.word_zh import WordZhFamily

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (ArithmeticFamily(), CountdownFamily(), EquationsFamily(), WordFamily(), CodeFamily(),
              ArithmeticZhFamily(), WordZhFamily(), MathFamily())
}
GENERATIVE = tuple(name for name, f in FAMILIES.items() if f.generative)
PATIENCE = 3000  # consecutive draws without a new problem after which a family counts as exhausted

__all__ = [
    "CORRECT",
    "FAMILIES",
    "GENERATIVE",
    "SPLITS",
    "Family",
    "Problem",
    "get_family",
    "load_tasks_jsonl",
    "make_split",
    "problem_from_dict",
    "problem_to_dict",
    "reference_completion",
    "save_problems_jsonl",
    "split_of",
    "task_check",
    "task_reward",
]


def get_family(name: str) -> Family:
    """The registered family called `name`.

    >>> get_family("countdown").name
    'countdown'
    >>> get_family("chess")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown task family 'chess'; known: arithmetic, arithmetic_zh, code, countdown, ...
    """
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown task family {name!r}; known: {', '.join(sorted(FAMILIES))}") from None


def family_problems(name: str, split: str, n: int, difficulty: int, seed: int, strict: bool = True) -> list[Problem]:
    """The first n distinct problems of one family whose content hash falls in `split`.

    Stops early when PATIENCE draws in a row bring nothing new (the family's space at this difficulty is used
    up): raises ValueError when `strict`, else returns the shorter list.
    """
    fam = get_family(name)
    if not fam.generative:
        raise ValueError(f"family {name!r} has no generator; generative families: {', '.join(GENERATIVE)}")
    rng = random.Random(f"r1lab.tasks:{seed}:{name}:{difficulty}:{split}")
    out: list[Problem] = []
    seen: set[str] = set()
    misses = 0
    while len(out) < n and misses < PATIENCE:
        p = fam.generate(rng, difficulty)
        if p.uid not in seen and split_of(p.uid) == split:
            seen.add(p.uid)
            out.append(p)
            misses = 0
        else:
            misses += 1
    if len(out) < n and strict:
        raise ValueError(f"family {name!r} at difficulty {difficulty} has only about {len(out)} distinct {split!r} "
                         f"problems (asked for {n}); ask for fewer, use another difficulty or strict=False")
    return out


def make_split(split: str, n_per_family: int, difficulty: int = 1, families: list[str] | None = None,
               seed: int = 0, strict: bool = True) -> list[Problem]:
    """n_per_family problems of each family in `split` ("train" | "val" | "test"), interleaved by family.

    Deterministic in all arguments; the first k problems of a family do not depend on n_per_family. A family
    whose problem space at this difficulty is too small raises ValueError (`strict`) or contributes fewer.

    >>> ps = make_split("val", 2, families=["arithmetic", "word"])
    >>> [p.family for p in ps], {split_of(p.uid) for p in ps}
    (['arithmetic', 'word', 'arithmetic', 'word'], {'val'})
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if n_per_family < 0:
        raise ValueError(f"n_per_family must be >= 0, got {n_per_family}")
    names = list(GENERATIVE if families is None else families)
    for name in names:
        get_family(name)
    per_family = [family_problems(name, split, n_per_family, difficulty, seed, strict) for name in names]
    longest = max((len(ps) for ps in per_family), default=0)
    return [ps[i] for i in range(longest) for ps in per_family if i < len(ps)]


def task_check(answer: str | None, problem: Problem) -> bool:
    """Is an already extracted final answer correct? Dispatches to the problem's family."""
    return get_family(problem.family).check(answer, problem)


def task_answer(completion: str, problem: Problem) -> str | None:
    """The final answer the problem's family reads from a full completion (None when there is none)."""
    return get_family(problem.family).answer(completion)


CORRECT = 0.999  # a rule reward at or above this is a correct answer (countdown's 0.1 and partial code passes are not)


def task_reward(completion: str, problem: Problem) -> float:
    """Rule reward of a full completion for `problem`, in [0, 1]; dispatches to the problem's family."""
    return get_family(problem.family).reward(completion, problem)
