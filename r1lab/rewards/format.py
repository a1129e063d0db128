"""Format rewards for the R1-Zero tag template and the R1 chat format, and splitting reasoning from summary.

Idea: DeepSeek-R1 §2.2.2 "format reward ... enforces the model to put its thinking process between '<think>' and
'</think>' tags" (R1-Zero template, Table 1: ``<think> reasoning </think> <answer> answer </answer>``), and the
R1 output format of §2.3.1, ``<think>\\n reasoning </think>\\n\\n summary`` (the chat template forces the response
to start with ``<think>\\n``, so a completion usually begins *inside* the think block).

Conventions (deliberate, documented):
* ``completion`` is the generated text only (what follows ``Assistant:``). It may start with ``<think>`` or
  directly with the reasoning (the prompt then ended in ``<think>``); both are accepted.
* Exactly one of each tag, in order, nothing but whitespace around them, and non-empty (non-whitespace)
  reasoning and answer: an empty ``<think></think>`` earns no format reward (cheap to hack otherwise).
* Rewards are 1.0 / 0.0 (no partial credit per tag, unlike open-r1's ``tag_count_reward``).
"""

from __future__ import annotations

import re

_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
_R1_ZERO = re.compile(r"\s*(?:<think>)?(.*?)</think>\s*<answer>(.*?)</answer>\s*", re.DOTALL)


def _opens_ok(text: str) -> bool:
    """At most one ``<think>``, and if present it is the first non-space thing."""
    n = text.count(_THINK_OPEN)
    return n == 0 or (n == 1 and text.lstrip().startswith(_THINK_OPEN))


def r1_zero_format_reward(completion: str) -> float:
    """1.0 for ``[<think>] reasoning </think> <answer> answer </answer>`` (one of each, only whitespace around).

    >>> r1_zero_format_reward("<think>\\n2+2=4\\n</think>\\n<answer>\\n4\\n</answer>")
    1.0
    >>> r1_zero_format_reward(" 2+2=4 </think> <answer>4</answer>")  # prompt ended in "<think>"
    1.0
    >>> r1_zero_format_reward("<think>a</think><answer>4</answer> extra"), r1_zero_format_reward("<answer>4</answer>")
    (0.0, 0.0)
    """
    if not _opens_ok(completion) or any(completion.count(t) != 1 for t in _TAGS[1:]):
        return 0.0
    m = _R1_ZERO.fullmatch(completion)
    if not m or not m.group(1).strip() or not m.group(2).strip():
        return 0.0
    return 1.0


def r1_format_reward(completion: str) -> float:
    """1.0 for the R1 chat format ``[<think>]\\nreasoning</think>\\n\\nsummary``: one ``</think>``, both non-empty.

    >>> r1_format_reward("Let me see: 2+2=4.\\n</think>\\n\\nThe answer is $\\\\boxed{4}$.")
    1.0
    >>> r1_format_reward("<think>\\nhmm\\n</think>\\n\\n"), r1_format_reward("no reasoning block at all")
    (0.0, 0.0)
    """
    if not _opens_ok(completion) or completion.count(_THINK_CLOSE) != 1:
        return 0.0
    cot, summary = split_reasoning(completion)
    return 1.0 if cot and summary else 0.0


def split_reasoning(completion: str, *, starts_in_think: bool = True) -> tuple[str, str]:
    """``(cot, summary)``: text before / after the last ``</think>``, stripped, leading ``<think>`` removed.

    Without ``</think>``: a completion that opened ``<think>`` (or, with ``starts_in_think``, any completion - the
    R1 template opens the block in the prompt) is unfinished reasoning ``(text, "")``; otherwise it is all
    summary ``("", text)``.

    >>> split_reasoning("<think>\\nstep 1\\n</think>\\n\\nAnswer: 4")
    ('step 1', 'Answer: 4')
    >>> split_reasoning("truncated reasoning"), split_reasoning("plain reply", starts_in_think=False)
    (('truncated reasoning', ''), ('', 'plain reply'))
    """
    text = completion.strip()
    opened = text.startswith(_THINK_OPEN)
    if opened:
        text = text[len(_THINK_OPEN) :]
    if _THINK_CLOSE in text:
        cot, summary = text.rsplit(_THINK_CLOSE, 1)
        return cot.strip(), summary.strip()
    if opened or starts_in_think:
        return text.strip(), ""
    return "", text.strip()
