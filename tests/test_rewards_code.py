"""r1lab.rewards.code: program extraction, stdin/stdout and assert tests, pass fraction, thread safety."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from r1lab.rewards.code import code_reward, extract_program, run_test

ADD = "a, b = map(int, input().split())\nprint(a + b)"
IO_TESTS = [{"input": "1 2", "output": "3"}, {"input": "5 5\n", "output": "10\n"},
            {"input": "-1 1", "output": "0"}, {"input": "7 8", "output": "15"}]  # fmt: skip


def test_correct_program_scores_one():
    assert code_reward(f"Here:\n```python\n{ADD}\n```\n", IO_TESTS, timeout=5) == 1.0


def test_half_passing_scores_half():
    prog = "a, b = map(int, input().split())\nprint(a + b if a > 0 else 0)"  # -1 1 -> 0, still right
    buggy = "a, b = map(int, input().split())\nprint(a + b if a + b < 10 else 0)"
    assert code_reward(f"```python\n{buggy}\n```", IO_TESTS, timeout=5) == 0.5
    assert code_reward(f"```python\n{prog}\n```", IO_TESTS, timeout=5) == 1.0


def test_assert_tests_and_early_exit_hack():
    prog = "def sq(x):\n    return x * x"
    tests = [{"assert": "assert sq(3) == 9"}, {"assert": "assert sq(-2) == 4"}, {"assert": "assert sq(2) == 5"}]
    assert code_reward(f"```py\n{prog}\n```", tests, timeout=5) == pytest.approx(2 / 3)
    bare = [{"assert": "sq(3) == 9"}, {"assert": "sq(2) == 5"}]  # expressions are asserted, not just evaluated
    assert code_reward(f"```py\n{prog}\n```", bare, timeout=5) == 0.5
    hack = "import sys\ndef sq(x):\n    return 0\nsys.exit(0)"
    assert code_reward(f"```python\n{hack}\n```", tests, timeout=5) == 0.0


def test_objects_that_equal_everything_do_not_pass_assert_tests():
    """A returned object whose __eq__ / __bool__ always says True (or a list subclass doing so) gets 0 on assert
    tests, including the built-in code family's merged asserts; honest answers of any plain type still pass."""
    from r1lab.tasks import make_split, task_reward

    always = "class A:\n    __eq__ = lambda s, o: True\n    __bool__ = lambda s: True\n"
    hacks = [always + "def f(*a):\n    return A()", "class L(list):\n    __eq__ = lambda s, o: True\n"
             "def f(*a):\n    return L()", always + "def sq(x):\n    return A()"]
    tests = [{"assert": "assert sq(3) == 9"}, {"assert": "f(2) == 7"}, {"assert": "assert f(1)"},
             {"assert": "assert f(2) != 3 and not f(5) < 0"}]
    for hack in hacks:
        assert code_reward(f"```python\n{hack}\n```", tests, timeout=5) == 0.0
    problem = make_split("val", 1, families=["code"])[0]
    assert task_reward(f"```python\n{hacks[0]}\n```", problem) == 0.0
    honest = "def f(x):\n    return {'n': [x, (x, None)], 's': {x}}\ndef sq(x):\n    return x * x * 1.0"
    plain = [{"assert": "assert sq(3) == 9"}, {"assert": "f(2) == {'n': [2, (2, None)], 's': {2}}"},
             {"assert": "assert f(1) and sq(2) >= 4 and sq(2) != 5"}, {"assert": "assert 2 in f(2)['n']"}]
    assert code_reward(f"```python\n{honest}\n```", plain, timeout=5) == 1.0


def test_output_comparison_strips_lines():
    assert run_test("print('  a  ')\nprint('b')\nprint()", {"input": "", "output": "a\nb"}, timeout=5)
    assert not run_test("print('a b')", {"input": "", "output": "a  b"}, timeout=5)
    assert not run_test("print(1)\nraise SystemExit(3)", {"input": "", "output": "1"}, timeout=5)


def test_extract_program():
    assert extract_program("```python\nA\n```\ntext\n```python\nB\n```") == "B\n"
    assert extract_program("```\nX\n```") == "X\n"  # untagged block when there is no python block
    assert extract_program("```cpp\nC\n```\n```py\nP\n```") == "P\n"
    assert extract_program("<think>```python\nDRAFT\n```</think>print(1)") == "print(1)"


def test_bad_tests_raise():
    with pytest.raises(ValueError, match="empty"):
        code_reward("print(1)", [])
    with pytest.raises(ValueError, match=r"tests\[1\]"):
        code_reward("print(1)", [{"input": "", "output": ""}, {"stdin": "x"}])


def test_parallel_threads():
    # distinct programs (a comment each), so that every job runs in its own sandbox rather than from the memo
    jobs = [(f"```python\n{ADD}\n# job {i}\n```", IO_TESTS[:2]) for i in range(6)] + \
        [(f"```python\nprint(0)  # job {i}\n```", IO_TESTS[:2]) for i in range(2)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda j: code_reward(j[0], j[1], timeout=5), jobs))
    assert got == [1.0] * 6 + [0.0] * 2


def test_identical_programs_run_once(monkeypatch):
    """The k samples of a problem often write the same program: each (program, test, limits) runs once per process."""
    import r1lab.rewards.code as code

    runs = []
    real = code.run_python
    monkeypatch.setattr(code, "run_python", lambda *a, **k: runs.append(a[0]) or real(*a, **k))
    program = f"```python\n{ADD}\n# memo test\n```"
    assert code_reward(program, IO_TESTS, timeout=5) == 1.0
    assert len(runs) == len(IO_TESTS)
    assert code_reward("prefix text " + program, IO_TESTS, timeout=5) == 1.0  # same program extracted
    assert len(runs) == len(IO_TESTS)
    assert code_reward(program, IO_TESTS, timeout=6) == 1.0  # other limits: run again
    assert len(runs) == 2 * len(IO_TESTS)
    assert code_reward(program.replace("a + b", "a - b"), IO_TESTS[:1], timeout=5) == 0.0
    assert len(runs) == 2 * len(IO_TESTS) + 1
