"""Problem (de)serialisation and user JSONL task files."""

from __future__ import annotations

import json

import pytest

from r1lab.tasks import (
    load_tasks_jsonl,
    make_split,
    problem_from_dict,
    problem_to_dict,
    save_problems_jsonl,
    task_reward,
)


def test_roundtrip_dict_and_file(tmp_path):
    ps = make_split("test", 3, 2)
    for p in ps:
        d = json.loads(json.dumps(problem_to_dict(p)))
        assert problem_from_dict(d) == p and problem_from_dict(d).meta == p.meta
    path = save_problems_jsonl(ps, tmp_path / "sub" / "ps.jsonl")
    back = load_tasks_jsonl(path)
    assert back == ps and [p.meta for p in back] == [p.meta for p in ps]
    assert not [f for f in path.parent.iterdir() if f.suffix == ".tmp"]


def test_user_rows_get_defaults(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(
        '{"prompt": "What is 6 * 7?", "answer": 42}\n'
        "\n"
        "# a comment\n"
        '{"prompt": "小明有 3 个苹果，又买了 2 个。现在有几个？", "answer": "5"}\n'
        '{"prompt": "What is 2 + 2?", "answer": "4", "family": "arithmetic", "difficulty": 2}\n',
        encoding="utf-8",
    )
    a, b, c = load_tasks_jsonl(path)
    assert (a.family, a.answer, a.lang, a.difficulty, a.solution) == ("math", "42", "en", 1, "")
    assert (b.lang, c.family, c.difficulty) == ("zh", "arithmetic", 2)
    assert len({a.uid, b.uid, c.uid}) == 3 and len(a.uid) == 16
    assert load_tasks_jsonl(path)[0].uid == a.uid  # stable
    assert task_reward("<think> 6 * 7 = 42 </think> <answer> 42 </answer>", a) == 1.0
    assert task_reward("<think> hmm </think> <answer> 41 </answer>", a) == 0.0


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"prompt": "1+1?"}', "missing required field 'answer'"),
        ('{"answer": "2"}', "missing required field 'prompt'"),
        ('{"prompt": "1+1?", "answer": "2"', "invalid JSON"),
        ('{"prompt": "", "answer": "2"}', "'prompt' must be a non-empty string"),
        ('{"prompt": "1+1?", "answer": [2]}', "'answer' must be a string or a number"),
        ('{"prompt": "1+1?", "answer": "2", "family": "chess"}', "unknown family 'chess'"),
        ('{"prompt": "make 10", "answer": "5 + 5", "family": "countdown"}', "needs field 'meta.numbers'"),
        ('{"prompt": "1+1?", "answer": "2", "lang": "fr"}', "'lang' must be 'en' or 'zh'"),
        ('{"prompt": "1+1?", "answer": "2", "difficulty": 0}', "'difficulty' must be an int"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "ok?", "answer": "1"}\n\n' + line + "\n", encoding="utf-8")
    with pytest.raises(ValueError) as err:
        load_tasks_jsonl(path)
    assert f"{path}:3:" in str(err.value)
    assert message in str(err.value)
