"""r1lab.rewards.countdown against every row of tests/data/countdown_cases.jsonl (TinyZero / oumi / Mini-R1).

Rows 0-9 (oumi) expect TinyZero's reward *with* its prompt prepended (TinyZero returns 0 on a bare completion
without an "Assistant:" marker); our countdown_reward takes the completion itself, so it matches them directly.
Rows 10-14 (Mini-R1 blog) hold two separate rewards: equation_reward_func is our check_countdown_expression on
the extracted answer, format_reward_func is our r1_zero_format_reward (the blog prepends "<think>"); for the
full countdown_reward we compare with the row's `tinyzero_reward_with_base_prompt_prefix`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from r1lab.rewards.countdown import (
    check_countdown_expression,
    countdown_reward,
    evaluate_equation,
    extract_equation,
)
from r1lab.rewards.format import r1_zero_format_reward

ROWS = [json.loads(line) for line in (Path(__file__).parent / "data" / "countdown_cases.jsonl").open()]
TINYZERO_PROMPT_END = "Assistant: Let me solve this step by step.\n<think>"  # TinyZero base template's tail


@pytest.mark.parametrize("row", ROWS, ids=lambda r: str(r["id"]))
def test_every_row(row):
    numbers, target, completion = row["numbers"], row["target"], row["completion"]
    expected = row["expected_reward"]
    if isinstance(expected, dict):  # Mini-R1: separate format and equation rewards
        eq = extract_equation(completion)
        ok = eq is not None and check_countdown_expression(eq, numbers, target)
        assert float(ok) == expected["equation_reward_func"]
        assert r1_zero_format_reward(completion) == expected["format_reward_func"]
        expected = row["tinyzero_reward_with_base_prompt_prefix"]
    assert countdown_reward(completion, numbers, target) == pytest.approx(expected)
    # Passing prompt + completion gives the same reward (the role marker is honoured, as in TinyZero).
    assert countdown_reward(TINYZERO_PROMPT_END + completion, numbers, target) == pytest.approx(expected)


def test_scores_are_configurable():
    assert countdown_reward("<answer>3-2</answer>", [2, 3], 1, format_score=0.0, score=2.0) == 2.0
    assert countdown_reward("<answer>3+2</answer>", [2, 3], 1, format_score=0.0) == 0.0


@pytest.mark.parametrize(
    "expr",
    ["__import__('os').system('id')", "2 ** 3", "8 // 2", "3 % 2", "(1).real", "[1]", "1; 2", "1 if 1 else 2",
     "lambda: 1", "", "((("],
)  # fmt: skip
def test_no_code_execution(expr):
    with pytest.raises(ValueError):
        evaluate_equation(expr)
    assert check_countdown_expression(expr, [1, 2, 3], 1) is False


def test_edge_cases():
    assert check_countdown_expression("6 / (3 - 3)", [6, 3, 3], 1) is False  # division by zero
    assert check_countdown_expression("-3 + 4", [3, 4], 1) is True  # unary minus, as TinyZero's eval allows
    assert check_countdown_expression("1 / 3 * 3", [1, 3, 3], 1) is True  # exact rationals
    assert check_countdown_expression("(" * 150 + "1" + ")" * 150, [1], 1) in (True, False)  # no crash
    assert extract_equation("<answer>\n1 + 2\n</answer>\n") == "1 + 2"  # multi-line, trailing newline ok
    assert extract_equation("no tags") is None
