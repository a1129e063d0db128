"""Math accuracy reward: extract the final answer, compare it with the reference using Math-Verify.

Idea: DeepSeek-R1 §2.2.2 accuracy rewards ("the model is required to provide the final answer in a specified
format (e.g., within a box), enabling reliable rule-based verification"). Equivalence is delegated to
huggingface/Math-Verify (``parse`` + ``verify``, gold first: the comparison is asymmetric).

Extraction convention (``extract_answer``), first rule that applies wins:
1. the content of the LAST ``<answer>...</answer>`` (R1-Zero template); if that content itself holds a box,
   the content of its last box;
2. else the content of the LAST balanced ``\\boxed{...}`` / ``\\fbox{...}`` (or ``\\boxed 5``, up to whitespace or
   ``$``) - Hendrycks MATH ``last_boxed_only_string`` + ``remove_boxed``;
3. else the LAST GSM8K ``#### X`` (rest of that line; commas dropped when it is a number);
4. else ``None`` - no "last number in the text" fallback (that is lm-eval's *flexible* GSM8K mode; it rewards
   unformatted answers, which an RL format reward should not).
Differences to peers, chosen on purpose: last match everywhere (OpenAI's GSM8K ``extract_answer`` and lm-eval
strict-match take the first ``####``); we return the box *content* (``last_boxed_only_string`` returns the whole
``\\boxed{...}``); an unclosed box is no answer (Hendrycks returns ``None`` too).

Reading: Math-Verify's ``parse`` is built for whole responses, so a bare answer (``\\frac12``, ``[2,5)``) is parsed
inside ``$...$`` while prose, delimited LaTeX and plain numbers are parsed as they are (see ``_reading``).

Threads: Math-Verify's default timeouts use ``signal.alarm``, which only works in the main thread (elsewhere
``parse`` raises ValueError). ``math_equal`` uses those timeouts in the main thread and
disables them (``parsing_timeout=None``/``timeout_seconds=None``) in other threads, where the only guard is the
input length cap ``MAX_CHARS``; run untrusted math from a process pool if you need a hard time limit there.
"""

from __future__ import annotations

import functools
import logging
import re
import threading

from math_verify import parse, verify

logger = logging.getLogger(__name__)

MAX_CHARS = 20_000  # longer inputs are cut to their last MAX_CHARS characters before parsing
TIMEOUT_S = 5  # Math-Verify timeout per parse / verify call in the main thread

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_BOX_START = re.compile(r"\\(?:boxed|fbox)\s*\{|\\boxed[ \t]+")
_GSM8K = re.compile(r"####[ \t]*([^\n]*)")
_NUMBER = re.compile(r"-?[\d,]*\.?\d+\.?")
_LATEX_ANCHOR = re.compile(r"\$|\\\(|\\\[|\\boxed|\\fbox")
_PLAIN_NUMBER = re.compile(r"-?\d[\d.,]*(?: \d{3})*")
_PROSE = re.compile(r"[A-Za-z]{2,}\s+[A-Za-z]{2,}")
_COMMAND = re.compile(r"\\[A-Za-z]+")


def _boxes(text: str) -> list[str]:
    """Contents of every balanced ``\\boxed{}``/``\\fbox{}`` (and ``\\boxed x``) in order; unclosed ones skipped."""
    found = []
    for m in _BOX_START.finditer(text):
        if not m.group(0).endswith("{"):  # "\boxed 5": up to whitespace or "$"
            token = re.match(r"[^\s$]+", text[m.end() :])
            if token:
                found.append(token.group(0))
            continue
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            found.append(text[m.end() : i - 1])
    return found


def extract_answer(text: str) -> str | None:
    """The final answer of a completion (order in the module docstring), stripped; ``None`` if none.

    >>> extract_answer("<think>2+2</think> <answer> 4 </answer>")
    '4'
    >>> extract_answer("first \\\\boxed{3}, final \\\\boxed{\\\\frac{9}{3}}")
    '\\\\frac{9}{3}'
    >>> extract_answer("Natalia sold 48+24 = 72 clips.\\n#### 72")
    '72'
    >>> extract_answer("#### 1,000 dollars"), extract_answer("no answer here 42"), extract_answer("\\\\boxed{open")
    ('1,000 dollars', None, None)
    """
    answers = _ANSWER.findall(text)
    if answers:
        inner = _boxes(answers[-1])
        return (inner[-1] if inner else answers[-1]).strip()
    boxes = _boxes(text)
    if boxes:
        return boxes[-1].strip()
    marks = _GSM8K.findall(text)
    if marks:
        value = marks[-1].strip()
        return value.replace(",", "").rstrip(".") if _NUMBER.fullmatch(value) else value
    return None


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _reading(text: str) -> str:
    """How to hand ``text`` to Math-Verify: ``"text"`` (as is) or ``"latex"`` (inside ``$...$``).

    Math-Verify's ``parse`` is built for whole responses: on a bare string without math delimiters it falls
    back to the last plain number (``"10, 4, 2"`` -> 2), and bare LaTeX such as ``\\frac12`` does not parse.
    So a bare answer is read as LaTeX, while these stay as is: strings with delimiters or ``\\boxed``, several
    lines or > 200 characters, prose (two words in a row), and a single number with separators (Math-Verify's
    number reader handles ``1 000``, ``1,000``, and the decimal comma ``1,22``).
    """
    if _LATEX_ANCHOR.search(text) or "\n" in text.strip() or len(text) > 200:
        return "text"
    if _PLAIN_NUMBER.fullmatch(text.strip()) or _PROSE.search(_COMMAND.sub(" ", text)):
        return "text"
    return "latex"


@functools.lru_cache(maxsize=1024)
def _parse_cached(text: str, timeout: int | None) -> tuple:
    """Math-Verify parse of ``text`` under ``_reading`` (LaTeX reading falls back to text if it yields nothing)."""
    text = text[-MAX_CHARS:]
    if _reading(text) == "latex":
        parsed = parse(f"${text}$", parsing_timeout=timeout)
        if parsed:
            return tuple(parsed)
    return tuple(parse(text, parsing_timeout=timeout))


def math_equal(pred: str | None, gold: str | None) -> bool:
    """Whether ``pred`` is mathematically equivalent to ``gold`` (Math-Verify, gold first). Never raises.

    Works in any thread (see module docstring for timeouts); errors and timeouts count as not equal.

    >>> math_equal("\\\\frac{1}{2}", "0.5"), math_equal("0.5", "\\\\frac12"), math_equal("x = 3", "3")
    (True, True, True)
    >>> math_equal("[2,5)", "[2,5)"), math_equal("7", "72"), math_equal(None, "1")
    (True, False, False)
    """
    if not pred or not gold or not pred.strip() or not gold.strip():
        return False
    timeout = TIMEOUT_S if _in_main_thread() else None
    try:
        gold_parsed = _parse_cached(gold, timeout)
        pred_parsed = _parse_cached(pred, timeout)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(list(gold_parsed), list(pred_parsed), timeout_seconds=timeout))
    except Exception as exc:  # noqa: BLE001 - a reward must not crash the run
        logger.debug("math_equal failed on pred=%r gold=%r: %r", pred[:80], gold[:80], exc)
        return False


def gold_answer(gold: str) -> str:
    """The reference answer of a dataset field: the part after the last ``####`` (GSM8K), else ``gold``.

    >>> gold_answer("Natalia sold 48/2 = 24 clips in May.\\n#### 72"), gold_answer("\\\\frac{1}{2}")
    ('72', '\\\\frac{1}{2}')
    """
    if _GSM8K.search(gold) and not _ANSWER.search(gold) and not _boxes(gold):
        return extract_answer(gold) or gold
    return gold


def accuracy_reward(completion: str, gold: str) -> float:
    """1.0 if the completion's extracted answer equals the reference answer, else 0.0.

    ``gold`` may be a bare answer, a LaTeX string with ``\\boxed{}``, or a GSM8K solution ending in ``#### X``.

    >>> accuracy_reward("<think>half</think><answer>\\\\frac{1}{2}</answer>", "0.5")
    1.0
    >>> accuracy_reward("So the total is \\\\boxed{71}.", "Natalia sold 72 clips.\\n#### 72")
    0.0
    >>> accuracy_reward("The answer is 72", "72")  # no <answer>, box or ####: no answer
    0.0
    """
    pred = extract_answer(completion)
    return 1.0 if pred is not None and math_equal(pred, gold_answer(gold)) else 0.0
