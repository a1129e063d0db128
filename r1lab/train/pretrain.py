"""The V3-Base stage: pretrain a DeepSeek-V3-architecture model with next-token + MTP loss, the complementary
sequence-wise balance loss and auxiliary-loss-free bias balancing (DeepSeek-V3 report, arXiv 2412.19437, §2.1.2,
§2.2, §4.1–4.2), on one device or data-parallel under torchrun.

Objective per optimizer step: L = L_main + λ·L_MTP + α·L_bal, each term the mean over the *whole global batch*
(tokens for L_main / L_MTP, sequences for L_bal): each micro-batch's mean is weighted by its share of the global count
(``loop.loss_weight``), so a single process with gradient accumulation and N ranks with DDP/FSDP2 compute the same
gradient. After every optimizer step the routing biases move by the scheduled γ (``optim.gamma_at``) from the expert
loads all-reduced over ranks.

Deliberate differences from V3: no batch-size warmup, a two-shape LR schedule (``optim``), documents packed with
intra-document attention masks (``r1lab.data.packing``). ``run_pretrain(cfg) -> artifacts``; CLI:
``r1lab pretrain --preset cpu-demo``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from r1lab.data.corpus import CODE_SWITCH_SHARE
from r1lab.train import distributed as D
from r1lab.train.data import (
    RowOrder,
    ensure_corpus,
    ensure_tokenizer,
    prepare_data,
    take_rows,
)
from r1lab.train.loop import (
    STEP_PREFIX,
    TRAIN_CONFIG_FILE,
    ResumeMismatchError,
    config_diff,
    count_pairs,
    latest_checkpoint,
    load_training_state,
    loss_weight,
    remove_stale_tmp,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
    write_dir_atomic,
)
from r1lab.train.metrics import MetricsLogger, mfu, peak_flops, read_metrics, truncate_metrics
from r1lab.train.budget import StepBudget
from r1lab.train.optim import clip_grad_norm, gamma_at, make_optimizer, make_schedule, refit_schedule


@dataclass
class PretrainConfig:
    """Every knob of ``r1lab pretrain``. Defaults are the cpu-demo recipe (WSD at 2e-3): 800 steps × 16 × 256 tokens
    (3.3M tokens, ~1.9 epochs of the built-in corpus), budgeted at ~0.4 s/step on 2 idle CPU cores (≈ 6-7 min with
    setup and eval)."""

    preset: str = "cpu-demo"
    """Model preset (r1lab/presets/*) used when ``model_dir`` is not given."""
    model_dir: str | None = None
    """Start from this checkpoint directory (config.json + safetensors) instead of a fresh preset."""
    model_overrides: dict[str, Any] = field(default_factory=dict)
    """DeepSeekV3Config fields to change, e.g. {"num_hidden_layers": 2} (JSON on the command line)."""
    fit_vocab: bool = True
    """A fresh model's vocab_size = the tokenizer's length rounded up to 64 (not the preset's), unless
    model_overrides name a vocab_size: the speedrun's BPE stops at ~1,100 of the 2,048 ids it may use, and head rows
    for ids that never occur only cost matmuls (the student's step 1.17× with 1,152 rows; benchmarks/cpu_vocab.py).
    False keeps the preset's size (grown when the tokenizer is larger)."""
    tokenizer: str | None = None
    """Tokenizer directory; None = the one inside model_dir, else train a byte-level BPE into <out_dir>/tokenizer."""
    tokenizer_vocab: int = 0
    """Vocabulary size when training a tokenizer (0 = the model's vocab_size, at least 300)."""
    corpus: list[str] = field(default_factory=list)
    """Corpus files (.jsonl with a text field, .txt, optionally .gz); empty = the built-in task corpus."""
    text_field: str = "text"
    """JSON field holding a document's text in .jsonl files."""
    corpus_n_per_family: int = 1500
    """Built-in corpus: train problems per task family and difficulty level."""
    corpus_levels: list[int] = field(default_factory=lambda: [1, 2])
    """Built-in corpus: difficulty levels to include."""
    corpus_code_switch_share: float = CODE_SWITCH_SHARE
    """Built-in corpus: share of the Chinese arithmetic problems with a worked solution that also get a document
    reasoned in English (``r1lab.data.corpus``, "Code-switching"; 0 = none). An existing <out_dir>/corpus.jsonl is
    reused as it is."""
    seq_len: int = 256
    """Packed row length in tokens."""
    doc_mask: bool = True
    """Keep packed documents apart (attention, positions and next-token pairs stay inside each document, as Llama 3
    does). False = DeepSeek-V3's choice (§4.1: no cross-sample attention masking): each packed row is one sequence
    of its documents in a seeded random order, so the model also learns to read a question that comes after
    unrelated text (see ``r1lab.data.packing.join_row_documents``)."""
    micro_batch: int = 16
    """Rows per forward/backward pass per rank."""
    grad_accum: int = 1
    """Micro-batches per optimizer step (global batch = micro_batch × grad_accum × world size rows)."""
    steps: int = 800
    """Optimizer steps (ignored when ``tokens`` > 0); with ``max_minutes`` the most it may take."""
    tokens: int = 0
    """Train for this many tokens instead (steps = ceil(tokens / (global batch rows × seq_len)))."""
    max_minutes: float = 0.0
    """Wall-clock budget of the training loop in minutes (0: none). After timing steps 6-25 (end to end, so logging,
    evals and saving count) the step count is fitted to the budget (at most ``steps``/``tokens``) and the LR and γ
    schedules follow it; a run later than 1.1 × the budget stops and saves. The step count then depends on the
    machine: presets for "any GPU" use it (``r1lab.train.budget``). A resumed run keeps the count fitted before it
    was stopped."""
    lr: float = 2e-3
    """Peak learning rate. cpu-demo, 1100 steps on the built-in corpus (docs/benchmarks.md, eleventh session): with
    ``wsd`` 2e-3 beats 1e-3 and 3e-3; with ``cosine`` 2e-3 ≈ 1e-3 (template pass@1 within noise) and 3e-3 worse."""
    warmup_steps: int = 30
    """Linear warmup steps."""
    schedule: str = "wsd"
    """LR schedule: "wsd" | "cosine" | "constant" (see r1lab.train.optim). WSD (peak LR until the last
    ``decay_frac`` of the steps) is closer to V3's own schedule (constant, then decay) and gave cpu-demo a better base
    than cosine at the same budget: held-out loss 0.429 → 0.396 with lr 2e-3, worked-solution exact-match 0.16 → 0.36,
    R1-Zero-template pass@1 +0.039 ± 0.012 (docs/benchmarks.md, eleventh session)."""
    min_lr_ratio: float = 0.1
    """Final LR as a fraction of the peak (V3: 0.1)."""
    decay_frac: float = 0.2
    """WSD: fraction of steps spent in the final decay."""
    weight_decay: float = 0.1
    """AdamW decoupled weight decay on matrices (V3: 0.1)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    """AdamW betas (V3: 0.9, 0.95)."""
    grad_clip: float = 1.0
    """Global gradient-norm clip (V3: 1.0; 0 disables)."""
    mtp_weight: float | None = None
    """λ, weight of the MTP loss; None = the model config's mtp_loss_weight (V3: 0.3 then 0.1)."""
    balance_alpha: float | None = None
    """α, weight of the sequence-wise balance loss; None = the model config's aux_loss_alpha (V3: 1e-4)."""
    gamma: float = 0.01
    """γ, bias update speed of auxiliary-loss-free balancing (V3: 0.001 over ~235k steps; 0.01 suits short runs)."""
    gamma_zero_frac: float = 0.05
    """γ is 0 for the last this fraction of steps (V3: the last 500B of 14.8T tokens ≈ 3.4%)."""
    eval_every: int = 100
    """Held-out loss every this many steps (0: only at the end)."""
    eval_frac: float = 0.02
    """Fraction of documents held out for the eval loss."""
    eval_batches: int = 8
    """At most this many micro-batches of held-out rows per evaluation."""
    ckpt_every: int = 200
    """Checkpoint every this many steps (0: only at the end)."""
    keep_last: int = 2
    """Complete checkpoints kept under <out_dir>/checkpoints."""
    out_dir: str = "runs/pretrain"
    """Run directory: corpus, tokenizer, checkpoints/, model/, metrics.jsonl, summary.json."""
    seed: int = 0
    """Seed of model init, held-out split, FIM and data order."""
    device: str = "auto"
    """"auto" (cuda if available), "cpu", "cuda", "cuda:1"."""
    dtype: str = "auto"
    """Autocast dtype: "auto" (bf16 on GPU, none on CPU), "bf16", "fp32"."""
    compile: bool = False
    """torch.compile the model."""
    fp8: bool = False
    """Convert linear layers and routed-expert stacks to FP8 (r1lab.fp8.convert_to_fp8) before training."""
    fim_rate: float = 0.1
    """Fill-in-the-middle rate over training documents (V3: 0.1)."""
    parallel: str = "ddp"
    """Under torchrun: "ddp" or "fsdp" (FSDP2 fully_shard per block)."""
    peak_tflops: float | None = None
    """Peak TFLOP/s for MFU (default: per-GPU table; CPU: measured fp32 matmul throughput)."""
    resume: bool = False
    """Continue from the latest checkpoint in <out_dir>/checkpoints (config must match); metrics.jsonl keeps only the
    rows up to that checkpoint's step. Without it, an out_dir that already holds a run (checkpoints or metrics) is
    refused."""
    stop_after: int = 0
    """Stop (as if killed) after this many steps of this invocation, without the final save (tests)."""
    exact_match: int = 10
    """After training, greedy exact-match on this many val problems per family (0 disables)."""
    progress: bool = True
    """Show a tqdm progress bar (log lines still go to stdout and metrics.jsonl)."""


_clock = time.time  # the training loop's clock (step times, budgets); tests replace it


# Fields that may change between a run and its --resume without changing the trajectory.
# corpus_code_switch_share: a resumed run reuses its <out_dir>/corpus.jsonl, so the field cannot change its data
RESUME_IGNORE = frozenset({"resume", "stop_after", "progress", "exact_match", "eval_every", "eval_batches",
                           "ckpt_every", "keep_last", "device", "peak_tflops", "compile", "corpus_code_switch_share"})
LOG_KEYS = ["step", "loss", "mtp", "bal", "load", "load_worst", "grad_norm", "lr", "gamma", "tok/s", "mfu", "eta_s"]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_for(dtype: str, device: torch.device):
    if dtype == "fp32" or (dtype == "auto" and device.type != "cuda"):
        return nullcontext()
    if dtype in ("auto", "bf16"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise ValueError(f"dtype must be auto | bf16 | fp32, got {dtype!r}")


def build_model(cfg: PretrainConfig, vocab_size: int):
    """Model from ``model_dir``, or the preset (+ overrides) with its vocabulary fitted to the tokenizer's
    ``vocab_size`` (``fit_vocab``; ``r1lab.train.models.fitted_vocab_size``)."""
    from r1lab.model import DeepSeekV3ForCausalLM
    from r1lab.train.models import model_from_preset

    if cfg.model_dir:
        return DeepSeekV3ForCausalLM.from_pretrained(cfg.model_dir, **cfg.model_overrides)
    return model_from_preset(cfg.preset, vocab_size, seed=cfg.seed, fit_vocab=cfg.fit_vocab, **cfg.model_overrides)


def total_steps(cfg: PretrainConfig, world: int) -> int:
    if cfg.tokens > 0:
        return max(1, math.ceil(cfg.tokens / (cfg.micro_batch * cfg.grad_accum * world * cfg.seq_len)))
    if cfg.steps < 1:
        raise ValueError(f"steps must be >= 1 (or set tokens), got {cfg.steps}")
    return cfg.steps


def _step_counts(packed, rows: torch.Tensor, n_seq: int, mtp_shift: int) -> tuple[int, int, int]:
    labels, docs = packed.labels_NT[rows], packed.doc_ids_NT[rows]
    return count_pairs(labels, docs, 1), count_pairs(labels, docs, mtp_shift), n_seq


@torch.no_grad()
def heldout_loss(model, raw, packed, micro_batch: int, max_batches: int, device, amp) -> float:
    """Mean next-token loss over (up to ``max_batches`` micro-batches of) held-out rows, token-weighted."""
    was_training = raw.training
    raw.eval()
    total = count = 0.0
    for b in range(min(max_batches, math.ceil(len(packed) / micro_batch))):
        rows = torch.arange(b * micro_batch, min((b + 1) * micro_batch, len(packed)))
        batch = take_rows(packed, rows, device)
        n = count_pairs(packed.labels_NT[rows], packed.doc_ids_NT[rows], 1)
        with amp:
            out = model(**batch, return_logits=False)
        total += float(out.loss) * n
        count += n
    raw.train(was_training)
    return total / max(count, 1)


def run_pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Train; returns artifacts {"out_dir", "model_dir", "tokenizer_dir", "metrics", "final_loss", "heldout_loss",
    "steps", "wall_s", "losses", "exact_match"(optional)}."""
    device = resolve_device(cfg.device)
    info = D.init_distributed(device.type)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    out = Path(cfg.out_dir)
    log = print if info.is_main else (lambda *a, **k: None)
    t_start = time.time()
    if not cfg.resume:
        refuse_existing_run(out)  # every rank: nothing is written before this, so all see the same directory

    # ---- data (rank 0 builds corpus/tokenizer files, the others wait and read them)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        corpus = ensure_corpus(cfg.corpus, out, cfg.corpus_n_per_family, list(cfg.corpus_levels), cfg.seed,
                               cfg.corpus_code_switch_share)
        from r1lab.model import DeepSeekV3Config
        base_vocab = (DeepSeekV3Config.from_pretrained(cfg.model_dir) if cfg.model_dir
                      else DeepSeekV3Config.from_preset(cfg.preset)).vocab_size
        ensure_tokenizer(_given_tokenizer(cfg), corpus, out, max(cfg.tokenizer_vocab or base_vocab, 300))
    _barrier(info)
    corpus = cfg.corpus or [str(out / "corpus.jsonl")]
    tok_dir = _given_tokenizer(cfg) or str(out / "tokenizer")
    from r1lab.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tok_dir)
    data = prepare_data(cfg, tokenizer, corpus, tok_dir, log=log)

    # ---- model, optimizer, schedule
    seed_everything(cfg.seed)
    raw = build_model(cfg, tokenizer.vocab_size).to(device)
    if cfg.fp8:
        from r1lab.fp8 import convert_to_fp8
        converted = convert_to_fp8(raw)
        log(f"fp8: converted {len(converted)} modules (linear layers, routed-expert stacks)")
    n_steps = total_steps(cfg, info.world_size)
    mtp_w = raw.config.mtp_loss_weight if cfg.mtp_weight is None else cfg.mtp_weight
    bal_a = raw.config.aux_loss_alpha if cfg.balance_alpha is None else cfg.balance_alpha
    train_config = dataclasses.asdict(cfg)

    # ---- resume (weights before wrapping), wrap, optimizer (after wrapping: FSDP2 replaces the parameters)
    ckpt_root = out / "checkpoints"
    step = 0
    if info.is_main:
        remove_stale_tmp(ckpt_root)
    _barrier(info)
    ckpt = _find_resume(ckpt_root, train_config, log) if cfg.resume else None
    if ckpt is not None:
        _load_weights(raw, ckpt)
    model = D.wrap_model(raw, cfg.parallel, info)
    optimizer = make_optimizer(raw, cfg)
    scheduler = make_schedule(optimizer, cfg, n_steps)
    if ckpt is not None:
        ts = load_training_state(ckpt / "training_state.pt")
        check_world_size(ckpt, ts.get("world_size"), info.world_size)
        D.load_optimizer_state(model, optimizer, ts["optimizer"])
        scheduler.load_state_dict(ts["scheduler"])
        set_rng_state(ts["rng"])
        step = int(ts["step"])
        log(f"resumed from {ckpt} at step {step}")
    if cfg.resume and info.is_main:
        dropped = truncate_metrics(out / "metrics.jsonl", step)  # rows logged after the checkpoint are redone
        if dropped:
            log(f"resume: dropped {dropped} metrics rows logged after step {step}")
    # a wall-clock budget fits the step count once; a run resumed after the fit keeps the saved count
    budget = StepBudget(cfg.max_minutes, done=ckpt is not None and bool(ts.get("n_steps")))
    if budget.minutes > 0 and budget.done:
        n_steps = int(ts["n_steps"])
        refit_schedule(scheduler, cfg, n_steps)
    eager_model = model
    if cfg.compile:
        model = torch.compile(model)
    amp = autocast_for(cfg.dtype, device)

    # ---- accounting
    from r1lab.model import model_stats

    stats = model_stats(raw.config, seq_len=cfg.seq_len)
    flops_per_token = stats.flops_per_token_train + 6 * stats.mtp_active_params
    peak = peak_flops(device, "fp8" if cfg.fp8 else "bf16", cfg.peak_tflops) if info.is_main else 0.0
    rows_per_micro = cfg.micro_batch * info.world_size
    rows_per_step = rows_per_micro * cfg.grad_accum
    order = RowOrder(len(data.train), cfg.seed)
    log(f"model: {stats.active_params:,} active / {stats.total_params:,} total params (+{stats.mtp_params:,} MTP); "
        f"{n_steps} steps × {rows_per_step} rows × {cfg.seq_len} tokens; world {info.world_size}; device {device}; "
        f"MFU peak {peak / 1e12:.2f} TFLOP/s{' (measured CPU matmul)' if device.type == 'cpu' and not cfg.peak_tflops else ''}")
    metrics = MetricsLogger(out / "metrics.jsonl", enabled=info.is_main, echo=None)
    bar = _progress(cfg, info, step, n_steps)
    losses: list[float] = []
    heldout = float("nan")
    t_train = t_prev = _clock()
    first_step = step
    stopped = False

    def forward_backward(model, global_rows) -> torch.Tensor:
        """Gradients of one optimizer step (all micro-batches); returns the weighted (main, MTP, balance) sums."""
        n_main, n_mtp, n_seq = _step_counts(data.train, global_rows, rows_per_step, 2)
        sums = torch.zeros(3, dtype=torch.float64)
        for m in range(cfg.grad_accum):
            rows = D.shard_rows(global_rows[m * rows_per_micro: (m + 1) * rows_per_micro], info)
            batch = take_rows(data.train, rows, device)
            l_main, l_mtp, _ = _step_counts(data.train, rows, len(rows), 2)
            w_main = loss_weight(l_main, n_main, info.world_size)
            w_mtp = loss_weight(l_mtp, n_mtp, info.world_size)
            w_seq = loss_weight(len(rows), n_seq, info.world_size)
            with D.no_sync_context(model, m == cfg.grad_accum - 1), amp:
                o = model(**batch, return_logits=False)  # losses only: the CPU fuses head + CE
                total = w_main * o.loss
                mtp = o.mtp_loss if o.mtp_loss is not None else o.loss.new_zeros(())
                total = total + mtp_w * w_mtp * mtp + bal_a * w_seq * o.balance_loss
            total.backward()
            sums += torch.tensor([w_main * o.loss.item(), w_mtp * mtp.item(), w_seq * o.balance_loss.item()],
                                 dtype=torch.float64)
        return sums

    raw.train()
    while step < n_steps:
        global_rows = order.rows(step * rows_per_step, rows_per_step)
        if model is not eager_model and step == first_step:  # the first compiled step compiles: any failure → eager
            try:
                sums = forward_backward(model, global_rows)
            except Exception as err:  # noqa: BLE001 - a backend problem must not end a long run
                log(f"warning: torch.compile failed ({type(err).__name__}: {str(err)[:300]}); training eagerly")
                model = eager_model
                optimizer.zero_grad(set_to_none=True)
                raw.reset_expert_counts()
                sums = forward_backward(model, global_rows)
        else:
            sums = forward_backward(model, global_rows)
        grad_norm = clip_grad_norm(model, cfg.grad_clip)
        optimizer.step()
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        gamma = gamma_at(step, n_steps, cfg.gamma, cfg.gamma_zero_frac)
        load = raw.update_expert_bias(gamma)
        if info.enabled:
            torch.distributed.all_reduce(sums)
        loss, mtp_loss, bal = (sums / info.world_size).tolist()
        step += 1
        losses.append(loss)
        now = _clock()
        dt, t_prev = now - t_prev, now  # end to end: the step and the previous step's logging, evals and saving
        tok_s = rows_per_step * cfg.seq_len / dt
        elapsed = now - t_train
        budget.record(dt)
        fitted = budget.fitted(step, elapsed, total_steps(cfg, info.world_size))
        if fitted is not None:
            n_steps = D.agree(fitted, info)
            refit_schedule(scheduler, cfg, n_steps)
            log(f"max_minutes={cfg.max_minutes:g}: {n_steps} steps fit the budget (median step {budget.step_s:.3f}s)")
            if bar is not None:
                bar.total = n_steps
        eta = elapsed / (step - first_step) * (n_steps - step)
        row = {"step": step, "loss": loss, "mtp": mtp_loss, "bal": bal, "load": load["load_max_over_mean"],
               "load_worst": load["load_max_over_mean_worst"], "grad_norm": grad_norm, "lr": lr, "gamma": gamma,
               "tok/s": tok_s, "mfu": mfu(tok_s, flops_per_token, peak), "eta_s": eta,
               "epoch": order.epoch_at(step * rows_per_step)}
        if cfg.eval_every and step % cfg.eval_every == 0 and data.heldout is not None:
            heldout = heldout_loss(model, raw, data.heldout, cfg.micro_batch, cfg.eval_batches, device, amp)
            row["heldout_loss"] = heldout
        line = metrics.log(row, LOG_KEYS + ["heldout_loss"])
        if info.is_main:
            (bar.write(line) if bar is not None else print(line, flush=True))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}")
        if cfg.ckpt_every and step % cfg.ckpt_every == 0 and step < n_steps:
            _checkpoint(cfg, model, raw, optimizer, scheduler, step, n_steps, ckpt_root, train_config, info)
        if cfg.stop_after and step - first_step >= cfg.stop_after and step < n_steps:
            stopped = True
            break
        if (cfg.max_minutes > 0 and step < n_steps
                and D.agree(int(budget.over(_clock() - t_train)), info, op="max")):
            log(f"max_minutes={cfg.max_minutes:g}: past 1.1 × the budget at step {step} of {n_steps}; stopping here")
            break
    if bar is not None:
        bar.close()

    artifacts: dict[str, Any] = {"out_dir": str(out), "tokenizer_dir": tok_dir, "metrics": str(out / "metrics.jsonl"),
                                 "steps": step, "losses": losses, "final_loss": losses[-1] if losses else None}
    if not stopped:
        if data.heldout is not None:
            heldout = heldout_loss(model, raw, data.heldout, cfg.micro_batch, cfg.eval_batches, device, amp)
            log(f"held-out loss {heldout:.4f}")
        _checkpoint(cfg, model, raw, optimizer, scheduler, step, n_steps, ckpt_root, train_config, info)
        model_dir = _save_final(raw, model, tokenizer, out, info)
        artifacts["model_dir"] = str(model_dir)
        if cfg.exact_match > 0 and info.is_main:
            from r1lab.train.quick_eval import exact_match_table

            probe = raw if not info.enabled else type(raw).from_pretrained(model_dir, device=device)  # FSDP: unsharded
            artifacts["exact_match"] = exact_match_table(probe, tokenizer, cfg.exact_match, device, log=log)
    artifacts["heldout_loss"] = heldout
    artifacts["wall_s"] = time.time() - t_start
    if info.is_main and not stopped:
        summary = {k: v for k, v in artifacts.items() if k != "losses"}
        from r1lab.data.stream import write_text_atomic

        write_text_atomic(out / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
        log(f"done: {step} steps in {artifacts['wall_s']:.0f}s → {artifacts.get('model_dir')}")
    metrics.close()
    return artifacts


# ------------------------------------------------------------------------------------------------ helpers
class RunExistsError(ValueError):
    """A fresh run (no ``--resume``) into an out-dir that already holds another run's checkpoints or metrics."""


def existing_run(out: Path) -> str | None:
    """What marks ``out`` as holding a run: its newest complete checkpoint (``checkpoints/step-000200, step 200``),
    else a non-empty ``metrics.jsonl`` (``metrics.jsonl, 12 rows up to step 12``); None when it has neither (a
    directory holding only a corpus, a tokenizer or a killed run's empty log may be reused by a fresh run)."""
    ckpt = latest_checkpoint(out / "checkpoints")
    if ckpt is not None:
        return f"{ckpt.relative_to(out)}, step {int(ckpt.name[len(STEP_PREFIX):])}"
    metrics = out / "metrics.jsonl"
    if metrics.is_file() and metrics.stat().st_size > 0:
        rows = [r for r in read_metrics(metrics) if isinstance(r, dict)]
        steps = [r["step"] for r in rows if isinstance(r.get("step"), int)]
        return f"metrics.jsonl, {len(rows)} rows" + (f" up to step {max(steps)}" if steps else "")
    return None


def check_world_size(ckpt: Path, saved: int | None, now: int) -> None:
    """A run resumes with the number of processes that wrote its checkpoint: the global batch (micro_batch ×
    grad_accum × processes rows) and with it every step's data position depend on it (config_diff cannot see it:
    it is not a config field). ``ResumeMismatchError`` otherwise; checkpoints without the record pass.

    >>> check_world_size(Path("ckpt"), 2, 1)
    Traceback (most recent call last):
    ...
    r1lab.train.loop.ResumeMismatchError: ckpt: written by 2 process(es), resumed with 1 — the global batch and the data position would change; resume with torchrun --nproc-per-node 2 (or start a new --out-dir)
    """
    if saved is not None and int(saved) != now:
        raise ResumeMismatchError(f"{ckpt}: written by {saved} process(es), resumed with {now} — the global batch and "
                                  f"the data position would change; resume with torchrun --nproc-per-node {saved} "
                                  "(or start a new --out-dir)")


def refuse_existing_run(out: Path) -> None:
    """A fresh run must not mix its checkpoints and metrics with a previous run's (a later --resume would pick the
    old run's newest checkpoint): ``RunExistsError`` when ``out`` already holds a run."""
    found = existing_run(out)
    if found is not None:
        raise RunExistsError(f"{out} already holds a run ({found}); pass --resume to continue it or choose another "
                             "--out-dir")


def _given_tokenizer(cfg: PretrainConfig) -> str | None:
    """``cfg.tokenizer``, else the tokenizer saved next to ``cfg.model_dir`` (r1lab model dirs carry one)."""
    if cfg.tokenizer:
        return cfg.tokenizer
    if cfg.model_dir and (Path(cfg.model_dir) / "tokenizer.json").is_file():
        return cfg.model_dir
    return None


def _barrier(info: D.DistInfo) -> None:
    if info.enabled:
        torch.distributed.barrier()


def _progress(cfg: PretrainConfig, info: D.DistInfo, step: int, n_steps: int):
    if not (cfg.progress and info.is_main):
        return None
    from tqdm import tqdm

    return tqdm(total=n_steps, initial=step, desc="pretrain", unit="step", file=sys.stderr, dynamic_ncols=True)


def _savable(raw, model):
    """An object ``save_pretrained`` accepts: the model itself, or for FSDP2 a view with the gathered full weights
    (the gather is a collective: every rank calls this)."""
    if not D.is_sharded(model):
        return raw
    from r1lab.model import DeepSeekV3ForCausalLM

    full = D.full_state_dict(model)
    with torch.device("meta"):
        view = DeepSeekV3ForCausalLM(raw.config, init_weights=False)
    view.load_state_dict(full, strict=False, assign=True)
    return view


def _checkpoint(cfg, model, raw, optimizer, scheduler, step, n_steps, ckpt_root, train_config, info) -> None:
    from r1lab.model.checkpoint import save_pretrained

    savable = _savable(raw, model)
    state = {"optimizer": D.optimizer_state(model, optimizer), "scheduler": scheduler.state_dict(), "step": step,
             "data_position": step, "rng": rng_state(), "world_size": info.world_size, "n_steps": n_steps}
    if info.is_main:
        save_checkpoint(ckpt_root, step, lambda d: save_pretrained(savable, d), state, train_config,
                        keep_last=cfg.keep_last)
    _barrier(info)


def _save_final(raw, model, tokenizer, out: Path, info: D.DistInfo) -> Path:
    from r1lab.model.checkpoint import save_pretrained

    final = out / "model"
    savable = _savable(raw, model)
    if info.is_main:
        def write(d: Path) -> None:
            save_pretrained(savable, d)
            tokenizer.save(d)
        write_dir_atomic(final, write)
    _barrier(info)
    return final


def _find_resume(ckpt_root: Path, train_config: dict, log) -> Path | None:
    """The latest checkpoint, after checking that it was written with the same config (else an error naming fields)."""
    ckpt = latest_checkpoint(ckpt_root)
    if ckpt is None:
        log(f"resume: no checkpoint under {ckpt_root}; starting from step 0")
        return None
    saved = json.loads((ckpt / TRAIN_CONFIG_FILE).read_text())
    diff = config_diff(saved, train_config, ignore=RESUME_IGNORE)
    if diff:
        raise ResumeMismatchError(f"--resume: {ckpt} was written with a different config; differing fields:\n  "
                                  + "\n  ".join(diff))
    return ckpt


def _load_weights(raw, ckpt: Path) -> None:
    from r1lab.model.checkpoint import from_hub_state_dict, read_safetensors

    state = from_hub_state_dict(read_safetensors(ckpt), raw.config)
    missing, unexpected = raw.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.endswith("tokens_per_expert")]:
        raise RuntimeError(f"resume: checkpoint {ckpt} does not match the model (missing {missing}, "
                           f"unexpected {unexpected})")
