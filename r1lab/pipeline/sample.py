"""Rejection sampling: k samples per prompt, keep the correct, readable, non-repetitive ones, dedupe, write JSONL.

Idea (arXiv 2501.12948 §2.3.3): "we perform rejection sampling from the checkpoint of the [reasoning-oriented RL]
stage ... for each prompt, we sample multiple responses and retain only the correct ones ... we have filtered out
chain-of-thought with mixed languages, long paragraphs, and code blocks"; correctness comes from rules, or from a
generative judge (DeepSeek-V3) fed the ground truth for data rules cannot check.

Filters, applied in this order; a sample is dropped for the first reason that applies (the statistics count it
under that reason only):
1. ``incorrect``: the task's rule reward is below 1 (``r1lab.tasks.task_reward``), or ``judge(response, problem)``
   says False when a judge is given (a model judge that sees the reference answer).
2. ``too_long``: the generator stopped at ``max_tokens`` (truncated) or the response has more than
   ``max_response_tokens`` tokens.
3. ``bad_format``: the response does not follow the template of its style (R1: one ``</think>`` with non-empty
   reasoning and summary; R1-Zero: the <think>/<answer> tags); off with ``require_format=False``.
4. ``mixed_language``: the chain of thought is mixed for the problem's language (``evaluate.is_mixed``: under 90%
   of its words in that language).
5. ``repetitive``: ``repetition_ratio`` of the response >= ``max_repetition`` (default 0.5: at least half of
   its word 4-grams are repeats of an earlier 4-gram).
6. ``duplicate``: same normalised text (lower case, whitespace collapsed) as a kept sample of the same prompt.
7. ``over_quota``: more than ``max_per_prompt`` kept samples for one prompt (the first ones are kept).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1lab.pipeline.evaluate import CORRECT
from r1lab.rewards.language import chain_of_thought, is_mixed
from r1lab.pipeline.generation import (PROBLEMS_PER_CALL, Completion, Sampling, as_generate_fn, build_prompt,
                                       full_response)

REASONS = ("incorrect", "too_long", "bad_format", "mixed_language", "repetitive", "duplicate", "over_quota")
_WORD = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]|\w+|[^\w\s]")

Judge = Callable[[str, Any], bool]
"""(full response, problem with its reference answer) -> is the response correct?"""


@dataclass
class SampleStats:
    """Counts of a rejection-sampling run."""

    prompts: int = 0
    generated: int = 0
    kept: int = 0
    prompts_with_kept: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: {r: 0 for r in REASONS})
    kept_by_family: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        """One human-readable line."""
        drops = ", ".join(f"{r} {n}" for r, n in self.dropped.items() if n)
        return (f"rejection sampling: {self.kept}/{self.generated} kept from {self.prompts} prompts "
                f"({self.prompts_with_kept} prompts with >= 1 kept); dropped: {drops or 'none'}")


def words(text: str) -> list[str]:
    """Word tokens for repetition: runs of word characters, single CJK characters, single punctuation marks.

    >>> words("2+3=5, 好的。")
    ['2', '+', '3', '=', '5', ',', '好', '的', '。']
    """
    return _WORD.findall(text)


def repetition_ratio(text: str, n: int = 4) -> float:
    """Fraction of word n-grams that repeat an earlier n-gram (0 = none repeated); 0.0 with fewer than 2 n-grams.

    >>> repetition_ratio("a b c d e f g h")
    0.0
    >>> round(repetition_ratio("a b c d a b c d a b c d"), 3)
    0.556
    """
    toks = words(text)
    grams = [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]
    if len(grams) < 2:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def text_key(text: str) -> str:
    """Hash of the normalised text (lower case, whitespace collapsed) for deduplication.

    >>> text_key("The  answer\\nis 5.") == text_key("the answer is 5.")
    True
    """
    return hashlib.sha256(" ".join(text.lower().split()).encode()).hexdigest()[:16]


def format_ok(response: str, style: str) -> bool:
    """Does a full response follow its style's template (R1 format, or the R1-Zero tags)?"""
    from r1lab.rewards.format import r1_format_reward, r1_zero_format_reward

    if style == "r1-zero":
        return r1_zero_format_reward(response) >= CORRECT
    return r1_format_reward(response) >= CORRECT


def drop_reason(response: str, completion: Completion, problem: Any, style: str, *, judge: Judge | None,
                max_response_tokens: int, max_repetition: float, require_format: bool) -> str | None:
    """The first filter (see module docstring) that rejects one sample, or None to keep it."""
    from r1lab.tasks import task_reward

    correct = judge(response, problem) if judge is not None else task_reward(response, problem) >= CORRECT
    if not correct:
        return "incorrect"
    if completion.finish_reason == "length" or completion.num_tokens > max_response_tokens:
        return "too_long"
    if require_format and not format_ok(response, style):
        return "bad_format"
    if is_mixed(chain_of_thought(response), problem.lang):
        return "mixed_language"
    if repetition_ratio(response) >= max_repetition:
        return "repetitive"
    return None


def sft_row(problem: Any, response: str, style: str) -> dict[str, Any]:
    """One kept sample as an SFT row (``r1lab.train.sft`` reads prompt/response) plus provenance."""
    return {
        "prompt": problem.prompt, "response": response, "style": style,
        "uid": problem.uid, "family": problem.family, "lang": problem.lang, "answer": problem.answer,
    }


def filter_samples(problems: Sequence[Any], completions: Sequence[Sequence[Completion]], style: str = "r1",
                   judge: Judge | None = None, max_response_tokens: int = 512, max_repetition: float = 0.5,
                   require_format: bool = True, max_per_prompt: int | None = None
                   ) -> tuple[list[dict[str, Any]], SampleStats]:
    """Apply the filters to already generated completions (one list per problem)."""
    stats = SampleStats(prompts=len(problems))
    rows: list[dict[str, Any]] = []
    for problem, comps in zip(problems, completions, strict=True):
        seen: set[str] = set()
        kept_here = 0
        for comp in comps:
            stats.generated += 1
            response = full_response(comp.text, style)
            reason = drop_reason(response, comp, problem, style, judge=judge,
                                 max_response_tokens=max_response_tokens, max_repetition=max_repetition,
                                 require_format=require_format)
            if reason is None:
                key = text_key(response)
                if key in seen:
                    reason = "duplicate"
                elif max_per_prompt is not None and kept_here >= max_per_prompt:
                    reason = "over_quota"
                else:
                    seen.add(key)
            if reason is not None:
                stats.dropped[reason] += 1
                continue
            kept_here += 1
            rows.append(sft_row(problem, response, style))
        stats.prompts_with_kept += kept_here > 0
    stats.kept = len(rows)
    stats.kept_by_family = dict(Counter(r["family"] for r in rows))
    return rows, stats


def rejection_sample(llm_or_generate_fn: Any, problems: Sequence[Any], out_path: str | Path | None = None, *,
                     k: int = 4, temperature: float = 0.6, top_p: float = 0.95, max_tokens: int = 256,
                     style: str = "r1", tokenizer: Any = None, judge: Judge | None = None,
                     max_response_tokens: int | None = None, max_repetition: float = 0.5,
                     require_format: bool = True, max_per_prompt: int | None = None, seed: int = 0,
                     batch_size: int = PROBLEMS_PER_CALL,
                     verbose: bool = True) -> tuple[list[dict[str, Any]], SampleStats]:
    """Sample k responses per problem, filter them, write the kept rows to ``out_path`` (JSONL, atomically)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    tokenizer = tokenizer if tokenizer is not None else getattr(llm_or_generate_fn, "tokenizer", None)
    generate = as_generate_fn(llm_or_generate_fn, tokenizer)
    sampling = Sampling(n=k, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed)
    completions: list[list[Completion]] = []
    starts = range(0, len(problems), batch_size)
    if verbose:
        from tqdm import tqdm

        starts = tqdm(starts, desc=f"rejection sampling k={k}", unit="batch")
    for start in starts:
        batch = problems[start : start + batch_size]
        completions += generate([build_prompt(p.prompt, style, tokenizer) for p in batch], sampling)
    rows, stats = filter_samples(problems, completions, style, judge, max_response_tokens or max_tokens,
                                 max_repetition, require_format, max_per_prompt)
    if out_path is not None:
        from r1lab.data.corpus import write_jsonl_atomic

        write_jsonl_atomic(rows, out_path)
    if verbose:
        print(stats.line(), flush=True)
    return rows, stats
