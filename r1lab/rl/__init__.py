"""GRPO (DeepSeekMath §4.1, DeepSeek-R1 §2.2) in small modules, one idea each.

- ``advantage``: group-normalised outcome advantages (Dr. GRPO / zero-variance / truncation options);
- ``loss``: the clipped surrogate with the k3 KL penalty and the aggregations as token weights;
- ``logprobs``: per-token log-probabilities of completions under a model (policy and reference);
- ``sampler``: G completions per prompt with π_old log-probs (the engine, or a naive fallback);
- ``rollout``: rule rewards per component and the ``RolloutBatch`` of tensors;
- ``update``: one policy update (micro-batches, gradient all-reduce, non-finite guard);
- ``metrics``: reflection-word rate and length statistics;
- ``models`` / ``setup``: loading ours or HF causal LMs, checkpoints and resume;
- ``grpo``: ``GRPOConfig`` and the training loop ``run_grpo`` (its docstring lists every difference from the paper).
"""
