"""pass@1 / cons@k / greedy / mixing math of r1lab.pipeline.evaluate on a fake generator with known answers,
and the GSM8K / MATH benchmark loaders."""

from __future__ import annotations

import json

import pytest

from r1lab.pipeline.evaluate import evaluate, load_benchmark, majority, vote_key
from r1lab.pipeline.generation import Completion, Sampling
from r1lab.tasks import make_split


def zero(cot: str, answer: str) -> str:
    return f"<think> {cot} </think> <answer> {answer} </answer>"


def scripted(script: dict[str, list[str]], greedy: dict[str, str]):
    """A generator answering each prompt with the scripted completions (by prompt text)."""

    def fn(prompts: list[str], s: Sampling) -> list[list[str]]:
        out = []
        for prompt in prompts:
            key = next(q for q in script if prompt.endswith(f"User: {q}. Assistant:"))
            out.append([greedy[key]] if s.temperature == 0 else script[key][: s.n])
        return out

    return fn


def test_pass_at_1_cons_at_k_and_greedy_on_known_answers():
    problems = make_split("test", 1, families=["arithmetic", "word"])  # 2 problems, integer answers
    p0, p1 = problems
    wrong0, wrong1 = str(int(p0.answer) + 1), str(int(p1.answer) + 1)
    script = {
        # 1 of 4 correct, majority wrong -> pass 0.25, cons 0
        p0.prompt: [zero("a b", p0.answer), zero("a b", wrong0), zero("a b", wrong0), zero("c d", wrong0)],
        # 2 of 4 correct, tie 2-2 broken by the earliest first vote (the correct one comes first) -> cons 1
        p1.prompt: [zero("x", p1.answer), zero("x", wrong1), zero("y", p1.answer), zero("y", wrong1)],
    }
    greedy = {p0.prompt: zero("a", p0.answer), p1.prompt: zero("a", wrong1)}
    res = evaluate(scripted(script, greedy), problems, k=4, template="r1-zero", progress=False)
    assert res.n_problems == 2 and res.k == 4
    assert res.pass_at_1 == pytest.approx((0.25 + 0.5) / 2)
    assert res.cons_at_k == pytest.approx(0.5)
    assert res.pass_at_k == pytest.approx(1.0)  # both problems have a correct sample
    assert res.greedy_accuracy == pytest.approx(0.5)
    assert res.per_family[p0.family]["pass_at_1"] == pytest.approx(0.25)
    assert res.per_family[p1.family]["cons_at_k"] == pytest.approx(1.0)
    assert res.language_mixing_rate == 0.0
    # whitespace token count without a tokenizer: "<think> a b </think> <answer> N </answer>" = 7 words
    assert res.mean_response_tokens > 0
    assert "ALL" in res.table()


def test_cons_tie_break_and_mixing_rate():
    (p,) = make_split("test", 1, families=["arithmetic"])
    wrong = str(int(p.answer) + 7)
    # wrong answer voted first in a 2-2 tie -> cons fails although pass@1 = 0.5
    script = {p.prompt: [zero("just add 我们", wrong), zero("add", p.answer), zero("add", wrong), zero("add", p.answer)]}
    res = evaluate(scripted(script, {p.prompt: zero("add", p.answer)}), [p], k=4, progress=False)
    assert res.pass_at_1 == 0.5 and res.cons_at_k == 0.0 and res.pass_at_k == 1.0
    assert res.language_mixing_rate == pytest.approx(0.25)  # one CoT of four: 2 Han words of 4


def test_countdown_solutions_written_differently_vote_together():
    """Two different correct countdown expressions share one vote (the numbers they write, the value they make); by
    their texts the four answers would tie 1-1-1-1 and the first, wrong one would win."""
    (p,) = make_split("test", 1, families=["countdown"])
    a, b, c = p.meta["numbers"]
    right, target = p.answer, p.meta["target"]
    same = f"({right})"  # the same solution, written differently
    wrong1, wrong2 = f"{a} + {b} + {c} + 1", f"{a} + {b}"
    assert target not in (a + b + c + 1, a + b)
    script = {p.prompt: [zero("try", wrong1), zero("try", right), zero("try", wrong2), zero("try", same)]}
    res = evaluate(scripted(script, {p.prompt: zero("x", right)}), [p], k=4, progress=False)
    assert res.pass_at_1 == 0.5 and res.cons_at_k == 1.0
    by_text = [vote_key(x) for x in (wrong1, right, wrong2, same)]
    assert len(set(by_text)) == 4 and majority(by_text) == 0  # what the old text vote would have chosen


def test_generator_output_is_checked():
    (p,) = make_split("test", 1, families=["arithmetic"])
    with pytest.raises(ValueError, match="returned 1 completions"):
        evaluate(lambda prompts, s: [[Completion("x", 1)] for _ in prompts], [p], k=2, greedy=False,
                 progress=False)


def test_vote_helpers():
    assert vote_key(" 1,692 ") == "1692" and vote_key("") is None
    assert majority(["a", "b", "b"]) == 1 and majority([None]) is None


def test_benchmark_loaders(tmp_path):
    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text(json.dumps({"question": "Tom has 3 and gets 4 more. How many?",
                               "answer": "3+4=7\n#### 7"}) + "\n", encoding="utf-8")
    math_file = tmp_path / "math.jsonl"
    math_file.write_text(json.dumps({"problem": "Half of 1?", "solution": "It is $\\boxed{\\frac{1}{2}}$."}) + "\n"
                         + json.dumps({"problem": "bad", "solution": "no box"}) + "\n", encoding="utf-8")
    (p,) = load_benchmark(gsm, "gsm8k")
    assert p.answer == "7" and p.family == "math"
    with pytest.raises(ValueError, match=r"math.jsonl:2: field 'solution' has no"):
        load_benchmark(math_file, "math")
    (q,) = load_benchmark(math_file, "math", limit=1)
    assert q.answer == "\\frac{1}{2}"
    script = {p.prompt: [zero("3+4=7", "7"), zero("3+4=7", "8")]}
    res = evaluate(scripted(script, {p.prompt: zero("s", "7")}), [p], k=2, progress=False)
    assert res.pass_at_1 == 0.5 and res.greedy_accuracy == 1.0


def test_pass_at_k_counts_problems_with_any_correct_sample():
    problems = make_split("test", 1, families=["arithmetic", "word"])
    p0, p1 = problems
    wrong0, wrong1 = str(int(p0.answer) + 1), str(int(p1.answer) + 1)
    script = {p0.prompt: [zero("a", wrong0), zero("a", wrong0), zero("a", p0.answer)],
              p1.prompt: [zero("a", wrong1)] * 3}
    res = evaluate(scripted(script, {}), problems, k=3, greedy=False, progress=False)
    assert res.pass_at_k == pytest.approx(0.5) and res.pass_at_1 == pytest.approx(1 / 6)
    assert res.per_family[p0.family]["pass_at_k"] == 1.0 and res.per_family[p1.family]["pass_at_k"] == 0.0
    assert "pass@3" in res.table()
