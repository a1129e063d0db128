"""Loading and saving the causal LMs that SFT and GRPO train: our DeepSeek-V3 checkpoints or any local transformers
causal LM (Qwen2, Llama, … — the distillation students of DeepSeek-R1 §2.4), one code path for both.

A directory whose config.json says ``"model_type": "deepseek_v3"`` loads as ``DeepSeekV3ForCausalLM``; anything else
goes through ``transformers.AutoModelForCausalLM`` with ``local_files_only=True`` (never the hub).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def resolve_device(name: str) -> torch.device:
    """"auto" → cuda if available else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


PRECISIONS = ("auto", "amp", "fp32", "bf16")


@dataclass(frozen=True)
class Precision:
    """How a trainer holds and runs weights: ``param_dtype`` for the weights and optimizer (master weights) and
    ``autocast_dtype`` for the forward/backward (None = no autocast)."""

    param_dtype: torch.dtype
    autocast_dtype: torch.dtype | None

    def autocast(self, device: torch.device | str):
        """The forward's context: torch.autocast in ``autocast_dtype``, or nothing."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=torch.device(device).type, dtype=self.autocast_dtype)


def resolve_precision(name: str, device: torch.device) -> Precision:
    """Training precision: "amp" = fp32 master weights + bf16 autocast (what "auto" means on CUDA — bf16 weights
    would lose AdamW updates smaller than 2⁻⁸ of a weight); "fp32" (what "auto" means on CPU); "bf16" = bf16 weights
    and optimizer state, no autocast (half the memory, for when it does not fit otherwise).

    >>> resolve_precision("auto", torch.device("cuda"))
    Precision(param_dtype=torch.float32, autocast_dtype=torch.bfloat16)
    >>> resolve_precision("auto", torch.device("cpu")).autocast_dtype is None
    True
    """
    if name not in PRECISIONS:
        raise ValueError(f"dtype must be one of {' | '.join(PRECISIONS)}, got {name!r}")
    if name == "auto":
        name = "amp" if device.type == "cuda" else "fp32"
    if name == "amp":
        return Precision(torch.float32, torch.bfloat16)
    return Precision(DTYPES[name], None)


def is_ours(directory: str | Path) -> bool:
    cfg = Path(directory) / "config.json"
    if not cfg.is_file():
        raise FileNotFoundError(f"{directory}: no config.json (not a model checkpoint directory)")
    return json.loads(cfg.read_text(encoding="utf-8")).get("model_type") == "deepseek_v3"


def load_causal_lm(directory: str | Path, device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32) -> nn.Module:
    """Our checkpoint or a local HF causal LM (see module docstring)."""
    if is_ours(directory):
        from r1lab.model import DeepSeekV3ForCausalLM

        return DeepSeekV3ForCausalLM.from_pretrained(str(directory), dtype=dtype, device=str(device))
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=dtype, local_files_only=True)
    return model.to(device)


def fitted_vocab_size(n_tokens: int, preset_vocab: int, fit: bool = True) -> int:
    """The embedding/head rows for a fresh model: the tokenizer's length rounded up to 64 when ``fit`` (rows for ids
    the tokenizer never emits only cost head matmuls and softmax work), else the preset's size grown to fit.

    The speedrun's BPE asks for 2,048 entries and stops at ~1,100 (every word of the templated corpus is one token
    by then): a fitted 1,152-row head makes the 2-layer student's step 1.17× as fast (``benchmarks/cpu_vocab.py``).

    >>> fitted_vocab_size(1108, 2048), fitted_vocab_size(1108, 2048, fit=False), fitted_vocab_size(300, 256, False)
    (1152, 2048, 320)
    """
    rounded = 64 * math.ceil(n_tokens / 64)
    return rounded if fit else max(preset_vocab, rounded)


def model_from_preset(preset: str, tokenizer_size: int, seed: int = 0, fit_vocab: bool = True,
                      **overrides) -> nn.Module:
    """A freshly initialised model of one of our presets, its vocabulary fitted to ``tokenizer_size`` (the
    tokenizer's length; ``fitted_vocab_size``) unless ``overrides`` name a vocab_size."""
    from r1lab.model import DeepSeekV3Config, DeepSeekV3ForCausalLM

    cfg = DeepSeekV3Config.from_preset(preset)
    if overrides:
        cfg = cfg.replace(**overrides)
    rows = fitted_vocab_size(tokenizer_size, cfg.vocab_size, fit_vocab and "vocab_size" not in overrides)
    torch.manual_seed(seed)
    if rows >= cfg.vocab_size:
        return DeepSeekV3ForCausalLM(cfg.replace(vocab_size=rows))
    return keep_vocab_rows(DeepSeekV3ForCausalLM(cfg), rows)


@torch.no_grad()
def keep_vocab_rows(model: nn.Module, rows: int) -> nn.Module:
    """Cut our model's embedding and head to their first ``rows`` rows (in place; returns the model).

    A fitted model is initialised at the preset's size and then cut, so fitting changes nothing but the unused rows:
    every other parameter starts from the same random draws as the unfitted model's (the initialiser draws the
    embedding first), and a fitted run differs from an unfitted one only by what those rows did in training.
    """
    emb, head = model.model.embed_tokens, model.lm_head
    tied = head.weight is emb.weight
    emb.weight = nn.Parameter(emb.weight[:rows].clone())
    emb.num_embeddings = rows
    head.weight = emb.weight if tied else nn.Parameter(head.weight[:rows].clone())
    head.out_features = rows
    model.config = model.config.replace(vocab_size=rows)
    return model


def save_causal_lm(model: nn.Module, directory: str | Path, tokenizer=None) -> None:
    """``save_pretrained`` (ours or HF, PEFT adapters merged into a plain copy) plus the tokenizer."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "merge_and_unload"):  # a PEFT model: save a merged, standalone copy
        model = copy.deepcopy(model).merge_and_unload()
    model.save_pretrained(str(directory))
    if tokenizer is not None:
        tokenizer.save(directory)


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy with ``requires_grad=False`` in eval mode (the GRPO reference model)."""
    ref = copy.deepcopy(model)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def load_tokenizer_for(cfg) -> "object":
    """The tokenizer of a stage config: ``cfg.tokenizer`` if given, else the one saved beside ``cfg.model``."""
    from r1lab.data.tokenizer import load_tokenizer

    source = getattr(cfg, "tokenizer", None) or getattr(cfg, "model", None)
    if not source:
        raise ValueError("tokenizer: give --tokenizer DIR (or --model DIR holding a tokenizer)")
    return load_tokenizer(source)
