"""Is a gap between two evaluations beyond noise? Paired standard errors over the same test problems.

Idea: the speedrun's evaluation has ~84 problems × k samples; a pass@1 gap of 0.003 between two stages is noise,
and a report that calls it "reproduced" says more than the run shows. Every stage is evaluated on the same test
problems, so the gap is measured *paired* (over the problem uids both evaluations have): for each problem i the
difference d_i = value_A(i) − value_B(i) of the per-problem values (pass@1 = the fraction of its k samples that
are correct, cons@k = 1 if the majority vote is correct, mixing = the fraction of its samples that mix
languages), then Δ = mean(d) and SE = sd(d) / √n (sample sd, n − 1). Pairing removes the problem-difficulty
variance that two independent standard errors would count twice. A claim "A − B ≥ m" is *within noise* when
|Δ − m| < 2·SE (≈ the 95 % band of a normal approximation) or when SE is unknown (n < 2): the point estimate
decides the verdict, the qualifier says how much that verdict can be trusted. The k samples of one problem are
averaged first, so they are not counted as independent draws. Nothing here changes a measured number.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

METRICS = ("pass@1", "cons@k", "mixing")
NOISE_SE = 2.0  # a margin smaller than this many standard errors is "within noise"


def per_problem(records: Sequence[Mapping[str, Any]], metric: str) -> dict[str, float]:
    """uid → the per-problem value of ``metric`` ("pass@1" | "cons@k" | "mixing") from evaluation records
    (``r1lab.pipeline.evaluate.ProblemRecord`` as dicts, one per problem).

    >>> recs = [{"uid": "a", "correct": [True, False], "cons_correct": True, "mixed": [False, False]}]
    >>> per_problem(recs, "pass@1"), per_problem(recs, "cons@k"), per_problem(recs, "mixing")
    ({'a': 0.5}, {'a': 1.0}, {'a': 0.0})
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    out = {}
    for r in records:
        if metric == "cons@k":
            out[r["uid"]] = float(r["cons_correct"])
        else:
            xs = r["correct"] if metric == "pass@1" else r["mixed"]
            out[r["uid"]] = sum(map(float, xs)) / len(xs) if xs else 0.0
    return out


def paired(a: Mapping[str, float], b: Mapping[str, float]) -> tuple[float, float, int]:
    """(Δ = mean of a − b, its standard error, n) over the problems both have; SE is nan when n < 2.

    >>> d, se, n = paired({"p": 1.0, "q": 0.5, "r": 0.0}, {"p": 0.5, "q": 0.5, "r": 0.0})
    >>> round(d, 4), round(se, 4), n
    (0.1667, 0.1667, 3)
    """
    uids = [u for u in a if u in b]
    n = len(uids)
    if n == 0:
        return math.nan, math.nan, 0
    diffs = [a[u] - b[u] for u in uids]
    mean = sum(diffs) / n
    if n < 2:
        return mean, math.nan, n
    var = sum((x - mean) ** 2 for x in diffs) / (n - 1)
    return mean, math.sqrt(var / n), n


def within_noise(margin: float, se: float) -> bool:
    """True when |margin| < NOISE_SE · SE (a zero margin with SE 0 is exact, not noise), and when SE is unknown
    (fewer than 2 paired problems: nothing rules noise out).

    >>> within_noise(0.003, 0.02), within_noise(0.1, 0.02), within_noise(0.0, 0.0), within_noise(0.5, math.nan)
    (True, False, False, True)
    """
    return math.isnan(se) or abs(margin) < NOISE_SE * se


def describe(delta: float, se: float, n: int) -> str:
    """"Δ +0.036 ± 0.027 (paired SE, 84 problems)", or "" when there is nothing to show.

    >>> describe(0.0357, 0.0271, 84)
    'Δ +0.036 ± 0.027 (paired SE, 84 problems)'
    """
    if n == 0 or math.isnan(delta):
        return ""
    if math.isnan(se):
        return f"Δ {delta:+.3f} ({n} problem{'s' if n != 1 else ''})"
    return f"Δ {delta:+.3f} ± {se:.3f} (paired SE, {n} problems)"


def read_records(path: str | Path, required: bool = False) -> list[dict[str, Any]]:
    """Per-problem evaluation records (JSONL: an eval stage's ``records.jsonl`` or ``r1lab eval --records``);
    a missing file gives [] unless ``required``. A bad line is an error naming ``file:line``."""
    p = Path(path)
    if not p.exists():
        if required:
            raise FileNotFoundError(f"{p}: no such records file")
        return []
    out = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{p}:{n}: not JSON ({err.msg})") from None
        missing = [k for k in ("uid", "correct", "mixed", "cons_correct") if not isinstance(row, dict) or k not in row]
        if missing:
            raise ValueError(f"{p}:{n}: not an evaluation record (missing {', '.join(missing)})")
        out.append(row)
    return out


def compare(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]]) -> dict[str, tuple[float, float, int]]:
    """metric → (Δ = a − b, SE, n) for pass@1, cons@k and mixing over the problems both record sets have.

    >>> a = [{"uid": "p", "correct": [True], "mixed": [False], "cons_correct": True},
    ...      {"uid": "q", "correct": [False], "mixed": [False], "cons_correct": False}]
    >>> b = [dict(r, correct=[False], cons_correct=False) for r in a]
    >>> {m: round(d, 2) for m, (d, _, _) in compare(a, b).items()}
    {'pass@1': 0.5, 'cons@k': 0.5, 'mixing': 0.0}
    """
    return {m: paired(per_problem(a, m), per_problem(b, m)) for m in METRICS}
