"""GRPO training (DeepSeekMath arXiv 2402.03300 §4.1, Alg. 1; DeepSeek-R1 arXiv 2501.12948 §2.2): R1-Zero style RL
with rule rewards, on one process or data-parallel under torchrun.

Per step: B prompts (each rank its B/W share) × G samples from π_old (``rollout``), rule rewards, group-normalised
advantages (``advantage``), π_ref log-probs when β > 0, then μ policy updates on the same samples (``update``),
weights pushed to the sampler, metrics to ``metrics.jsonl`` (+ one line per step), sample completions to
``samples.jsonl``, held-out pass@1 every ``eval_every`` steps, checkpoints every ``save_every`` steps.

Every way this differs from DeepSeekMath / R1 GRPO:
1. Scale: G, B, model and lengths are tiny by default (CPU demo); the paper uses G = 64 (DeepSeekMath) / 16 (R1).
2. β defaults to 0 (no reference model, no KL term), as TRL and DAPO; set β = 0.04 for DeepSeekMath's value.
   With β > 0 the KL is the k3 estimator in the loss (as in the paper), not a reward penalty.
3. Aggregation is selectable ("paper" = mean over tokens then outputs, the paper's; "token_mean" = DAPO;
   "dr_grpo" = constant normaliser); ε_high allows DAPO's clip-higher (paper: ε_high = ε).
4. Options the paper does not have: no std division (Dr. GRPO), dropping zero-variance groups, masking truncated
   completions (DAPO overlong filtering) — all off by default.
5. π_old: by default the trainer's own log-probs before the first update (ρ = 1 exactly at μ = 1), not the
   sampler's; the sampler's are used for a mismatch metric (``old_logprobs="engine"`` restores the paper's choice).
6. The advantage std is the population std (paper's formula; TRL uses the sample std).
7. Log-probs are of the raw (temperature-1) softmax even when sampling at another temperature.
8. Iterative GRPO resets π_ref to the current policy every ``ref_reset_every`` steps, but the reward model is not
   retrained (there is none: rule rewards only, as in R1-Zero).
9. Rewards: accuracy + weighted format (+ language consistency, + user rewards), summed; the paper gives no weights.
10. A NaN/inf loss or gradient skips the optimizer step (logged), which the paper does not discuss.
11. Prompts are drawn in epochs from a seeded permutation of the built-in train split (or a JSONL file).
12. Besides the paper's R1-Zero template, "r1-zero-short" keeps only its "User: …. Assistant:" frame: tiny base
    models pretrained on the built-in corpus (which shows that frame, without the long preamble) get no reward
    at all under the full 183-token template, hence no gradient.
13. The training forward computes each prompt once per packed row (a group's completions share one or a few rows:
    ``shared_prefix.py``; same log-probs as padded rows), so the MoE bias statistics count prompt tokens fewer
    times than G.

Legend: N = B·G completions on this rank.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from r1lab.rl.advantage import group_advantages
from r1lab.rl.loss import AGGREGATIONS
from r1lab.rl.metrics import mixing_rate, reflection_rate
from r1lab.train.distributed import agree
from r1lab.train.models import frozen_copy
from r1lab.rl.rollout import RolloutBatch, reward_functions, rollout
from r1lab.engine.params import model_context
from r1lab.rl.sampler import make_sampler
from r1lab.rl.shared_prefix import supports_shared_prefix
from r1lab.rl.update import UpdateSettings, all_reduce_sum, policy_update, reference_logprobs
from r1lab.tasks import CORRECT

log = logging.getLogger(__name__)
TEMPLATES = ("r1-zero", "r1-zero-short", "r1")


@dataclass
class GRPOConfig:
    """Every knob of ``r1lab grpo``. Defaults are the CPU R1-Zero demo (cpu-demo model, built-in tasks)."""

    model: str = ""
    """Policy checkpoint directory (ours or a local HF causal LM); empty = a fresh ``preset`` (tests only)."""
    preset: str = "tiny"
    """Model preset used when ``model`` is empty."""
    tokenizer: str = ""
    """Tokenizer directory; empty = the ``model`` directory."""
    out_dir: str = "runs/grpo"
    """Output directory: metrics.jsonl, samples.jsonl, checkpoints/, final/."""
    steps: int = 60
    """Number of GRPO steps (each: one rollout batch, μ optimizer updates)."""
    prompts_per_step: int = 8
    """B: prompts per step, over all ranks (must be divisible by the world size)."""
    group_size: int = 16
    """G: samples per prompt (>= 2)."""
    inner_updates: int = 1
    """μ: policy updates per rollout batch (DeepSeekMath's GRPO iterations over the same samples)."""
    micro_batch: int = 32
    """Completions per forward/backward chunk (gradient accumulation inside one update)."""
    eps: float = 0.2
    """ε: lower clip range, ratio ≥ 1 − ε."""
    eps_high: float = 0.28
    """ε_high: upper clip range, ratio ≤ 1 + ε_high (= ε for the paper; 0.28 = DAPO clip-higher)."""
    beta: float = 0.0
    """β: k3-KL weight; 0 loads no reference model (DeepSeekMath: 0.04)."""
    ref_reset_every: int = 0
    """Iterative GRPO: copy the policy into the reference model every N steps (0 = never)."""
    aggregation: str = "token_mean"
    """Loss aggregation: "paper" (mean per output, then over outputs), "token_mean" (DAPO), "dr_grpo"."""
    scale_by_std: bool | None = None
    """Divide advantages by the group std; None = auto: no for "dr_grpo" (Dr. GRPO), yes otherwise."""
    drop_zero_variance: bool = False
    """Exclude groups whose rewards are all equal from the loss normalisers."""
    mask_truncated: bool = False
    """Exclude completions cut at max_new_tokens from the loss (DAPO overlong filtering)."""
    old_logprobs: str = "trainer"
    """π_old source: "trainer" (log-probs before the first update) or "engine" (the sampler's)."""
    lr: float = 1e-4
    """Peak learning rate (AdamW). cpu-demo base, 30 steps of R1-Zero (docs/benchmarks.md, eleventh session): held-out
    pass@1 +0.144 at 5e-5, +0.160 at 1e-4, +0.081 at 2e-4, +0.058 at 3e-4, collapse at 1e-3. From an SFT model lower:
    R1's reasoning RL lost 0.040 on average at 1e-4 and held at 3e-5 (twenty-second session; the cpu preset's value)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    """AdamW betas."""
    warmup_steps: int = 3
    """Linear LR warmup steps."""
    schedule: str = "constant"
    """LR schedule after warmup: constant | cosine | wsd."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip (<= 0: none)."""
    expert_bias_gamma: float = 0.0
    """γ of auxiliary-loss-free expert balancing applied after each step (our MoE models; 0 = biases frozen,
    the expert-load statistic is still logged)."""
    max_new_tokens: int = 96
    """Completion length cap (tokens)."""
    temperature: float = 1.0
    """Sampling temperature for rollouts."""
    top_p: float = 1.0
    """Nucleus sampling for rollouts."""
    template: str = "r1-zero"
    """Prompt template: "r1-zero" (paper Table 1), "r1-zero-short" (only its closing "User: {q}. Assistant:" frame,
    no preamble — the form the built-in pretraining corpus shows), or "r1" (chat template, response starts in
    <think>)."""
    families: list[str] = field(default_factory=lambda: ["arithmetic", "word"])
    """Built-in task families for training and evaluation (ignored when tasks_jsonl is set)."""
    difficulty: int = 1
    """Built-in task difficulty."""
    n_train_per_family: int = 2000
    """Training problems per family (built-in tasks)."""
    tasks_jsonl: str = ""
    """A JSONL of {prompt, answer[, family, ...]} to train on instead of the built-in families (held-out: eval_jsonl)."""
    eval_jsonl: str = ""
    """A JSONL of held-out problems; empty = the built-in "val" split of ``families``."""
    reward_weights: dict[str, float] = field(default_factory=lambda: {"accuracy": 1.0, "format": 0.2,
                                                                       "language": 0.0})
    """Reward weights: accuracy, format, language (consistency), or a dotted path to a user reward fn(text, problem)."""
    eval_every: int = 10
    """Held-out pass@1 every N steps (and before the first step and after the last; 0 = never)."""
    eval_n_per_family: int = 50
    """Held-out problems per family."""
    eval_samples: int = 2
    """Samples per held-out problem for pass@1 (mean correctness)."""
    eval_temperature: float = 0.6
    """Evaluation sampling temperature (R1 protocol: 0.6, top-p 0.95)."""
    eval_top_p: float = 0.95
    """Evaluation nucleus sampling."""
    log_samples: int = 4
    """Completions per step written to samples.jsonl."""
    save_every: int = 0
    """Checkpoint every N steps (0 = only at the end)."""
    keep_last: int = 2
    """Checkpoints kept."""
    resume: bool = False
    """Continue from the latest checkpoint in out_dir/checkpoints."""
    sampler: str = "auto"
    """Generator: "engine" (r1lab.engine), "naive" (full forward per token), "auto" (engine if available)."""
    pad_multiple: int = 0
    """Round the prompt and completion widths of each step's batch up to a multiple of this (0 = 64 on CUDA, where
    repeated shapes let cuDNN attention reuse its plans, and 1 on CPU). Padding is masked: results do not change."""
    compile_sampler: bool = True
    """Engine: torch.compile the decode step into CUDA graphs (on CUDA, for DeepSeek-V3 and Llama-family models)."""
    shared_prefix: bool = True
    """Training forward: pack each prompt's completions into one row so the prompt is computed once per group
    (rl/shared_prefix.py; same log-probs as the padded layout, fewer tokens). Used where the model supports it
    (our DeepSeek-V3; transformers Qwen2/Qwen3/Llama); other models always take the padded layout."""
    device: str = "auto"
    """Device: auto | cpu | cuda."""
    dtype: str = "auto"
    """Precision: auto (amp on CUDA, fp32 on CPU) | amp (fp32 master weights and a bf16 autocast forward; the
    sampler runs a bf16 copy refreshed after every update) | fp32 | bf16 (bf16 weights and optimizer state: half
    the memory, but updates under 2⁻⁸ of a weight are lost)."""
    seed: int = 0
    """Seed for prompt order, sampling and model init."""
    threads: int = 0
    """torch CPU threads (0 = torch's default)."""
    max_minutes: float = 0.0
    """Stop (with a final eval and save) after this many minutes of wall time (0 = no limit)."""

    def validate(self) -> None:
        if self.group_size < 2:
            raise ValueError(f"group_size (G) must be >= 2, got {self.group_size}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {sorted(AGGREGATIONS)}, got {self.aggregation!r}")
        if self.template not in TEMPLATES:
            raise ValueError(f"template must be one of {TEMPLATES}, got {self.template!r}")
        for name in ("steps", "prompts_per_step", "inner_updates", "micro_batch", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.pad_multiple < 0:
            raise ValueError(f"pad_multiple must be >= 0, got {self.pad_multiple}")
        if self.beta < 0 or self.eps < 0 or self.eps_high < 0:
            raise ValueError("beta, eps and eps_high must be >= 0")

    @property
    def std_scaling(self) -> bool:
        return self.aggregation != "dr_grpo" if self.scale_by_std is None else self.scale_by_std

    def update_settings(self, model: nn.Module | None = None) -> UpdateSettings:
        """The update knobs; ``shared_prefix`` is on only if asked for and ``model`` supports it."""
        return UpdateSettings(eps=self.eps, eps_high=self.eps_high, beta=self.beta, aggregation=self.aggregation,
                              max_new_tokens=self.max_new_tokens, micro_batch=self.micro_batch,
                              max_grad_norm=self.max_grad_norm, old_logprobs=self.old_logprobs,
                              shared_prefix=self.shared_prefix and model is not None
                              and supports_shared_prefix(model))


# ------------------------------------------------------------------------------------------------ data
def load_problems(cfg: GRPOConfig, split: str) -> list:
    """Training ("train") or held-out ("val") problems from the JSONL files or the built-in families."""
    from r1lab.tasks import load_tasks_jsonl, make_split

    path = cfg.tasks_jsonl if split == "train" else cfg.eval_jsonl
    if path:
        return load_tasks_jsonl(path)
    if split != "train" and cfg.tasks_jsonl:
        return []  # a user task file without a held-out file: no built-in eval on unrelated families
    n = cfg.n_train_per_family if split == "train" else cfg.eval_n_per_family
    return make_split(split, n, difficulty=cfg.difficulty, families=cfg.families, seed=cfg.seed, strict=False)


def encode_prompts(problems: list, tokenizer, template: str) -> list[list[int]]:
    """Token ids of each problem's prompt under the template (BOS first when the tokenizer has one)."""
    from r1lab.data.templates import r1_chat_prompt, r1_zero_prompt

    out = []
    for p in problems:
        if template == "r1-zero":
            out.append(tokenizer.encode(r1_zero_prompt(p.prompt), add_bos=True))
        elif template == "r1-zero-short":
            out.append(tokenizer.encode(f"User: {p.prompt}. Assistant:", add_bos=True))
        else:
            ids = tokenizer.encode(r1_chat_prompt(p.prompt, tokenizer))
            out.append(ids if tokenizer.bos_id is None or ids[:1] == [tokenizer.bos_id] else [tokenizer.bos_id, *ids])
    return out


def step_prompt_indices(step: int, n_problems: int, batch: int, seed: int) -> list[int]:
    """The global prompt indices of ``step``: consecutive slices of seeded per-epoch permutations.

    >>> step_prompt_indices(0, 5, 2, 0) != step_prompt_indices(1, 5, 2, 0)
    True
    >>> len(set(step_prompt_indices(0, 4, 4, 0)))
    4
    """
    out = []
    for k in range(step * batch, (step + 1) * batch):
        epoch, pos = divmod(k, n_problems)
        order = list(range(n_problems))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        out.append(order[pos])
    return out


# ------------------------------------------------------------------------------------------------ evaluation
def evaluate(sampler, tokenizer, problems: list, prompts: list[list[int]], cfg: GRPOConfig, rank: int, world: int,
             seed: int) -> dict[str, float]:
    """Held-out pass@1 = mean correctness over ``eval_samples`` samples per problem (R1 protocol, small k),
    plus the mean response length; each rank scores its share, summed over ranks."""
    from r1lab.tasks import task_reward

    mine = list(range(rank, len(problems), world))
    sums = torch.zeros(3, dtype=torch.float64)  # correct, samples, tokens
    chunk = max(1, 64 // max(cfg.eval_samples, 1))
    for lo in range(0, len(mine), chunk):
        idx = mine[lo : lo + chunk]
        groups = sampler.sample([prompts[i] for i in idx], cfg.eval_samples, cfg.max_new_tokens,
                                cfg.eval_temperature, cfg.eval_top_p, seed + lo)
        for i, group in zip(idx, groups):
            for s in group:
                text = tokenizer.decode(s.token_ids, skip_special_tokens=True)
                try:
                    ok = task_reward(text, problems[i]) >= 1.0
                except Exception:  # noqa: BLE001
                    ok = False
                sums += torch.tensor([float(ok), 1.0, float(len(s.token_ids))], dtype=torch.float64)
    all_reduce_sum(sums)
    n = max(float(sums[1]), 1.0)
    return {"eval_pass@1": float(sums[0]) / n, "eval_response_len": float(sums[2]) / n}


# ------------------------------------------------------------------------------------------------ step metrics
def rollout_metrics(batch: RolloutBatch, adv, weights: dict[str, float]) -> dict[str, float]:
    """Global (all-reduced) reward / accuracy / length / reflection / language-mixing statistics of one rollout
    batch."""
    names = batch.reward_names
    n = batch.rewards_N.numel()
    lengths = batch.lengths_N
    # "accuracy" = the fraction of fully correct samples (countdown's 0.1 for a well-formed wrong answer and code's
    # partial pass fractions count as wrong, as in evaluation); "reward_accuracy" is the accuracy reward's mean
    correct = (float((batch.rewards_NK[:, names.index("accuracy")] >= CORRECT).sum())
               if "accuracy" in names else 0.0)
    local = [float(batch.rewards_N.sum()), *[float(batch.rewards_NK[:, k].sum()) for k in range(len(names))],
             float(n), float(lengths.sum()), reflection_rate(batch.texts) * n, float(batch.truncated_N.sum()),
             float(adv.zero_var_B.sum()), float(adv.zero_var_B.numel()), float(batch.n_reward_errors),
             mixing_rate(batch.texts, batch.problems) * n, correct]
    sums = all_reduce_sum(torch.tensor(local, dtype=torch.float64)).tolist()
    max_len = all_reduce_max(float(lengths.max()) if n else 0.0)
    K = len(names)
    count = max(sums[1 + K], 1.0)
    out = {"reward": sums[0] / count}
    for k, name in enumerate(names):
        out[f"reward_{name}"] = sums[1 + k] / count
    rest = sums[2 + K :]
    out.update({"accuracy": rest[7] / count if "accuracy" in names else float("nan"),
                "response_len_mean": rest[0] / count, "response_len_max": max_len,
                "reflection_rate": rest[1] / count, "truncated_frac": rest[2] / count,
                "zero_var_frac": rest[3] / max(rest[4], 1.0), "reward_errors": rest[5], "mixing": rest[6] / count})
    return out


def all_reduce_max(value: float) -> float:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t)
    return value


def write_samples(path: Path, step: int, batch: RolloutBatch, k: int) -> None:
    """The first k completions of this step, with their problem and rewards, appended to samples.jsonl."""
    with open(path, "a", encoding="utf-8") as fh:
        for i in range(min(k, len(batch.texts))):
            p = batch.problems[i]
            row = {"step": step, "prompt": getattr(p, "prompt", ""), "gold": getattr(p, "answer", ""),
                   "completion": batch.texts[i], "reward": float(batch.rewards_N[i]),
                   **{f"reward_{n}": float(batch.rewards_NK[i, j]) for j, n in enumerate(batch.reward_names)},
                   "truncated": bool(batch.truncated_N[i])}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


# ------------------------------------------------------------------------------------------------ the loop
def sampler_copy(model: nn.Module, precision) -> nn.Module:
    """The module the sampler runs: the trained model itself, or under autocast (``precision.autocast_dtype``) a
    frozen copy whose parameters are in that dtype, so decoding runs in bf16 while the optimizer keeps fp32 master
    weights. Buffers keep their dtype (HF models' RoPE ``inv_freq`` in bf16 would be off by radians at long
    positions), and so do our MoE routers' weights, which the trainer uses in fp32: the same experts get picked.
    The copy is made from the fp32 model, so a second fp32 copy exists for a moment."""
    if precision is None or precision.autocast_dtype is None:
        return model
    from r1lab.model.moe import Router

    copy = frozen_copy(model)
    for module in copy.modules():
        if isinstance(module, Router):
            continue
        for p in module.parameters(recurse=False):
            if p.is_floating_point():
                p.data = p.data.to(precision.autocast_dtype)
    return copy


@torch.no_grad()
def refresh_sampler_copy(copy: nn.Module, model: nn.Module) -> None:
    """Copy the trained weights into the sampler's copy, in place (tensor addresses stay, so CUDA graphs captured
    over them stay valid); nothing when they are the same module."""
    if copy is not model:
        copy.load_state_dict(model.state_dict())


def run_grpo(cfg: GRPOConfig) -> dict[str, Any]:
    """Trains with GRPO; returns a summary (first/last eval pass@1, response lengths, paths, steps done)."""
    from r1lab.rl.setup import setup_run

    cfg.validate()
    run = setup_run(cfg)
    info, model, tokenizer, optimizer, scheduler = run.info, run.model, run.tokenizer, run.optimizer, run.scheduler
    settings = cfg.update_settings(model)
    amp = run.precision.autocast(next(model.parameters()).device)
    log.info("training forward: %s", "shared prefix (prompt once per group)" if settings.shared_prefix
             else "padded [prompt | completion] rows")
    pad_multiple = cfg.pad_multiple or (64 if next(model.parameters()).is_cuda else 1)
    fns = reward_functions(cfg.template, cfg.reward_weights)
    weights = {"accuracy": 1.0, **cfg.reward_weights} if "accuracy" not in cfg.reward_weights else cfg.reward_weights
    train_problems = load_problems(cfg, "train")
    if not train_problems:
        raise ValueError("no training problems (check families / tasks_jsonl)")
    train_prompts = encode_prompts(train_problems, tokenizer, cfg.template)
    eval_problems = load_problems(cfg, "val")
    eval_prompts = encode_prompts(eval_problems, tokenizer, cfg.template)
    longest = max(len(p) for p in train_prompts + eval_prompts)
    context = model_context(model.config)
    if context is not None and longest >= context:
        raise ValueError(f"the longest prompt ({cfg.template} template) has {longest} tokens; the model's context "
                         f"(max_position_embeddings) is {context}, leaving no room to generate")
    max_model_len = longest + cfg.max_new_tokens + 8
    if context is not None:
        max_model_len = min(max_model_len, context)  # a completion that reaches the context ends there ("length")
    sampling_model = sampler_copy(model, run.precision)
    sampler = make_sampler(sampling_model, tokenizer, cfg.sampler, max_model_len=max_model_len,
                           max_batch_size=min(256, max(8, cfg.prompts_per_step * cfg.group_size)),
                           compile=cfg.compile_sampler)
    # The reference keeps the trainer's precision (fp32 master weights under amp), unlike the sampler's copy: in
    # bf16 its embeddings would put the residual stream in bf16, and π_ref would differ from π_θ by the ~0.08
    # nats/token bf16 gap (benchmarks/logprob_mismatch.py) — more than the KL it is there to measure.
    ref_model = None
    if cfg.beta > 0:
        ref_model = run.ref_model if run.ref_model is not None else frozen_copy(model)
    local_B = cfg.prompts_per_step // info.world_size
    t_start = time.perf_counter()
    evals: list[dict[str, float]] = []

    def do_eval(step: int) -> dict[str, float]:
        if not eval_problems or cfg.eval_every <= 0:
            return {}
        t0 = time.perf_counter()
        res = evaluate(sampler, tokenizer, eval_problems, eval_prompts, cfg, info.rank, info.world_size,
                       seed=cfg.seed * 7919 + 1_000_000)
        res["eval_s"] = time.perf_counter() - t0
        evals.append({"step": step, **res})
        return res

    metrics: dict[str, float] = {}
    if run.start_step == 0:
        first = do_eval(0)
        if first:
            run.logger.log({"step": 0, **first})
    step = run.start_step
    for step in range(run.start_step, cfg.steps):
        t0 = time.perf_counter()
        idx = step_prompt_indices(step, len(train_problems), cfg.prompts_per_step, cfg.seed)
        idx = idx[info.rank * local_B : (info.rank + 1) * local_B]
        batch = rollout(sampler, tokenizer, [train_prompts[i] for i in idx], [train_problems[i] for i in idx],
                        cfg.group_size, fns, weights, max_new_tokens=cfg.max_new_tokens,
                        temperature=cfg.temperature, top_p=cfg.top_p,
                        seed=cfg.seed * 1_000_003 + step * info.world_size + info.rank, pad_multiple=pad_multiple)
        t_gen = time.perf_counter() - t0
        adv = group_advantages(batch.rewards_N, cfg.group_size, scale_by_std=cfg.std_scaling,
                               drop_zero_variance=cfg.drop_zero_variance, truncated_N=batch.truncated_N,
                               mask_truncated=cfg.mask_truncated)
        t1 = time.perf_counter()
        with amp:
            ref_logp = (reference_logprobs(ref_model, batch, cfg.micro_batch, settings.shared_prefix)
                        if ref_model is not None else None)
        old, first, skipped = None, {}, 0
        for mu in range(cfg.inner_updates):
            stats, old = policy_update(model, optimizer, batch, adv, settings, ref_logp_NT=ref_logp,
                                       old_logp_NT=old, scheduler=scheduler, with_entropy=(mu == 0), amp=amp)
            skipped += int(stats["skipped"])
            first = first or stats
        upd = {**stats, "entropy": first["entropy"], "logprob_mismatch": first["logprob_mismatch"]}
        if skipped:
            log.warning("step %d: %d update(s) skipped (non-finite loss or gradient); weights untouched", step + 1,
                        skipped)
        if skipped == cfg.inner_updates and hasattr(model, "reset_expert_counts"):
            model.reset_expert_counts()  # no update happened: the routing bias stays as it was too
            load = {}
        else:
            load = model.update_expert_bias(cfg.expert_bias_gamma) if hasattr(model, "update_expert_bias") else {}
        refresh_sampler_copy(sampling_model, model)
        sampler.update_weights(sampling_model)
        if ref_model is not None and cfg.ref_reset_every > 0 and (step + 1) % cfg.ref_reset_every == 0:
            ref_model.load_state_dict(model.state_dict())
        t_train = time.perf_counter() - t1
        gen_tokens = float(all_reduce_sum(torch.tensor([float(batch.lengths_N.sum())], dtype=torch.float64)))
        dt = time.perf_counter() - t0
        metrics = {"step": step + 1, **rollout_metrics(batch, adv, weights),
                   **{k: upd[k] for k in ("loss", "kl", "clip_fraction", "entropy", "grad_norm", "ratio_mean",
                                          "logprob_mismatch") if k in upd},
                   "skipped_updates": float(skipped), "lr": optimizer.param_groups[0]["lr"],
                   **{k: v for k, v in load.items() if k == "load_max_over_mean"},
                   "tok_s": gen_tokens / max(dt, 1e-9), "generate_s": t_gen, "train_s": t_train, "step_s": dt}
        if info.is_main and cfg.log_samples > 0:
            write_samples(run.out / "samples.jsonl", step + 1, batch, cfg.log_samples)
        last = step + 1 == cfg.steps
        # Each rank reads its own clock: agree (any rank over → all stop) so that the eval, save and break
        # below happen on every rank at the same step, or their collectives would pair with the next step's.
        over_time = cfg.max_minutes > 0 and bool(
            agree(int((time.perf_counter() - t_start) / 60 >= cfg.max_minutes), info, op="max"))
        if cfg.eval_every > 0 and ((step + 1) % cfg.eval_every == 0 or last or over_time):
            metrics.update(do_eval(step + 1))
        run.logger.log(metrics)
        if (cfg.save_every > 0 and (step + 1) % cfg.save_every == 0) or last or over_time:
            run.save(step + 1, ref_model)
        if over_time:
            log.warning("max_minutes=%s reached after step %d; stopping", cfg.max_minutes, step + 1)
            break
    final_dir = run.save_final()
    run.close()
    return {
        "out_dir": str(run.out), "final_dir": str(final_dir) if final_dir else None, "steps_done": step + 1,
        "metrics": str(run.out / "metrics.jsonl"), "samples": str(run.out / "samples.jsonl"),
        "eval_first": evals[0] if evals else None, "eval_last": evals[-1] if evals else None,
        "last_metrics": metrics, "minutes": (time.perf_counter() - t_start) / 60,
    }
