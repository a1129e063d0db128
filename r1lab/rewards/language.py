"""Language-consistency reward: the proportion of target-language words in the chain of thought.

Idea: DeepSeek-R1 §2.3.2 - to curb language mixing, a language consistency reward "calculated as the proportion
of target language words in the CoT" is added to the accuracy reward. DeepSeek released no code; this is our
implementation of that definition, by Unicode script (no model, no dictionary):

* Words: a run of letters of one script is one word; every CJK ideograph is one word (Chinese has no spaces).
* Languages: ``en`` = Latin-script words, ``zh`` = Han ideographs, ``ru`` = Cyrillic words, ``ko`` = Hangul.
  Everything else (Greek, Arabic, kana, ...) counts as a word of no supported language.
* Ignored: digits, punctuation, symbols, LaTeX math (``$...$``, ``$$...$$``, ``\\(...\\)``, ``\\[...\\]``) and
  commands (``\\frac``), code (fenced and inline), and single Latin or Greek letters (math variables).

Limits (by design of a script count): any Latin-script language (French, German, ...) counts as ``en``; Japanese
kanji count as ``zh`` and kana as no language, so Japanese is not supported; English "a"/"I" are ignored as if
they were variables; a hyphenated or apostrophised word counts as its letter runs; two currency dollar signs
("$5 and $6") pair up like a math span and hide the words between them.
"""

from __future__ import annotations

import re
from collections import Counter

LANGUAGES = ("en", "zh", "ru", "ko")
_STRIP = re.compile(
    r"```.*?```|`[^`\n]*`"  # code
    r"|\$\$.*?\$\$|\$[^$]*\$|\\\(.*?\\\)|\\\[.*?\\\]"  # math spans
    r"|\\[A-Za-z]+",  # stray LaTeX commands
    re.DOTALL,
)
_LETTERS = re.compile(r"[^\W\d_]+")


def _script(ch: str) -> str:
    """Coarse script of one letter: latin, han, cyrillic, hangul, greek or other."""
    cp = ord(ch)
    if cp < 0x250 or 0x1E00 <= cp <= 0x1EFF:
        return "latin"
    if 0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0xF900 <= cp <= 0xFAFF or 0x20000 <= cp <= 0x323AF:
        return "han"
    if 0x400 <= cp <= 0x52F or 0x1C80 <= cp <= 0x1C8F:
        return "cyrillic"
    if 0xAC00 <= cp <= 0xD7AF or 0x1100 <= cp <= 0x11FF or 0x3130 <= cp <= 0x318F:
        return "hangul"
    if 0x370 <= cp <= 0x3FF or 0x1F00 <= cp <= 0x1FFF:
        return "greek"
    return "other"


_LANG_OF_SCRIPT = {"latin": "en", "han": "zh", "cyrillic": "ru", "hangul": "ko"}


def word_languages(text: str) -> Counter[str]:
    """Word counts per language (``LANGUAGES`` or ``"other"``) after the filtering in the module docstring.

    >>> sorted(word_languages("我们计算 x^2 的导数, the derivative is $2x$.").items())
    [('en', 3), ('zh', 7)]
    """
    counts: Counter[str] = Counter()
    for run in _LETTERS.findall(_STRIP.sub(" ", text)):
        start = 0
        for i in range(1, len(run) + 1):
            if i < len(run) and _script(run[i]) == _script(run[start]):
                continue
            script, piece = _script(run[start]), run[start:i]
            if script == "han":
                counts["zh"] += len(piece)
            elif not (len(piece) == 1 and script in ("latin", "greek")):
                counts[_LANG_OF_SCRIPT.get(script, "other")] += 1
            start = i
    return counts


def language_consistency(cot: str, lang: str) -> float:
    """Share of words in ``cot`` that belong to ``lang`` (one of ``LANGUAGES``); 0.0 if it has no words.

    >>> language_consistency("First, compute 3 + 4 = 7.", "en")
    1.0
    >>> round(language_consistency("首先计算 the sum", "zh"), 3)  # 4 Han words, 2 English words
    0.667
    >>> language_consistency("= 42 !", "en")
    0.0
    """
    if lang not in LANGUAGES:
        raise ValueError(f"language_consistency: lang must be one of {LANGUAGES}, got {lang!r}")
    counts = word_languages(cot)
    total = sum(counts.values())
    return counts[lang] / total if total else 0.0


def detect_language(text: str) -> str:
    """The language with the most words (``"other"`` possible); ``"unknown"`` when there are no words.

    >>> detect_language("Сначала найдём производную."), detect_language("먼저 미분을 구한다"), detect_language("1+1")
    ('ru', 'ko', 'unknown')
    """
    counts = word_languages(text)
    return counts.most_common(1)[0][0] if counts else "unknown"


def is_mixed_language(text: str, threshold: float = 0.9) -> bool:
    """True if the dominant language holds less than ``threshold`` of the words (text without words: False).

    Used by rejection sampling (R1 §2.3.3 filters "chain-of-thought with mixed languages").

    >>> is_mixed_language("We first 计算导数 and then simplify"), is_mixed_language("We first differentiate.")
    (True, False)
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"is_mixed_language: threshold must be in (0, 1], got {threshold}")
    counts = word_languages(text)
    total = sum(counts.values())
    return bool(total) and counts.most_common(1)[0][1] / total < threshold


MIXING_THRESHOLD = 0.9  # a CoT with a smaller share of words in the problem's language counts as mixed


def chain_of_thought(response: str) -> str:
    """The reasoning part: inside the last <think>…</think> (or after <think> when unclosed), else the whole text.

    >>> chain_of_thought("<think> 2+3=5 </think> <answer> 5 </answer>"), chain_of_thought("just 5")
    ('2+3=5', 'just 5')
    """
    head, sep, _ = response.rpartition("</think>")
    text = head if sep else response
    if "<think>" in text:
        text = text.rsplit("<think>", 1)[1]
    return text.strip()


def is_mixed(cot: str, lang: str, threshold: float = MIXING_THRESHOLD) -> bool:
    """Language mixing of a chain of thought: it has words, and fewer than ``threshold`` of them are in the
    problem's language (``language_consistency``). Stricter than ``is_mixed_language`` (which only
    asks for *one* dominant language): a Chinese problem reasoned about in English counts as mixed too.

    >>> is_mixed("We first 计算导数 and then simplify", "en"), is_mixed("先算 3+4=7", "zh"), is_mixed("3+4=7", "zh")
    (True, False, False)
    >>> is_mixed("First 3+4=7", "zh")
    True
    """
    if lang not in LANGUAGES or not sum(word_languages(cot).values()):
        return False
    return language_consistency(cot, lang) < threshold
