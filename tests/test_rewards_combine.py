"""r1lab.rewards registry (names and 'module:function' plug-ins) and combine_rewards' failure policy."""

from __future__ import annotations

import logging
import math
import sys
import textwrap

import pytest

from r1lab.rewards import combine_rewards, list_rewards, load_reward, register_reward

GOOD = "<think>2+2=4</think>\n<answer>4</answer>"


def test_builtin_names():
    assert {"accuracy", "format_r1_zero", "format_r1", "countdown", "language_consistency", "code"} <= set(
        list_rewards()
    )
    assert load_reward("accuracy")(GOOD, "4") == 1.0
    assert load_reward("countdown")("<answer>3 - 2</answer>", {"numbers": [2, 3], "target": 1}) == 1.0
    assert load_reward("language_consistency")("思考</think>answer", None, lang="zh") == 1.0
    assert load_reward("code")("print(input())", [{"input": "7", "output": "7"}], timeout=5) == 1.0


def test_dotted_path_plugin(tmp_path, monkeypatch):
    (tmp_path / "my_rewards_plugin.py").write_text(textwrap.dedent("""
        def brevity(completion, reference, *, max_len=10):
            return 1.0 if len(completion) <= max_len else 0.0
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    fn = load_reward("my_rewards_plugin:brevity")
    assert fn("short", None) == 1.0
    # Keywords a reward does not take are filtered out; the ones it takes are passed.
    total, parts, n_err = combine_rewards([("my_rewards_plugin:brevity", 2.0)], "12345", None, max_len=3, lang="en")
    assert (total, parts, n_err) == (0.0, {"my_rewards_plugin:brevity": 0.0}, 0)
    sys.modules.pop("my_rewards_plugin", None)


def test_bad_specs_raise_clearly():
    with pytest.raises(KeyError, match="unknown reward 'nope'"):
        load_reward("nope")
    with pytest.raises(ImportError, match="cannot import module 'no_such_mod_xyz'"):
        load_reward("no_such_mod_xyz:f")
    with pytest.raises(AttributeError, match="has no attribute 'nofunc'"):
        load_reward("math:nofunc")
    with pytest.raises(TypeError, match="not callable"):
        load_reward("math:pi")
    with pytest.raises(ValueError, match="already registered"):
        register_reward("accuracy", lambda c, r: 0.0)


def test_combine_weights_and_components():
    total, parts, n_err = combine_rewards({"accuracy": 1.0, "format_r1_zero": 0.5}, GOOD, "4")
    assert (total, parts, n_err) == (1.5, {"accuracy": 1.0, "format_r1_zero": 1.0}, 0)
    total, parts, _ = combine_rewards([("accuracy", 1.0), ("format_r1_zero", 0.1)], "<answer>5</answer>", "4")
    assert total == 0.0 and parts == {"accuracy": 0.0, "format_r1_zero": 0.0}
    total, parts, _ = combine_rewards([("format_r1_zero", 1.0), ("format_r1_zero", 2.0)], GOOD, None)
    assert total == 3.0 and set(parts) == {"format_r1_zero", "format_r1_zero#1"}


def test_raising_reward_scores_zero_is_counted_and_logged(caplog):
    def broken(completion, reference):
        raise RuntimeError("boom")

    def nan_reward(completion, reference):
        return math.nan

    with caplog.at_level(logging.WARNING, logger="r1lab.rewards.combine"):
        total, parts, n_err = combine_rewards(
            [(broken, 1.0), (nan_reward, 1.0), ("accuracy", 1.0), ("countdown", 1.0)], GOOD, "4"
        )  # countdown gets a str reference -> TypeError inside -> counted
    assert total == 1.0
    assert parts == {"broken": 0.0, "nan_reward": 0.0, "accuracy": 1.0, "countdown": 0.0}
    assert n_err == 3
    assert "broken raised RuntimeError: boom" in caplog.text and "nan_reward" in caplog.text


def test_malformed_pairs_raise():
    with pytest.raises(ValueError, match=r"fns_weights\[0\]"):
        combine_rewards(["accuracy"], GOOD, "4")
