"""Does the base model know its tasks? Greedy exact-match on held-out (val) problems by task family, in the two
document formats the built-in pretraining corpus uses (``r1lab.data.corpus``):

- direct:  "Question: {prompt}\\nAnswer:" → the generated line is the answer;
- worked:  "Question: {prompt}\\nSolution:" → a worked solution whose final "The answer is X." is extracted.

(Chinese problems use 问题：/答案：/解答：.) This is the few-shot-free "base model" check of the V3-Base stage, not the
R1 evaluation (``r1lab.pipeline.evaluate`` with pass@k and the chat template). Decoding is a plain batched greedy loop
without a KV cache (``greedy_generate``): the inference engine is the fast path; this stays readable and dependency-free.

Legend: B batch, T tokens.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import torch

from r1lab.tasks import get_family, make_split

MODES = ("direct", "worked")


def prompt_prefix(problem: Any, mode: str) -> str:
    """The corpus document of ``problem`` cut right after the colon that precedes the answer / solution.

    >>> from r1lab.tasks.base import Problem
    >>> prompt_prefix(Problem("arithmetic", "0" * 16, "What is 2 + 3?", "5", "", "en", 1), "direct")
    'Question: What is 2 + 3?\\nAnswer:'
    """
    zh = problem.lang == "zh"
    if mode == "direct":
        return f"问题：{problem.prompt}\n答案：" if zh else f"Question: {problem.prompt}\nAnswer:"
    if mode == "worked":
        return f"问题：{problem.prompt}\n解答：" if zh else f"Question: {problem.prompt}\nSolution:"
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


@torch.no_grad()
def greedy_generate(model, prompts: list[list[int]], max_new_tokens: int, eos_id: int, pad_id: int,
                    stop_ids: tuple[int, ...] = (), device: torch.device | str = "cpu") -> list[list[int]]:
    """Greedy continuation of each prompt (left-padded batch, full recompute per token); stops a row at ``eos_id`` or
    any of ``stop_ids`` (the stop token is not returned)."""
    was_training = model.training
    model.eval()
    b = len(prompts)
    width = max(len(p) for p in prompts)
    ids_BT = torch.full((b, width), pad_id, dtype=torch.long)
    mask_BT = torch.zeros((b, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids_BT[i, width - len(p):] = torch.tensor(p)
        mask_BT[i, width - len(p):] = 1
    ids_BT, mask_BT = ids_BT.to(device), mask_BT.to(device)
    done = torch.zeros(b, dtype=torch.bool, device=device)
    out: list[list[int]] = [[] for _ in range(b)]
    stops = torch.tensor([eos_id, *stop_ids], device=device)
    for _ in range(max_new_tokens):
        logits = model(ids_BT, attention_mask=mask_BT, logits_to_keep=1).logits[:, -1]
        nxt = logits.argmax(-1)
        stop_now = torch.isin(nxt, stops)
        for i in torch.nonzero(~done & ~stop_now).flatten().tolist():
            out[i].append(int(nxt[i]))
        done |= stop_now
        if bool(done.all()):
            break
        ids_BT = torch.cat([ids_BT, nxt[:, None]], dim=1)
        mask_BT = torch.cat([mask_BT, torch.ones_like(mask_BT[:, :1])], dim=1)
    model.train(was_training)
    return out


_FINAL_RE = re.compile(r"(?:The answer is|答案是)[:：]?\s*(.+?)\s*$", re.DOTALL)


def final_answer(solution: str) -> str | None:
    """The answer stated by the last "The answer is X." / "答案是 X。" sentence of a worked solution.

    >>> final_answer("2 + 3 = 5. The answer is 5."), final_answer("所以 86 - 54 = 32。答案是 32。")
    ('5', '32')
    >>> final_answer("The answer is:\\n```python\\nx = 1\\n```"), final_answer("no idea")
    ('```python\\nx = 1\\n```', None)
    """
    starts = [m.start() for m in re.finditer(r"The answer is|答案是", solution)]
    if not starts:
        return None
    m = _FINAL_RE.match(solution[starts[-1]:])
    if m is None:
        return None
    answer = m.group(1)
    return answer if answer.startswith("```") else answer.split("\n")[0].rstrip(".。").strip()


def generate_greedy(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, device) -> list[list[int]]:
    """Greedy completions (without the stop token): the inference engine (``r1lab.engine.LLM``, latent KV cache) when
    it is available, else ``greedy_generate``."""
    try:
        from r1lab.engine import LLM, SamplingParams
        from r1lab.engine.params import model_context
    except ImportError:
        LLM = None
    if LLM is not None:
        width = max(len(p) for p in prompts) + max_new_tokens + 1
        context = model_context(model.config)
        if context is not None:
            width = min(width, context)  # completions that reach the context end there; longer prompts: an error
        engine = LLM(model, tokenizer=tokenizer, max_batch_size=min(len(prompts), 256), max_model_len=width)
        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=[tokenizer.eos_id])
        outs = engine.generate(prompt_token_ids=prompts, sampling_params=params)
        return [[t for t in o.outputs[0].token_ids if t != tokenizer.eos_id] for o in outs]
    return greedy_generate(model, prompts, max_new_tokens, tokenizer.eos_id, tokenizer.pad_id, device=device)


def _answer_of(text: str, mode: str, family: str) -> str | None:
    if mode == "direct":
        return text.strip() if family == "code" else text.strip().split("\n")[0].strip()
    return final_answer(text)


def _check(answer: str | None, problem: Any) -> bool | None:
    """The family's checker; None when the checker cannot run here (a reward module not installed yet)."""
    try:
        return bool(answer is not None and get_family(problem.family).check(answer, problem))
    except ImportError:
        return None


def exact_match(model, tokenizer, problems: list, mode: str, device, max_new_tokens: int | None = None,
                batch_size: int = 64) -> dict[str, float]:
    """Exact-match rate by family (plus "all") of greedy answers in ``mode``."""
    limit = max_new_tokens or (48 if mode == "direct" else 160)
    correct: dict[str, list[bool]] = defaultdict(list)
    for s in range(0, len(problems), batch_size):
        chunk = problems[s: s + batch_size]
        prompts = [tokenizer.encode(prompt_prefix(p, mode), add_bos=True) for p in chunk]
        outs = generate_greedy(model, tokenizer, prompts, limit, device)
        for p, ids in zip(chunk, outs):
            answer = _answer_of(tokenizer.decode(ids, skip_special_tokens=True), mode, p.family)
            ok = _check(answer, p)
            if ok is not None:
                correct[p.family].append(ok)
    table = {fam: sum(v) / len(v) for fam, v in sorted(correct.items())}
    table["all"] = sum(sum(v) for v in correct.values()) / max(sum(len(v) for v in correct.values()), 1)
    return table


def exact_match_table(model, tokenizer, n_per_family: int, device, difficulty: int = 1, seed: int = 0,
                      log=print) -> dict[str, dict[str, float]]:
    """{mode: {family: rate}} on ``n_per_family`` val problems per family; logs a small table."""
    problems = make_split("val", n_per_family, difficulty, seed=seed, strict=False)
    by_family = sorted({p.family for p in problems})
    result = {mode: exact_match(model, tokenizer, problems, mode, device) for mode in MODES}
    log(f"held-out exact match ({n_per_family} val problems per family, difficulty {difficulty}, greedy):")
    log(f"  {'family':<15}{'direct':>8}{'worked':>8}")
    for fam in by_family + ["all"]:
        cells = [f"{100 * result[m][fam]:>7.0f}%" if fam in result[m] else f"{'n/a':>8}" for m in MODES]
        log(f"  {fam:<15}{''.join(cells)}")
    return result
