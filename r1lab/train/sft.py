"""Supervised fine-tuning on prompt/response data: R1's cold-start and rejection-sampling SFT stages and the
distillation of dense students (DeepSeek-R1 arXiv 2501.12948 §2.3.1, §2.3.3, §2.4).

Data: JSONL rows ``{"prompt", "response"}`` (rendered with the R1 chat template or the R1-Zero template) or
``{"messages": [{"role", "content"}, ...]}`` (the tokenizer's chat template; only assistant turns train). A bad row is
an error naming ``file:line``. The loss covers response tokens only (labels −100 on the prompt), as R1's SFT does.

Models: our DeepSeek-V3 (documents packed with per-document attention, ``r1lab.data.packing``; optional MTP loss,
off by default) or any local transformers causal LM (one document per row, right-padded — their attention has no
packed-document mask), optionally with LoRA adapters (``peft``, ``lora_r`` > 0). ``fp8`` swaps linear layers for
``r1lab.fp8`` FP8 ones. The loss is the token mean over the whole optimizer step (micro-batches weighted by their
token counts), so gradient accumulation equals one big batch.

Deliberate differences from R1: tiny defaults (CPU); the held-out slice is the last ``eval_frac`` of the shuffled
rows unless ``eval_data`` is given; the R1 template puts ``<think>\\n`` in the prompt (the README's "force the
response to start with <think>"), so a response that starts with it has it removed.

Legend: B rows, T tokens, V vocabulary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)
TEMPLATES = ("r1", "r1-zero")


@dataclass
class SFTConfig:
    """Every knob of ``r1lab sft``."""

    data: str = ""
    """Training JSONL: rows {"prompt", "response"} or {"messages": [...]}."""
    eval_data: str = ""
    """Held-out JSONL (same format); empty = the last ``eval_frac`` of ``data`` after shuffling."""
    eval_frac: float = 0.05
    """Share of ``data`` held out for the eval loss when ``eval_data`` is empty (at least 1 row; 0 = none)."""
    model: str = ""
    """Model directory (ours or a local HF causal LM); empty = a fresh ``preset`` (smoke tests)."""
    preset: str = "tiny"
    """Our model preset used when ``model`` is empty."""
    tokenizer: str = ""
    """Tokenizer directory; empty = the ``model`` directory."""
    template: str = "r1"
    """Template for {prompt, response} rows: "r1" (chat template, response after <think>\\n) or "r1-zero"."""
    out_dir: str = "runs/sft"
    """Output directory: metrics.jsonl, checkpoints/, final/ (model + tokenizer)."""
    seq_len: int = 512
    """Row length in tokens (longer examples are cut, counted in the log)."""
    pack: bool = True
    """Pack several examples per row (our model only; HF models always get one example per row)."""
    micro_batch: int = 8
    """Rows per forward/backward."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    epochs: int = 2
    """Passes over the training rows (R1: 2 epochs)."""
    max_steps: int = 0
    """Stop after this many optimizer steps (0 = run all epochs)."""
    lr: float = 1e-4
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    """AdamW betas."""
    warmup_steps: int = 10
    """Linear warmup steps."""
    schedule: str = "cosine"
    """LR schedule: cosine | wsd | constant."""
    min_lr_ratio: float = 0.1
    """Final LR as a fraction of the peak."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip (<= 0: none)."""
    mtp_weight: float = 0.0
    """λ for the MTP loss of our model (0 = off; V3 pretraining uses 0.3)."""
    lora_r: int = 0
    """LoRA rank for HF models (0 = full fine-tuning)."""
    lora_alpha: int = 16
    """LoRA alpha."""
    lora_dropout: float = 0.0
    """LoRA dropout."""
    lora_targets: list[str] = field(default_factory=list)
    """Module names to adapt (empty = every linear layer but the LM head)."""
    fp8: bool = False
    """Train with FP8 linear layers and routed-expert stacks (r1lab.fp8.convert_to_fp8)."""
    compile: bool = False
    """torch.compile the model's forward (worth it on a GPU; batch widths vary, so shapes compile as dynamic)."""
    eval_every: int = 50
    """Eval loss every N optimizer steps (and at the end; 0 = only at the end)."""
    save_every: int = 0
    """Checkpoint every N steps (0 = only at the end)."""
    keep_last: int = 2
    """Checkpoints kept."""
    resume: bool = False
    """Continue from the latest checkpoint in out_dir/checkpoints."""
    device: str = "auto"
    """auto | cpu | cuda."""
    dtype: str = "auto"
    """Precision: auto (amp on CUDA, fp32 on CPU) | amp (fp32 master weights, bf16 autocast; with LoRA the frozen
    base is bf16 and the adapters fp32) | fp32 | bf16 (bf16 weights and optimizer state: half the memory, but
    updates under 2⁻⁸ of a weight are lost)."""
    seed: int = 0
    """Seed for the data order, the held-out split and model init."""


# ------------------------------------------------------------------------------------------------ data
def read_rows(path: str | Path) -> list[tuple[dict, str]]:
    """(row, "file:line") for every non-blank line; invalid JSON or a row of the wrong shape → ValueError."""
    from r1lab.data.stream import iter_json_objects

    rows = []
    for row, lineno in iter_json_objects(path):
        where = f"{path}:{lineno}"
        if "messages" in row:
            if not isinstance(row["messages"], list) or not row["messages"]:
                raise ValueError(f"{where}: 'messages' must be a non-empty list")
            for i, m in enumerate(row["messages"]):
                if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
                    got = sorted(m) if isinstance(m, dict) else type(m).__name__
                    raise ValueError(f"{where}: messages[{i}] must be an object with string 'role' and 'content', "
                                     f"got {got}")
        elif not (isinstance(row.get("prompt"), str) and isinstance(row.get("response"), str)):
            raise ValueError(f"{where}: needs string fields 'prompt' and 'response', or 'messages'; "
                             f"got keys {sorted(row)}")
        rows.append((row, where))
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def encode_row(row: dict, where: str, tokenizer, template: str) -> tuple[list[int], list[int]]:
    """(ids, loss_mask) of one row; the mask is 1 on response tokens only."""
    from jinja2.exceptions import TemplateError  # what transformers' chat templates raise

    from r1lab.data.templates import THINK_PREFIX, encode_messages, encode_prompt_response, r1_chat_prompt, \
        r1_zero_prompt

    try:
        if "messages" in row:
            ids, mask = encode_messages(tokenizer, row["messages"])
            if tokenizer.bos_id is not None and ids[:1] != [tokenizer.bos_id]:
                ids, mask = [tokenizer.bos_id, *ids], [0, *mask]
            return ids, mask
        if template == "r1":
            prompt = r1_chat_prompt(row["prompt"], tokenizer)
            response = row["response"]
            if prompt.endswith(THINK_PREFIX) and response.startswith(THINK_PREFIX):
                response = response[len(THINK_PREFIX):]
            return encode_prompt_response(tokenizer, prompt, response)
        return encode_prompt_response(tokenizer, r1_zero_prompt(row["prompt"]), " " + row["response"].lstrip())
    except (ValueError, TemplateError) as err:  # TemplateError: the chat template refused the row (unknown role …)
        raise ValueError(f"{where}: {err}") from None


def encode_examples(rows: list[tuple[dict, str]], tokenizer, template: str, seq_len: int
                    ) -> tuple[list[tuple[list[int], list[int]]], int]:
    """Encoded examples cut to ``seq_len`` and the number that were cut."""
    if template not in TEMPLATES:
        raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")
    out, cut = [], 0
    for row, where in rows:
        ids, mask = encode_row(row, where, tokenizer, template)
        if len(ids) > seq_len:
            cut += 1
            ids, mask = ids[:seq_len], mask[:seq_len]
        if sum(mask):
            out.append((ids, mask))
    return out, cut


def one_per_row(examples: list[tuple[list[int], list[int]]], seq_len: int, pad_id: int):
    """PackedData with one example per row (right-padded): for models without packed-document attention."""
    from r1lab.data.packing import IGNORE_INDEX, PackedData, PackStats

    n = len(examples)
    ids = torch.full((n, seq_len), pad_id, dtype=torch.long)
    labels = torch.full((n, seq_len), IGNORE_INDEX, dtype=torch.long)
    docs = torch.zeros((n, seq_len), dtype=torch.long)
    pos = torch.zeros((n, seq_len), dtype=torch.long)
    for r, (x, m) in enumerate(examples):
        t = torch.tensor(x)
        ids[r, : len(x)] = t
        labels[r, : len(x)] = torch.where(torch.tensor(m) != 0, t, torch.full_like(t, IGNORE_INDEX))
        docs[r, : len(x)] = 1
        pos[r, : len(x)] = torch.arange(len(x))
    n_tok = sum(len(x) for x, _ in examples)
    stats = PackStats(n, 0, 0, 0, n, seq_len, n_tok, int((labels != IGNORE_INDEX).sum()),
                      n_tok / max(n * seq_len, 1))
    return PackedData(ids, labels, docs, pos, stats)


def build_datasets(cfg: SFTConfig, tokenizer, packed_attention: bool):
    """(train PackedData, eval PackedData | None, info dict)."""
    from r1lab.data.packing import pack_documents

    rows = read_rows(cfg.data)
    if cfg.eval_data:
        eval_rows = read_rows(cfg.eval_data)
    else:
        random.Random(cfg.seed).shuffle(rows)
        n_eval = 0 if cfg.eval_frac <= 0 or len(rows) < 2 else max(1, int(round(cfg.eval_frac * len(rows))))
        rows, eval_rows = rows[: len(rows) - n_eval], rows[len(rows) - n_eval :]
    train_ex, cut = encode_examples(rows, tokenizer, cfg.template, cfg.seq_len)
    eval_ex, _ = encode_examples(eval_rows, tokenizer, cfg.template, cfg.seq_len) if eval_rows else ([], 0)
    if not train_ex:
        raise ValueError(f"{cfg.data}: no example has response tokens to train on")
    build = (lambda ex: pack_documents(ex, cfg.seq_len, tokenizer.pad_id)) if (cfg.pack and packed_attention) \
        else (lambda ex: one_per_row(ex, cfg.seq_len, tokenizer.pad_id))
    info = {"train_examples": len(train_ex), "eval_examples": len(eval_ex), "cut_examples": cut}
    return build(train_ex), (build(eval_ex) if eval_ex else None), info


# ------------------------------------------------------------------------------------------------ model
def prepare_model(cfg: SFTConfig, tokenizer, device, dtype):
    """(model, is_ours): loaded or fresh, LoRA-wrapped (HF + lora_r > 0) and FP8-converted as asked."""
    from r1lab.model import DeepSeekV3ForCausalLM
    from r1lab.train.models import load_causal_lm, model_from_preset

    if cfg.model:
        model = load_causal_lm(cfg.model, device, dtype)
    else:
        model = model_from_preset(cfg.preset, tokenizer.vocab_size, seed=cfg.seed).to(device=device, dtype=dtype)
    ours = isinstance(model, DeepSeekV3ForCausalLM)
    if cfg.lora_r > 0:
        if ours:
            raise ValueError("lora_r > 0 is supported for HF models only; fine-tune our model fully (lora_r = 0)")
        from peft import LoraConfig, get_peft_model

        targets = cfg.lora_targets or "all-linear"
        model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                                 lora_dropout=cfg.lora_dropout, target_modules=targets,
                                                 task_type="CAUSAL_LM"))
    if cfg.fp8:
        from r1lab.fp8 import convert_to_fp8

        log.info("fp8: converted %d modules (linear layers, routed-expert stacks)", len(convert_to_fp8(model)))
    return model, ours


def batch_loss(model, batch: dict[str, torch.Tensor], ours: bool, mtp_weight: float,
               width_multiple: int = 1) -> tuple[torch.Tensor, int]:
    """(sum of next-token CE over response tokens [+ λ·MTP scaled to the same count], token count).

    All-padding tail columns are dropped, keeping the width a multiple of ``width_multiple`` (64 on a GPU: fewer
    distinct shapes, so cuDNN attention and compiled graphs are rebuilt less often; the kept padding is masked)."""
    from r1lab.data.packing import next_token_targets

    width = int((batch["doc_ids"] != 0).long().cumsum(1).argmax(1).max()) + 1  # drop all-padding tail columns
    width = min(batch["doc_ids"].shape[1], -(-width // width_multiple) * width_multiple)
    batch = {k: v[:, :width] for k, v in batch.items()}
    doc_ids = batch["doc_ids"]
    targets_BT = next_token_targets(batch["labels"], doc_ids)
    n = int((targets_BT != -100).sum())
    if ours:  # the model's own loss: the same pairs as targets_BT; on the CPU without materialising the logits
        out = model(batch["input_ids"], labels=batch["labels"], doc_ids=doc_ids, position_ids=batch["position_ids"],
                    return_logits=False, mtp_loss=mtp_weight > 0)
        loss = out.loss * n
        if mtp_weight > 0 and out.mtp_loss is not None:
            loss = loss + mtp_weight * out.mtp_loss * n
        return loss, n
    out = model(input_ids=batch["input_ids"], attention_mask=(doc_ids != 0).long(), position_ids=batch["position_ids"])
    logits = out.logits.float()
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets_BT.reshape(-1), ignore_index=-100,
                           reduction="sum")
    return loss, n


@torch.no_grad()
def eval_loss(model, data, cfg: SFTConfig, ours: bool, device,
              amp: contextlib.AbstractContextManager = contextlib.nullcontext()) -> float:
    """Token-mean response CE over the held-out rows (forwards under ``amp``, the run's autocast)."""
    from r1lab.data.packing import batches

    was = model.training
    model.eval()
    total, count = 0.0, 0
    for b in batches(data, cfg.micro_batch, shuffle=False):
        with amp:
            loss, n = batch_loss(model, {k: v.to(device) for k, v in b.items()}, ours, 0.0,
                                 64 if torch.device(device).type == "cuda" else 1)
        total, count = total + float(loss), count + n
    model.train(was)
    return total / max(count, 1)


# ------------------------------------------------------------------------------------------------ loop
def run_sft(cfg: SFTConfig) -> dict[str, Any]:
    """Fine-tunes; returns {"out_dir", "final_dir", "steps", "train_loss", "eval_loss", "eval_loss_first", ...}."""
    from r1lab.data.packing import batches, num_batches
    from r1lab.train.models import load_tokenizer_for, resolve_device, resolve_precision, save_causal_lm
    from r1lab.train.loop import (ResumeMismatchError, TRAIN_CONFIG_FILE, config_diff, latest_checkpoint,
                                  load_training_state, rng_state, save_checkpoint, seed_everything, set_rng_state)
    from r1lab.train.metrics import MetricsLogger, truncate_metrics
    from r1lab.train.optim import clip_grad_norm, make_optimizer, make_schedule

    if not cfg.data:
        raise ValueError("data: give --data FILE.jsonl")
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.dtype, device)
    amp = precision.autocast(device)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer_for(cfg)
    ckpt = latest_checkpoint(out / "checkpoints") if cfg.resume else None
    if ckpt is not None:
        diff = config_diff(json.loads((ckpt / TRAIN_CONFIG_FILE).read_text()), dataclasses.asdict(cfg),
                           ignore={"resume", "max_steps", "eval_every", "save_every", "keep_last", "device",
                                   "compile"})
        if diff:
            raise ResumeMismatchError(f"{ckpt}: config differs from the checkpoint's: " + "; ".join(diff))
    # LoRA trains only the adapters (PEFT keeps them fp32): under autocast the frozen base needs no fp32 master copy
    base_dtype = precision.autocast_dtype if cfg.lora_r > 0 and precision.autocast_dtype else precision.param_dtype
    model, ours = prepare_model(cfg, tokenizer, device, base_dtype)
    fwd = torch.compile(model, dynamic=True) if cfg.compile else model  # forward only; `model` is what gets saved
    multiple = 64 if device.type == "cuda" else 1  # batch widths rounded up on a GPU (see batch_loss)
    train, held, info = build_datasets(cfg, tokenizer, packed_attention=ours)
    log.info("sft data: %s", info)
    per_epoch = num_batches(train, cfg.micro_batch) // cfg.grad_accum or 1
    total = cfg.max_steps if cfg.max_steps > 0 else per_epoch * cfg.epochs
    optimizer = make_optimizer(model, cfg)
    scheduler = make_schedule(optimizer, cfg, total_steps=total)
    step = 0
    if ckpt is not None:
        _load_weights(model, ckpt)
        state = load_training_state(ckpt / "training_state.pt")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        step = int(state["step"])
        truncate_metrics(out / "metrics.jsonl", step)  # rows logged after the checkpoint are logged again
    elif (out / "metrics.jsonl").exists():
        (out / "metrics.jsonl").unlink()
    logger = MetricsLogger(out / "metrics.jsonl")

    def save(at: int) -> None:
        def write(d: Path) -> None:
            save_causal_lm(model, d, tokenizer)
            if hasattr(model, "peft_config"):
                model.save_pretrained(str(d / "adapter"))
        state = {"step": at, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "rng": rng_state()}
        save_checkpoint(out / "checkpoints", at, write, state, dataclasses.asdict(cfg), keep_last=cfg.keep_last)

    first_eval = eval_loss(fwd, held, cfg, ours, device, amp) if held is not None and step == 0 else None
    if first_eval is not None:
        logger.log({"step": 0, "eval_loss": first_eval})
    model.train()
    last_loss, last_eval = float("nan"), first_eval
    while step < total:
        epoch, in_epoch = divmod(step, per_epoch)
        it = batches(train, cfg.micro_batch, shuffle=True, seed=cfg.seed + epoch, start_index=in_epoch * cfg.grad_accum)
        for _ in range(in_epoch, per_epoch):
            t0 = time.perf_counter()
            micro = [next(it, None) for _ in range(cfg.grad_accum)]
            micro = [{k: v.to(device) for k, v in b.items()} for b in micro if b is not None]
            if not micro:
                break
            n_total = sum(int((b["labels"] != -100).sum()) for b in micro) or 1
            loss_sum, tokens = 0.0, 0
            for b in micro:
                with amp:
                    loss, n = batch_loss(fwd, b, ours, cfg.mtp_weight, multiple)
                (loss / n_total).backward()
                loss_sum, tokens = loss_sum + loss.item(), tokens + int((b["doc_ids"] != 0).sum())
            grad_norm = clip_grad_norm(model, cfg.max_grad_norm)
            if math.isfinite(grad_norm):
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            last_loss = loss_sum / n_total
            row = {"step": step, "epoch": epoch + 1, "loss": last_loss, "grad_norm": grad_norm,
                   "lr": optimizer.param_groups[0]["lr"], "tok_s": tokens / max(time.perf_counter() - t0, 1e-9)}
            if held is not None and ((cfg.eval_every > 0 and step % cfg.eval_every == 0) or step == total):
                last_eval = row["eval_loss"] = eval_loss(fwd, held, cfg, ours, device, amp)
            logger.log(row)
            if (cfg.save_every > 0 and step % cfg.save_every == 0) or step == total:
                save(step)
            if step >= total:
                break
    final = out / "final"
    save_causal_lm(model, final, tokenizer)
    logger.close()
    return {"out_dir": str(out), "final_dir": str(final), "steps": step, "train_loss": last_loss,
            "eval_loss": last_eval, "eval_loss_first": first_eval, **info, "metrics": str(out / "metrics.jsonl")}


def _load_weights(model, ckpt: Path) -> None:
    """Weights of a checkpoint into ``model`` (the LoRA adapter for PEFT models, else the full state)."""
    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(model, load_file(str(ckpt / "adapter" / "adapter_model.safetensors")))
        return
    from r1lab.train.models import load_causal_lm

    loaded = load_causal_lm(ckpt, next(model.parameters()).device, next(model.parameters()).dtype)
    model.load_state_dict(loaded.state_dict())
