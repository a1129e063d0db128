"""Deterministic, hash-based train/val/test splits and the family registry."""

from __future__ import annotations

import pytest

from r1lab.tasks import GENERATIVE, get_family, make_split, split_of


def uids(ps):
    return {p.uid for p in ps}


def test_splits_are_disjoint_and_hash_assigned():
    by_split = {s: make_split(s, 40, difficulty=1, seed=0) for s in ("train", "val", "test")}
    for s, ps in by_split.items():
        assert len(ps) == 40 * len(GENERATIVE)
        assert len(uids(ps)) == len(ps), "duplicates within a split"
        assert all(split_of(p.uid) == s for p in ps)
    assert not uids(by_split["train"]) & uids(by_split["val"])
    assert not uids(by_split["train"]) & uids(by_split["test"])
    assert not uids(by_split["val"]) & uids(by_split["test"])
    prompts = {s: {p.prompt for p in ps} for s, ps in by_split.items()}
    assert not prompts["train"] & (prompts["val"] | prompts["test"])


def test_disjoint_across_seeds_and_difficulties():
    train = uids(make_split("train", 60, 1, ["arithmetic", "countdown", "equations"], seed=1))
    train |= uids(make_split("train", 60, 2, ["arithmetic", "countdown", "equations"], seed=2))
    for seed in (0, 3):
        for d in (1, 2):
            held = uids(make_split("val", 30, d, ["arithmetic", "countdown", "equations"], seed=seed))
            held |= uids(make_split("test", 30, d, ["arithmetic", "countdown", "equations"], seed=seed))
            assert not train & held


def test_deterministic_and_prefix_stable():
    a = make_split("val", 10, 2, ["word", "countdown"], seed=5)
    b = make_split("val", 10, 2, ["word", "countdown"], seed=5)
    assert a == b
    small = make_split("val", 4, 2, ["word", "countdown"], seed=5)
    assert small == a[:8]
    assert [p.family for p in a[:4]] == ["word", "countdown", "word", "countdown"]
    assert make_split("val", 10, 2, ["word", "countdown"], seed=6) != a


def test_split_ratio_is_about_80_10_10():
    from r1lab.tasks.base import content_uid

    counts = {"train": 0, "val": 0, "test": 0}
    for i in range(20000):
        counts[split_of(content_uid("x", str(i)))] += 1
    assert 0.77 < counts["train"] / 20000 < 0.83
    assert 0.08 < counts["val"] / 20000 < 0.12


def test_registry_errors():
    with pytest.raises(ValueError, match="known: arithmetic"):
        get_family("chess")
    with pytest.raises(ValueError, match="split must be one of"):
        make_split("dev", 3)
    with pytest.raises(ValueError, match="no generator"):
        make_split("train", 3, families=["math"])
    with pytest.raises(ValueError, match="unknown task family"):
        make_split("train", 3, families=["nope"])
    with pytest.raises(ValueError, match="difficulty"):
        make_split("train", 3, difficulty=0, families=["arithmetic"])


def test_small_space_raises_or_returns_fewer():
    from r1lab.tasks import PATIENCE

    assert PATIENCE > 0
    with pytest.raises(ValueError, match="only about"):
        make_split("test", 500, 4, ["code"])  # ~750 distinct level-4 code problems in all
    fewer = make_split("test", 500, 4, ["code"], strict=False)
    assert 20 < len(fewer) < 500 and len(uids(fewer)) == len(fewer)
