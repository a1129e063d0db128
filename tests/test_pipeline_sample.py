"""Rejection-sampling filters of r1lab.pipeline.sample: each drop reason, dedupe, statistics, atomic JSONL."""

from __future__ import annotations

import json

from r1lab.pipeline.generation import Completion
from r1lab.pipeline.sample import filter_samples, rejection_sample, repetition_ratio
from r1lab.tasks import make_split


def r1(cot: str, answer: str) -> str:
    """An R1-style completion (the prompt ended in "<think>\\n")."""
    return f"{cot}\n</think>\n\nThe answer is \\boxed{{{answer}}}."


def test_every_filter_and_the_statistics(tmp_path):
    (p,) = make_split("test", 1, families=["arithmetic"])
    wrong = str(int(p.answer) + 1)
    good = r1("Add the two numbers carefully.", p.answer)
    comps = [
        Completion(good, 10),                                             # kept
        Completion(r1("Add the two numbers carefully.", wrong), 10),      # incorrect
        Completion(r1("Add them.", p.answer), 10, "length"),              # too_long (truncated)
        Completion(r1("Add them up now.", p.answer), 999),                # too_long (over the cap)
        Completion(f"The answer is \\boxed{{{p.answer}}}.", 5),           # bad_format (no </think>)
        Completion(r1("先 add 两个 numbers 数", p.answer), 10),             # mixed_language
        Completion(r1("add the numbers " * 12, p.answer), 40),             # repetitive
        Completion("  " + good.upper().lower() + " ", 10),               # duplicate after normalisation
        Completion(r1("Sum them, then check.", p.answer), 10),            # kept
    ]
    rows, stats = filter_samples([p], [comps], style="r1", max_response_tokens=100)
    assert stats.generated == 9 and stats.kept == 2 and len(rows) == 2
    assert stats.dropped == {"incorrect": 1, "too_long": 2, "bad_format": 1, "mixed_language": 1,
                             "repetitive": 1, "duplicate": 1, "over_quota": 0}
    assert rows[0]["response"].startswith("<think>\n") and rows[0]["prompt"] == p.prompt
    assert stats.kept_by_family == {"arithmetic": 2} and stats.prompts_with_kept == 1
    _, capped = filter_samples([p], [comps], style="r1", max_response_tokens=100, max_per_prompt=1)
    assert capped.kept == 1 and capped.dropped["over_quota"] == 1


def test_judge_replaces_rules_and_file_is_written(tmp_path):
    problems = make_split("test", 1, families=["arithmetic", "word"])

    def gen(prompts, s):
        return [["<think>\n" + r1(f"Compute it, way {j}.", "0") for j in range(s.n)] for _ in prompts]

    out = tmp_path / "kept.jsonl"
    rows, stats = rejection_sample(gen, problems, out, k=3, judge=lambda resp, prob: prob.family == "word",
                                   style="plain", verbose=False)
    assert stats.kept == 3 and stats.dropped["incorrect"] == 3  # the judge, not the rule (answer "0" is wrong)
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [r["family"] for r in lines] == ["word"] * 3 and lines == rows
    assert not list(tmp_path.glob("*.tmp"))


def test_repetition_ratio():
    assert repetition_ratio("one two three four five six") == 0.0
    assert repetition_ratio("ab cd ef gh " * 10) > 0.8


def test_worked_solutions_rewritten_into_r1_format_are_correct_for_every_family():
    from r1lab.pipeline.sample import format_ok
    from r1lab.pipeline.stages import worked_to_r1, zero_to_r1
    from r1lab.tasks import FAMILIES, GENERATIVE, reference_completion, task_reward

    for p in make_split("train", 2, families=list(GENERATIVE)):
        r1 = worked_to_r1(p)
        assert r1.startswith("<think>\n") and format_ok(r1, "r1"), (p.family, r1)
        assert task_reward(r1, p) == 1.0, (p.family, r1)
        assert task_reward(zero_to_r1(reference_completion(p), p), p) == 1.0
    assert "math" in FAMILIES
