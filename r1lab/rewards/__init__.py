"""Rule-based rewards for GRPO (DeepSeek-R1 §2.2.2, §2.3.2): math accuracy, format, countdown, language
consistency and sandboxed code execution, plus a registry (``load_reward``) and ``combine_rewards``.

Registered names: ``accuracy``, ``format_r1_zero``, ``format_r1``, ``countdown``, ``language_consistency``,
``code``; user rewards plug in as ``"package.module:function"`` with the signature
``fn(completion, reference, **kw) -> float``. Sub-modules are imported lazily (math-verify, sandbox).
"""

from r1lab.rewards.combine import RewardFn, combine_rewards, list_rewards, load_reward, register_reward

__all__ = ["RewardFn", "combine_rewards", "list_rewards", "load_reward", "register_reward"]
