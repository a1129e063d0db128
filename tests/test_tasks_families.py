"""Every built-in task family: gold solutions, checkers, rewards, language, difficulty knob."""

from __future__ import annotations

import random
import re

import pytest

from r1lab.tasks import (
    FAMILIES,
    GENERATIVE,
    get_family,
    reference_completion,
    task_check,
    task_reward,
)
from r1lab.tasks.base import answer_sentence
from r1lab.tasks.code import ANSWER_LEAD
from r1lab.tasks.jsonl import cjk_fraction

NON_CODE = [n for n in GENERATIVE if n != "code"]


def sample(name: str, difficulty: int, n: int, seed: int = 0):
    rng = random.Random(f"test:{name}:{difficulty}:{seed}")
    return [FAMILIES[name].generate(rng, difficulty) for _ in range(n)]


def wrong_answer(problem) -> str:
    """An answer that must be rejected."""
    if problem.family == "countdown":
        return " + ".join(map(str, problem.meta["numbers"])) + " + 1"  # an extra number: invalid
    if problem.family == "code":
        return problem.answer.replace("return ", "return 1 + ", 1)
    return str(int(problem.answer) + 1)


def test_at_least_six_generative_families_with_both_languages():
    assert len(GENERATIVE) >= 6
    assert {"arithmetic", "countdown", "equations", "word", "code"} <= set(GENERATIVE)
    assert {FAMILIES[n].lang for n in GENERATIVE} == {"en", "zh"}


@pytest.mark.parametrize("name", NON_CODE)
@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_solution_ends_with_gold_and_checker_agrees(name, difficulty):
    fam = get_family(name)
    for p in sample(name, difficulty, 25):
        assert p.family == name and p.difficulty == difficulty and p.lang == fam.lang
        assert re.fullmatch(r"[0-9a-f]{16}", p.uid)
        assert p.solution.endswith(answer_sentence(p.answer, p.lang)), p.solution
        assert fam.check(p.answer, p), (p.prompt, p.answer)
        assert not fam.check(wrong_answer(p), p), (p.prompt, wrong_answer(p))
        assert not fam.check(None, p)


@pytest.mark.parametrize("difficulty", [1, 3, 4])
def test_code_gold_passes_tests_and_wrong_code_fails(difficulty):
    fam = get_family("code")
    for p in sample("code", difficulty, 2):
        assert p.solution.endswith(f"{ANSWER_LEAD}\n{p.answer}")
        assert all(t["assert"].startswith("assert f(") for t in p.meta["tests"])
        assert fam.check(p.answer, p)
        assert not fam.check(wrong_answer(p), p)
        assert not fam.check("", p)


def test_integer_answers_are_canonical_and_arithmetic_is_right():
    for p in sample("arithmetic", 2, 50) + sample("arithmetic_zh", 3, 50):
        a, op, b = p.meta["a"], p.meta["op"], p.meta["b"]
        assert int(p.answer) == {"+": a + b, "-": a - b, "*": a * b}[op]
        assert p.answer == str(int(p.answer))
    for p in sample("equations", 3, 50):
        m = p.meta
        x = int(p.answer)
        assert m["a"] * x + m["b"] == m["c"] * x + m["e"]


ONE_LINE = re.compile(r"(?<![\d*/(-])(\d+) ([+-]) (\d+) = (\d+)")
COLUMN_INTRO = re.compile(r"(?:Add|Subtract|逐位相加|逐位相减) (\d+) ([+-]) (\d+)")


@pytest.mark.parametrize("name", ["word", "word_zh", "equations"])
@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_sums_inside_word_and_equation_solutions_are_worked_in_columns(name, difficulty):
    """Every addition or subtraction of non-negative numbers in a word or equation solution is worked by the
    arithmetic family's column steps: a one-line "a ± b = r" appears only as a column step ("Ones: 7 + 2 = 9, ..."),
    as the conclusion of its own column steps ("So 17 + 2 = 19") or in the self-check; every ± chain is true."""
    from r1lab.tasks.arithmetic import EN
    from r1lab.tasks.arithmetic_zh import ZH

    columns = tuple(EN.places + ZH.places)
    worked = 0
    for p in sample(name, difficulty, 40):
        for sentence in re.split(r"(?<=[.。])\s?", p.solution):
            for m in ONE_LINE.finditer(sentence):
                a, op, b, r = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
                if sentence.startswith(columns) or "verify" in sentence or "验证" in sentence:
                    continue
                assert sentence.startswith(("So ", "所以")) and m.start() <= 3, (sentence, p.solution)
                worked += 1
                head = p.solution[:p.solution.index(sentence)]
                intro = list(COLUMN_INTRO.finditer(head))[-1]  # the column steps just before it
                assert (int(intro.group(1)), intro.group(2), int(intro.group(3))) == (a, op, b), p.solution
                assert r == (a + b if op == "+" else a - b)
            if "verify" in sentence or "验证" in sentence:  # "58 + 6 * 6 + 23 = 117 and ..." is true
                for expr, r in re.findall(r"([-\d (][-+*/\d ()]*?) = (-?\d+)", sentence.split("：")[-1]):
                    assert re.fullmatch(r"[-+*/\d ()]+", expr) and eval(expr.replace("/", "//")) == int(r), sentence
                continue
            for chain, r in re.findall(r"(?<![\d*/.(-])(?<![*/] )(\d+(?: [+-] \d+)+) = (-?\d+)", sentence):
                terms = chain.split()
                value = int(terms[0]) + sum(int(x) if o == "+" else -int(x) for o, x in zip(terms[1::2], terms[2::2]))
                assert value == int(r), (chain, r, p.solution)
    assert worked >= (20 if name.startswith("word") else 5)


def test_countdown_gold_uses_exactly_the_numbers_and_hits_target():
    for d in (1, 2, 3):
        for p in sample("countdown", d, 30):
            expr = p.answer
            assert re.fullmatch(r"[\d+\-*/() ]+", expr)
            assert sorted(int(t) for t in re.findall(r"\d+", expr)) == sorted(p.meta["numbers"])
            assert abs(eval(expr) - p.meta["target"]) < 1e-9
            assert len(p.meta["numbers"]) == d + 2


@pytest.mark.parametrize("name", NON_CODE + ["code"])
def test_perfect_r1zero_completion_gets_full_reward(name):
    for p in sample(name, 1, 1 if name == "code" else 5):
        completion = reference_completion(p)
        assert completion.startswith("<think> ") and completion.endswith(" </answer>")
        assert task_reward(completion, p) == 1.0
        assert FAMILIES[name].reward(completion, p) == 1.0


@pytest.mark.parametrize("name", NON_CODE)
def test_wrong_final_answer_gets_no_accuracy_reward(name):
    for p in sample(name, 1, 5):
        bad = f"<think> {p.solution} </think> <answer> {wrong_answer(p)} </answer>"
        expected = 0.1 if name == "countdown" else 0.0  # TinyZero: well-formed but wrong
        assert task_reward(bad, p) == pytest.approx(expected)
        assert task_check(wrong_answer(p), p) is False


def test_countdown_reward_without_answer_is_zero():
    p = sample("countdown", 1, 1)[0]
    assert task_reward("I do not know.", p) == 0.0


@pytest.mark.parametrize("name", ["arithmetic_zh", "word_zh"])
def test_chinese_families_are_mostly_cjk(name):
    for p in sample(name, 2, 20):
        assert p.lang == "zh"
        assert cjk_fraction(p.prompt) >= 0.9, p.prompt
        assert cjk_fraction(p.solution) >= 0.9, p.solution
        assert p.solution.endswith(f"答案是 {p.answer}。")


def test_english_families_have_no_cjk():
    for name in ("arithmetic", "word", "equations", "countdown"):
        for p in sample(name, 2, 10):
            assert cjk_fraction(p.prompt + p.solution) == 0.0


@pytest.mark.parametrize("name", GENERATIVE)
def test_difficulty_knob_makes_problems_harder(name):
    easy, hard = sample(name, 1, 40), sample(name, 3, 40)
    # equations: only sums of non-negative numbers are worked in columns, and level 3's are mostly negative, so its
    # solutions are not longer than level 1's; its problems are (x on both sides, larger coefficients)
    size = lambda ps: sum(len(p.prompt) + (len(p.solution) if name != "equations" else 0) for p in ps) / len(ps)
    assert size(hard) > 1.1 * size(easy)
    assert not {p.uid for p in easy} & {p.uid for p in hard} or name == "code"


def test_easy_level_is_short():
    for name in GENERATIVE:
        for p in sample(name, 1, 50):
            limit = 60 if p.lang == "zh" else 110
            assert len(p.prompt) <= limit, p.prompt
            # equations at level 1: up to 3-digit column subtractions (~160 tokens in the R1 format)
            assert len(p.solution) <= (340 if name == "equations" else 200), p.solution


def test_self_verification_is_seeded_and_about_thirty_percent():
    ps = sample("arithmetic", 1, 400)
    share = sum("Wait, let me verify:" in p.solution for p in ps) / len(ps)
    assert 0.2 < share < 0.4
    assert any("等等，我验证一下" in p.solution for p in sample("arithmetic_zh", 1, 50))
    assert [p.solution for p in sample("arithmetic", 1, 20)] == [p.solution for p in sample("arithmetic", 1, 20)]


def test_same_problem_same_uid_and_translation_shares_split():
    from r1lab.tasks.base import content_uid, split_of

    for p in sample("arithmetic_zh", 1, 30):
        en = content_uid("arithmetic", f"{p.meta['a']}{p.meta['op']}{p.meta['b']}")
        assert en != p.uid and split_of(en) == split_of(p.uid)


def test_math_family_checks_by_equality_and_cannot_generate():
    fam = get_family("math")
    from r1lab.tasks.jsonl import problem_from_dict

    p = problem_from_dict({"prompt": "Half of 3?", "answer": "3/2"})
    assert fam.check("1.5", p) and fam.check("\\frac{3}{2}", p) and not fam.check("2", p)
    with pytest.raises(NotImplementedError):
        fam.generate(random.Random(0), 1)
