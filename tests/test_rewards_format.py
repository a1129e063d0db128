"""r1lab.rewards.format: R1-Zero tag format, R1 chat format, reasoning/summary split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from r1lab.rewards.format import r1_format_reward, r1_zero_format_reward, split_reasoning

ROWS = [json.loads(line) for line in (Path(__file__).parent / "data" / "extraction_cases.jsonl").open()]
OPEN_R1_FORMAT = [r for r in ROWS if r["function"].startswith("open_r1.rewards.format_reward")]


@pytest.mark.parametrize("row", OPEN_R1_FORMAT, ids=lambda r: str(r["id"]))
def test_open_r1_format_rows(row):
    """open-r1's format_reward rows agree with ours (theirs also needs newlines around the tags; ours does not)."""
    assert r1_zero_format_reward(row["input"]) == row["expected"]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("<think>r</think><answer>a</answer>", 1.0),
        ("  <think>\nr\n</think>\n\n<answer>\na\n</answer>\n", 1.0),
        ("r</think> <answer>a</answer>", 1.0),  # prompt ended with "Assistant: <think>"
        ("<think></think><answer>a</answer>", 0.0),  # empty reasoning
        ("<think>r</think><answer> </answer>", 0.0),  # empty answer
        ("<think>r</think><answer>a</answer><answer>b</answer>", 0.0),  # two answers
        ("<think>r</think><think>s</think><answer>a</answer>", 0.0),  # two think blocks
        ("<think>r<answer>x</answer></think><answer>a</answer>", 0.0),  # answer inside think
        ("preamble <think>r</think><answer>a</answer>", 0.0),  # text before <think>
        ("<think>r</think> and <answer>a</answer>", 0.0),  # text between the blocks
        ("<answer>a</answer><think>r</think>", 0.0),  # wrong order
        ("<think>r</think><answer>a</answer> trailing", 0.0),
    ],
)  # fmt: skip
def test_r1_zero_format(text, expected):
    assert r1_zero_format_reward(text) == expected


@pytest.mark.parametrize(
    "text,expected",
    [
        ("<think>\nreason\n</think>\n\nSummary.", 1.0),
        ("reason\n</think>\n\nSummary.", 1.0),  # the template already opened <think>
        ("reason</think>Summary", 1.0),
        ("reason\n</think>\n\n", 0.0),  # no summary
        ("</think>\n\nSummary", 0.0),  # no reasoning
        ("reason</think>x</think>Summary", 0.0),
        ("text <think>reason</think> Summary", 0.0),
        ("reason only, truncated", 0.0),
    ],
)  # fmt: skip
def test_r1_format(text, expected):
    assert r1_format_reward(text) == expected


def test_split_reasoning():
    assert split_reasoning("<think>\na\n</think>\n\nb") == ("a", "b")
    assert split_reasoning("a</think>b</think>c") == ("a</think>b", "c")  # summary never holds think text
    assert split_reasoning("<think>unfinished") == ("unfinished", "")
    assert split_reasoning("<think>unfinished", starts_in_think=False) == ("unfinished", "")
    assert split_reasoning("reply", starts_in_think=False) == ("", "reply")
    assert split_reasoning("") == ("", "")
