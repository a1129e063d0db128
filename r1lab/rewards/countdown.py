"""Countdown reward (TinyZero rules): build the target from the given numbers with + - * / and parentheses.

Idea: TinyZero's ``verl/utils/reward_score/countdown.py`` (Jiayi-Pan/TinyZero, the R1-Zero "aha" replication):
the equation is the content of ``<answer>...</answer>``; the numbers in it must be exactly the given multiset;
only digits, ``+ - * / ( )``, ``.`` and spaces are allowed; correct if within 1e-5 of the target.
Scores: ``score`` (1.0) correct, ``format_score`` (0.1) an answer that is wrong or malformed, 0 no answer.

Deliberate differences to TinyZero (all rows of tests/data/countdown_cases.jsonl still agree):
* TinyZero decodes prompt+response and keeps only the text after the first ``Assistant:`` (or
  ``<|im_start|>assistant``), returning 0 when no marker exists. We take the *completion* itself; if it contains
  one of those markers (a caller passed prompt+completion), only the text after the first marker is used. This
  equals TinyZero's reward on prompt+completion, which is what the oumi expectations encode.
* TinyZero requires the answer on the last line (``split('\\n')[-1]``). We require that nothing but whitespace
  follows the last ``</answer>`` - same anti-hacking intent, but a trailing newline or a multi-line answer
  block is not punished with 0.
* No ``eval``: the equation is parsed with ``ast`` and only numbers, binary ``+ - * /``, unary ``+ -`` and
  parentheses are evaluated, with exact rationals (``fractions.Fraction``). ``**`` and ``//`` (which pass
  TinyZero's character filter and reach its ``eval``) are rejected -> format score.
* Numbers are read like TinyZero (``re.findall(r"\\d+")``), so ``7.6`` counts as 7 and 6: decimals never match.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from fractions import Fraction

_MARKERS = ("Assistant:", "<|im_start|>assistant")
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_ALLOWED = re.compile(r"[\d+\-*/().\s]+")
_BINOPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
           ast.Div: lambda a, b: a / b}  # fmt: skip


def extract_equation(completion: str) -> str | None:
    """Content of the last ``<answer>`` block if it ends the text (after an optional role marker), else None.

    >>> extract_equation("<think>...</think>\\n<answer> (3 - 2) * 1 </answer>\\n")
    '(3 - 2) * 1'
    >>> extract_equation("<answer>1+2</answer> Hope this helps.") is None
    True
    """
    text = completion
    for marker in _MARKERS:
        if marker in text:
            text = text.split(marker, 1)[1]
            break
    text = text.rstrip()
    matches = list(_ANSWER.finditer(text))
    if not matches or matches[-1].end() != len(text):
        return None
    return matches[-1].group(1).strip()


def _evaluate(node: ast.AST) -> Fraction:
    """Exact value of an arithmetic AST; ValueError for anything but numbers and + - * /."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return Fraction(str(node.value))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return _BINOPS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    raise ValueError(f"not allowed in a countdown equation: {ast.dump(node)[:60]}")


def evaluate_equation(expr: str) -> Fraction:
    """Exact value of ``expr``; ValueError if it has other characters/operators, ZeroDivisionError on /0.

    >>> evaluate_equation("(55 - 36 + 7) * 19 / 2")
    Fraction(247, 1)
    >>> evaluate_equation("2 ** 3")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: not allowed in a countdown equation: BinOp(...
    """
    if not _ALLOWED.fullmatch(expr):
        raise ValueError(f"countdown equation may only hold digits, + - * / ( ) . and spaces: {expr[:60]!r}")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"countdown equation does not parse: {expr[:60]!r}") from exc
    return _evaluate(tree)


def uses_numbers(expr: str, numbers: Sequence[int]) -> bool:
    """Whether the integers written in ``expr`` are exactly the multiset ``numbers`` (TinyZero's rule).

    >>> uses_numbers("55 + 36 - 7 - 19", [19, 36, 55, 7]), uses_numbers("7 * 7", [7])
    (True, False)
    """
    return written_numbers(expr) == sorted(int(n) for n in numbers)


def written_numbers(expr: str) -> list[int]:
    """The integers written in ``expr``, sorted (the multiset ``uses_numbers`` compares).

    >>> written_numbers("(14 - 7) * 13 + 7")
    [7, 7, 13, 14]
    """
    return sorted(int(n) for n in re.findall(r"\d+", expr))


def check_countdown_expression(expr: str, numbers: Sequence[int], target: float) -> bool:
    """True iff ``expr`` uses exactly ``numbers``, is well-formed and evaluates to ``target`` (within 1e-5).

    >>> check_countdown_expression("(93 - 43) + 1", [93, 43, 1], 51)
    True
    >>> check_countdown_expression("93 - 43 + 1 = 51", [93, 43, 1], 51)
    False
    """
    if not uses_numbers(expr, numbers):
        return False
    try:
        value = evaluate_equation(expr)
    except (ValueError, ZeroDivisionError, RecursionError):
        return False
    return abs(float(value) - float(target)) < 1e-5


def countdown_reward(
    completion: str, numbers: Sequence[int], target: float, format_score: float = 0.1, score: float = 1.0
) -> float:
    """``score`` if the final ``<answer>`` solves the countdown, ``format_score`` if present but wrong, else 0.

    >>> countdown_reward("<think>93-43=50</think>\\n<answer>(93-43)+1</answer>", [93, 43, 1], 51)
    1.0
    >>> countdown_reward("<answer>1 + 2</answer>", [1, 3], 2), countdown_reward("foo bar 1", [], 1)
    (0.1, 0.0)
    """
    equation = extract_equation(completion)
    if equation is None:
        return 0.0
    return float(score) if check_countdown_expression(equation, numbers, target) else float(format_score)
