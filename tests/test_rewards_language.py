"""r1lab.rewards.language: proportion of target-language words (R1 §2.3.2), detection, mixing."""

from __future__ import annotations

import pytest

from r1lab.rewards.language import (
    detect_language,
    is_mixed_language,
    language_consistency,
    word_languages,
)


def test_pure_languages():
    assert language_consistency("Let us differentiate both sides and simplify.", "en") == 1.0
    assert language_consistency("我们对两边求导然后化简。", "zh") == 1.0
    assert language_consistency("Продифференцируем обе части и упростим.", "ru") == 1.0
    assert language_consistency("양변을 미분하고 정리한다.", "ko") == 1.0
    assert language_consistency("Let us differentiate.", "zh") == 0.0


def test_each_han_character_is_a_word():
    assert word_languages("我们计算") == {"zh": 4}
    assert language_consistency("首先 compute", "zh") == pytest.approx(2 / 3)


def test_math_code_numbers_punctuation_ignored():
    cot = "计算 $\\frac{a}{b} + x^2$ 得到 \\(y\\), 123 + 456 = 579! ```python\nprint('hello world')\n``` `len(x)`"
    assert language_consistency(cot, "zh") == 1.0
    assert word_languages("x + y = z, \\alpha \\beta, α + β") == {}


def test_empty_is_zero():
    assert language_consistency("", "en") == 0.0
    assert language_consistency("12 + 30 = 42", "en") == 0.0


def test_unknown_language_raises():
    with pytest.raises(ValueError, match="lang"):
        language_consistency("hello", "xx")


def test_detect_and_mixed():
    assert detect_language("The derivative is positive.") == "en"
    assert detect_language("导数为正。The end") == "zh"
    assert detect_language("") == "unknown"
    assert detect_language("مرحبا بالعالم") == "other"
    mixed = "We compute the derivative, 然后我们化简这个表达式得到结果"
    assert is_mixed_language(mixed, 0.9)
    assert not is_mixed_language("We compute the derivative and simplify it.", 0.9)
    assert not is_mixed_language("", 0.9)
    assert is_mixed_language("one two three four 五", 0.9) and not is_mixed_language("one two three four 五", 0.8)
    with pytest.raises(ValueError):
        is_mixed_language("x", 0.0)
