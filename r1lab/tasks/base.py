"""The verifiable-task interface: a `Problem` record and the `Family` that generates and checks it.

Idea: DeepSeek-R1-Zero (arXiv 2501.12948, §2.2.2) trains with *rule-based* rewards only — the final answer of a
problem with a deterministic result is compared with the gold answer (math), or run against test cases (code).
Each task family here is a seeded generator of such problems plus its own rule checker, so the whole pipeline
(pretrain corpus, SFT, GRPO, eval) can run on built-in data without downloads.

Deliberate differences from the paper: the problems are tiny and templated (grade-school arithmetic, TinyZero
countdown, one-line code), sized for ~1–5M-parameter models with 256–512-token contexts; every problem carries a
short worked solution (chain of thought) so a pretraining corpus can be built from the same generators.

Conventions (shared by every family):
- `uid` = 16 hex chars hashed from the family and the canonical content (see `content_uid`). The canonical
  content ignores surface form that does not change the problem (e.g. countdown uses the sorted numbers and
  the target), so the same problem always gets the same uid, at any difficulty, seed or position.
- `split_of(uid)` assigns train/val/test from a hash of the uid's first 4 chars (80/10/10), hence splits are
  disjoint by construction, also across en/zh versions of one problem.
- A worked solution ends with one final sentence carrying the gold answer: "The answer is 85." (en) or
  "答案是 85。" (zh); code solutions end with the code itself.
"""

from __future__ import annotations

import abc
import hashlib
import random
import re
from dataclasses import dataclass, field

SPLITS = ("train", "val", "test")
VERIFY_PROB = 0.3  # chance that a worked solution re-checks itself ("Wait, let me verify: ...")


@dataclass(frozen=True)
class Problem:
    """One verifiable problem.

    family: the generating family's name ("arithmetic", "countdown", ..., or "math" for user files)
    uid: stable content hash, 16 hex chars (see module docstring)
    prompt: the question, without any chat template
    answer: gold final answer as a canonical string
    solution: worked step-by-step chain of thought ending with the final answer ("" when unknown)
    lang: "en" or "zh"
    difficulty: the difficulty level it was generated at (1 = easiest)
    meta: family-specific data (countdown: numbers/target; code: tests list)
    """

    family: str
    uid: str
    prompt: str
    answer: str
    solution: str
    lang: str
    difficulty: int
    meta: dict = field(default_factory=dict, compare=False, hash=False)


def content_uid(family: str, canonical: str, namespace: str | None = None) -> str:
    """Stable 16-hex-char id of a problem's canonical content.

    The first 4 hex chars hash (namespace, canonical) and alone decide the split (see `split_of`); the other
    12 hash (family, canonical). Families posing the same problem in another language share a namespace
    (arithmetic_zh uses "arithmetic"), so a problem and its translation always land in the same split while
    keeping distinct uids.

    >>> content_uid("arithmetic", "47+38") == content_uid("arithmetic", "47+38")
    True
    >>> a, b = content_uid("arithmetic", "47+38"), content_uid("arithmetic_zh", "47+38", namespace="arithmetic")
    >>> len(a), a[:4] == b[:4], a != b
    (16, True, True)
    """
    ns = namespace or family
    head = hashlib.sha256(f"{ns}\x1f{canonical}".encode()).hexdigest()[:4]
    tail = hashlib.sha256(f"{family}\x1f{canonical}".encode()).hexdigest()[:12]
    return head + tail


def split_of(uid: str) -> str:
    """Deterministic split of a uid from its first 4 chars: 80% "train", 10% "val", 10% "test".

    >>> split_of("0123456789abcdef") in SPLITS
    True
    """
    bucket = int(hashlib.sha256(f"split\x1f{uid[:4]}".encode()).hexdigest()[:8], 16) % 10
    return "train" if bucket < 8 else ("val" if bucket == 8 else "test")


def answer_sentence(answer: str, lang: str) -> str:
    """The closing sentence of every worked solution.

    >>> answer_sentence("85", "en"), answer_sentence("85", "zh")
    ('The answer is 85.', '答案是 85。')
    """
    return f"答案是 {answer}。" if lang == "zh" else f"The answer is {answer}."


def reference_completion(problem: Problem) -> str:
    """A perfect R1-Zero-style completion: ``<think> solution </think> <answer> answer </answer>``."""
    return f"<think> {problem.solution} </think> <answer> {problem.answer} </answer>"


_INT_RE = re.compile(r"[+-]?\d+")
_THOUSANDS_RE = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+")
_NOISE_RE = re.compile(r"[\s$]|\\[,!; ]")
_VAR_RE = re.compile(r"^[a-zA-Z]=")


def parse_int(text: str | None) -> int | None:
    """Canonical integer of a simple answer string, else None (then callers fall back to math_equal).

    Accepts "85", " 85.", "$85$", "1,692" (thousands separators only), "x = 5", "-7", "5.0".

    >>> [parse_int(s) for s in ["85", "$-7$", "1,692", "x = 5", "5.0", "5.5", "1,2", "abc", None]]
    [85, -7, 1692, 5, 5, None, None, None, None]
    """
    if text is None:
        return None
    s = _VAR_RE.sub("", _NOISE_RE.sub("", text)).rstrip(".")
    s = s.removesuffix(".0")
    if _THOUSANDS_RE.fullmatch(s):
        s = s.replace(",", "")
    return int(s) if _INT_RE.fullmatch(s) else None


def equal_to_gold(answer: str | None, gold: str) -> bool:
    """Integer fast path, then the shared math-verify based `math_equal(pred, gold)`.

    >>> equal_to_gold("85", "85"), equal_to_gold(" 85. ", "85"), equal_to_gold("84", "85"), equal_to_gold(None, "1")
    (True, True, False, False)
    """
    if answer is None:
        return False
    a, g = parse_int(answer), parse_int(gold)
    if a is not None and g is not None:
        return a == g
    from r1lab.rewards.math import math_equal  # lazy: sympy-backed, slower to import

    return bool(math_equal(answer, gold))


def extract_final(completion: str) -> str | None:
    """The final answer of a completion via the shared extractor: last <answer>…</answer>, else last \\boxed{}."""
    from r1lab.rewards.math import extract_answer

    return extract_answer(completion)


def maybe_verify(rng: random.Random, line: str, lang: str) -> str:
    """With probability VERIFY_PROB, a self-check sentence (" Wait, let me verify: <line>. Correct."), else "".

    The draw is taken from `rng` every time so that the rest of the generation stays seeded either way.
    """
    if rng.random() >= VERIFY_PROB:
        return ""
    if lang == "zh":
        return f"等等，我验证一下：{line}。正确。"
    return f"Wait, let me verify: {line}. Correct."


def join_steps(steps: list[str], lang: str) -> str:
    """Join solution sentences (no spaces between Chinese sentences, single spaces in English)."""
    return ("" if lang == "zh" else " ").join(s for s in steps if s)


class Family(abc.ABC):
    """A family of generated, rule-checkable problems.

    Subclasses set `name` and `lang` and implement `generate` (building problems with `make`, which hashes the
    family's canonical content into the uid); `check` and `reward` default to integer / math equality of the
    extracted final answer and are overridden where the answer is not a number (countdown, code).
    """

    name: str = ""
    lang: str = "en"
    namespace: str | None = None  # split namespace shared with a same-content family in another language
    generative: bool = True  # False for the generic "math" family of user task files

    @abc.abstractmethod
    def generate(self, rng: random.Random, difficulty: int) -> Problem:
        """One seeded problem at `difficulty` (1 = easiest; larger = harder, no upper bound)."""

    def make(self, canonical: str, prompt: str, answer: str, solution: str, difficulty: int,
             meta: dict | None = None) -> Problem:
        """Build a Problem of this family with its uid computed from `canonical`."""
        uid = content_uid(self.name, canonical, self.namespace)
        return Problem(family=self.name, uid=uid, prompt=prompt, answer=answer,
                       solution=solution, lang=self.lang, difficulty=difficulty, meta=dict(meta or {}))

    def switched_solution(self, problem: Problem, rng: random.Random) -> str | None:
        """The worked solution reasoned in another language than the problem's (code-switching, as in web text
        and in DeepSeek-R1-Zero's chains of thought), or None when the family has none. Used only by the
        pretraining corpus (``r1lab.data.corpus``, ``code_switch_share``)."""
        return None

    def check(self, answer: str | None, problem: Problem) -> bool:
        """Is the extracted final answer correct for `problem`?"""
        return equal_to_gold(answer, problem.answer)

    def answer(self, completion: str) -> str | None:
        """The final answer this family's reward reads from a full completion (cons@k votes with ``vote`` of it)."""
        return extract_final(completion)

    def vote(self, answer: str | None) -> str | None:
        """What an extracted answer votes with in cons@k: answers that must get the same verdict may share it (the
        answer itself by default; ``r1lab.pipeline.evaluate.vote_key`` normalises it further)."""
        return answer

    def reward(self, completion: str, problem: Problem) -> float:
        """1.0 if the final answer extracted from the full completion is correct, else 0.0."""
        return 1.0 if self.check(self.answer(completion), problem) else 0.0


def check_difficulty(difficulty: int) -> int:
    """Validate a difficulty level (an int >= 1)."""
    if not isinstance(difficulty, int) or isinstance(difficulty, bool) or difficulty < 1:
        raise ValueError(f"difficulty must be an int >= 1, got {difficulty!r}")
    return difficulty
