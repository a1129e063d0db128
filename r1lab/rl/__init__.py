"""GRPO (DeepSeekMath §4.1, DeepSeek-R1 §2.2) in small modules.

- ``advantage``: group-normalised outcome advantages (and the Dr. GRPO / zero-variance / truncation options);
- ``loss``: the clipped surrogate with the k3 KL penalty and the token-weight aggregations;
- ``logprobs``: per-token log-probabilities of completions under a model (policy and reference);
- ``rollout``: B prompts × G samples from the inference engine, rule rewards, a ``RolloutBatch`` of tensors;
- ``grpo``: ``GRPOConfig`` and the training loop ``run_grpo``.
"""
