"""The pretraining corpus builder: valid JSONL, train problems only, deterministic, atomic."""

from __future__ import annotations

import json
import re

import pytest

from r1lab.data.corpus import build_corpus, check_mix, render
from r1lab.tasks import make_split, split_of
from r1lab.tasks.base import content_uid
from r1lab.tasks.jsonl import cjk_fraction


def read(path):
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    stats = build_corpus(path, n_per_family=40, difficulty_levels=(1, 2), seed=0)
    return path, stats, read(path)


def test_valid_jsonl_and_stats(corpus):
    path, stats, rows = corpus
    assert stats["path"] == str(path) and stats["documents"] == len(rows)
    assert all(set(r) == {"text"} and isinstance(r["text"], str) and r["text"].strip() for r in rows)
    assert sum(stats["by_kind"].values()) == len(rows)
    assert set(stats["by_kind"]) == {"direct", "worked", "r1zero", "r1zero_answer", "plain", "facts"}
    n_other = stats["by_kind"]["plain"] + stats["by_kind"]["facts"]
    assert stats["problems"] + stats["code_switched"] == len(rows) - n_other
    assert stats["chars_total"] == sum(len(r["text"]) for r in rows)
    assert not [f for f in path.parent.iterdir() if f.name.endswith(".tmp")]


def test_document_shapes_and_both_languages(corpus):
    _, _, rows = corpus
    texts = [r["text"] for r in rows]
    assert any(re.fullmatch(r"Question: .+\nAnswer: \S+", t) for t in texts)
    assert any(t.startswith("Question: ") and "\nSolution: " in t and re.search(r"The answer is \S+\.$", t)
               for t in texts)
    assert any(re.fullmatch(r"User: .+\. Assistant: <think> .+ </think> <answer> .+ </answer>", t, re.DOTALL)
               for t in texts)
    assert any(re.fullmatch(r"User: .+\. Assistant: <think> The answer is \S+\. </think> <answer> .+ </answer>", t,
                            re.DOTALL) for t in texts)  # r1zero_answer: the answer sentence only
    assert any(t.startswith("问题：") for t in texts)
    assert sum(cjk_fraction(t) > 0.9 for t in texts) > 0.1 * len(texts)


def test_only_train_problems_in_corpus(corpus):
    _, _, rows = corpus
    blob = "\n".join(r["text"] for r in rows)
    for split in ("val", "test"):
        for level in (1, 2):
            for p in make_split(split, 40, level):
                assert p.prompt not in blob, (split, p.prompt)
    train = make_split("train", 40, 1)
    assert sum(p.prompt in blob for p in train) == len(train)


def test_plain_arithmetic_facts_never_state_heldout_problems(corpus):
    _, _, rows = corpus
    ops = {"plus": "+", "minus": "-", "times": "*", "加": "+", "减": "-", "乘": "*"}
    found = 0
    for r in rows:
        for a, word, b in re.findall(r"(\d+) (plus|minus|times|加|减|乘) (\d+)", r["text"]):
            found += 1
            assert split_of(content_uid("arithmetic", f"{a}{ops[word]}{b}")) == "train"
    assert found > 0


def test_deterministic_and_seeded(tmp_path):
    a = build_corpus(tmp_path / "a.jsonl", 10, (1,), seed=3, families=["arithmetic", "word_zh"])
    b = build_corpus(tmp_path / "b.jsonl", 10, (1,), seed=3, families=["arithmetic", "word_zh"])
    c = build_corpus(tmp_path / "c.jsonl", 10, (1,), seed=4, families=["arithmetic", "word_zh"])
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert (tmp_path / "a.jsonl").read_bytes() != (tmp_path / "c.jsonl").read_bytes()
    assert a["by_family"]["arithmetic"] == 10 and b == {**a, "path": b["path"]} and c["documents"] > 0


def test_overwrites_atomically_and_respects_mix(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("old\n")
    stats = build_corpus(path, 10, (1,), mix={"worked": 1.0}, families=["equations"])
    rows = read(path)
    assert stats["by_kind"] == {"worked": 10} and len(rows) == 10
    assert all("<answer>" not in r["text"] and "\nSolution: " in r["text"] for r in rows)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["c.jsonl"]


def test_mix_validation_and_render_errors():
    with pytest.raises(ValueError, match="unknown document kinds"):
        check_mix({"worked": 1, "poems": 1})
    with pytest.raises(ValueError, match="non-negative"):
        check_mix({"worked": -1})
    with pytest.raises(ValueError, match="at least one"):
        check_mix({"plain": 1})
    with pytest.raises(ValueError, match="unknown document kind"):
        render(make_split("train", 1, 1, ["word"])[0], "poem")
    with pytest.raises(ValueError, match="difficulty_levels"):
        build_corpus("/tmp/never.jsonl", 1, ())


def test_facts_documents_are_true_one_digit_facts(corpus):
    """Every drill sentence "a op b [op c] = r." is arithmetically right; no arithmetic task problem is a fact."""
    _, stats, rows = corpus
    facts = [r["text"] for r in rows if re.fullmatch(r"(\d+ [-+*/] \d+( [-+*] \d+)? = \d+\. ?)+", r["text"])]
    assert len(facts) == stats["by_kind"]["facts"] > 0
    sentences = [s for doc in facts for s in doc.split(". ") if s]
    for sentence in sentences:
        lhs, rhs = sentence.rstrip(".").split(" = ")
        assert eval(lhs) == int(rhs), sentence  # noqa: S307 - digits and operators only (regex above)
    # one-digit columns (+ carries/borrows up to 18) and divisions of the times table up to 12 × 9
    assert all(int(n) <= 108 for s in sentences for n in re.findall(r"\d+", s.split(" = ")[0]))
    assert not [p for p in make_split("test", 40, 1, ["arithmetic"]) if f"{p.prompt[8:-1]} = " in " ".join(facts)]


def _zh_arithmetic_reasoning(rows):
    """(question, reasoning) of every Chinese column-arithmetic document that shows a worked solution."""
    out = []
    for r in rows:
        t = r["text"]
        m = re.fullmatch(r"问题：(.+等于多少？)\n解答：(.+)", t, re.DOTALL) or re.fullmatch(
            r"User: (.+等于多少？)\. Assistant: <think> (.+) </think> <answer> .+ </answer>", t, re.DOTALL)
        if m and not re.fullmatch(r"(The answer is|答案是) \S+[.。]", m.group(2)):
            out.append((m.group(1), m.group(2)))
    return out


def test_code_switching_adds_english_reasoned_twins(tmp_path):
    """A share of the Chinese arithmetic questions with a worked solution get a second document reasoned in
    English (flagged as mixed by the eval's definition); every other document stays exactly as without them."""
    from collections import Counter

    from r1lab.rewards.language import is_mixed

    stats, rows = {}, {}
    for share in (0.0, 0.5, 1.0):
        path = tmp_path / f"c{share}.jsonl"
        stats[share] = build_corpus(path, 60, (1,), seed=3, families=["arithmetic_zh", "word"],
                                    code_switch_share=share)
        rows[share] = read(path)
    zh = {share: _zh_arithmetic_reasoning(rows[share]) for share in rows}
    mixed = {share: [(q, r) for q, r in zh[share] if is_mixed(r, "zh")] for share in zh}
    chinese = {share: [(q, r) for q, r in zh[share] if not is_mixed(r, "zh")] for share in zh}
    assert not mixed[0.0] and stats[0.0]["code_switched"] == 0 and len(chinese[0.0]) > 20
    assert sorted(chinese[1.0]) == sorted(chinese[0.5]) == sorted(chinese[0.0])  # the Chinese solutions all stay
    assert len(mixed[1.0]) == len(chinese[1.0]) == stats[1.0]["code_switched"]
    assert 0.25 * len(chinese[0.5]) < len(mixed[0.5]) == stats[0.5]["code_switched"] < 0.75 * len(chinese[0.5])
    answers = {q: r.rsplit("答案是 ", 1)[1].rstrip("。") for q, r in chinese[1.0]}
    assert all(r.rsplit("The answer is ", 1)[1].rstrip(".") == answers[q] for q, r in mixed[1.0])  # same problem
    extra = Counter(r["text"] for r in rows[1.0]) - Counter(r["text"] for r in rows[0.0])
    assert sum(extra.values()) == stats[1.0]["code_switched"]  # only the twins were added
    assert not Counter(r["text"] for r in rows[0.0]) - Counter(r["text"] for r in rows[1.0])
    with pytest.raises(ValueError, match="code_switch_share"):
        build_corpus(tmp_path / "bad.jsonl", 5, (1,), code_switch_share=1.5)


def test_switched_solution_is_the_english_family_solution():
    import random

    from r1lab.tasks import get_family

    zh = get_family("arithmetic_zh")
    for p in make_split("train", 10, 2, ["arithmetic_zh"]):
        s = zh.switched_solution(p, random.Random(0))
        assert s.endswith(f"The answer is {p.answer}.") and cjk_fraction(s) == 0
        assert f"{p.meta['a']} {p.meta['op']} {p.meta['b']}" in s
    assert get_family("word_zh").switched_solution(make_split("train", 1, 1, ["word_zh"])[0], random.Random(0)) is None


def test_code_switch_share_zero_is_the_corpus_from_before_code_switching(tmp_path):
    """Golden hashes: share 0 must reproduce the corpus and template documents of the code before code-switching
    existed (commit 2964cb6) byte for byte. Regenerate only for an intended corpus change; last regenerated when word
    and equation solutions got column steps (fourteenth session; with `arithmetic.worked_calc` forced to one line,
    the hashes of 2964cb6 came back, adc5e607… and b6ebeab0…)."""
    import hashlib

    from r1lab.pipeline.stages import template_documents

    path = tmp_path / "c.jsonl"
    build_corpus(path, 30, (1, 2), seed=3, code_switch_share=0.0)
    assert hashlib.md5(path.read_bytes()).hexdigest() == "e8b4091a226b4e93cec979a896b4a341"
    docs = template_documents(30, [1, 2], 0.2, 3, 0.3, code_switch_share=0.0)
    assert hashlib.md5("\n".join(docs).encode()).hexdigest() == "6c0a0cc6e7f7151d9fc50d73585487b6"


def test_pretrain_built_in_corpus_takes_the_code_switch_share(tmp_path):
    """`r1lab pretrain --corpus-code-switch-share` reaches the built-in corpus (ensure_corpus)."""
    from r1lab.rewards.language import is_mixed
    from r1lab.train.data import ensure_corpus

    counts = {}
    for share in (0.0, 1.0):
        out = tmp_path / str(share)
        out.mkdir()
        (path,) = ensure_corpus([], out, 30, [1], 0, share)
        counts[share] = sum(is_mixed(r, "zh") for _, r in _zh_arithmetic_reasoning(read(path)))
    assert counts[0.0] == 0 < counts[1.0]
