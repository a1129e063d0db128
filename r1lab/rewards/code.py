"""Execution-based code reward: run the model's program against test cases in the sandbox.

Idea: DeepSeek-R1 §2.2.2 ("for LeetCode problems, a compiler can be used to generate feedback based on
predefined test cases"); peers (open-r1, verl) use the pass fraction over stdin/stdout or call/assert cases.
Here the reward is the fraction of tests passed, each test in its own sandboxed run (``sandbox.run_python``).

Conventions (deliberate, documented):
* Program = the last fenced block tagged ``python``/``py``/``python3`` after the last ``</think>`` (if any);
  else the last untagged fenced block there; else that whole text.
* ``{"input": ..., "output": ...}``: stdin/stdout; passes if the run exits 0 in time and the output equals the
  expected one line by line after stripping each line and dropping trailing empty lines.
* ``{"assert": "..."}``: the statement(s) are appended after the program (a bare expression such as
  ``"f(2) == 7"`` becomes ``assert (f(2) == 7)``, so it cannot pass vacuously), followed by a print of a
  random per-run token; passes if the run exits 0 in time and the last output line is that token (so a program that
  calls ``sys.exit(0)`` before the asserts does not pass). Each assert's comparisons (``==``, ``!=``, ``<``, ``<=``,
  ``>``, ``>=``, one operator each) and a bare truth test only count when both sides are plain data — built from
  int/float/complex/bool/str/bytes/None, lists, tuples, sets and dicts, by exact type — so a returned object whose
  ``__eq__`` or ``__bool__`` always says True does not pass (the checker is defined before the program runs, under a
  per-run random name, from the real builtins). Residual hack: a program that reads its own source can learn the
  names and print the token; the sandbox is about containment, not about a determined reward hacker.
"""

from __future__ import annotations

import ast
import functools
import re
import secrets
from collections.abc import Mapping, Sequence

from r1lab.rewards.sandbox import run_python

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)
_PY_TAGS = {"python", "py", "python3"}


def extract_program(completion: str) -> str:
    """The program text of a completion (see module docstring for the order).

    >>> extract_program("<think>```python\\nprint(0)\\n```</think>Final:\\n```python\\nprint(1)\\n```")
    'print(1)\\n'
    >>> extract_program("print(2)")
    'print(2)'
    """
    text = completion.rsplit("</think>", 1)[-1]
    blocks = [(tag.lower(), body) for tag, body in _FENCE.findall(text)]
    for wanted in (lambda t: t in _PY_TAGS, lambda t: t == ""):
        chosen = [body for tag, body in blocks if wanted(tag)]
        if chosen:
            return chosen[-1]
    return text


def _lines(text: str) -> list[str]:
    lines = [line.strip() for line in text.strip().splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _check_tests(tests: Sequence[Mapping[str, str]]) -> None:
    if not tests:
        raise ValueError("code_reward: tests is empty")
    for i, t in enumerate(tests):
        if not isinstance(t, Mapping) or not ("assert" in t or ("input" in t and "output" in t)):
            got = sorted(t) if isinstance(t, Mapping) else type(t).__name__
            raise ValueError(f"code_reward: tests[{i}] needs 'input'+'output' or 'assert', got {got}")


def _assert_source(test: str) -> str:
    """The test statement(s); a lone expression becomes an assert of it.

    >>> _assert_source("f(2) == 7"), _assert_source("assert f(2) == 7")
    ('assert (f(2) == 7)', 'assert f(2) == 7')
    """
    try:
        ast.parse(test.strip(), mode="eval")
    except SyntaxError:
        return test
    return f"assert ({test.strip()})"


_OPS = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}

# Defined before the model's program, so it holds the real builtins; NAME is replaced by a per-run random name.
_CHECKER = """
def NAME():
    import operator as _op
    _type, _all, _dict = type, all, dict
    _atoms = frozenset((int, float, complex, bool, str, bytes, type(None)))
    _seqs = frozenset((list, tuple, set, frozenset))
    _ops = {"==": _op.eq, "!=": _op.ne, "<": _op.lt, "<=": _op.le, ">": _op.gt, ">=": _op.ge}

    def plain(x):
        t = _type(x)
        if t in _atoms:
            return True
        if t in _seqs:
            return _all(plain(v) for v in x)
        if t is _dict:
            return _all(plain(k) and plain(v) for k, v in _dict.items(x))
        return False

    def check(a, b=None, op=None):
        if op is None:
            return plain(a) and bool(a)
        return plain(a) and plain(b) and _ops[op](a, b)
    return check
NAME = NAME()
"""


class _PlainChecks(ast.NodeTransformer):
    """Rewrite each assert's test so that its comparisons and truth value go through the checker ``name``."""

    def __init__(self, name: str):
        self.name = name

    def _call(self, *args: ast.expr) -> ast.expr:
        return ast.Call(func=ast.Name(id=self.name, ctx=ast.Load()), args=list(args), keywords=[])

    def _test(self, node: ast.expr) -> ast.expr:
        if isinstance(node, ast.BoolOp):
            return ast.BoolOp(op=node.op, values=[self._test(v) for v in node.values])
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return ast.UnaryOp(op=node.op, operand=self._test(node.operand))
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _OPS:
            return self._call(node.left, node.comparators[0], ast.Constant(_OPS[type(node.ops[0])]))
        if isinstance(node, ast.Compare):  # chained or membership/identity: as written
            return node
        return self._call(node)

    def visit_Assert(self, node: ast.Assert) -> ast.Assert:
        return ast.Assert(test=self._test(node.test), msg=node.msg)


def checked_asserts(source: str, name: str) -> str:
    """``source`` with every assert's comparisons and truth test routed through the checker ``name`` (unparseable
    source is returned as it is: it fails when run).

    >>> checked_asserts("assert f(2) == 7 and not g()", "chk")
    "assert chk(f(2), 7, '==') and (not chk(g()))"
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    return ast.unparse(ast.fix_missing_locations(_PlainChecks(name).visit(tree)))


def run_test(program: str, test: Mapping[str, str], *, timeout: float = 5.0, memory_mb: int = 512) -> bool:
    """Whether ``program`` passes one test (stdin/stdout or assert style).

    Memoised per (program, test, limits), up to ``MEMO_SIZE`` entries per process: the k samples and the greedy
    answer of a problem often write the same program (12-18 distinct programs in 60 completions of the speedrun's
    evaluations), and each sandboxed run costs ~0.15 s of process start-up and clean-up. A program whose result
    varies from run to run (timing, randomness) keeps its first result within the process.

    >>> run_test("print(sum(map(int, input().split())))", {"input": "2 3", "output": "5"}, timeout=10)
    True
    >>> run_test("def f(x):\\n    return x + 1", {"assert": "assert f(1) == 3"}, timeout=10)
    False
    """
    key = tuple(sorted((str(k), str(v)) for k, v in test.items()))
    return _run_test_memo(program, key, float(timeout), int(memory_mb))


MEMO_SIZE = 4096


@functools.lru_cache(maxsize=MEMO_SIZE)
def _run_test_memo(program: str, test_items: tuple[tuple[str, str], ...], timeout: float, memory_mb: int) -> bool:
    test = dict(test_items)
    if "assert" in test:
        token = f"__r1lab_ok_{secrets.token_hex(8)}__"
        checker = f"_r1lab_check_{secrets.token_hex(8)}"
        asserts = checked_asserts(_assert_source(str(test["assert"])), checker)
        source = f"{_CHECKER.replace('NAME', checker)}\n{program}\n\n{asserts}\nprint({token!r})\n"
        res = run_python(source, "", timeout=timeout, memory_mb=memory_mb)
        out = _lines(res.stdout)
        return res.ok and bool(out) and out[-1] == token
    res = run_python(program, str(test["input"]), timeout=timeout, memory_mb=memory_mb)
    return res.ok and _lines(res.stdout) == _lines(str(test["output"]))


def code_reward(
    completion: str, tests: Sequence[Mapping[str, str]], timeout: float = 5.0, memory_mb: int = 512
) -> float:
    """Fraction of ``tests`` the completion's program passes (each in a fresh sandbox).

    >>> code_reward("```python\\nprint(input()[::-1])\\n```", [{"input": "abc", "output": "cba"},
    ...             {"input": "xy", "output": "xy"}], timeout=10)
    0.5
    """
    _check_tests(tests)
    program = extract_program(completion)
    passed = sum(run_test(program, t, timeout=timeout, memory_mb=memory_mb) for t in tests)
    return passed / len(tests)
