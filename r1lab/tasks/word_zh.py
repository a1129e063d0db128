"""Templated word problems posed and solved in Chinese (应用题), 1–3 steps.

Idea: the `word` engine with a Chinese sentence table (names, measure words), so the built-in data carries a
second language in both prompt and chain of thought — what R1's language-consistency reward
(arXiv 2501.12948, §2.3.2) measures. Difficulty works as in `word`.
"""

from __future__ import annotations

import random

from r1lab.tasks.arithmetic_zh import ZH as ZH_PHRASES
from r1lab.tasks.base import Family, Problem
from r1lab.tasks.word import Story, write_story

ZH = Story(
    names=(("小明", "他", "他"), ("小红", "她", "她"), ("小刚", "他", "他"), ("小丽", "她", "她"),
           ("小华", "他", "他"), ("小芳", "她", "她")),
    items=(("苹果", "个"), ("铅笔", "支"), ("书", "本"), ("贴纸", "张"),
           ("糖果", "颗"), ("气球", "个"), ("邮票", "张"), ("饼干", "块")),
    start="{n}有 {a} {m}{it}。",
    add=(("{p}又买了 {b} {m}。", "又买了 {b} {m}"), ("{f}送给{o} {b} {m}。", "{f}送来 {b} {m}"),
         ("{p}又找到 {b} {m}。", "又找到 {b} {m}")),
    sub=(("{p}送给{f} {b} {m}。", "送出 {b} {m}"), ("{p}丢了 {b} {m}。", "丢了 {b} {m}"),
         ("{p}卖掉 {b} {m}。", "卖掉 {b} {m}")),
    pack="{p}又买了 {k} 袋，每袋 {b} {m}。",
    share="{p}把它们平均放进 {k} 个盒子。",
    question="{n}现在有多少{m}{it}？",
    share_question="每个盒子里有多少{m}{it}？",
    sol_start="{n}一开始有 {a} {m}{it}。",
    sol_step="{clause}：{calc}。",
    sol_pack="{k} 袋，每袋 {b} {m}，共 {k} * {b} = {kb} {m}，所以 {calc}。",
    sol_share="平均放进 {k} 个盒子：{calc}。",
    phrases=ZH_PHRASES,
)


class WordZhFamily(Family):
    """Chinese word problems: "小明有 12 个苹果。他又买了 5 个。小明现在有多少个苹果？" → 17.

    >>> p = WordZhFamily().generate(random.Random(2), 2)
    >>> p.lang, p.solution.endswith("答案是 " + p.answer + "。")
    ('zh', True)
    """

    name = "word_zh"
    lang = "zh"
    story = ZH

    def generate(self, rng: random.Random, difficulty: int) -> Problem:
        prompt, solution, r, canonical = write_story(rng, difficulty, self.story, self.lang)
        return self.make(canonical, prompt, str(r), solution, difficulty)
