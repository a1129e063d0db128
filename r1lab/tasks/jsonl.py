"""Problems to and from JSON: `problem_to_dict` / `problem_from_dict`, and JSONL task files written by users.

A user task file has one JSON object per line: {"prompt": ..., "answer": ...} plus optional "family" (default
"math": answer-equivalence checker), "solution", "lang" (default: "zh" when the prompt is mostly CJK),
"difficulty" (default 1), "meta" (needed by families that check through it: countdown numbers/target, code
tests) and "uid" (default: content hash of family, prompt and answer). Bad rows raise ValueError naming
file:line and the field. Blank lines and lines starting with "#" are skipped.
"""

# ruff: noqa: TRY004 - every bad row raises ValueError (a data error naming file:line), also for wrong types

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

from r1lab.tasks.base import Problem, content_uid

REQUIRED_META = {"countdown": ("numbers", "target"), "code": ("tests",)}


def cjk_fraction(text: str) -> float:
    """Fraction of the letters in `text` (str.isalpha) that are CJK ideographs; 0.0 without letters.

    >>> cjk_fraction("小明有 12 个苹果。"), cjk_fraction("Tom has 12 apples."), cjk_fraction("12 + 3")
    (1.0, 0.0, 0.0)
    """
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 0.0
    return sum("\u4e00" <= c <= "\u9fff" or "\u3400" <= c <= "\u4dbf" for c in letters) / len(letters)


def problem_to_dict(problem: Problem) -> dict:
    """A JSON-ready dict of every field.

    >>> problem_to_dict(Problem("math", "ab" * 8, "1+1?", "2", "", "en", 1))["answer"]
    '2'
    """
    return asdict(problem)


def problem_from_dict(row: dict, where: str = "row") -> Problem:
    """Build and validate a Problem from a dict; optional fields get defaults (see module docstring).

    >>> problem_from_dict({"prompt": "1+1?", "answer": 2}).family
    'math'
    >>> problem_from_dict({"prompt": "1+1?"})
    Traceback (most recent call last):
    ...
    ValueError: row: missing required field 'answer'
    """
    from r1lab.tasks import FAMILIES  # lazy: the registry imports this module

    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for key in ("prompt", "answer"):
        if key not in row or row[key] is None:
            raise ValueError(f"{where}: missing required field {key!r}")
    prompt, answer = row["prompt"], row["answer"]
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"{where}: field 'prompt' must be a non-empty string")
    if isinstance(answer, bool) or not isinstance(answer, str | int | float):
        raise ValueError(f"{where}: field 'answer' must be a string or a number, got {type(answer).__name__}")
    answer = str(answer)
    family = row.get("family") or "math"
    if family not in FAMILIES:
        raise ValueError(f"{where}: unknown family {family!r}; known: {', '.join(sorted(FAMILIES))}")
    meta = row.get("meta") or {}
    if not isinstance(meta, dict):
        raise ValueError(f"{where}: field 'meta' must be an object")
    for key in REQUIRED_META.get(family, ()):
        if key not in meta:
            raise ValueError(f"{where}: family {family!r} needs field 'meta.{key}'")
    lang = row.get("lang") or ("zh" if cjk_fraction(prompt) > 0.5 else "en")
    if lang not in ("en", "zh"):
        raise ValueError(f"{where}: field 'lang' must be 'en' or 'zh', got {lang!r}")
    difficulty = row.get("difficulty", 1)
    if isinstance(difficulty, bool) or not isinstance(difficulty, int) or difficulty < 1:
        raise ValueError(f"{where}: field 'difficulty' must be an int >= 1, got {difficulty!r}")
    solution = row.get("solution") or ""
    if not isinstance(solution, str):
        raise ValueError(f"{where}: field 'solution' must be a string")
    uid = row.get("uid") or content_uid(family, f"{prompt}\x1f{answer}")
    if not isinstance(uid, str):
        raise ValueError(f"{where}: field 'uid' must be a string")
    return Problem(family=family, uid=uid, prompt=prompt, answer=answer, solution=solution, lang=lang,
                   difficulty=difficulty, meta=meta)


def load_tasks_jsonl(path: str | os.PathLike) -> list[Problem]:
    """Read a JSONL task file (user rows or saved problems); errors name file:line."""
    from r1lab.data.stream import iter_json_objects

    return [problem_from_dict(row, f"{path}:{lineno}")
            for row, lineno in iter_json_objects(path, skip_comments=True)]


def save_problems_jsonl(problems: list[Problem], path: str | os.PathLike) -> Path:
    """Write problems as JSONL atomically (temp file in the same folder, then rename)."""
    from r1lab.data.stream import write_jsonl_atomic

    return write_jsonl_atomic((problem_to_dict(p) for p in problems), path)
