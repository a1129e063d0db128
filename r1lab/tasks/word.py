"""Templated grade-school word problems with 1–3 steps (GSM8K-like, tiny).

Idea: a story is a running count of items that changes by one action per sentence (buy, give away, buy packs,
share equally); the question asks for the final count. The worked solution restates each action as one equation,
the same shape as GSM8K solutions (Cobbe et al., 2021) used in R1's math data, and is rule-checkable
(arXiv 2501.12948 §2.2.2). Each addition and subtraction is then worked in columns with the `arithmetic` family's
own sentences (`arithmetic.worked_calc`): a tiny model copies the structure of one-line sums well and their
results badly. Sentence tables make the engine bilingual (`word_zh` supplies Chinese).

Difficulty d: min(d, 3) actions; starting counts up to 20d and amounts up to 10d. "Share equally" only closes a
story and only when the count divides evenly; counts never go negative.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from r1lab.tasks.arithmetic import EN as EN_PHRASES
from r1lab.tasks.arithmetic import Phrases, worked_calc
from r1lab.tasks.base import (
    Family,
    Problem,
    answer_sentence,
    check_difficulty,
    join_steps,
    maybe_verify,
)


@dataclass(frozen=True)
class Story:
    """Sentence templates. Fields: {n} name, {p} pronoun subject, {o} pronoun object, {f} friend, {it} item
    (plural in en), {m} measure word (zh), {a} {b} {k} numbers, {calc} a worked calculation ("17 + 2 = 19" or its
    column steps, without the full stop)."""

    names: tuple[tuple[str, str, str], ...]  # (name, subject pronoun, object pronoun)
    items: tuple[tuple[str, str], ...]  # (item, measure word)
    start: str
    add: tuple[tuple[str, str], ...]  # (story sentence, solution clause)
    sub: tuple[tuple[str, str], ...]
    pack: str
    share: str
    question: str
    share_question: str
    sol_start: str
    sol_step: str  # {clause}: {calc}
    sol_pack: str
    sol_share: str
    phrases: Phrases  # column-arithmetic sentences of the same language


EN = Story(
    names=(("Tom", "He", "him"), ("Ann", "She", "her"), ("Sam", "He", "him"), ("Lily", "She", "her"),
           ("Ben", "He", "him"), ("Mia", "She", "her"), ("Max", "He", "him"), ("Eva", "She", "her")),
    items=(("apples", ""), ("pens", ""), ("books", ""), ("cards", ""), ("stamps", ""), ("marbles", ""),
           ("cookies", ""), ("shells", "")),
    start="{n} has {a} {it}.",
    add=(("{p} buys {b} more.", "{p} buys {b}"), ("{f} gives {o} {b} more.", "{f} gives {b}"),
         ("{p} finds {b} more.", "{p} finds {b}")),
    sub=(("{p} gives {b} to {f}.", "{p} gives away {b}"), ("{p} loses {b}.", "{p} loses {b}"),
         ("{p} sells {b}.", "{p} sells {b}")),
    pack="{p} buys {k} bags with {b} {it} in each.",
    share="{p} puts them equally into {k} boxes.",
    question="How many {it} does {n} have now?",
    share_question="How many {it} are in each box?",
    sol_start="{n} starts with {a} {it}.",
    sol_step="{clause}: {calc}.",
    sol_pack="{k} bags of {b} is {k} * {b} = {kb}, so {calc}.",
    sol_share="{p} shares them into {k} boxes: {calc}.",
    phrases=EN_PHRASES,
)


def plan(rng: random.Random, difficulty: int) -> tuple[int, list[tuple[str, int, int]]]:
    """Starting count and a list of actions (kind, amount, multiplier) at a difficulty level.

    >>> a, acts = plan(random.Random(0), 3)
    >>> len(acts), all(kind in ("add", "sub", "pack", "share") for kind, _, _ in acts)
    (3, True)
    """
    d = check_difficulty(difficulty)
    n_steps, hi, amt = min(d, 3), 20 * d, 10 * d
    count = rng.randint(2, hi)
    start, acts = count, []
    for i in range(n_steps):
        last = i == n_steps - 1
        kinds = ["add", "sub", "pack"]
        divisors = [k for k in range(2, 10) if count % k == 0]
        if last and divisors:
            kinds.append("share")
        if count < 2:
            kinds.remove("sub")
        kind = rng.choice(kinds)
        if kind == "add":
            b = rng.randint(1, amt)
            acts.append((kind, b, 1))
            count += b
        elif kind == "sub":
            b = rng.randint(1, min(amt, count - 1))
            acts.append((kind, b, 1))
            count -= b
        elif kind == "pack":
            k, b = rng.randint(2, 3 + d), rng.randint(2, 4 + d)
            acts.append((kind, b, k))
            count += k * b
        else:
            k = rng.choice(divisors)
            acts.append((kind, 0, k))
            count //= k
    return start, acts


def write_story(rng: random.Random, difficulty: int, st: Story, lang: str) -> tuple[str, str, int, str]:
    """(prompt, worked solution, answer, canonical) of one story in the language of `st`."""
    (n, p, o), (it, m) = rng.choice(st.names), rng.choice(st.items)
    f = rng.choice([x for x in st.names if x[0] != n])[0]
    start, acts = plan(rng, difficulty)
    kw = {"n": n, "p": p, "o": o, "f": f, "it": it, "m": m}
    ph = st.phrases
    story, sol = [st.start.format(a=start, **kw)], [st.sol_start.format(a=start, **kw)]
    r, chain = start, str(start)
    for kind, b, k in acts:
        if kind in ("add", "sub"):
            sentence, clause = rng.choice(st.add if kind == "add" else st.sub)
            sign, new = ("+", r + b) if kind == "add" else ("-", r - b)
            story.append(sentence.format(b=b, **kw))
            sol.append(st.sol_step.format(clause=clause.format(b=b, **kw), calc=worked_calc(r, sign, b, ph)))
            r, chain = new, f"{chain} {sign} {b}"
        elif kind == "pack":
            story.append(st.pack.format(b=b, k=k, **kw))
            sol.append(st.sol_pack.format(b=b, k=k, kb=k * b, calc=worked_calc(r, "+", k * b, ph), **kw))
            r, chain = r + k * b, f"{chain} + {k} * {b}"
        else:
            story.append(st.share.format(k=k, **kw))
            sol.append(st.sol_share.format(k=k, calc=worked_calc(r, "/", k, ph), **kw))
            r, chain = r // k, f"({chain}) / {k}"
    ask = st.share_question if acts[-1][0] == "share" else st.question
    prompt = join_steps([*story, ask.format(**kw)], lang)
    if len(acts) > 1:
        sol.append(maybe_verify(rng, f"{chain} = {r}", lang))
    sol.append(answer_sentence(str(r), lang))
    return prompt, join_steps(sol, lang), r, prompt


class WordFamily(Family):
    """English word problems: "Tom has 12 apples. He buys 5 more. How many apples does Tom have now?" → 17."""

    name = "word"
    lang = "en"
    story = EN

    def generate(self, rng: random.Random, difficulty: int) -> Problem:
        prompt, solution, r, canonical = write_story(rng, difficulty, self.story, self.lang)
        return self.make(canonical, prompt, str(r), solution, difficulty)
