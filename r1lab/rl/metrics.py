"""Per-step GRPO statistics that are not part of the loss: response lengths, reflection-word rate, reward summary.

The reflection-word rate tracks R1-Zero's "aha moment" (arXiv 2501.12948 §2.2.4, Table 3): the share of completions
that re-examine their work, detected by the words "wait", "verify", "check", "recheck" (whole words, any case;
"check" also matches "checking"/"checked"; Chinese 等等 / 验证 / 检查 count too). The mixing rate tracks what R1's
language-consistency reward targets (§2.3.2): the share of completions whose chain of thought is mixed for their
problem's language, by the same definition as the evaluation's (``r1lab.rewards.language.is_mixed``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from r1lab.rewards.language import chain_of_thought, is_mixed

REFLECTION_RE = re.compile(r"\b(?:wait|verify|verif(?:ied|ying)|re-?check(?:s|ed|ing)?|check(?:s|ed|ing)?)\b|等等|验证|检查",
                           re.IGNORECASE)


def reflection_rate(texts: Sequence[str]) -> float:
    """Share of texts with at least one reflection word.

    >>> reflection_rate(["Wait, let me verify.", "The answer is 5.", "I rechecked it", "checkmate"])
    0.5
    """
    if not texts:
        return 0.0
    return sum(1 for t in texts if REFLECTION_RE.search(t)) / len(texts)


def mixing_rate(texts: Sequence[str], problems: Sequence[object]) -> float:
    """Share of completions whose chain of thought mixes languages for its problem's ``lang`` (default "en").

    >>> class P: lang = "zh"
    >>> mixing_rate([" <think> 先算 3+4=7 </think> <answer> 7 </answer>", " <think> Add 3 + 4 </think>"], [P(), P()])
    0.5
    """
    if not texts:
        return 0.0
    return sum(is_mixed(chain_of_thought(t), getattr(p, "lang", "en")) for t, p in zip(texts, problems)) / len(texts)


def length_stats(lengths_N: torch.Tensor) -> dict[str, float]:
    """Mean and max completion length in tokens.

    >>> length_stats(torch.tensor([2.0, 4.0]))
    {'response_len_mean': 3.0, 'response_len_max': 4.0}
    """
    if lengths_N.numel() == 0:
        return {"response_len_mean": 0.0, "response_len_max": 0.0}
    return {"response_len_mean": float(lengths_N.float().mean()), "response_len_max": float(lengths_N.max())}
