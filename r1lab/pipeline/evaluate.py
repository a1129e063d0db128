"""Evaluation as in DeepSeek-R1: pass@1 averaged over k samples, cons@k majority vote, per task family.

Idea (arXiv 2501.12948 §3.1 "Evaluation Setup"): sample k responses per problem at temperature 0.6, top-p 0.95;
pass@1 = mean over problems of the fraction of correct samples; cons@k = correctness of the majority-voted final
answer. We also report pass@k (some sample of the k is correct: the gap pass@k − pass@1 bounds what RL that only
sharpens the sampling distribution could gain from the same samples), greedy accuracy (the paper avoids greedy for
long CoT because it repeats; it stays useful as a low-variance signal for tiny models), mean response tokens and the
language-mixing rate.

Definitions (deliberate, documented choices):
- correctness of a sample = the task's own rule reward ``r1lab.tasks.task_reward`` is 1.0 (countdown's 0.1
  "well-formed but wrong" counts as wrong); for benchmark rows (family "math") that is Math-Verify equivalence of
  the extracted answer (``r1lab.rewards.math.extract_answer``: last <answer>, else last \\boxed{}, else last ####).
- cons@k: each sample votes with its extracted answer as its family reads it (``Family.vote``: countdown
  expressions vote with the numbers they write and the value they make, so different solutions agree), normalised by
  ``vote_key`` (whitespace removed, integers canonical); samples without an answer do not vote; ties go to the
  answer whose first vote came earliest (sample order is seeded, so this is deterministic); the problem counts as
  solved when a sample carrying the winning answer is correct (all samples with one key get one verdict, since
  checkers only read the answer).
- language mixing: a response is "mixed" when its chain of thought (inside <think>…</think>, or the whole
  response when there is none) has words and fewer than 90% of them are in the problem's language
  (``r1lab.rewards.language_consistency``, the paper's "proportion of target language words"); see ``is_mixed``.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from r1lab.pipeline.generation import (PROBLEMS_PER_CALL, Completion, Sampling, as_generate_fn, build_prompt,
                                       full_response)
from r1lab.rewards.language import chain_of_thought, is_mixed
from r1lab.tasks import CORRECT  # a rule reward at or above this counts as a correct answer


@dataclass
class ProblemRecord:
    """Per-problem outcome: which samples were correct, their votes, token counts, mixing flags."""

    uid: str
    family: str
    correct: list[bool]
    answers: list[str | None]
    tokens: list[int]
    mixed: list[bool]
    truncated: list[bool]
    cons_correct: bool
    greedy_correct: bool | None = None


@dataclass
class EvalResult:
    """Aggregates over problems; ``per_family`` holds the same metrics per task family."""

    k: int
    n_problems: int
    pass_at_1: float
    cons_at_k: float
    pass_at_k: float
    greedy_accuracy: float | None
    mean_response_tokens: float
    language_mixing_rate: float
    truncation_rate: float
    per_family: dict[str, dict[str, float]] = field(default_factory=dict)
    records: list[ProblemRecord] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        """The headline numbers (no per-problem records), JSON-ready."""
        d = asdict(self)
        d.pop("records")
        return d

    def table(self) -> str:
        """A small text table: one line per family and the total."""
        head = (f"{'family':<16}{'n':>5}{'pass@1':>9}{f'cons@{self.k}':>9}{f'pass@{self.k}':>9}{'greedy':>8}"
                f"{'tokens':>8}{'mixed':>7}")
        lines = [head]
        rows = [*self.per_family.items(), ("ALL", self._as_row())]
        for name, m in rows:
            greedy = "-" if m.get("greedy_accuracy") is None else f"{m['greedy_accuracy']:.3f}"
            lines.append(f"{name:<16}{int(m['n_problems']):>5}{m['pass_at_1']:>9.3f}{m['cons_at_k']:>9.3f}"
                         f"{m['pass_at_k']:>9.3f}{greedy:>8}{m['mean_response_tokens']:>8.1f}"
                         f"{m['language_mixing_rate']:>7.3f}")
        return "\n".join(lines)

    def _as_row(self) -> dict[str, Any]:
        return {"n_problems": self.n_problems, "pass_at_1": self.pass_at_1, "cons_at_k": self.cons_at_k,
                "pass_at_k": self.pass_at_k, "greedy_accuracy": self.greedy_accuracy,
                "mean_response_tokens": self.mean_response_tokens, "language_mixing_rate": self.language_mixing_rate}


def vote_key(answer: str | None) -> str | None:
    """Normalised form of an extracted answer for majority voting; None stays None (no vote).

    >>> vote_key(" 1,692 "), vote_key("$-7$"), vote_key("x = 5"), vote_key("\\\\frac{1}{2}"), vote_key(None)
    ('1692', '-7', '5', '\\\\frac{1}{2}', None)
    """
    if answer is None or not answer.strip():
        return None
    from r1lab.tasks.base import parse_int

    as_int = parse_int(answer)
    return str(as_int) if as_int is not None else "".join(answer.split())


def majority(keys: Sequence[str | None]) -> int | None:
    """Index of the first sample carrying the most frequent non-None key (ties: earliest first vote), or None.

    >>> majority(["3", "4", "4", "3"]), majority(["5", None, "6", "6"]), majority([None, None])
    (0, 2, None)
    """
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return None
    best = max(counts.values())
    for i, key in enumerate(keys):
        if key is not None and counts[key] == best:
            return i
    return None  # unreachable


def score_sample(response: str, problem: Any) -> tuple[bool, str | None]:
    """(correct, extracted answer) of one full response for a problem; the answer is what the family's reward
    reads (``r1lab.tasks.task_answer``), so an R1-format code summary ending in a fenced program votes too.

    >>> from r1lab.tasks import make_split
    >>> p = make_split("test", 1, 1, ["code"])[0]
    >>> score_sample("<think>\\nok\\n</think>\\n\\nThe answer is:\\n" + p.answer, p)[1] is not None
    True
    """
    from r1lab.tasks import task_answer, task_reward

    return task_reward(response, problem) >= CORRECT, task_answer(response, problem)


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else 0.0


def aggregate(records: Sequence[ProblemRecord], k: int) -> EvalResult:
    """Aggregate per-problem records into an EvalResult (overall and per family)."""

    def metrics(rs: Sequence[ProblemRecord]) -> dict[str, Any]:
        greedy = [r.greedy_correct for r in rs if r.greedy_correct is not None]
        return {
            "n_problems": len(rs),
            "pass_at_1": _mean([_mean([float(c) for c in r.correct]) for r in rs]),
            "cons_at_k": _mean([float(r.cons_correct) for r in rs]),
            "pass_at_k": _mean([float(any(r.correct)) for r in rs]),
            "greedy_accuracy": _mean([float(g) for g in greedy]) if greedy else None,
            "mean_response_tokens": _mean([t for r in rs for t in r.tokens]),
            "language_mixing_rate": _mean([float(m) for r in rs for m in r.mixed]),
            "truncation_rate": _mean([float(t) for r in rs for t in r.truncated]),
        }

    by_family: dict[str, list[ProblemRecord]] = defaultdict(list)
    for r in records:
        by_family[r.family].append(r)
    total = metrics(records)
    per_family = {}
    for name in sorted(by_family):
        m = metrics(by_family[name])
        m.pop("truncation_rate")
        per_family[name] = m
    return EvalResult(k=k, records=list(records), per_family=per_family, **total)


def record_for(problem: Any, completions: Sequence[Completion], style: str,
               greedy: Completion | None = None) -> ProblemRecord:
    """Score the k completions (and the optional greedy one) of one problem."""
    from r1lab.tasks import get_family

    responses = [full_response(c.text, style) for c in completions]
    scored = [score_sample(r, problem) for r in responses]
    family = get_family(problem.family)
    keys = [vote_key(family.vote(a)) for _, a in scored]
    winner = majority(keys)
    greedy_ok = None if greedy is None else score_sample(full_response(greedy.text, style), problem)[0]
    return ProblemRecord(
        uid=problem.uid, family=problem.family,
        correct=[ok for ok, _ in scored], answers=[a for _, a in scored],
        tokens=[c.num_tokens for c in completions],
        mixed=[is_mixed(chain_of_thought(r), problem.lang) for r in responses],
        truncated=[c.finish_reason == "length" for c in completions],
        cons_correct=winner is not None and scored[winner][0],
        greedy_correct=greedy_ok,
    )


def evaluate(llm_or_generate_fn: Any, problems: Sequence[Any], k: int = 4, temperature: float = 0.6,
             top_p: float = 0.95, max_tokens: int = 256, template: str = "r1-zero", greedy: bool = True,
             tokenizer: Any = None, seed: int = 0, batch_size: int = PROBLEMS_PER_CALL,
             progress: bool = True) -> EvalResult:
    """pass@1 (mean over k samples), cons@k, greedy accuracy, per family, tokens and mixing on ``problems``.

    ``llm_or_generate_fn``: an engine LLM, a model directory or ``fn(prompts, Sampling) -> [[str|Completion]]``.
    ``template``: prompt style, "r1-zero" | "r1" | "plain" (see ``generation.build_prompt``).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not problems:
        raise ValueError("no problems to evaluate")
    tokenizer = tokenizer if tokenizer is not None else getattr(llm_or_generate_fn, "tokenizer", None)
    generate = as_generate_fn(llm_or_generate_fn, tokenizer)
    sampled = Sampling(n=k, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed)
    greedy_sampling = Sampling(n=1, temperature=0.0, top_p=1.0, max_tokens=max_tokens, seed=seed)
    records: list[ProblemRecord] = []
    chunks = range(0, len(problems), batch_size)
    if progress:
        from tqdm import tqdm

        chunks = tqdm(chunks, desc=f"eval k={k}", unit="batch", total=math.ceil(len(problems) / batch_size))
    for start in chunks:
        batch = list(problems[start : start + batch_size])
        prompts = [build_prompt(p.prompt, template, tokenizer) for p in batch]
        outs = generate(prompts, sampled)
        greedy_outs = generate(prompts, greedy_sampling) if greedy else [[None]] * len(batch)
        for p, comps, g in zip(batch, outs, greedy_outs, strict=True):
            records.append(record_for(p, comps, template, g[0]))
    return aggregate(records, k)


# ---------------------------------------------------------------------------------------------- benchmark files


def load_benchmark(path: str | Path, fmt: str, limit: int | None = None) -> list[Any]:
    """Problems from a local JSONL benchmark: ``gsm8k`` rows {"question", "answer": "… #### 72"} or ``math`` rows
    {"problem", "solution": "… \\boxed{…}"} (gold = ``extract_answer`` of the answer/solution field).

    Bad rows raise ValueError naming file:line and the field.
    """
    from r1lab.data.stream import iter_json_objects
    from r1lab.rewards.math import extract_answer
    from r1lab.tasks import Problem
    from r1lab.tasks.base import content_uid
    from r1lab.tasks.jsonl import cjk_fraction

    fields = {"gsm8k": ("question", "answer"), "math": ("problem", "solution")}
    if fmt not in fields:
        raise ValueError(f"unknown benchmark format {fmt!r}; known: {', '.join(fields)}")
    q_field, a_field = fields[fmt]
    problems = []
    for row, lineno in iter_json_objects(path):
        where = f"{path}:{lineno}"
        for key in (q_field, a_field):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise ValueError(f"{where}: missing or empty field {key!r} ({fmt} format)")
        gold = extract_answer(row[a_field])
        if gold is None:
            what = "'#### <answer>' line" if fmt == "gsm8k" else "\\boxed{} answer"
            raise ValueError(f"{where}: field {a_field!r} has no {what}")
        question = row[q_field]
        problems.append(Problem(
            family="math",
            uid=content_uid("math", f"{question}\x1f{gold}"), prompt=question, answer=gold,
            solution=row[a_field], lang="zh" if cjk_fraction(question) > 0.5 else "en",
            difficulty=1, meta={"source": f"{Path(path).name}:{lineno}"}))
        if limit is not None and len(problems) >= limit:
            break
    return problems
