"""Rollouts: B prompts × G samples from π_old, scored by rule rewards, as one ``RolloutBatch`` of tensors.

R1-Zero (arXiv 2501.12948 §2.2.2) uses rule rewards only: accuracy (the task's checker on the final answer) and
format (thinking inside ``<think></think>``, the answer inside ``<answer></answer>`` with the R1-Zero template);
R1's reasoning RL adds language consistency (share of target-language words in the chain of thought). The total is a
weighted sum Σ_k w_k r_k; every component is kept separately for logging. Users add their own rewards by dotted path
(``my_pkg.rewards:brevity`` or ``my_pkg.rewards.brevity``), called as ``fn(completion, problem) -> float``.

A reward function that raises scores that sample 0 for that component; the failures are counted (``n_reward_errors``)
and the first message kept, so one bad checker never stops a run.

Legend: N = B·G completions (groups contiguous), S = P + T positions, P prompt width (left-padded), T completion width
(right-padded), K reward components.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from r1lab.rl.sampler import Sample, Sampler

log = logging.getLogger(__name__)

RewardFn = Callable[[str, object], float]


# ----------------------------------------------------------------------------------------------- reward components
def _accuracy(completion: str, problem) -> float:
    from r1lab.tasks import task_reward

    return float(task_reward(completion, problem))


def _format_r1_zero(completion: str, problem) -> float:
    from r1lab.rewards.format import r1_zero_format_reward

    return float(r1_zero_format_reward(completion))


def _format_r1(completion: str, problem) -> float:
    from r1lab.rewards.format import r1_format_reward

    return float(r1_format_reward(completion))


def _language(completion: str, problem) -> float:
    from r1lab.rewards.format import split_reasoning
    from r1lab.rewards.language import language_consistency

    cot, _ = split_reasoning(completion)
    return float(language_consistency(cot, getattr(problem, "lang", "en")))


FORMAT_REWARDS: dict[str, RewardFn] = {"r1-zero": _format_r1_zero, "r1-zero-short": _format_r1_zero, "r1": _format_r1}


def load_user_reward(spec: str) -> RewardFn:
    """A callable from ``"pkg.module:function"`` or ``"pkg.module.function"``; a clear error if it is missing."""
    module, sep, name = spec.partition(":")
    if not sep:
        module, _, name = spec.rpartition(".")
    if not module or not name:
        raise ValueError(f"reward {spec!r}: expected 'package.module:function' or 'package.module.function'")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"reward {spec!r}: cannot import ({err})") from None
    if not callable(fn):
        raise ValueError(f"reward {spec!r} is not callable")
    return fn


def reward_functions(template: str, weights: Mapping[str, float]) -> dict[str, RewardFn]:
    """Components to compute: "accuracy" (always, it is also the accuracy metric), "format" (template's),
    "language", and any other key of ``weights`` read as a dotted path to a user reward."""
    if template not in FORMAT_REWARDS:
        raise ValueError(f"template must be one of {sorted(FORMAT_REWARDS)}, got {template!r}")
    builtin = {"accuracy": _accuracy, "format": FORMAT_REWARDS[template], "language": _language}
    fns = {"accuracy": _accuracy}
    for name, w in weights.items():
        if name in builtin:
            if w != 0:
                fns[name] = builtin[name]
        else:
            fns[name] = load_user_reward(name)
    return fns


@dataclass
class RewardScores:
    values_NK: torch.Tensor
    names: list[str]
    n_errors: int = 0
    first_error: str | None = None


def score_completions(completions: Sequence[str], problems: Sequence[object],
                      fns: Mapping[str, RewardFn]) -> RewardScores:
    """Every component on every completion; a raising function scores 0 and is counted.

    >>> def bad(c, p): raise RuntimeError("boom")
    >>> s = score_completions(["a", "b"], [None, None], {"len": lambda c, p: len(c), "bad": bad})
    >>> s.values_NK.tolist(), s.n_errors, s.first_error
    ([[1.0, 0.0], [1.0, 0.0]], 2, "bad: RuntimeError('boom')")
    """
    names = list(fns)
    values = torch.zeros(len(completions), len(names))
    n_errors, first = 0, None
    for i, (text, problem) in enumerate(zip(completions, problems, strict=True)):
        for k, name in enumerate(names):
            try:
                v = float(fns[name](text, problem))
                if v != v or v in (float("inf"), float("-inf")):
                    raise ValueError(f"non-finite reward {v}")
                values[i, k] = v
            except Exception as err:  # noqa: BLE001 - one bad checker must not stop the run
                n_errors += 1
                first = first or f"{name}: {err!r}"
    if n_errors:
        log.warning("%d reward call(s) raised and scored 0; first: %s", n_errors, first)
    return RewardScores(values, names, n_errors, first)


def total_reward(scores: RewardScores, weights: Mapping[str, float]) -> torch.Tensor:
    """Σ_k w_k r_k per completion (components missing from ``weights`` weigh 0)."""
    w_K = torch.tensor([float(weights.get(n, 0.0)) for n in scores.names])
    return scores.values_NK @ w_K


# ----------------------------------------------------------------------------------------------- batch
@dataclass
class RolloutBatch:
    """Everything the policy update needs (tensors on CPU; move with ``to``).

    input_ids_NS: [left-padded prompt | completion right-padded with pad_id]; attention_mask_NS: 1 on real tokens;
    completion_mask_NT: 1 on generated tokens (EOS included); old_logp_NT: π_old from the sampler; rewards_NK with
    reward_names; rewards_N: weighted total; group_ids_N: prompt index (contiguous groups of G); truncated_N: hit
    max_new_tokens without EOS.
    """

    input_ids_NS: torch.Tensor
    attention_mask_NS: torch.Tensor
    completion_mask_NT: torch.Tensor
    old_logp_NT: torch.Tensor
    rewards_NK: torch.Tensor
    reward_names: list[str]
    rewards_N: torch.Tensor
    group_ids_N: torch.Tensor
    truncated_N: torch.Tensor
    group_size: int
    texts: list[str] = field(default_factory=list)
    problems: list[object] = field(default_factory=list)
    n_reward_errors: int = 0

    @property
    def completion_len(self) -> int:
        return self.completion_mask_NT.shape[1]

    @property
    def lengths_N(self) -> torch.Tensor:
        return self.completion_mask_NT.sum(dim=1)

    def component(self, name: str) -> torch.Tensor:
        return self.rewards_NK[:, self.reward_names.index(name)]

    def rows(self, lo: int, hi: int) -> RolloutBatch:
        """Rows lo..hi-1 (for micro-batches and for splitting a batch across ranks in tests)."""
        pick = lambda t: t[lo:hi]  # noqa: E731
        return RolloutBatch(pick(self.input_ids_NS), pick(self.attention_mask_NS), pick(self.completion_mask_NT),
                            pick(self.old_logp_NT), pick(self.rewards_NK), self.reward_names, pick(self.rewards_N),
                            pick(self.group_ids_N), pick(self.truncated_N), self.group_size, self.texts[lo:hi],
                            self.problems[lo:hi], self.n_reward_errors)


def collate(prompts: Sequence[Sequence[int]], samples: Sequence[Sequence[Sample]], pad_id: int, multiple: int = 1
            ) -> dict[str, torch.Tensor]:
    """Token tensors of a rollout: prompts left-padded to P, completions right-padded to T (≥ 1), each rounded up
    to a multiple of ``multiple``. Padding is masked out, so it changes no result; on a GPU it keeps the shapes of
    successive steps equal, so that cuDNN attention can reuse its execution plan (a new shape costs a plan build,
    the likely cause of the alternate GRPO steps that ran 2 s slower in benchmarks/grpo_step.py on an H100).

    >>> t = collate([[5, 6, 7]], [[Sample([8, 9], [0.0, 0.0], "stop")]], pad_id=0, multiple=4)
    >>> t["input_ids_NS"].tolist(), t["completion_mask_NT"].tolist()
    ([[0, 5, 6, 7, 8, 9, 0, 0]], [[1.0, 1.0, 0.0, 0.0]])
    """
    def up(n: int) -> int:
        return -(-n // multiple) * multiple

    P = up(max(len(p) for p in prompts))
    T = up(max(1, max(len(s.token_ids) for group in samples for s in group)))
    ids, attn, cmask, logp, trunc, gid = [], [], [], [], [], []
    for g, (prompt, group) in enumerate(zip(prompts, samples, strict=True)):
        for s in group:
            c, pad_l, pad_r = list(s.token_ids), P - len(prompt), T - len(s.token_ids)
            ids.append([pad_id] * pad_l + list(prompt) + c + [pad_id] * pad_r)
            attn.append([0] * pad_l + [1] * (len(prompt) + len(c)) + [0] * pad_r)
            cmask.append([1.0] * len(c) + [0.0] * pad_r)
            logp.append(list(s.logprobs) + [0.0] * pad_r)
            trunc.append(s.finish_reason == "length")
            gid.append(g)
    return {
        "input_ids_NS": torch.tensor(ids, dtype=torch.long),
        "attention_mask_NS": torch.tensor(attn, dtype=torch.long),
        "completion_mask_NT": torch.tensor(cmask),
        "old_logp_NT": torch.tensor(logp),
        "truncated_N": torch.tensor(trunc, dtype=torch.bool),
        "group_ids_N": torch.tensor(gid, dtype=torch.long),
    }


def rollout(sampler: Sampler, tokenizer, prompt_ids: Sequence[Sequence[int]], problems: Sequence[object],
            group_size: int, fns: Mapping[str, RewardFn], weights: Mapping[str, float], *, max_new_tokens: int,
            temperature: float = 1.0, top_p: float = 1.0, seed: int = 0, pad_multiple: int = 1) -> RolloutBatch:
    """Samples G completions per prompt, decodes them, scores every reward component, returns a RolloutBatch
    (token tensors padded as ``collate`` with ``multiple=pad_multiple``)."""
    if group_size < 2:
        raise ValueError(f"group_size (G) must be >= 2 for GRPO, got {group_size}")
    samples = sampler.sample([list(p) for p in prompt_ids], group_size, max_new_tokens, temperature, top_p, seed)
    tensors = collate(prompt_ids, samples, tokenizer.pad_id, pad_multiple)
    flat = [s for group in samples for s in group]
    texts = [tokenizer.decode(s.token_ids, skip_special_tokens=True) for s in flat]
    flat_problems = [p for p in problems for _ in range(group_size)]
    scores = score_completions(texts, flat_problems, fns)
    return RolloutBatch(rewards_NK=scores.values_NK, reward_names=scores.names,
                        rewards_N=total_reward(scores, weights), group_size=group_size, texts=texts,
                        problems=flat_problems, n_reward_errors=scores.n_errors, **tensors)
