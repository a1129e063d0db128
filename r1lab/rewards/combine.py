"""Reward registry and weighted combination of rule-based rewards.

Idea: R1-Zero sums rule rewards (accuracy + format, DeepSeek-R1 §2.2.2); R1 stage 2 adds language consistency
(§2.3.2). Every reward here has one calling convention, ``fn(completion, reference, **kw) -> float``, so a run
config can name them (``"accuracy"``) or plug in user code (``"my_pkg.rewards:length_penalty"``).

Failure policy of ``combine_rewards``: a reward that raises (or returns a non-finite value) scores 0 for that
sample, is logged (logging module, with the reward's name) and counted in ``n_errors``; the run goes on.
Keyword arguments are passed to a reward only if its signature accepts them (or it takes ``**kw``).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

logger = logging.getLogger(__name__)

RewardFn = Callable[..., float]  # fn(completion, reference, **kw) -> float
_REGISTRY: dict[str, RewardFn] = {}


def register_reward(name: str, fn: RewardFn | None = None):
    """Register ``fn`` under ``name`` (usable as a decorator). Re-registering a name is an error.

    >>> @register_reward("doc_length")
    ... def _length(completion, reference, **kw):
    ...     return min(len(completion) / 100, 1.0)
    >>> load_reward("doc_length")("x" * 50, None)
    0.5
    """

    def add(f: RewardFn) -> RewardFn:
        if not name or ":" in name:
            raise ValueError(f"reward name must be non-empty without ':', got {name!r}")
        if name in _REGISTRY and _REGISTRY[name] is not f:
            raise ValueError(f"reward {name!r} is already registered ({_REGISTRY[name]!r})")
        _REGISTRY[name] = f
        return f

    return add if fn is None else add(fn)


def list_rewards() -> list[str]:
    """Registered reward names, sorted."""
    return sorted(_REGISTRY)


def _accepts(fn: Callable, kw: Mapping[str, Any]) -> dict[str, Any]:
    """The subset of ``kw`` that ``fn`` can take."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return dict(kw)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return dict(kw)
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return {k: v for k, v in kw.items() if k in names}


def load_reward(spec: str | RewardFn) -> RewardFn:
    """A reward by registered name, by dotted path ``"package.module:function"``, or a callable as is.

    >>> load_reward("format_r1_zero")("<think>x</think><answer>1</answer>", None)
    1.0
    >>> load_reward("math:sqrt")(16.0)
    4.0
    """
    if callable(spec):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"reward spec must be a name, 'module:function' or a callable, got {type(spec).__name__}")
    if ":" not in spec:
        if spec not in _REGISTRY:
            raise KeyError(f"unknown reward {spec!r}; registered: {list_rewards()} (or use 'module:function')")
        return _REGISTRY[spec]
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"reward {spec!r}: cannot import module {module_name!r}: {exc}") from exc
    fn = module
    for part in attr.split("."):
        if not hasattr(fn, part):
            raise AttributeError(f"reward {spec!r}: {module_name!r} has no attribute {attr!r}")
        fn = getattr(fn, part)
    if not callable(fn):
        raise TypeError(f"reward {spec!r} is not callable ({type(fn).__name__})")
    return fn


def _name(spec: str | RewardFn) -> str:
    return spec if isinstance(spec, str) else getattr(spec, "__name__", repr(spec))


def combine_rewards(
    fns_weights: Mapping[str, float] | Sequence[tuple[str | RewardFn, float]],
    completion: str,
    reference: Any,
    **kw: Any,
) -> tuple[float, dict[str, float], int]:
    """``(sum of weight * reward, {name: unweighted reward}, number of rewards that raised)``.

    >>> total, parts, n_err = combine_rewards({"accuracy": 1.0, "format_r1_zero": 0.5},
    ...                                       "<think>2+2</think><answer>4</answer>", "4")
    >>> total, parts, n_err
    (1.5, {'accuracy': 1.0, 'format_r1_zero': 1.0}, 0)
    """
    pairs = list(fns_weights.items()) if isinstance(fns_weights, Mapping) else list(fns_weights)
    total, parts, n_errors = 0.0, {}, 0
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise ValueError(f"fns_weights[{i}] must be (reward, weight), got {pair!r}")
        spec, weight = pair
        fn = load_reward(spec)  # a bad spec is a config error: raise, do not count
        name = _name(spec)
        if name in parts:
            name = f"{name}#{i}"
        try:
            value = float(fn(completion, reference, **_accepts(fn, kw)))
            if not math.isfinite(value):
                raise ValueError(f"non-finite reward {value}")
        except Exception as exc:  # noqa: BLE001 - policy: one bad reward must not stop training
            logger.warning("reward %s raised %s: %s; scored 0 for this sample", name, type(exc).__name__, exc)
            value, n_errors = 0.0, n_errors + 1
        parts[name] = value
        total += float(weight) * value
    return total, parts, n_errors


# ----------------------------------------------------------------------------- built-in rewards (lazy imports)


@register_reward("accuracy")
def _accuracy(completion: str, reference: str, **kw: Any) -> float:
    """Math answer correctness; ``reference`` is the gold answer (bare, boxed or GSM8K ``#### X``)."""
    from r1lab.rewards.math import accuracy_reward

    return accuracy_reward(completion, str(reference))


@register_reward("format_r1_zero")
def _format_r1_zero(completion: str, reference: Any = None, **kw: Any) -> float:
    from r1lab.rewards.format import r1_zero_format_reward

    return r1_zero_format_reward(completion)


@register_reward("format_r1")
def _format_r1(completion: str, reference: Any = None, **kw: Any) -> float:
    from r1lab.rewards.format import r1_format_reward

    return r1_format_reward(completion)


@register_reward("countdown")
def _countdown(completion: str, reference: Mapping[str, Any], **kw: Any) -> float:
    """``reference = {"numbers": [...], "target": n}``."""
    from r1lab.rewards.countdown import countdown_reward

    return countdown_reward(completion, reference["numbers"], reference["target"])


@register_reward("language_consistency")
def _language(completion: str, reference: Any = None, *, lang: str = "en", **kw: Any) -> float:
    """Share of ``lang`` words in the reasoning part of the completion (pass ``lang=`` as a keyword)."""
    from r1lab.rewards.format import split_reasoning
    from r1lab.rewards.language import language_consistency

    return language_consistency(split_reasoning(completion)[0], lang)


@register_reward("code")
def _code(completion: str, reference: Sequence[Mapping[str, str]], *, timeout: float = 5.0,
          memory_mb: int = 512, **kw: Any) -> float:  # fmt: skip
    """Pass fraction over ``reference`` = list of ``{"input","output"}`` / ``{"assert"}`` test dicts."""
    from r1lab.rewards.code import code_reward

    return code_reward(completion, reference, timeout=timeout, memory_mb=memory_mb)
