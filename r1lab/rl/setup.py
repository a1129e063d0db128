"""Run plumbing for GRPO: process group, device, policy/tokenizer loading, optimizer, logger, checkpoints, resume.

Checkpoints reuse ``r1lab.train.loop`` (atomic ``step-NNNNNN`` directories with ``training_state.pt``); the policy is
saved with ``save_pretrained`` + tokenizer so a checkpoint is also a loadable model; with iterative GRPO (β > 0 and
``ref_reset_every`` > 0) the reference model is saved under ``reference/`` too. Resume restores weights, optimizer,
LR schedule, RNG states and the step; a config that differs in a training-relevant field is an error naming it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from r1lab.train.models import (frozen_copy, load_causal_lm, load_tokenizer_for, model_from_preset, resolve_device,
                                resolve_precision, save_causal_lm)

RESUME_IGNORED = frozenset({"steps", "resume", "eval_every", "save_every", "keep_last", "log_samples", "max_minutes",
                            "threads", "sampler", "device", "shared_prefix"})  # shared_prefix: same numbers


@dataclass
class Run:
    cfg: Any
    info: Any
    out: Path
    model: nn.Module
    tokenizer: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    logger: Any
    start_step: int = 0
    ref_model: nn.Module | None = None
    precision: Any = None  # r1lab.train.models.Precision: master-weight dtype and the forward's autocast

    def training_state(self, step: int) -> dict[str, Any]:
        from r1lab.train.loop import rng_state

        return {"step": step, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "rng": rng_state()}

    def save(self, step: int, ref_model: nn.Module | None = None) -> Path | None:
        """Atomic checkpoint (rank 0 writes; other ranks wait at a barrier)."""
        from r1lab.train.loop import save_checkpoint

        path = None
        if self.info.is_main:
            def save_model(d: Path) -> None:
                save_causal_lm(self.model, d, self.tokenizer)
                if ref_model is not None and self.cfg.ref_reset_every > 0:
                    save_causal_lm(ref_model, d / "reference")

            path = save_checkpoint(self.out / "checkpoints", step, save_model, self.training_state(step),
                                   dataclasses.asdict(self.cfg), keep_last=self.cfg.keep_last)
        _barrier()
        return path

    def save_final(self) -> Path | None:
        if not self.info.is_main:
            return None
        final = self.out / "final"
        save_causal_lm(self.model, final, self.tokenizer)
        return final

    def close(self) -> None:
        self.logger.close()
        from r1lab.train.distributed import destroy_distributed

        destroy_distributed()


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def setup_run(cfg) -> Run:
    """Everything ``run_grpo`` needs before its first step (see the module docstring)."""
    from r1lab.train.distributed import init_distributed
    from r1lab.train.loop import (ResumeMismatchError, config_diff, latest_checkpoint, load_training_state,
                                  remove_stale_tmp, seed_everything, set_rng_state, TRAIN_CONFIG_FILE)
    from r1lab.train.metrics import MetricsLogger, truncate_metrics
    from r1lab.train.optim import load_optimizer_state, make_optimizer, make_schedule

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    info = init_distributed(device.type)
    if info.enabled and device.type == "cuda":  # one process: keep the device asked for (cuda:N)
        device = torch.device("cuda", info.local_rank)
    if cfg.prompts_per_step % info.world_size:
        raise ValueError(f"prompts_per_step={cfg.prompts_per_step} must be divisible by the world size "
                         f"{info.world_size}")
    seed_everything(cfg.seed)
    precision = resolve_precision(cfg.dtype, device)
    dtype = precision.param_dtype
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer_for(cfg)
    ckpt_root = out / "checkpoints"
    ckpt = latest_checkpoint(ckpt_root) if cfg.resume else None
    if ckpt is not None:
        import json

        saved = json.loads((ckpt / TRAIN_CONFIG_FILE).read_text(encoding="utf-8"))
        diff = config_diff(saved, dataclasses.asdict(cfg), ignore=RESUME_IGNORED)
        if diff:
            raise ResumeMismatchError(f"{ckpt}: config differs from the checkpoint's: " + "; ".join(diff))
        model = load_causal_lm(ckpt, device, dtype)
    elif cfg.model:
        model = load_causal_lm(cfg.model, device, dtype)
    else:
        model = model_from_preset(cfg.preset, tokenizer.vocab_size, seed=cfg.seed).to(device=device, dtype=dtype)
    ref_model = None
    if cfg.beta > 0:
        if ckpt is not None and (ckpt / "reference").is_dir():
            ref_model = frozen_copy(load_causal_lm(ckpt / "reference", device, dtype))
        elif ckpt is not None and cfg.model:
            ref_model = frozen_copy(load_causal_lm(cfg.model, device, dtype))
    optimizer = make_optimizer(model, cfg)
    scheduler = make_schedule(optimizer, cfg, total_steps=max(cfg.steps * cfg.inner_updates, 1))
    start = 0
    if ckpt is not None:
        state = load_training_state(ckpt / "training_state.pt")
        load_optimizer_state(optimizer, state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        start = int(state["step"])
        if info.is_main:  # rows logged after the checkpoint are logged again
            for name in ("metrics.jsonl", "samples.jsonl"):
                truncate_metrics(out / name, start)
    elif info.is_main:
        remove_stale_tmp(ckpt_root)
        for name in ("metrics.jsonl", "samples.jsonl"):  # a fresh run does not append to an old run's logs
            (out / name).unlink(missing_ok=True)
    _barrier()
    logger = MetricsLogger(out / "metrics.jsonl", enabled=info.is_main)
    return Run(cfg, info, out, model, tokenizer, optimizer, scheduler, logger, start, ref_model, precision)
